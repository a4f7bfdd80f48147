"""Load test of ``mcrx serve`` on loopback: a real server process, many clients at once.

    python benchmarks/bench_serve.py                  # 2,000 requests, 32 at a time
    python benchmarks/bench_serve.py --quick          # 400 requests, 16 at a time
    python benchmarks/bench_serve.py --model runs/demo/model --requests 5000

Without ``--model``, the demo recipe is trained small (as the tests do: fewer pairs, epochs
and memories) into a temporary folder; then the toy world's held-out items are written as
``.npy`` files (``python -m mcrx.search.demo``), indexed (``mcrx index``, one modality at a
time) and served (``mcrx serve --port FREE``). The clients (threads, one ``httpx.Client``
each) send a fixed mix, in a random order drawn from ``--seed``:

    45 %  GET  /api/search?q=#ID&n=10            a stored vector, 10 hits with their texts
    10 %  GET  /api/search?q=#ID&each=1&n=5      5 of every modality
    10 %  POST /api/search (multipart upload)    a held-out query file embedded by the model
    20 %  GET  /api/items/.../preview            rendered (then cached) or streamed
    10 %  GET  /api/items/.../file               the item's file, through the checked open file
     5 %  GET  /api/collections

Every answer must be a 200 (an error fails the run: exit status 1). We report latency
p50/p99 (overall and by kind), requests per second, and the server's peak resident memory
(``VmHWM`` of /proc/PID/status, Linux) against ``--max-rss-mib``. The machine is shared:
read latencies with its load in mind (the load average is printed). The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
MIX = (("search", 45), ("each", 10), ("upload", 10), ("preview", 20), ("file", 10),
       ("collections", 5))
# the tests' small demo recipe (tests/conftest.py): real training, on less data
SMALL_SPACE = {"pairs": 4096, "epochs": 4}
SMALL_TRAINING = {"batch_size": 256, "epochs": 3, "checkpoint_every": 10}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def small_model(work: Path, env: dict[str, str]) -> Path:
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    for ref in [raw["base"], *raw["leaves"]]:
        ref["params"] = dict(SMALL_SPACE)
    for source in raw["memories"].values():
        source["params"]["count"] = 3000
    for evaluation in raw["evaluation"]:
        evaluation["params"]["count"] = 400
    raw["training"] = dict(SMALL_TRAINING)
    raw["output"] = str(work / "run")
    recipe = work / "small-demo.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    run([sys.executable, "-m", "mcrx", "extend", str(recipe), "--no-progress"], env)
    return work / "run" / "model"


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), MiB; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 requests, 16 at a time")
    parser.add_argument("--requests", type=int, default=None, help="default 2,000")
    parser.add_argument("--concurrency", type=int, default=None, help="default 32")
    parser.add_argument("--items", type=int, default=None,
                        help="demo items per modality (default 100; --quick 40)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a unified model of the toy world (default: train one small)")
    parser.add_argument("--max-rss-mib", type=float, default=2048,
                        help="fail when the server's peak resident memory exceeds this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    requests = args.requests or (400 if args.quick else 2000)
    concurrency = args.concurrency or (16 if args.quick else 32)
    items = args.items or (40 if args.quick else 100)

    work = Path(tempfile.mkdtemp(prefix="mcrx-bench-serve-"))
    env = {**os.environ, "MCRX_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    server = None
    try:
        began = time.perf_counter()
        model = args.model.resolve() if args.model else small_model(work, env)
        run([sys.executable, "-m", "mcrx.search.demo", str(work / "demo"), "--count",
             str(items)], env)
        collection = work / "demo" / "collection"
        modalities = ("image", "text", "audio", "pointcloud")
        for modality in modalities:
            run([sys.executable, "-m", "mcrx", "index", str(model), str(collection),
                 "--modality", modality, str(work / "demo" / "files" / modality),
                 "--no-progress"], env)
        print(f"model, files and collection ready in {time.perf_counter() - began:.0f} s "
              f"({items} items × {len(modalities)} modalities)", flush=True)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(work / "server.log", "w")  # noqa: SIM115 - closed with the server
        server = subprocess.Popen(
            [sys.executable, "-m", "mcrx", "serve", str(collection), "--port", str(port)],
            env={**env, "TMPDIR": str(work)}, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                listed = httpx.get(f"{url}/api/collections", timeout=2).json()
                break
            except (httpx.HTTPError, ValueError):
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the server did not start:\n{(work / 'server.log').read_text()}")
                time.sleep(0.3)
        name = listed[0]["name"]
        rss_before = peak_rss_mib(server.pid)

        ids = list(range(1, listed[0]["items"] + 1))
        queries = sorted((work / "demo" / "queries").rglob("*.npy"))
        rng = random.Random(args.seed)
        kinds = [kind for kind, share in MIX for _ in range(share)]
        plan = [(rng.choice(kinds), rng.choice(ids), rng.choice(queries))
                for _ in range(requests)]
        latencies: dict[str, list[float]] = {kind: [] for kind, _ in MIX}
        errors: list[str] = []
        lock = threading.Lock()
        cursor = iter(plan)

        def client_thread() -> None:
            with httpx.Client(base_url=url, timeout=120) as client:
                while True:
                    with lock:
                        step = next(cursor, None)
                    if step is None:
                        return
                    kind, item_id, query = step
                    started = time.perf_counter()
                    try:
                        if kind == "search":
                            answer = client.get("/api/search", params={"q": f"#{item_id}"})
                        elif kind == "each":
                            answer = client.get("/api/search", params={
                                "q": f"#{item_id}", "each": "1", "n": "5"})
                        elif kind == "upload":
                            answer = client.post(
                                "/api/search", data={"file_modality": query.parts[-3]},
                                files={"file": (query.name, query.read_bytes())},
                                headers={"Origin": url})
                        elif kind == "preview":
                            answer = client.get(f"/api/items/{name}/{item_id}/preview")
                        elif kind == "file":
                            answer = client.get(f"/api/items/{name}/{item_id}/file")
                        else:
                            answer = client.get("/api/collections")
                        ok = answer.status_code == 200
                        why = f"{kind} {item_id}: {answer.status_code} {answer.text[:200]}"
                    except httpx.HTTPError as exc:
                        ok, why = False, f"{kind} {item_id}: {type(exc).__name__}: {exc}"
                    elapsed = (time.perf_counter() - started) * 1000
                    with lock:
                        latencies[kind].append(elapsed)
                        if not ok:
                            errors.append(why)

        load = os.getloadavg()[0]
        started = time.perf_counter()
        threads = [threading.Thread(target=client_thread) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        rss_peak = peak_rss_mib(server.pid)

        everything = [ms for values in latencies.values() for ms in values]
        by_kind = {kind: {"n": len(values),
                          "p50_ms": round(statistics.median(values), 1) if values else None,
                          "p99_ms": round(percentile(values, 99), 1) if values else None}
                   for kind, values in latencies.items()}
        result = {
            "bench": "serve", "requests": requests, "concurrency": concurrency,
            "items": listed[0]["items"], "errors": len(errors),
            "p50_ms": round(statistics.median(everything), 1),
            "p99_ms": round(percentile(everything, 99), 1),
            "requests_per_s": round(requests / seconds, 1), "seconds": round(seconds, 1),
            "server_rss_mib_before": round(rss_before, 1) if rss_before else None,
            "server_peak_rss_mib": round(rss_peak, 1) if rss_peak else None,
            "max_rss_mib": args.max_rss_mib, "load_average_1m": round(load, 1),
            "cpus": os.cpu_count(), "by_kind": by_kind,
        }
        print(f"{requests} requests, {concurrency} at a time, in {seconds:.1f} s "
              f"({result['requests_per_s']} /s; load average {load:.1f} on {os.cpu_count()} "
              f"CPUs): p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
              f"{len(errors)} errors")
        for kind, row in by_kind.items():
            print(f"  {kind:12s} n={row['n']:5d}  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms")
        print(f"server resident memory: {result['server_rss_mib_before']} MiB before the "
              f"load, peak {result['server_peak_rss_mib']} MiB (bound {args.max_rss_mib:g})")
        for why in errors[:5]:
            print(f"  error: {why}")
        print(json.dumps(result))
        failed = errors or (rss_peak is not None and rss_peak > args.max_rss_mib)
        if failed:
            sys.exit(1)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
