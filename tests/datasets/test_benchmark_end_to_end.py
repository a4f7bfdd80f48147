"""``mcrx evaluate MODEL evals/modelnet40.yaml --set evaluation.0.params.root=...`` end to end
on a stand-in of ULIP's ModelNet40 test file, with a real model: the released C-MCR
``ulip_clip.pt`` heads between CLIP ViT-B/32 and a small ULIP-2 PointBERT (random weights,
saved in ULIP's checkpoint layout). The figure is held to a computation of its own: the clouds
as the test wrote them, embedded one by one, against the class names' prototypes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app
from mcrx.infer.official import OfficialSpaces, import_official

ROOT = Path(__file__).parents[2]
SHARED_ULIP_CLIP = ROOT / "tests" / "fixtures" / "cmcr" / "ulip_clip.pt"  # CC BY 4.0, see README
SMALL_ULIP = {"depth": 1, "width": 32, "heads": 2, "groups": 8, "group_size": 4,
              "text_depth": 1, "image_depth": 1, "device": "cpu"}

pytestmark = pytest.mark.skipif(not SHARED_ULIP_CLIP.is_file(),
                                reason=f"{SHARED_ULIP_CLIP} is not beside the checkout")


def test_modelnet40_as_downloaded_through_mcrx_evaluate(tmp_path, layout, tools):
    from mcrx_ulip.model import random_model, save_checkpoint
    from mcrx_ulip.params import PointBertParams
    from mcrx_ulip.space import UlipSpace

    weights = tmp_path / "pointbert.pt"
    space = UlipSpace("ulip/pointbert", PointBertParams(random_weights=True, **SMALL_ULIP))
    save_checkpoint(random_model(space.config, seed=5), weights)  # every tower, as released
    import_official(tmp_path / "model", ulip_clip=SHARED_ULIP_CLIP, spaces=OfficialSpaces(
        clip_params={"random_weights": True, "device": "cpu"},
        ulip_params={"checkpoint": str(weights), **SMALL_ULIP}))
    root = layout("modelnet40")

    result = CliRunner().invoke(app, [
        "evaluate", str(tmp_path / "model"), str(ROOT / "evals" / "modelnet40.yaml"),
        "--set", f"evaluation.0.params.root={root}", "--set", "evaluation.0.templates=name",
        "--out", str(tmp_path / "out"), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (figures,) = [v for k, v in _zeroshot(metrics).items() if k.endswith("pointcloud")]

    # the reference: the clouds exactly as written (xyz of ULIP's (N, 6) rows), each class's
    # name as its one prompt, cosine, first maximum
    import pickle

    with open(root / "modelnet40_test_8192pts_fps.dat", "rb") as handle:
        points, labels = pickle.load(handle)  # the test's own file
    model = mcrx.load(tmp_path / "model")
    clouds = model.embed("pointcloud", [p[:, :3] for p in points])
    names = (root / "modelnet40_shape_names.txt").read_text().split()
    assert names == tools.MODELNET40_NAMES
    prototypes = F.normalize(model.embed("text", names), dim=-1)
    predicted = (clouds @ prototypes.T).argmax(1).numpy()
    truth = np.array([int(label[0]) for label in labels])
    expected = float((predicted == truth).mean())
    assert figures["n"] == len(truth)
    assert figures["top1"] == pytest.approx(expected), (figures, predicted, truth)
    assert torch.isfinite(clouds).all()


def _zeroshot(metrics: dict) -> dict:
    models = metrics.get("models")
    document = next(iter(models.values())) if models else metrics
    return document["zeroshot"]
