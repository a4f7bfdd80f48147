"""``mcrx cache``: list, size, verify and prune, through typer's CliRunner and as a real
process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.store.memory import MemoryWriter

runner = CliRunner()
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-971a757"


def make_cache(root: Path) -> dict[str, Path]:
    """Two memories of this mcrx (one used by a run), one of an earlier mcrx."""
    paths = {}
    for name, seed in (("fresh", 0), ("used", 1)):
        path = root / "embeddings" / "toy--clip" / "text" / name
        writer = MemoryWriter(path, {"key": name, "space": "toy/clip", "modality": "text"},
                              dim=8, shard_rows=64)
        writer.append(np.random.default_rng(seed).standard_normal((100, 8)))
        writer.close()
        paths[name] = path
    (paths["used"] / "used.json").write_text(json.dumps(
        {"last_used_s": 0, "runs": ["/runs/first"]}))  # last used long ago
    legacy = root / "embeddings" / "toy--clap" / "audio" / "7a08eb9656c3b177"
    shutil.copytree(LEGACY / "cache" / "embeddings" / "toy--clap" / "audio" / legacy.name,
                    legacy)
    paths["legacy"] = legacy
    return paths


def test_list_and_size(tmp_path, monkeypatch):
    monkeypatch.setenv("MCRX_CACHE_DIR", str(tmp_path))
    make_cache(tmp_path)
    result = runner.invoke(app, ["cache", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {Path(e["path"]).name: e for e in json.loads(result.stdout)}
    assert set(listed) == {"fresh", "used", "7a08eb9656c3b177"}
    assert listed["used"]["runs"] == ["/runs/first"]
    assert listed["fresh"]["rows"] == 100 and listed["fresh"]["space"] == "toy/clip"
    assert listed["7a08eb9656c3b177"]["dtype"] == "float32"
    result = runner.invoke(app, ["cache", "list"])
    assert result.exit_code == 0 and "toy/clap" in result.output and "/runs/first" in \
        result.output
    result = runner.invoke(app, ["cache", "size", "--json"])
    sizes = json.loads(result.stdout)
    assert sizes["kinds"]["memories"]["entries"] == 3
    assert sizes["bytes"] == sum(e["size"] for e in listed.values())
    result = runner.invoke(app, ["cache", "list", "--kind", "bogus"])
    assert result.exit_code == 1 and "--kind" in result.output


def test_verify_reports_a_bad_entry_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setenv("MCRX_CACHE_DIR", str(tmp_path))
    paths = make_cache(tmp_path)
    result = runner.invoke(app, ["cache", "verify", "--full"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 entries whole" in result.output
    assert "no digests" in result.output  # the earlier mcrx's entry: trusted, not failed
    shard = paths["fresh"] / "shard-00001.npy"
    rows = np.load(shard)
    np.save(shard, rows[::-1])
    result = runner.invoke(app, ["cache", "verify", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["bad"] == 1
    (bad,) = [e for e in report["entries"] if e["status"] == "bad"]
    assert bad["entry"] == str(paths["fresh"]) and "shard-00001.npy" in bad["problem"]
    result = runner.invoke(app, ["cache", "prune", "--bad"])
    assert result.exit_code == 0 and "freed" in result.output
    assert not paths["fresh"].exists() and paths["used"].is_dir()


def test_prune_by_age_and_kind_with_a_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MCRX_CACHE_DIR", str(tmp_path))
    paths = make_cache(tmp_path)
    result = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would remove" in result.output and "would free" in result.output
    assert paths["used"].is_dir()
    result = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--kind", "pairs"])
    assert result.exit_code == 0 and "freed 0 B (0 entries)" in result.output
    result = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--json"])
    done = json.loads(result.stdout)
    assert [Path(e["path"]).name for e in done["entries"]] == ["used"]
    assert done["freed_bytes"] > 0
    assert not paths["used"].exists() and paths["fresh"].is_dir() and paths["legacy"].is_dir()
    result = runner.invoke(app, ["cache", "prune", "--older-than", "soon"])
    assert result.exit_code == 1 and "--older-than" in result.output


def test_verify_as_a_real_process(tmp_path):
    paths = make_cache(tmp_path)
    os.truncate(paths["used"] / "shard-00000.npy", 100)
    env = {**os.environ, "MCRX_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", "from mcrx.cli import main; main()",
                           "cache", "verify"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"bad        memories   {paths['used']}: shard-00000.npy holds 100 bytes" in \
        done.stdout
    assert "2 of 3 entries whole" in done.stdout
