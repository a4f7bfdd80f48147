"""Tests of the ``clap`` plugin: laion_clap's real HTSAT-tiny audio branch and roberta-base
text branch with random weights, real audio files of every format libsndfile writes here,
and a checkpoint in the LAION-AI/CLAP release format.

roberta-base's real tokenizer files cannot be had offline (no package ships them), so the
roberta text path runs on a tokenizer folder written by conftest.py in roberta-base's exact format:
vocab.json + merges.txt with 50,265 entries and roberta's special tokens, where
transformers' RobertaTokenizer does real byte-level BPE. Only the vocabulary is synthetic,
as the weights are random. laion_clap's own offline text path (tmodel 'transformer', with
its bundled CLIP vocabulary) is tested too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile
import torch
from pydantic import ValidationError

from mcrx import McrxError
from mcrx.plugin.manager import get_registry
from mcrx.recipe import parse_recipe
from mcrx.recipe.check import check_recipe

SR = 48000
TEXTS = ["a dog barking", "rain on a tin roof", "an orchestra tuning up"]


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------
def _sound(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)
    wave = tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[str, Path]:
    """Real files written by libsndfile: several rates, stereo, one longer than 10 s."""
    folder = tmp_path_factory.mktemp("audio")
    writes = [("wav", 3.0, 44100, 2), ("flac", 12.5, SR, 1), ("ogg", 4.0, 22050, 1),
              ("aiff", 2.0, 16000, 1)]
    if "MP3" in soundfile.available_formats():
        writes.append(("mp3", 2.5, 32000, 2))
    files = {}
    for seed, (suffix, seconds, rate, channels) in enumerate(writes):
        path = folder / f"{seed:02d}.{suffix}"
        soundfile.write(path, _sound(seconds, rate, seed, channels), rate)
        files[suffix] = path
    return files


def build(name: str, **params):
    """Build through the registry, exactly as a recipe does."""
    return get_registry().space(name).build(name, params=params)


@pytest.fixture(scope="module")
def space(tokenizer_dir):
    """clap/630k-fusion's architecture: fusion HTSAT-tiny + roberta-base."""
    return build("clap/630k-fusion", random_weights=True, tokenizer=str(tokenizer_dir),
                 batch_size=2)


@pytest.fixture(scope="module")
def batch_rows(space, audio_files) -> torch.Tensor:
    """Every audio file encoded in one call (batch_size 2: several forward passes); the
    HTSAT forward pass dominates this file's run time, so tests share these rows."""
    return space.encoder("audio").encode([str(p) for p in audio_files.values()])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------
# Registration and params
# ---------------------------------------------------------------------------------------
def test_models_are_registered():
    registry = get_registry()
    spec = registry.space("clap/630k-audioset-fusion")
    assert spec.plugin == "clap" and spec.modalities == ("audio", "text") and spec.dim == 512
    assert registry.space("clap/my-finetune").name == "clap/*"


def test_params_validation(tmp_path):
    from mcrx_clap.params import RELEASE_URL, ClapParams

    missing = tmp_path / "630k-audioset-fusion-best.pt"
    with pytest.raises(ValidationError) as info:
        ClapParams.model_validate({"checkpoint": str(missing)})
    (error,) = info.value.errors()
    assert error["loc"] == ("checkpoint",)
    assert str(missing) in error["msg"] and RELEASE_URL in error["msg"]
    with pytest.raises(ValidationError, match="a checkpoint is required"):
        ClapParams.model_validate({})  # random weights are never silent
    missing.write_bytes(b"")
    with pytest.raises(ValidationError, match="not both"):
        ClapParams.model_validate({"checkpoint": str(missing), "random_weights": True})
    with pytest.raises(ValidationError, match="tokenizer folder not found"):
        ClapParams.model_validate({"random_weights": True, "tokenizer": str(tmp_path / "x")})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ClapParams.model_validate({"random_weights": True, "fussion": True})
    assert ClapParams(random_weights=True, tokenizer="FacebookAI/roberta-base").tokenizer


def test_recipe_check_locates_the_missing_checkpoint(tmp_path):
    recipe = parse_recipe({
        "name": "missing-checkpoint", "method": "ex-mcr",
        "base": {"space": "clap/630k", "params": {"checkpoint": str(tmp_path / "630k.pt")}},
        "leaves": [{"space": "clap/music", "bridge": "text",
                    "params": {"random_weights": True}}],
        "memories": {"text": {"inputs": str(tmp_path)}, "audio": {"inputs": str(tmp_path)}},
    })
    errors = dict(check_recipe(recipe, get_registry()))
    assert "checkpoint not found" in errors["base.params.checkpoint"]
    assert "leaves.0.params.checkpoint" not in errors


