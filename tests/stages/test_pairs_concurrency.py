"""Two ``mcrx extend`` runs that share one fresh cache, as real processes: one builds each
leaf's pseudo pairs while the other waits for it and reuses them; an entry that lost a file
afterwards is rebuilt by the next run, never used or crashed on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from mcrx.methods.common import PAIR_ROLES
from mcrx.store.pairs import finished_pairs_fingerprint


def _recipe(tmp_path: Path, make_small_recipe, name: str) -> Path:
    raw = make_small_recipe("demo.yaml", tmp_path / name)
    raw["training"]["epochs"] = 1
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _extend(recipe: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "MCRX_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "mcrx", "extend", str(recipe),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_runs_sharing_a_fresh_cache_take_turns_on_pseudo_pairs(tmp_path,
                                                                  make_small_recipe):
    cache = tmp_path / "cache"
    runs = [_extend(_recipe(tmp_path, make_small_recipe, name), cache)
            for name in ("first", "second")]
    results = [run.communicate(timeout=900) for run in runs]
    for run, (out, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, (out[-2000:], err[-3000:])
    entries = {}
    for leaf in ("toy--clap", "toy--ulip"):
        refs = [json.loads((tmp_path / name / "pseudo_pairs" / f"{leaf}.json").read_text())
                for name in ("first", "second")]
        assert refs[0] == refs[1]  # one entry, built once
        path = Path(refs[0]["path"])
        assert finished_pairs_fingerprint(path) == refs[0]["fingerprint"]
        entries[leaf] = path
    said = " ".join(" ".join(out + err for out, err in results).split())
    assert said.count("pseudo pairs (done before") == 2, said  # the waiting run reused both
    assert not list(cache.glob("pairs/*/.*.tmp"))  # no half-built folder left behind

    # an entry that lost a file is not whole any more: the next run rebuilds it
    broken = entries["toy--clap"]
    kept = {role: np.load(broken / f"{role}.npy") for role in PAIR_ROLES}
    (broken / "leaf_x.npy").unlink()
    assert finished_pairs_fingerprint(broken) is None
    third = _extend(_recipe(tmp_path, make_small_recipe, "third"), cache)
    out, err = third.communicate(timeout=900)
    assert third.returncode == 0, (out[-2000:], err[-3000:])
    assert finished_pairs_fingerprint(broken) is not None
    for role in PAIR_ROLES:  # the same pairs again: retrieval is deterministic
        np.testing.assert_array_equal(np.load(broken / f"{role}.npy"), kept[role])
