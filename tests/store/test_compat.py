"""What mcrx wrote before stays readable: an artifact and an embedding cache written by main
at 971a757 (before the core was re-laid out), kept in tests/fixtures/legacy-971a757."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import mcrx
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.extend import extend
from mcrx.store.memory import Memory

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-971a757"


def test_an_artifact_written_before_projects_exactly_as_it_did():
    model = mcrx.load(LEGACY / "model")
    expected = np.load(LEGACY / "expected_projections.npz")
    assert len(expected.files) == 10
    for key in expected.files:
        space, modality, memory = key.replace("--", "/").split("|")
        rows = Memory(LEGACY / "cache" / "embeddings" / space.replace("/", "--") / modality /
                      memory).read()[:64]
        projected = model.project(space, modality, rows).numpy()
        np.testing.assert_allclose(projected, expected[key], atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_a_cache_written_before_is_found_and_the_run_gives_the_same_metrics(
    tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    shutil.copytree(LEGACY / "cache", cache)
    monkeypatch.setenv("MCRX_CACHE_DIR", str(cache))
    raw = yaml.safe_load((LEGACY / "recipe.yaml").read_text())
    raw["output"] = str(tmp_path / "run")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    registry = get_registry()
    metrics = extend(load_recipe(tmp_path / "recipe.yaml", registry=registry), registry,
                     show_progress=False)
    assert metrics["encoded_items"] == 0, "the old cache was not found: keys changed"
    before = json.loads((LEGACY / "metrics.json").read_text())
    for section in ("retrieval", "spaces", "baselines"):
        assert metrics[section].keys() == before[section].keys(), section
    for pair, values in before["retrieval"].items():
        assert metrics["retrieval"][pair]["R@1"] == pytest.approx(values["R@1"], abs=1e-6)
        assert metrics["retrieval"][pair]["mAP"] == pytest.approx(values["mAP"], abs=1e-5)
    for leaf, report in before["training"].items():
        assert metrics["training"][leaf]["final_loss"] == pytest.approx(
            report["final_loss"], rel=1e-5)
