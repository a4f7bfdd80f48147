"""Shared fixtures: an isolated embedding cache and small versions of the demo recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent

# Small but real: the toy spaces are trained (on fewer pairs), memories are encoded, pseudo
# pairs are retrieved and connectors trained, just on less data and fewer steps.
SMALL_SPACE = {"pairs": 4096, "epochs": 4}
SMALL = {
    "memories": 3000,
    "evaluation": 400,
    "training": {"batch_size": 256, "epochs": 3, "checkpoint_every": 10},
}


def small_recipe(name: str, out: Path) -> dict:
    raw = yaml.safe_load((ROOT / "recipes" / name).read_text())
    for ref in [raw["base"], *raw["leaves"]]:
        ref["params"] = dict(SMALL_SPACE)
    for source in raw["memories"].values():
        source["params"]["count"] = SMALL["memories"]
    for evaluation in raw["evaluation"]:
        evaluation["params"]["count"] = SMALL["evaluation"]
    raw["training"] = dict(SMALL["training"])
    raw["output"] = str(out)
    return raw


@pytest.fixture(scope="session")
def make_small_recipe():
    """``make_small_recipe(name, out) -> dict``: a shipped recipe, shrunk."""
    return small_recipe


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mcrx-cache")


@pytest.fixture(autouse=True)
def isolated_cache(cache_dir, monkeypatch):
    """Never touch the user's ~/.cache; share toy spaces across the session's tests."""
    monkeypatch.setenv("MCRX_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def write_recipe(tmp_path):
    def write(name: str, **changes) -> Path:
        raw = small_recipe(name, tmp_path / "out")
        raw.update(changes)
        path = tmp_path / f"small-{name}"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write
