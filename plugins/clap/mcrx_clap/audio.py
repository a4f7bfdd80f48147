"""Audio as CLAP expects it: mono float32 at 48 kHz.

laion_clap reads files with ``librosa.load(path, sr=48000)``: libsndfile decoding, a
channel mean, then soxr's high-quality resampler trimmed or padded to ceil(n·ratio)
samples. This module does exactly that with soundfile and soxr directly, skipping librosa
(whose first use costs ~25 s of numba compilation). No torch here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from mcrx import McrxError

SAMPLE_RATE = 48000
#: the resampler librosa.load uses by default
RESAMPLER = "soxr_hq"

# libsndfile format name → the file suffixes it reads
_FORMAT_SUFFIXES = {
    "WAV": (".wav",), "WAVEX": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",), "AIFF": (".aif", ".aiff", ".aifc"), "AU": (".au", ".snd"),
    "CAF": (".caf",), "W64": (".w64",), "RF64": (".rf64",), "VOC": (".voc",),
}


def audio_suffixes() -> frozenset[str]:
    """Suffixes of the audio files the installed libsndfile decodes (MP3 needs 1.1+)."""
    formats = soundfile.available_formats()
    return frozenset(s for name, suffixes in _FORMAT_SUFFIXES.items() if name in formats
                     for s in suffixes)


def resample(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """``waveform`` at 48 kHz, as librosa.resample(res_type='soxr_hq') computes it."""
    if sample_rate == SAMPLE_RATE:
        return waveform
    size = math.ceil(len(waveform) * SAMPLE_RATE / sample_rate)
    out = soxr.resample(waveform, sample_rate, SAMPLE_RATE, quality=RESAMPLER)
    if len(out) < size:  # librosa fixes the length to ceil(n·ratio)
        out = np.pad(out, (0, size - len(out)))
    return np.ascontiguousarray(out[:size], dtype=np.float32)


def read_audio(path: str | Path) -> np.ndarray:
    """A file as mono float32 at 48 kHz."""
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as exc:
        suffixes = ", ".join(sorted(audio_suffixes()))
        raise McrxError(f"{path}: cannot read the audio ({exc}); libsndfile "
                        f"{soundfile.__libsndfile_version__} here reads {suffixes}") from None
    if data.shape[0] == 0:
        raise McrxError(f"{path}: the audio file holds no samples")
    if not np.isfinite(data).all():  # a float WAV can store NaN: it would become NaN rows
        raise McrxError(f"{path}: the audio holds NaN or infinite samples")
    # librosa.to_mono: the mean over channels
    return resample(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), sample_rate)


def load_waveform(item: Any) -> np.ndarray:
    """Mono float32 samples at 48 kHz from a file path or a waveform (a 1-D float array or
    tensor already at 48 kHz)."""
    if isinstance(item, (str, Path)):
        return read_audio(item)
    if hasattr(item, "detach"):  # a torch tensor: no torch import needed here
        item = item.detach().cpu().numpy()
    if not isinstance(item, np.ndarray):
        raise McrxError(f"audio items are file paths or 1-D waveforms at {SAMPLE_RATE} Hz, "
                        f"got {type(item).__name__}")
    if item.ndim != 1 or not np.issubdtype(item.dtype, np.floating):
        raise McrxError(f"a waveform is a 1-D float array of mono samples at {SAMPLE_RATE} Hz, "
                        f"got shape {item.shape} and dtype {item.dtype}")
    if item.size == 0:
        raise McrxError("an audio waveform holds no samples")
    if not np.isfinite(item).all():
        raise McrxError("an audio waveform holds NaN or infinite samples")
    return np.ascontiguousarray(item, dtype=np.float32)
