"""mcrx.store.weights: one loader for every plugin's weight files (weights only plus a short
allowlist, a trust escape hatch) and the structural check ``mcrx validate`` runs."""

from __future__ import annotations

import argparse
import datetime
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel, Field

from mcrx import McrxError
from mcrx.store.weights import (
    ALLOWLIST,
    TRUST_HINT,
    check_weights_file,
    is_torchscript,
    load_weights,
    pickled_globals,
    safe_globals,
    weights_fields,
    weights_file,
    weights_problems,
)


def training_state() -> dict:
    """Weights plus what training scripts save beside them: an AdamW state whose learning
    rate is a numpy float64 (as a numpy cosine schedule leaves it) and an argparse
    Namespace."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(2, 4)).sum().backward()
    adamw.step()
    for group in adamw.param_groups:
        group["lr"] = 0.5 * (1 + np.cos(np.pi * 0.3)) * 1e-3
    return {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": adamw.state_dict(), "best": np.float32(0.5), "steps": np.int64(7),
            "args": argparse.Namespace(lr=1e-3, betas=[0.9, 0.98], name="run")}


@pytest.mark.parametrize("zip_format", [True, False])
def test_training_states_load_without_trust(tmp_path, zip_format):
    path = tmp_path / "state.pt"
    torch.save(training_state(), path, _use_new_zipfile_serialization=zip_format)
    for mmap in (False, True):
        loaded = load_weights(path, mmap=mmap)
        assert type(loaded["optimizer"]["param_groups"][0]["lr"]) is np.float64
        assert loaded["best"] == np.float32(0.5) and loaded["steps"] == 7
        assert loaded["args"].betas == [0.9, 0.98]
    assert check_weights_file(path)


def test_the_allowlist_covers_both_numpy_names_and_only_values():
    names = {name for name, _ in ALLOWLIST}
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
            "numpy.dtypes.Float64DType", "argparse.Namespace"} <= names
    assert not any("Object" in name or "Void" in name for name in names)
    pairs = safe_globals()
    assert all(isinstance(name, str) for _, name in pairs)
    assert {name for _, name in pairs} >= {"numpy.core.multiarray.scalar",
                                           "numpy._core.multiarray.scalar"}


def test_a_file_saved_under_numpy_2_names_loads(tmp_path):
    """numpy 2 pickles its scalar function as numpy._core.multiarray.scalar."""
    path = tmp_path / "numpy2.pt"
    torch.save({"lr": np.float64(0.25)}, path)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    old, new = b"numpy.core.multiarray\nscalar", b"numpy._core.multiarray\nscalar"
    if old in entries[name]:
        entries[name] = entries[name].replace(old, new)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for n, data in entries.items():
            archive.writestr(n, data)
    assert "numpy._core.multiarray.scalar" in pickled_globals(path)
    assert load_weights(path)["lr"] == 0.25


@pytest.mark.parametrize("kind", ["system", "eval"])
@pytest.mark.parametrize("zip_format", [True, False])
def test_code_is_refused_naming_file_and_global_and_never_runs(tmp_path, hostile_pickle, kind,
                                                               zip_format):
    marker = tmp_path / "ran"
    payload, name = hostile_pickle(kind, marker)
    path = tmp_path / "hostile.pt"
    torch.save({**training_state(), "hook": payload}, path,
               _use_new_zipfile_serialization=zip_format)
    for attempt in (lambda: load_weights(path, trust_hint=TRUST_HINT),
                    lambda: check_weights_file(path, trust_hint=TRUST_HINT)):
        with pytest.raises(McrxError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and name in message, message
        assert "trust_checkpoint: true" in message and "weights_only=False" not in message
    assert not marker.exists()
    with pytest.raises(McrxError, match="set `x_trust: true`"):
        load_weights(path, trust_hint="set `x_trust: true`")
    with pytest.raises(McrxError) as caught:  # a reader without a trust option offers none
        load_weights(path)
    assert "trust" not in str(caught.value) and "Re-save the weights" in str(caught.value)
    # a structural check of a trusted file reads opcodes only: nothing runs
    assert check_weights_file(path, trust=True)
    assert not marker.exists()


def test_trust_opens_other_objects(tmp_path, caplog):
    path = tmp_path / "dated.pt"
    torch.save({"saved": datetime.date(2023, 5, 1), "w": torch.ones(2)}, path)
    with pytest.raises(McrxError, match=r"datetime\.date"):
        load_weights(path)
    assert load_weights(path, trust=True)["saved"] == datetime.date(2023, 5, 1)
    assert "as trusted" in caplog.text
    assert load_weights(path, allowed=[datetime.date])["saved"].year == 2023


def test_unreadable_files_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(training_state(), good)
    cases = {
        "empty.pt": b"",
        "text.pt": b"this is not a checkpoint\n" * 10,
        "truncated.pt": good.read_bytes()[: good.stat().st_size // 2],
        "raw-pickle.pt": pickle.dumps({"w": [1, 2, 3]}),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for attempt in (load_weights, check_weights_file):
            with pytest.raises(McrxError) as caught:
                attempt(path)
            assert str(path) in str(caught.value), (name, attempt, caught.value)
    assert "truncated" in str(pytest.raises(McrxError, check_weights_file,
                                            tmp_path / "truncated.pt").value)
    with pytest.raises(McrxError, match="not found"):
        load_weights(tmp_path / "missing.pt")


def _safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.ones(3, 2), "b": torch.zeros(4)}, str(path))


def test_safetensors_header_checked_and_loaded(tmp_path):
    path = tmp_path / "w.safetensors"
    _safetensors(path)
    assert "2 tensors" in check_weights_file(path)
    assert torch.equal(load_weights(path)["a"], torch.ones(3, 2))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(McrxError, match="outside the file"):
        check_weights_file(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(McrxError, match="not a .safetensors file"):
        check_weights_file(junk)


def test_torchscript_archives_are_recognised_not_unpickled(tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    assert is_torchscript(path)
    assert check_weights_file(path, torchscript=True) == "a TorchScript archive"
    with pytest.raises(McrxError, match="TorchScript archive"):
        check_weights_file(path)
    with pytest.raises(McrxError, match="TorchScript archive"):
        load_weights(path)


def test_folders_need_a_config_and_weights(tmp_path):
    folder = tmp_path / "clip-folder"
    folder.mkdir()
    with pytest.raises(McrxError, match="is a folder"):
        check_weights_file(folder)
    with pytest.raises(McrxError, match=r"no a config .* and a weights file"):
        check_weights_file(folder, folder=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(McrxError, match="no a weights file"):
        check_weights_file(folder, folder=True)
    _safetensors(folder / "model.safetensors")
    assert "config.json" in check_weights_file(folder, folder=True)
    (folder / "extra.bin").write_bytes(b"garbage")
    with pytest.raises(McrxError, match="extra.bin"):
        check_weights_file(folder, folder=True)


class _Params(BaseModel):
    checkpoint: Path | None = Field(None, json_schema_extra=weights_file(trust="trust_it"))
    trust_it: bool = False
    pretrained: str = Field("", json_schema_extra=weights_file(folder=True, torchscript=True))
    other: Path | None = None


def test_marked_fields_are_found_and_checked(tmp_path, hostile_pickle):
    assert [(f.name, f.trust, f.folder) for f in weights_fields(_Params)] == [
        ("checkpoint", "trust_it", False), ("pretrained", None, True)]
    assert "x-mcrx-weights" in json.dumps(_Params.model_json_schema())
    hostile = tmp_path / "hostile.pt"
    torch.save({"hook": hostile_pickle("eval", tmp_path / "ran")[0]}, hostile)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    problems = dict(weights_problems(_Params(checkpoint=hostile, pretrained=str(junk),
                                             other=junk)))
    assert set(problems) == {"checkpoint", "pretrained"}
    assert "set `trust_it: true`" in problems["checkpoint"]
    assert "trust" not in problems["pretrained"]
    assert weights_problems(_Params(checkpoint=hostile, trust_it=True)) == []
    assert weights_problems(_Params(pretrained="laion2b_s34b_b79k")) == []  # a tag, not a path


def test_plain_state_dict_readers_can_leave_the_allowlist_out(tmp_path):
    """A released head file is a plain state dict: its reader refuses even a Namespace."""
    path = tmp_path / "head.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=1e-3)}, path)
    assert load_weights(path)["args"].lr == 1e-3
    with pytest.raises(McrxError, match=r"\(argparse\.Namespace\)") as caught:
        load_weights(path, allowlist=False, trust_hint=None)
    assert "trust" not in str(caught.value)


def test_missing_marked_paths_are_reported_tags_are_not(tmp_path):
    missing = tmp_path / "gone.pt"
    problems = dict(weights_problems(_Params(checkpoint=missing, pretrained="./nowhere")))
    assert "not found" in problems["checkpoint"] and "not found" in problems["pretrained"]
    assert weights_problems(_Params(pretrained="timm/vit_base_patch16_clip_224.openai")) == []
