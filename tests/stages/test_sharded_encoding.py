"""Under torchrun every process encodes its share of each memory; the shares are listed in
one manifest (no row copied), and the memory is the one a single process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.context import Run
from mcrx.stages.encode import encode_evaluation, encode_memories
from mcrx.store.memory import Memory

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
    "torchrun")


def memories_under(root: Path) -> dict[str, Memory]:
    """Every memory folder of an embedding cache, by its path relative to the cache."""
    return {str(manifest.parent.relative_to(root)): Memory(manifest.parent)
            for manifest in (root / "embeddings").glob("*/*/*/manifest.json")}


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_two_processes_encode_the_memory_one_process_encodes(tmp_path, cache_dir,
                                                             make_small_recipe):
    raw = make_small_recipe("demo.yaml", tmp_path / "out")
    for source in raw["memories"].values():
        source["params"]["count"] = 1001  # odd: the two shares differ by one row
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))

    registry = get_registry()
    run = Run(load_recipe(recipe_path, registry=registry), registry, show_progress=False)
    for name in run.recipe.space_names():  # trained once in the session's cache ...
        run.space(name)
    one = tmp_path / "cache-one"
    two = tmp_path / "cache-two"
    for cache in (one, two):  # ... and shared by both caches: neither run retrains them
        cache.mkdir()
        (cache / "toy").symlink_to(cache_dir / "toy", target_is_directory=True)
    os.environ["MCRX_CACHE_DIR"] = str(one)  # restored by the autouse fixture
    encode_memories(run)
    encode_evaluation(run)

    env = {**os.environ, "MCRX_CACHE_DIR": str(two), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([TORCHRUN, "--nproc-per-node", "2", "-m", "mcrx", "encode",
                           str(recipe_path), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    single, sharded = memories_under(one), memories_under(two)
    assert set(single) == set(sharded) and single  # the same cache keys
    for key, memory in sharded.items():
        assert memory.complete and memory.count == single[key].count
        assert memory.manifest["parts"] == ["part-000-of-002", "part-001-of-002"], key
        # rows stay in the parts' shards: the manifest only lists them
        assert all(shard["file"].startswith("part-") for shard in memory.manifest["shards"])
        assert not list(memory.path.glob("shard-*.npy"))
        np.testing.assert_allclose(memory.read(), single[key].read(), rtol=0, atol=1e-6)
    shares = [json.loads((m.path / "part-001-of-002" / "manifest.json").read_text())["share"]
              for m in sharded.values() if m.count == 1001]
    assert shares and all(share == [501, 1001] for share in shares)
