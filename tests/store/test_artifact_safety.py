"""A model folder is untrusted input, and writing one never deletes the user's files.

Loading: each tampered copy of a real artifact (bad JSON, missing keys, wrong shapes, a
path out of the folder, a cycle in the chain, a huge safetensors header, ...) raises an
McrxError, never a raw exception and never an endless loop. Writing: user files inside a
model folder survive a rewrite, a non-model folder is refused without ``force``, a file is
never replaced, and what a killed writer left beside the folder is tidied or restored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import mcrx
from mcrx.errors import McrxError
from mcrx.store.artifact import MANIFEST, check_model_destination
from mcrx.store.atomic import atomic_path, temporary_sibling

LEGACY_MODEL = Path(__file__).parents[1] / "fixtures" / "legacy-971a757" / "model"
CONNECTOR = "connectors/toy--clap.safetensors"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(LEGACY_MODEL, target)
    return target


def _edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = json.loads((folder / MANIFEST).read_text())
        change(manifest)
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return apply


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / relative).write_bytes(content)
    return apply


def _set(keys: str, value) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        *path, last = keys.split(".")
        node = manifest
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


def _outside_symlink(folder: Path) -> None:
    (folder / CONNECTOR).unlink()
    os.symlink("/etc/hostname", folder / CONNECTOR)


def _wrong_shapes(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / CONNECTOR))
    key = next(iter(state))
    state[key] = torch.zeros(3, 3)
    save_file(state, str(folder / CONNECTOR))


TAMPERED = {
    "manifest not JSON": _write(MANIFEST, b"{ not json"),
    "manifest not UTF-8": _write(MANIFEST, '{"name": "caf\xe9"}'.encode("latin-1")),
    "manifest a list": _write(MANIFEST, b"[1, 2]"),
    "manifest nested 100k deep": _write(MANIFEST, b"[" * 100_000 + b"]" * 100_000),
    "manifest missing": lambda folder: (folder / MANIFEST).unlink(),
    "no leaves key": _edit(_set("leaves", KeyError)),
    "no spaces key": _edit(_set("spaces", KeyError)),
    "no embedders key": _edit(_set("embedders", KeyError)),
    "leaves empty": _edit(_set("leaves", [])),
    "dim a string": _edit(_set("dim", "sixty-four")),
    "dim 10^12": _edit(_set("spaces.toy/clap.dim", 10**12)),
    "format newer": _edit(_set("format_version", 99)),
    "format a string": _edit(_set("format_version", "one")),
    "target unknown": _edit(_set("target", "sideways")),
    "base not a space": _edit(_set("base", "toy/nowhere")),
    "parent unknown": _edit(_set("leaves.0.parent", "toy/nowhere")),
    "leaf its own parent": _edit(_set("leaves.0.parent", "toy/clap")),
    "two-leaf cycle": _edit(lambda m: (_set("leaves.0.parent", "toy/ulip")(m),
                                      _set("leaves.1.parent", "toy/clap")(m))),
    "leaf listed twice": _edit(lambda m: m["leaves"].append(m["leaves"][0])),
    "bridge not a modality": _edit(_set("leaves.0.bridge", "smell")),
    "embedder unknown space": _edit(_set("embedders.audio", "toy/nowhere")),
    "file ../../etc/hostname": _edit(_set("leaves.0.file", "../../../../etc/hostname")),
    "file absolute": _edit(_set("leaves.0.file", "/etc/hostname")),
    "file symlink out": _outside_symlink,
    "file missing": lambda folder: (folder / CONNECTOR).unlink(),
    "file empty": _write(CONNECTOR, b""),
    "file garbage": _write(CONNECTOR, b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}"),
    "header 2^60 bytes": _write(CONNECTOR, (1 << 60).to_bytes(8, "little") + b"{}"),
    "weights wrong shape": _wrong_shapes,
    "spec missing key": _edit(_set("leaves.0.connector.spec.leaf_dim", KeyError)),
    "spec a list": _edit(_set("leaves.0.connector.spec", [1, 2])),
    "connector unknown": _edit(_set("leaves.0.connector.name", "evil/module")),
    "connector params bad": _edit(_set("leaves.0.connector.params", {"hidden_dim": "x"})),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERED))
def test_a_tampered_model_folder_raises_a_clear_error(model_dir, tamper):
    TAMPERED[tamper](model_dir)
    with pytest.raises(McrxError) as caught:
        mcrx.load(model_dir)
    assert str(model_dir) in str(caught.value)


def test_the_untampered_copy_loads(model_dir):
    model = mcrx.load(model_dir)
    assert model.project("toy/clap", "audio", np.ones((2, 48))).shape == (2, 64)


@pytest.mark.parametrize("tamper", ["leaf its own parent", "two-leaf cycle"])
def test_a_cycle_is_refused_at_load_not_looped_on(model_dir, tamper):
    """Run in a real process with a timeout: before the check, ``project`` looped for ever."""
    TAMPERED[tamper](model_dir)
    code = ("import mcrx, sys\ntry:\n    mcrx.load(sys.argv[1])\nexcept mcrx.McrxError as e:"
            "\n    print(e)")
    done = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "is a cycle" in done.stdout, done.stderr


# -- writing ------------------------------------------------------------------------------
def test_user_files_inside_a_model_folder_survive_a_rewrite(model_dir):
    (model_dir / "notes.txt").write_text("mine")
    (model_dir / "plots").mkdir()
    (model_dir / "plots" / "a.png").write_bytes(b"png")
    (model_dir / "connectors" / "extra.bin").write_bytes(b"also mine")
    model = mcrx.load(model_dir)
    model.save(model_dir)
    assert (model_dir / "notes.txt").read_text() == "mine"
    assert (model_dir / "plots" / "a.png").read_bytes() == b"png"
    assert (model_dir / "connectors" / "extra.bin").read_bytes() == b"also mine"
    assert mcrx.load(model_dir).leaves == model.leaves
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]


def test_a_folder_of_other_files_is_refused_unless_forced_and_kept_when_forced(
    model_dir, tmp_path
):
    model = mcrx.load(model_dir)
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(McrxError, match="not an mcrx model.*--force"):
        model.save(user)
    assert sorted(p.name for p in user.iterdir()) == ["holiday.jpg"]
    model.save(user, force=True)
    assert (user / "holiday.jpg").read_bytes() == b"jpeg"
    assert mcrx.load(user).leaves == model.leaves


def test_a_file_is_never_replaced_by_a_model(model_dir, tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF")
    for force in (False, True):
        with pytest.raises(McrxError, match="not a folder"):
            mcrx.load(model_dir).save(target, force=force)
    assert target.read_bytes() == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "report.pdf"]


def test_user_file_named_like_a_connector_is_refused_not_overwritten(model_dir):
    (model_dir / CONNECTOR).rename(model_dir / "connectors" / "kept.safetensors")
    manifest = json.loads((model_dir / MANIFEST).read_text())
    manifest["leaves"][0]["file"] = "connectors/kept.safetensors"
    (model_dir / MANIFEST).write_text(json.dumps(manifest))
    model = mcrx.load(model_dir)
    model.manifest["leaves"][0]["file"] = CONNECTOR  # the new model writes the old name...
    (model_dir / CONNECTOR).write_bytes(b"user data")  # ...which the user now holds
    with pytest.raises(McrxError, match="has the name of a connector"):
        model.save(model_dir)
    assert (model_dir / CONNECTOR).read_bytes() == b"user data"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_writer_are_tidied_and_an_old_folder_restored(tmp_path):
    final = tmp_path / "model"
    dead = _dead_pid()
    # killed between the two renames of commit: only ".model.old-PID" holds the model
    old = final.with_name(f".model.old-{dead}")
    shutil.copytree(LEGACY_MODEL, old)
    stale = final.with_name(f".model.tmp-{dead}")
    stale.mkdir()
    (stale / "half").write_text("x")
    live = final.with_name(f".model.tmp-{os.getppid()}")  # a live writer's: left alone
    live.mkdir()
    assert check_model_destination(final) == []
    assert mcrx.load(final).leaves  # restored, not deleted
    assert not old.exists() and not stale.exists() and live.exists()
    with atomic_path(tmp_path / "file.json") as tmp:
        assert tmp == temporary_sibling(tmp_path / "file.json")
        tmp.write_text("1")
    assert (tmp_path / "file.json").read_text() == "1"


def test_extend_refuses_a_model_folder_of_user_files_before_any_work(write_recipe):
    """``OUT/model`` holding the user's files: ``mcrx extend`` stops before encoding, in a
    real process, and every file is still there (it used to be deleted at the end)."""
    import yaml

    recipe = write_recipe("demo.yaml")
    out = Path(yaml.safe_load(recipe.read_text())["output"])
    (out / "model").mkdir(parents=True)
    (out / "model" / "draft.md").write_text("my notes")
    done = subprocess.run([sys.executable, "-m", "mcrx", "extend", str(recipe),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not an mcrx model" in " ".join(done.stderr.split())
    assert (out / "model" / "draft.md").read_text() == "my notes"
    assert not (out / "pseudo_pairs").exists()
