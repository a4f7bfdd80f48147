"""Corrupt audio in the CLAP reader: each refused with an McrxError naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from mcrx import McrxError
from mcrx_clap.audio import load_waveform


@pytest.mark.parametrize("case", ["garbage", "empty", "truncated", "nan", "no-samples"])
def test_corrupt_audio_names_the_file(tmp_path, case):
    path = tmp_path / "clip.wav"
    samples = np.sin(np.linspace(0, 100, 4800, dtype=np.float32))
    if case == "garbage":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        soundfile.write(path, samples, 48000, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:30])
    elif case == "nan":
        samples[100] = np.nan
        soundfile.write(path, samples, 48000, subtype="FLOAT")
    else:
        soundfile.write(path, samples[:0], 48000, subtype="PCM_16")
    with pytest.raises(McrxError, match="clip.wav"):
        load_waveform(str(path))


def test_good_audio_still_reads(tmp_path):
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.zeros(4800, dtype=np.float32), 48000, subtype="FLOAT")
    assert load_waveform(str(path)).shape == (4800,)