def test_hook_module_imports_without_torch():
    """``mcrx list-plugins`` must stay instant: the hook module and the params import (and
    validate) with torch, laion_clap and the audio libraries unavailable."""
    code = textwrap.dedent("""\
        import sys
        for name in ("torch", "laion_clap", "clap_module", "transformers", "soundfile",
                     "soxr", "librosa", "numpy"):
            sys.modules[name] = None  # any import of these now fails
        from mcrx.plugin.registry import Registry
        import mcrx_clap.plugin as plugin
        registry = Registry()
        plugin.register_spaces(register=registry.register_callback("space", "clap"))
        spec = registry.space("clap/630k-fusion")
        assert spec.validate_params({"random_weights": True}).random_weights
        print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------
def test_every_audio_format_encodes(audio_files, batch_rows):
    if "mp3" not in audio_files:
        pytest.skip("this libsndfile cannot write MP3 (needs 1.1+)")  # pragma: no cover
    paths, rows = list(audio_files.values()), batch_rows
    assert rows.shape == (len(paths), 512) and rows.dtype == torch.float32
    assert rows.device.type == "cpu" and torch.isfinite(rows).all()
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(paths)))
    assert torch.cdist(rows, rows).add(torch.eye(len(paths))).min() > 1e-4


def test_laion_clap_preprocessing_is_applied(space, audio_files):
    """Short clips: int16 round trip, repeat-padded to 10 s at 48 kHz; long clips under
    fusion: the global view plus three local 10 s views (laion_clap's mel_fusion)."""
    encoder = space.encoder("audio")
    short = encoder.prepare(str(audio_files["wav"]))  # 3 s of 44.1 kHz stereo
    n = 3 * SR
    assert short["waveform"].shape == (480000,) and not short["longer"].item()
    torch.testing.assert_close(short["waveform"][n : 2 * n], short["waveform"][:n])
    assert (short["waveform"][:n] * 32767).round().sub(short["waveform"][:n] * 32767).abs().max() \
        < 1e-2  # on the 16-bit grid
    long = encoder.prepare(str(audio_files["flac"]))  # 12.5 s
    assert long["longer"].item() and long["mel_fusion"].shape == (4, 1001, 64)
    assert short["mel_fusion"].shape == (4, 1001, 64)


def test_waveforms_and_files_agree(space, tmp_path):
    encoder = space.encoder("audio")
    wave = _sound(2.0, SR, 9)[:, 0]
    path = tmp_path / "exact.wav"
    soundfile.write(path, wave, SR, subtype="FLOAT")  # lossless at 48 kHz
    from_file = encoder.prepare(str(path))
    for same in (wave, torch.from_numpy(wave)):
        prepared = encoder.prepare(same)
        assert all(torch.equal(prepared[key], from_file[key]) for key in from_file)
    for bad, message in [(np.zeros((2, 100), np.float32), "1-D float"),
                         (np.zeros(10, np.int16), "1-D float"),
                         (np.zeros(0, np.float32), "no samples"),
                         (42, "file paths or 1-D waveforms")]:
        with pytest.raises(McrxError, match=message):
            encoder.encode([bad])
    with pytest.raises(McrxError, match="cannot read the audio"):
        encoder.encode([str(tmp_path / "missing.wav")])


def test_one_item_alone_equals_the_same_item_in_a_batch(space, audio_files, batch_rows):
    encoder = space.encoder("audio")
    # the long clip (fusion views) and a short one, each batched with another clip
    for i in (1, 2):
        path = str(list(audio_files.values())[i])
        assert _max_diff(encoder.encode([path])[0], batch_rows[i]) < 1e-5, path
    texts = space.encoder("text")
    batch = texts.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        assert _max_diff(texts.encode([text])[0], batch[i]) < 1e-5


def test_long_clips_are_reproducible(space, audio_files):
    """laion_clap picks the views of a long clip at random: mcrx seeds that per item and
    leaves the caller's numpy generator where it was."""
    encoder = space.encoder("audio")
    np.random.seed(123)
    first = encoder.prepare(str(audio_files["flac"]))
    after = np.random.random()
    np.random.seed(123)
    assert np.random.random() == after
    np.random.seed(7)
    assert torch.equal(encoder.prepare(str(audio_files["flac"]))["mel_fusion"],
                       first["mel_fusion"])


def test_read_inputs_lists_only_audio(space, audio_files, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "b.wav", _sound(0.5, SR, 1), SR)
    soundfile.write(folder / "sub" / "a.flac", _sound(0.5, SR, 2), SR)
    (folder / "notes.txt").write_text("not audio\n")
    assert space.encoder("audio").read_inputs(folder) == [str(folder / "b.wav"),
                                                          str(folder / "sub" / "a.flac")]


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------
def test_roberta_text_encodes(space):
    encoder = space.encoder("text")
    rows = encoder.encode(TEXTS)
    assert rows.shape == (len(TEXTS), 512) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(TEXTS)))
    assert torch.cdist(rows, rows).add(torch.eye(len(TEXTS))).min() > 1e-4
    prepared = encoder.prepare("a dog")  # padded to 77 with roberta's <pad> = 1
    assert prepared["input_ids"].shape == (77,) and prepared["input_ids"][0] == 0
    assert prepared["input_ids"][-1] == 1 and prepared["attention_mask"][-1] == 0
    assert encoder.encode([" ".join(["word"] * 300)]).shape == (1, 512)  # truncated
    with pytest.raises(McrxError, match="text items are strings"):
        encoder.encode([None])


