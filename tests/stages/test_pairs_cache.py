"""Pseudo pairs live in the shared cache keyed by their fingerprint (OUT keeps a reference):
another output folder reuses them. ann mode runs end to end and reports its deviation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.extend import extend

pytest.importorskip("faiss")


def test_ann_pairs_are_cached_and_reused_by_another_output(tmp_path, cache_dir,
                                                           make_small_recipe):
    registry = get_registry()
    runs = {}
    for name in ("first", "second"):
        raw = make_small_recipe("demo.yaml", tmp_path / name)
        raw["retrieval"] = {"mode": "ann", "k": 128, "ann": {"ef_search": 128}}
        raw["training"]["epochs"] = 2
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        runs[name] = extend(load_recipe(path, registry=registry), registry,
                            show_progress=False)

    for leaf in ("toy--clap", "toy--ulip"):
        first = json.loads((tmp_path / "first" / "pseudo_pairs" / f"{leaf}.json").read_text())
        second = json.loads((tmp_path / "second" / "pseudo_pairs" / f"{leaf}.json")
                            .read_text())
        assert first == second  # the same cached folder, not a copy
        assert first["path"].startswith(str(cache_dir / "pairs"))
        manifest = json.loads((Path(first["path"]) / "manifest.json").read_text())
        deviation = manifest["ann_deviation"]
        assert deviation["index"] == "hnsw" and deviation["mean_cosine"] > 0.95, deviation
        assert not (tmp_path / "second" / "pseudo_pairs" / leaf).exists()
    # the second run trained on the same pairs: the same connector, the same metrics
    assert runs["second"]["retrieval"] == runs["first"]["retrieval"]
    values = runs["first"]["retrieval"]["audio->pointcloud"]
    assert values["R@1"] > 3 * values["chance_R@1"], values
