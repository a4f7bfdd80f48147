"""Peak memory of loading memories and fitting the baseline: the memories themselves (in
their stored dtype) plus a fixed working set, whatever the number of rows. Measured as the
peak resident set (VmHWM, reset before the work) of a fresh process at two sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mcrx.store.memory import Memory, MemoryWriter, merge_parts, normalize_rows_, part_folder

CHILD = r"""
import ctypes, json, sys
from pathlib import Path
import torch
from mcrx.methods.common import ConnectorSpec, LinearConnector
from mcrx.methods.params import LinearParams
from mcrx.store.memory import Memory

def status():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmHWM", "VmRSS")}

torch.set_num_threads(1)
folder = Path(sys.argv[1])
ctypes.CDLL("libc.so.6").malloc_trim(0)
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
before = status()["VmRSS"]
leaf = Memory(folder / "leaf").tensor(dtype=None, normalize=True)  # float16 stays float16
parent = Memory(folder / "parent").tensor(dtype=None, normalize=True)
spec = ConnectorSpec(leaf.shape[1], parent.shape[1], "text", "audio", "image")
LinearConnector(spec, LinearParams(solver="lstsq")).fit(leaf, parent)
print(json.dumps({"peak": status()["VmHWM"] - before,
                  "memories": leaf.numel() * leaf.element_size()
                  + parent.numel() * parent.element_size()}))
"""


def write_memory(path, rows: int, dim: int, seed: int) -> None:
    generator = np.random.default_rng(seed)
    writer = MemoryWriter(path, {"key": "k"}, dim=dim, shard_rows=65536, dtype="float16")
    for start in range(0, rows, 65536):
        writer.append(generator.standard_normal((min(65536, rows - start), dim),
                                                dtype=np.float32))
    writer.close()


def measured_peak(folder, rows: int, dim: int = 64) -> dict:
    write_memory(folder / "leaf", rows, dim, seed=0)
    write_memory(folder / "parent", rows, dim, seed=1)
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_grows_with_the_memories_only(tmp_path):
    small = measured_peak(tmp_path / "small", 131072)  # 2 × 16 MiB of float16 rows
    large = measured_peak(tmp_path / "large", 4 * 131072)  # 2 × 64 MiB
    assert large["memories"] == 4 * small["memories"]
    extra_small = small["peak"] - small["memories"]
    extra_large = large["peak"] - large["memories"]
    # The old read (concatenated parts, a normalised copy, float32 widening, float64 copies
    # for lstsq) held ≥ 5× the memories; what is left beyond them is one block per step
    # (a shard mapped while copied, float64 blocks of the normal equations): flat in rows.
    grown = large["memories"] - small["memories"]
    assert extra_large - extra_small < 0.25 * grown, (small, large)
    assert large["peak"] < large["memories"] + 3 * 2**30


def test_in_place_normalisation_is_f_normalize():
    import torch

    rows = torch.randn(1000, 24)
    expected = torch.nn.functional.normalize(rows, dim=-1)
    assert torch.equal(normalize_rows_(rows.clone(), block=300), expected)  # bit for bit
    half = rows.half()
    normalize_rows_(half, block=128)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected, atol=1e-3, rtol=1e-3)


def test_float16_memory_stays_float16_in_ram(tmp_path):
    write_memory(tmp_path / "m", 1000, 8, seed=2)
    memory = Memory(tmp_path / "m")
    rows = memory.tensor(dtype=None, normalize=True)
    assert str(rows.dtype) == "torch.float16" and memory.nbytes == rows.numel() * 2
    wide = memory.tensor()  # float32 by default, as before
    assert str(wide.dtype) == "torch.float32"
    np.testing.assert_allclose(rows.float().numpy(),
                               wide.numpy() / np.linalg.norm(wide.numpy(), axis=1,
                                                             keepdims=True), atol=2e-3)


def test_parts_are_listed_in_one_manifest_without_copying_rows(tmp_path):
    path = tmp_path / "m"
    data = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    parts = []
    for rank, (lo, hi) in enumerate([(0, 25), (25, 50)]):
        part = part_folder(path, rank, 2)
        writer = MemoryWriter(part, {"key": f"k:{lo}-{hi}"}, dim=3, shard_rows=10)
        writer.append(data[lo:hi])
        writer.close()
        parts.append(part)
    memory = merge_parts(path, {"key": "k"}, parts)
    assert memory.complete and memory.count == 50
    assert [s["file"] for s in memory.manifest["shards"]][:3] == [
        "part-000-of-002/shard-00000.npy", "part-000-of-002/shard-00001.npy",
        "part-000-of-002/shard-00002.npy"]
    np.testing.assert_array_equal(memory.read(), data)
    np.testing.assert_array_equal(memory.read(18, 33), data[18:33])  # across the parts
    assert not list(path.glob("shard-*.npy"))
    # an unfinished share is refused by name, and resumes on its own
    unfinished = part_folder(tmp_path / "n", 0, 1)
    writer = MemoryWriter(unfinished, {"key": "u"}, dim=3, shard_rows=10)
    writer.append(data[:15])  # one shard on disk, then the process dies
    with pytest.raises(Exception, match="incomplete"):
        merge_parts(tmp_path / "n", {"key": "n"}, [unfinished])
    assert MemoryWriter(unfinished, {"key": "u"}, dim=3, shard_rows=10).count == 10


SHARING_CHILD = r"""
import json, sys, time
from pathlib import Path
from mcrx.store.memory import Memory

folder, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = Memory(folder / "m").mapped_tensor(dtype=None)
touched = float(rows[:, 0].float().sum() + rows[:, -1].float().sum())  # fault every page in
(folder / me).touch()
deadline = time.time() + 120
while not (folder / other).exists() and time.time() < deadline:
    time.sleep(0.05)
mapping, sizes = None, {}
for line in Path("/proc/self/smaps").read_text().splitlines():
    fields = line.split()
    if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
        mapping = fields[-1] if len(fields) >= 6 else None
    elif mapping and mapping.endswith("normalized-float16.npy") and fields[0] in ("Rss:", "Pss:"):
        sizes[fields[0][:-1]] = sizes.get(fields[0][:-1], 0) + int(fields[1]) * 1024
(folder / f"{me}.done").touch()
while not (folder / f"{other}.done").exists() and time.time() < deadline:
    time.sleep(0.05)  # keep the mapping until the other process has measured too
print(json.dumps({**sizes, "bytes": rows.numel() * rows.element_size(), "sum": touched}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_processes_mapping_a_memory_share_one_copy_of_its_rows(tmp_path):
    """What several processes of a launch load: every one maps the same normalised file, so
    its rows are in RAM once. Measured as each process's proportional share (Pss) of the
    mapping: with two processes holding every page, each is charged half."""
    write_memory(tmp_path / "m", 65536, 256, seed=3)  # 32 MiB of float16 rows
    Memory(tmp_path / "m").mapped_tensor(dtype=None)  # written once, as the main process does
    children = [subprocess.Popen([sys.executable, "-c", SHARING_CHILD, str(tmp_path), me, other],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
                for me, other in (("a", "b"), ("b", "a"))]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    size = results[0]["bytes"]
    assert results[0]["sum"] == results[1]["sum"]
    for result in results:
        assert result["Rss"] > 0.95 * size, result  # every page resident in both…
        assert result["Pss"] < 0.55 * size, result  # …and each charged for half of them
