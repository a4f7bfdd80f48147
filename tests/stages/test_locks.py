"""Two mcrx processes on one output folder or one cache entry, as real processes: the second
``extend`` on an OUT in use exits with a clear message while the first finishes; two writers
of one cache entry take turns, and the second reuses the first one's rows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mcrx.store.locks import OUTPUT_LOCK, file_lock
from mcrx.store.memory import Memory


def _wait_for(predicate, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


HOLDER = textwrap.dedent("""
    import sys, time
    from mcrx.store.locks import OUTPUT_LOCK, file_lock
    with file_lock(sys.argv[1] + "/" + OUTPUT_LOCK, "the output folder", wait=False):
        print("held", flush=True)
        time.sleep(600)
""")


def test_extend_on_an_out_held_by_another_process_exits_at_once(tmp_path, write_recipe):
    """Fast form: the OUT lock is held by another process; ``mcrx extend`` says so, exit 1."""
    recipe = write_recipe("demo.yaml")
    out = yaml.safe_load(recipe.read_text())["output"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, out], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "mcrx", "extend", str(recipe),
                               "--no-progress"], capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()  # kill -9: the kernel releases the flock
        holder.wait()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"in use by another mcrx run (pid {holder.pid})" in " ".join(done.stderr.split())
    assert sorted(p.name for p in Path(out).iterdir()) == [OUTPUT_LOCK]  # nothing written
    with file_lock(Path(out) / OUTPUT_LOCK, "the output folder", wait=False):
        pass  # free again after the kill


@pytest.mark.slow
def test_a_second_extend_on_the_same_out_exits_with_a_message(tmp_path, make_small_recipe):
    raw = make_small_recipe("demo.yaml", tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "mcrx", "extend", str(recipe), "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "run" / OUTPUT_LOCK
    _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid))
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"in use by another mcrx run (pid {first.pid})" in " ".join(second.stderr.split())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["retrieval"] and (tmp_path / "run" / "model" / "manifest.json").is_file()
    with file_lock(lock, "the output folder", wait=False):  # released when the run ended
        pass


SLOW_WRITER = textwrap.dedent("""
    import sys, time, types
    from pathlib import Path
    import torch
    from mcrx.stages.encode import encode_shared
    from mcrx.train.distributed import process_state

    class GatedEncoder:  # a real encoder of numbers that holds its first item until "go"
        dim, batch_size = 4, 10
        def prepare(self, item):
            while item == "0" and not Path(sys.argv[2]).exists():
                time.sleep(0.05)
            return torch.tensor([float(item), 1.0, 2.0, 3.0])
        def encode_prepared(self, prepared):
            return torch.nn.functional.normalize(torch.stack(prepared), dim=-1)

    run = types.SimpleNamespace(state=process_state(), workers=0, show_progress=False)
    memory, encoded = encode_shared(run, GatedEncoder(), [str(i) for i in range(100)],
                                    Path(sys.argv[1]), {"key": "k"})
    print(encoded, memory.count, flush=True)
""")


def test_two_writers_of_one_cache_entry_take_turns(tmp_path):
    entry = tmp_path / "cache" / "embeddings" / "entry"
    go = tmp_path / "go"
    command = [sys.executable, "-c", SLOW_WRITER, str(entry), str(go)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (entry / "manifest.json").is_file())  # the first one is writing
    second_log = tmp_path / "second.err"
    with open(second_log, "w") as err:
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        # the second one must be blocked on the entry's lock while the first holds it
        _wait_for(lambda: "waiting for another mcrx run" in second_log.read_text())
        assert first.poll() is None and second.poll() is None
        go.touch()  # let the first one finish
        results = [process.communicate(timeout=300) for process in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], (results, second_log.read_text())
    assert [int(out.split()[0]) for out, _ in results] == [100, 0]  # the second reused it
    memory = Memory(entry)
    assert memory.complete and memory.count == 100
    expected = np.array([[i, 1, 2, 3] for i in range(100)], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(memory.tensor()), expected, rtol=1e-6)  # in order