def test_a_missing_tokenizer_is_refused(monkeypatch, tmp_path):
    """Offline, transformers 5 answers a tokenizer it cannot find with a 5-token stand-in:
    refused, with what to do."""
    from mcrx_clap.space import load_roberta_tokenizer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(McrxError, match="roberta-base's tokenizer files"):
        load_roberta_tokenizer("roberta-base")


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------
def _release_checkpoint(space, path: Path, *, position_ids: bool) -> dict[str, torch.Tensor]:
    """Save the space's weights as LAION-AI/CLAP's training script did: DataParallel's
    ``module.`` prefix inside {"epoch", "name", "state_dict", "optimizer"}; transformers
    < 4.31 also saved roberta's position_ids buffer."""
    state = {f"module.{k}": v for k, v in space.model.state_dict().items()}
    if position_ids:
        state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    torch.save({"epoch": 45, "name": "mcrx-test", "state_dict": state, "optimizer": {}}, path)
    return state


def test_checkpoint_round_trip(space, audio_files, batch_rows, tokenizer_dir, tmp_path):
    path = tmp_path / "630k-fusion-best.pt"
    _release_checkpoint(space, path, position_ids=True)
    loaded = build("clap/630k-fusion", checkpoint=str(path), tokenizer=str(tokenizer_dir),
                   batch_size=2)
    assert loaded.fusion and loaded.fingerprint() != space.fingerprint()
    paths = [str(p) for p in audio_files.values()][:2]  # a short and a long clip
    assert _max_diff(loaded.encoder("audio").encode(paths), batch_rows[:2]) < 1e-5
    assert _max_diff(loaded.encoder("text").encode(TEXTS),
                     space.encoder("text").encode(TEXTS)) < 1e-5

    from mcrx_clap.space import load_state, read_checkpoint

    # a checkpoint saved by a newer transformers (no position_ids) loads too
    state = read_checkpoint(path)
    assert "text_branch.embeddings.position_ids" in state
    del state["text_branch.embeddings.position_ids"]
    load_state(loaded.model, state, path, "HTSAT-tiny")
    # a checkpoint that does not fit says what is wrong
    del state["audio_projection.0.weight"]
    with pytest.raises(McrxError, match="missing audio_projection.0.weight"):
        load_state(loaded.model, state, path, "HTSAT-tiny")


def test_fusion_must_match_the_checkpoint(space, tmp_path):
    path = tmp_path / "fusion.pt"
    _release_checkpoint(space, path, position_ids=False)
    with pytest.raises(McrxError, match="is a fusion checkpoint but clap/630k asks"):
        build("clap/630k", checkpoint=str(path))
    with pytest.raises(McrxError, match="but `fusion: false` asks"):
        build("clap/custom", checkpoint=str(path), fusion=False)
    with pytest.raises(McrxError, match="not a readable PyTorch weights file"):
        (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
        build("clap/custom", checkpoint=str(tmp_path / "broken.pt"))
    with pytest.raises(McrxError, match="no audio model 'HTSAT-huge'"):
        build("clap/custom", random_weights=True, amodel="HTSAT-huge")


# ---------------------------------------------------------------------------------------
# Non-fusion model with laion_clap's own text tower
# ---------------------------------------------------------------------------------------
def test_non_fusion_model_with_bundled_tokenizer(space, audio_files):
    plain = build("clap/630k", random_weights=True, tmodel="transformer", batch_size=3)
    assert not plain.fusion
    audio, text = plain.encoder("audio"), plain.encoder("text")
    long = audio.prepare(str(audio_files["flac"]))  # cropped to 10 s, no fusion views
    assert long["waveform"].shape == (480000,) and "mel_fusion" not in long
    paths = [str(p) for p in audio_files.values()][:3]
    rows = audio.encode(paths)  # one batch of 3: short, long, short
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(paths)))
    assert _max_diff(audio.encode([paths[1]])[0], rows[1]) < 1e-5
    texts = text.encode(TEXTS)
    assert texts.shape == (len(TEXTS), 512)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(len(TEXTS)))
    assert _max_diff(text.encode([TEXTS[2]])[0], texts[2]) < 1e-5
    assert text.fingerprint() != audio.fingerprint()
    assert plain.fingerprint() != space.fingerprint()
