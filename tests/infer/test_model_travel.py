"""A unified model loads and embeds from any folder: relative weight paths are found from the
folder the run started in, and weights that moved are pointed at with ``mcrx.load(params=)``
or ``mcrx repoint``. Real ULIP PointBERT (small, random weights, saved in ULIP's checkpoint
layout) behind the released C-MCR ``ulip_clip.pt`` heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app
from mcrx.infer.official import OfficialSpaces, import_official

SHARED_ULIP_CLIP = Path(__file__).parents[1] / "fixtures" / "cmcr" / "ulip_clip.pt"  # CC BY 4.0
SMALL = {"depth": 1, "width": 32, "heads": 2, "groups": 8, "group_size": 4, "npoints": 64,
         "text_depth": 1, "image_depth": 1, "device": "cpu"}

pytestmark = pytest.mark.skipif(not SHARED_ULIP_CLIP.is_file(),
                                reason=f"{SHARED_ULIP_CLIP} is not beside the checkout")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder holding weights/pointbert.pt; the model imported from inside it with
    the relative path a recipe would use."""
    from mcrx_ulip.model import random_model, save_checkpoint
    from mcrx_ulip.params import PointBertParams
    from mcrx_ulip.space import UlipSpace

    root = tmp_path / "project"
    (root / "weights").mkdir(parents=True)
    space = UlipSpace("ulip/pointbert", PointBertParams(random_weights=True, **SMALL))
    save_checkpoint(random_model(space.config, seed=3, towers=("pointcloud",)),
                    root / "weights" / "pointbert.pt")
    monkeypatch.chdir(root)
    import_official(root / "model", ulip_clip=SHARED_ULIP_CLIP, spaces=OfficialSpaces(
        ulip_params={"checkpoint": "weights/pointbert.pt", **SMALL}))
    return root


def cloud() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)


def test_a_model_embeds_from_another_folder(project, tmp_path, monkeypatch):
    here = mcrx.load(project / "model").embed("pointcloud", [cloud()])
    manifest = json.loads((project / "model" / "manifest.json").read_text())
    assert manifest["spaces"]["ulip/pointbert"]["params"]["checkpoint"] == "weights/pointbert.pt"
    assert manifest["paths_root"] == str(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    there = mcrx.load(project / "model").embed("pointcloud", [cloud()])
    torch.testing.assert_close(there, here)


def test_weights_that_moved_are_named_and_can_be_pointed_at(project, tmp_path, monkeypatch):
    reference = mcrx.load(project / "model").embed("pointcloud", [cloud()])
    moved = tmp_path / "store" / "pb.pt"
    moved.parent.mkdir()
    shutil.move(project / "weights" / "pointbert.pt", moved)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mcrx.McrxError, match=r"ulip/pointbert.*checkpoint.*mcrx repoint"):
        mcrx.load(project / "model").embed("pointcloud", [cloud()])
    loaded = mcrx.load(project / "model", params={"ulip/pointbert": {"checkpoint": str(moved)}})
    torch.testing.assert_close(loaded.embed("pointcloud", [cloud()]), reference)
    with pytest.raises(mcrx.McrxError, match="params given for"):
        mcrx.load(project / "model", params={"clap/630k-fusion": {"checkpoint": "x"}})

    runner = CliRunner()
    result = runner.invoke(app, ["repoint", str(project / "model"),
                                 "ulip/pointbert.checkpoint=store/pb.pt"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((project / "model" / "manifest.json").read_text())
    assert manifest["spaces"]["ulip/pointbert"]["params"]["checkpoint"] == str(moved)
    torch.testing.assert_close(
        mcrx.load(project / "model").embed("pointcloud", [cloud()]), reference)


def test_repoint_refuses_what_the_space_would_refuse(project):
    runner = CliRunner()
    before = (project / "model" / "manifest.json").read_bytes()
    for args, message in [
        (["ulip/pointbert.checkpoint=nowhere.pt"], "checkpoint"),
        (["ulip/pointbert.colour=red"], "unknown field"),
        (["clap/x.checkpoint=a.pt"], "has no space"),
        (["ulip/pointbert"], "SPACE.PARAM=VALUE"),
    ]:
        result = runner.invoke(app, ["repoint", str(project / "model"), *args])
        assert result.exit_code == 1, result.output
        assert message in result.output, result.output
    assert (project / "model" / "manifest.json").read_bytes() == before
