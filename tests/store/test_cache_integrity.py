"""The shared cache is checked like a database: every entry is published with a record of
its files (sizes, digests) and checked before it is used; a damaged entry is rebuilt (or
refused with one line naming it), never used; entries of an earlier mcrx are upgraded, never
re-encoded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mcrx.errors import McrxError
from mcrx.methods.common import PAIR_ROLES
from mcrx.store import integrity
from mcrx.store.cache import entries, held_if_free, prune
from mcrx.store.memory import Memory, MemoryWriter, memory_problem
from mcrx.store.pairs import finished_pairs_fingerprint, pairs_problem

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-971a757"


def write_memory(path: Path, count: int = 300, dim: int = 8, seed: int = 0) -> Memory:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    writer = MemoryWriter(path, {"key": "k"}, dim=dim, shard_rows=128)
    writer.append(rows)
    return writer.close()


def shuffle_rows(path: Path, seed: int = 1) -> None:
    """What the report did: the same rows, in another order, written over the file."""
    rows = np.load(path)
    np.save(path, rows[np.random.default_rng(seed).permutation(len(rows))])


# ---------------------------------------------------------------------------------------
def test_a_memory_is_published_with_its_record_and_checked(tmp_path):
    memory = write_memory(tmp_path / "m")
    record = json.loads((tmp_path / "m" / "integrity.json").read_text())
    assert set(record["files"]) == {"manifest.json", "shard-00000.npy", "shard-00001.npy",
                                    "shard-00002.npy"}
    assert all({"size", "sampled", "full", "mtime_ns"} <= set(line)
               for line in record["files"].values())
    assert memory_problem(tmp_path / "m") is None
    memory.mapped_tensor()
    assert "normalized-float32.npy" in json.loads(
        (tmp_path / "m" / "integrity.json").read_text())["files"]


def test_rows_shuffled_truncated_or_nan_are_found(tmp_path):
    for name, damage, expected in [
        ("shuffled", lambda p: shuffle_rows(p / "shard-00001.npy"), "digest"),
        ("truncated", lambda p: os.truncate(p / "shard-00002.npy", 200), "bytes"),
        ("missing", lambda p: (p / "shard-00000.npy").unlink(), "missing"),
        ("nan", lambda p: _write_nan(p / "shard-00000.npy"), "digest"),
        ("record", lambda p: (p / "integrity.json").write_text("{"), "not a record"),
        ("manifest", lambda p: (p / "manifest.json").write_text("[]"), "manifest"),
    ]:
        write_memory(tmp_path / name)
        damage(tmp_path / name)
        problem = memory_problem(tmp_path / name)
        assert problem is not None and expected in problem, (name, problem)


def _write_nan(path: Path) -> None:
    rows = np.load(path)
    rows[5] = np.nan
    np.save(path, rows)


def test_a_file_touched_but_not_changed_is_kept_and_its_new_time_recorded(tmp_path):
    write_memory(tmp_path / "m")
    shard = tmp_path / "m" / "shard-00001.npy"
    os.utime(shard, ns=(1, 1))
    assert memory_problem(tmp_path / "m") is None  # the full digest decided
    line = json.loads((tmp_path / "m" / "integrity.json").read_text())["files"][shard.name]
    assert line["mtime_ns"] == 1


def test_a_normalized_copy_shuffled_is_written_again_from_the_shards(tmp_path):
    memory = write_memory(tmp_path / "m")
    clean = memory.mapped_tensor().clone()
    shuffle_rows(tmp_path / "m" / "normalized-float32.npy")
    assert torch.equal(Memory(tmp_path / "m").mapped_tensor(), clean)
    _write_nan(tmp_path / "m" / "normalized-float32.npy")
    assert torch.equal(Memory(tmp_path / "m").mapped_tensor(), clean)


def test_a_legacy_memory_is_upgraded_not_re_encoded_and_its_nan_rows_refused(tmp_path):
    entry = tmp_path / "legacy"
    shutil.copytree(LEGACY / "cache" / "embeddings" / "toy--clap" / "audio" /
                    "7a08eb9656c3b177", entry)
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    assert memory_problem(entry, upgrade=False) is None
    assert not (entry / "integrity.json").exists()
    assert memory_problem(entry) is None  # upgraded: its record written
    assert (entry / "integrity.json").is_file()
    assert {p.name: p.read_bytes() for p in entry.iterdir() if p.name in before} == before

    (entry / "integrity.json").unlink()  # an earlier mcrx's entry with a NaN row
    _write_nan(entry / "shard-00000.npy")
    problem = memory_problem(entry)
    assert problem == "shard-00000.npy holds NaN, infinite or all-zero rows (first: row 5)"
    assert not (entry / "integrity.json").exists()


def test_nan_rows_met_while_normalising_are_refused_with_one_line(tmp_path):
    write_memory(tmp_path / "m")
    (tmp_path / "m" / "integrity.json").unlink()
    _write_nan(tmp_path / "m" / "shard-00000.npy")
    with pytest.raises(McrxError, match=r"NaN.*\(first: row 5\); delete the entry .*rm -r"):
        Memory(tmp_path / "m").mapped_tensor()


def test_the_check_on_every_read_is_cheap_at_one_million_rows(tmp_path):
    """1M × 512 float16 as the encoder writes it: 16 shards of 64 MiB and a 1 GiB normalised
    copy (sparse files: what is measured is the check, not this disk)."""
    folder = tmp_path / "big"
    folder.mkdir()
    names = [f"shard-{i:05d}.npy" for i in range(16)] + ["normalized-float16.npy"]
    for name in names[:-1]:
        os.truncate(_touch(folder / name), 65536 * 512 * 2 + 128)
    os.truncate(_touch(folder / names[-1]), 1 << 30)
    integrity.record_files(folder, names, "memory", full=False)
    began = time.perf_counter()
    _, problem = integrity.check_entry(folder)
    seconds = time.perf_counter() - began
    assert problem is None
    assert seconds < 0.5, seconds


def _touch(path: Path) -> Path:
    path.touch()
    return path


# ---------------------------------------------------------------------------------------
def _legacy_pairs(path: Path, count: int = 50) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for role in PAIR_ROLES:
        np.save(path / f"{role}.npy", rng.standard_normal((count, 8)).astype(np.float32))
    (path / "manifest.json").write_text(json.dumps({"fingerprint": "f", "count": count}))


def test_pseudo_pairs_of_an_earlier_mcrx_are_upgraded_then_checked(tmp_path):
    _legacy_pairs(tmp_path / "p")
    assert finished_pairs_fingerprint(tmp_path / "p") == "f"
    assert (tmp_path / "p" / "integrity.json").is_file()
    shuffle_rows(tmp_path / "p" / "leaf_x.npy")
    assert "digest" in pairs_problem(tmp_path / "p")
    assert finished_pairs_fingerprint(tmp_path / "p") is None  # rebuilt, never used
    _legacy_pairs(tmp_path / "q")
    os.truncate(tmp_path / "q" / "parent_y.npy", 300)
    assert "cannot be read" in pairs_problem(tmp_path / "q")


def test_a_connector_rewritten_or_with_nan_weights_is_trained_again(tmp_path):
    from mcrx.store.connectors import load_connector_state, save_connector_state

    module = torch.nn.Linear(4, 4)
    path = tmp_path / "connectors" / "leaf.safetensors"
    save_connector_state(path, module, "fp")
    assert load_connector_state(path, "fp") is not None
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\xc0\x7f"  # a NaN written over the last weight
    path.write_bytes(bytes(data))
    assert load_connector_state(path, "fp") is None
    integrity.record_path(path).unlink()  # no record (an earlier mcrx's): the NaN is found
    assert load_connector_state(path, "fp") is None


# ---------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from mcrx.store.locks import cache_entry_lock
with cache_entry_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_prune_keeps_an_entry_whose_lock_another_process_holds(tmp_path):
    root = tmp_path / "cache"
    busy, idle = (root / "embeddings" / "s" / "text" / name for name in ("busy", "idle"))
    write_memory(busy)
    write_memory(idle)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(busy)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with held_if_free(busy) as free:
            assert not free
        done = {entry.path.name: action for entry, action in prune(entries(root))}
    finally:
        holder.kill()
        holder.wait()
    assert done == {"busy": "in use, kept", "idle": "removed"}
    assert busy.is_dir() and not idle.exists()
    assert [entry.path.name for entry in entries(root)] == ["busy"]


# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_damaged_cache_is_rebuilt_and_the_run_gives_the_clean_runs_figures(
    tmp_path, cache_dir, make_small_recipe, capsys
):
    from mcrx.plugin.manager import get_registry
    from mcrx.recipe import load_recipe
    from mcrx.stages.extend import extend

    registry = get_registry()

    def run(name: str) -> dict:
        raw = make_small_recipe("demo.yaml", tmp_path / name)
        raw["training"]["epochs"] = 2
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        return extend(load_recipe(tmp_path / f"{name}.yaml", registry=registry), registry,
                      show_progress=False)

    clean = run("clean")
    used = {entry.path: entry for entry in entries(cache_dir)
            if str(tmp_path / "clean") in entry.runs}
    evaluation = sorted(p for p, e in used.items()
                        if e.kind == "memories" and "evaluation" in
                        json.loads((p / "manifest.json").read_text())["source"])
    memories = sorted(p for p, e in used.items() if e.kind == "memories"
                      and p not in evaluation)
    pairs = sorted(p for p, e in used.items() if e.kind == "pairs")
    assert len(evaluation) >= 2 and memories and pairs
    shard = evaluation[0] / "shard-00000.npy"
    clean_shard = shard.read_bytes()
    shuffle_rows(shard)  # the reported case: R@1 0.79 → 0.03 with exit 0
    shuffle_rows(evaluation[1] / "normalized-float32.npy")
    _write_nan(memories[0] / "shard-00000.npy")
    os.truncate(pairs[0] / "leaf_x.npy", 4096)
    capsys.readouterr()

    again = run("again")
    err = "".join(capsys.readouterr().err.split())  # the console wraps at its width
    assert again["retrieval"] == clean["retrieval"]
    assert shard.read_bytes() == clean_shard  # encoded again, the same rows
    for entry, words in [(evaluation[0], "shard-00000.npy does not hold the bytes that were "
                          "written (sampled digest); encoding it again"),
                         (evaluation[1], "normalized-float32.npy does not hold the bytes that "
                          "were written (sampled digest); writing it again from the shards"),
                         (memories[0], "shard-00000.npy does not hold the bytes that were "
                          "written (sampled digest); encoding it again"),
                         (pairs[0], "leaf_x.npy holds 4,096 bytes")]:
        assert "".join(f"{entry}: {words}".split()) in err, (entry, err)
    # the two damaged memories are encoded again, nothing else is
    assert err.count("encodingitagain") == 2, err
    assert again["encoded_items"] == sum(json.loads((p / "manifest.json").read_text())["count"]
                                         for p in (evaluation[0], memories[0]))
    assert all(memory_problem(p, normalized=True) is None for p in evaluation + memories)
    assert pairs_problem(pairs[0]) is None
