"""ULIP-2 checkpoints as released (a whole training state, see ulip_release_format.py) load with
no trust flag and embed; a checkpoint that pickles code is refused, naming the file and the
global, and its code never runs; ``trust_checkpoint: true`` opens a file with other objects;
``mcrx validate`` opens the checkpoint a recipe names."""

from __future__ import annotations

import argparse
import datetime
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import ulip_release_format
from PIL import Image

from mcrx import McrxError
from mcrx.plugin.builtin import register_modalities
from mcrx.plugin.registry import ComponentSpec, Registry
from mcrx.recipe import parse_recipe
from mcrx.recipe.check import check_recipe
from mcrx.store.weights import load_weights, pickled_globals
from mcrx_ulip import plugin
from mcrx_ulip.model import read_checkpoint
from mcrx_ulip.params import PointBertParams
from mcrx_ulip.space import UlipSpace

SMALL = dict(depth=2, width=48, heads=6, groups=32, group_size=8, npoints=256,
             image_depth=1, text_depth=1, batch_size=2, device="cpu")


def small_space(**params) -> UlipSpace:
    return UlipSpace("ulip/pointbert", PointBertParams(**{**SMALL, **params}))


def write(path: Path, **extra) -> torch.nn.Module:
    config = small_space(random_weights=True).config  # the architecture the params give
    return ulip_release_format.write_release_checkpoint(path, config, **extra)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("ulip-release") / "pointbert_ULIP-2.pt"
    return path, write(path)


def test_the_file_is_laid_out_as_the_release(release):
    path, _ = release
    names = set(pickled_globals(path))
    assert {"argparse.Namespace", "numpy.dtype"} <= names
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} & names
    # what the plugin did before: Namespace allowed, the numpy learning rate refused
    with torch.serialization.safe_globals([argparse.Namespace]):
        with pytest.raises(pickle.UnpicklingError, match="numpy"):
            torch.load(path, weights_only=True)
    content = load_weights(path)
    assert set(content) == {"epoch", "state_dict", "optimizer", "scaler", "best_acc1", "args"}
    assert all(key.startswith("module.") for key in content["state_dict"])
    assert isinstance(content["args"], argparse.Namespace)
    assert content["args"].model == "ULIP_PointBERT" and content["args"].betas == [0.9, 0.98]
    assert all(type(g["lr"]) is np.float64 for g in content["optimizer"]["param_groups"])
    assert content["scaler"]["scale"] == 65536.0 and content["best_acc1"] == 60.4


def test_the_release_loads_without_trust_and_embeds(release):
    path, model = release
    space = small_space(checkpoint=str(path))
    assert not space.params.trust_checkpoint
    for key, value in model.state_dict().items():
        torch.testing.assert_close(space.model.state_dict()[key], value, atol=0, rtol=0)
    cloud = [np.random.default_rng(7).normal(size=(300, 3))]
    image = [Image.new("RGB", (300, 240), (30, 120, 200))]
    for modality, items in (("pointcloud", cloud), ("image", image), ("text", ["a lamp"])):
        rows = space.encoder(modality).encode(items)
        assert rows.shape == (1, 512) and torch.isfinite(rows).all()
        torch.testing.assert_close(rows.norm(dim=-1), torch.ones(1))




@pytest.mark.parametrize("kind", ["system", "eval"])
def test_a_checkpoint_that_pickles_code_is_refused_naming_file_and_global(
        tmp_path, hostile_pickle, kind):
    marker = tmp_path / "ran"
    payload, global_name = hostile_pickle(kind, marker)
    path = tmp_path / "pointbert_ULIP-2.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(model="ULIP_PointBERT"),
                "optimizer": {"param_groups": [{"lr": np.float64(3e-3)}]},
                "hook": payload}, path)
    for attempt in (lambda: read_checkpoint(path),
                    lambda: small_space(checkpoint=str(path)).model):
        with pytest.raises(McrxError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and global_name in message
        assert "trust_checkpoint: true" in message and "weights_only=False" not in message
    assert not marker.exists(), "code from the checkpoint ran"


def test_trust_checkpoint_opens_a_file_with_other_objects(tmp_path):
    path = tmp_path / "dated.pt"
    write(path, saved=datetime.date(2023, 5, 1))  # harmless, but not on the allowlist
    with pytest.raises(McrxError, match=r"datetime\.date.*trust_checkpoint: true"):
        _ = small_space(checkpoint=str(path)).model
    space = small_space(checkpoint=str(path), trust_checkpoint=True)
    assert space.encoder("pointcloud").encode([np.ones((300, 3)) * np.arange(3)]).shape == (1, 512)


# ---------------------------------------------------------------------------------------
# mcrx validate opens the checkpoint
# ---------------------------------------------------------------------------------------
def checkpoint_errors(tmp_path: Path, **params) -> str | None:
    registry = Registry()
    register_modalities(register=registry.register_callback("modality", "mcrx"))
    plugin.register_spaces(register=registry.register_callback("space", "ulip"))
    registry.add(ComponentSpec(kind="space", name="test/base", plugin="test",
                               modalities=("image", "text"), dim=512))
    recipe = parse_recipe({
        "name": "t", "method": "ex-mcr", "output": str(tmp_path / "out"),
        "base": {"space": "test/base"},
        "leaves": [{"space": "ulip/pointbert", "bridge": "image", "params": params}],
        "memories": {"image": {"inputs": "images"}, "text": {"inputs": "t.txt"},
                     "pointcloud": {"inputs": "clouds"}},
    })
    return dict(check_recipe(recipe, registry, check_files=True)).get(
        "leaves.0.params.checkpoint")


def test_validate_opens_the_checkpoint(release, tmp_path, hostile_pickle):
    path, _ = release
    assert checkpoint_errors(tmp_path, **SMALL, checkpoint=str(path)) is None
    hostile = tmp_path / "hostile.pt"
    write(hostile, hook=hostile_pickle("system", tmp_path / "ran")[0])
    message = checkpoint_errors(tmp_path, **SMALL, checkpoint=str(hostile))
    assert message and str(hostile) in message and "system" in message
    assert "trust_checkpoint: true" in message and not (tmp_path / "ran").exists()
    assert checkpoint_errors(tmp_path, **SMALL, checkpoint=str(hostile),
                             trust_checkpoint=True) is None  # opened, never unpickled
    assert not (tmp_path / "ran").exists()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in checkpoint_errors(tmp_path, **SMALL, checkpoint=str(truncated))
