"""Two CPU processes (torchrun, gloo) give the result of one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import mcrx
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.extend import extend


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None
                    and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_processes_match_one(tmp_path, cache_dir, make_small_recipe):
    recipes = {}
    for name in ("one", "two"):
        raw = make_small_recipe("demo.yaml", tmp_path / name)
        raw["training"] = {"batch_size": 256, "epochs": 2, "checkpoint_every": 1000}
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(raw))
    registry = get_registry()
    one = extend(load_recipe(recipes["one"], registry=registry), registry, show_progress=False)

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "MCRX_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--nproc-per-node", "2", "-m", "mcrx", "extend",
                           str(recipes["two"]), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())

    # Tolerances. Two processes compute the same objective as one, but their float32 sums run
    # in another order (BatchNorm statistics all-reduced from two halves, gradients averaged
    # by DDP), and 70 Adam steps amplify those rounding differences (Adam divides by √v, so a
    # tiny gradient difference becomes a step-sized one where v is small). Measured with torch
    # 2.14.1 on this recipe (deterministic, not flaky):
    #                               rounding only   per-process BatchNorm   loss w/o all-gather
    #   1 − min cosine, audio           1.4e-4 (1.8e-4 on another machine)  1.6e-2   7.6e-3
    #   1 − min cosine, pointcloud      1.3e-5              8.7e-3                   6.0e-3
    #   final loss, relative            5e-5                2.9e-3                   1.8e-1
    #   R@1 gap                         0.0075              0.022                    0.020
    # (the two right columns: the real bugs this test exists to catch, made on purpose). Each
    # bound sits between the rounding floor and the smallest bug, about 5× from either side
    # on a log scale: cosine ≥ 1 − 1e-3, loss within 5e-4. R@1 moves in steps of 1/400 and
    # flips on near-ties, so its bound (0.0125, five queries) is a coarse sanity check; the
    # cosine is the sharp one.
    for pair, values in one["retrieval"].items():
        assert two["retrieval"][pair]["R@1"] == pytest.approx(values["R@1"], abs=0.0125), pair
    for leaf, report in one["training"].items():
        assert two["training"][leaf]["final_loss"] == pytest.approx(report["final_loss"],
                                                                     rel=5e-4), leaf
    model_one, model_two = mcrx.load(tmp_path / "one" / "model"), mcrx.load(tmp_path / "two" /
                                                                           "model")
    dataset = registry.dataset("toy/world").build(params={"split": "eval", "count": 200})
    for modality in ("audio", "pointcloud"):
        a = model_one.embed(modality, dataset.items(modality))
        b = model_two.embed(modality, dataset.items(modality))
        assert torch.sum(a * b, dim=1).min() > 1 - 1e-3, modality
