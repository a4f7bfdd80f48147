"""Search latency of a collection's faiss indexes: exact (IndexFlatIP) against IVF.

    python benchmarks/bench_search.py            # 100k and 1M items × 512-d
    python benchmarks/bench_search.py --quick    # 100k items × 512-d

For each size N, the same L2-normalised rows (clustered like embeddings of a real
collection: 32 rows a cluster around random centres, queries drawn around the same centres,
never in the index) are indexed twice with ``mcrx.search.index.build_index``: exact,
and IVF with mcrx's defaults (~4·√N lists, trained on 40 rows a list). Queries run one at a
time (k = 10), as a user's search does; we report p50/p95 latency, the ratio IVF/exact
measured in the same run, and the IVF's recall@10 against the exact results, at mcrx's
default ``nprobe`` and over a sweep of ``nprobe``. The collection's own overhead (SQLite
metadata of the 10 hits, the version check) is timed at the first size with a real
``Collection`` (its items inserted directly: no model is needed to time a search).

A ``torch.mm`` yardstick (4096²) runs before and after each size, as in the other
benchmarks: latencies on this shared 2-core machine move with its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

K = 10


def clustered(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, dim), queries (q, dim)), float32, L2-normalised, built in chunks (1M × 512
    floats is 2 GiB: the temporaries of one big draw would double it)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 32), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            rows = centres[rng.integers(0, len(centres), stop - start)]
            rows = rows + rng.standard_normal(rows.shape, dtype=np.float32) / np.sqrt(dim)
            out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return out

    return draw(n), draw(queries)


def latencies(index, queries: np.ndarray, params=None) -> tuple[list[float], np.ndarray]:
    """Milliseconds of each one-query search, and the ids found (q, K)."""
    index.search(queries[:1], K, params=params)  # warm-up
    times, found = [], np.empty((len(queries), K), dtype=np.int64)
    for row, query in enumerate(queries):
        began = time.perf_counter()
        _, ids = index.search(query[None, :], K, params=params)
        times.append((time.perf_counter() - began) * 1000)
        found[row] = ids[0]
    return times, found


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "mean_ms": round(statistics.fmean(ordered), 3)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def collection_overhead(vectors: np.ndarray, queries: np.ndarray, work: Path) -> dict:
    """search_vector of a real Collection (faiss + version check + SQLite rows of the hits)
    against the bare index, same vectors."""
    from mcrx.search import Collection
    from mcrx.search.files import FileStat

    model = work / "model"
    model.mkdir()
    # a valid manifest (one leaf, no weights read): enough to pin a collection (its
    # fingerprint) and give its dimension; nothing is embedded here
    from mcrx.methods.common import ConnectorSpec
    from mcrx.store.artifact import build_manifest

    dim = int(vectors.shape[1])
    spaces = {"bench/base": {"plugin": "bench", "params": {}, "dim": dim,
                             "modalities": ["image", "text"]},
              "bench/leaf": {"plugin": "bench", "params": {}, "dim": dim,
                             "modalities": ["audio", "text"]}}
    spec = ConnectorSpec(dim, dim, "text", "audio", "image", ["audio", "text"],
                         ["image", "text"])
    leaves = [{"space": "bench/leaf", "parent": "bench/base", "bridge": "text",
               "modality": "audio", "parent_modality": "image",
               "connector": {"name": "mcrx/ex-mcr", "params": {}, "spec": spec.as_dict()}}]
    (model / "manifest.json").write_text(json.dumps(build_manifest(
        name="bench", method="ex-mcr", base="bench/base", target="parent", dim=dim,
        spaces=spaces, leaves=leaves)))
    (model / "connectors").mkdir()
    (model / "connectors" / "bench--leaf.safetensors").write_bytes(b"fingerprinted only")
    collection = Collection(work / "bench.mcrx", model=model)
    stat = FileStat(0, 0)
    store = collection.store  # a bulk insert of rows: nothing here is a real file
    with store.transaction() as db:
        for i, vector in enumerate(vectors):
            store.upsert(db, Path(f"/bench/{i:07d}.png"), "image", stat, f"{i:064x}", None,
                         vector.tobytes())
        store.bump(db, {"image"})
    collection.refresh_indexes(write=True)
    collection.search_vector(queries[0], K)  # warm-up
    times = []
    for query in queries:
        began = time.perf_counter()
        collection.search_vector(query, K)
        times.append((time.perf_counter() - began) * 1000)
    collection.close()
    return summary(times)


def bench_size(n: int, dim: int, queries_count: int, sweep: list[int], work: Path,
               with_collection: bool) -> dict:
    import faiss

    from mcrx.search.index import build_index, default_nprobe, ivf_lists

    print(f"\n== {n:,} items × {dim}-d, {queries_count} one-query searches (k = {K})", flush=True)
    before = C.mm_yardstick()
    vectors, queries = clustered(n, dim, queries_count)
    ids = np.arange(n, dtype=np.int64)

    exact, built = C.timed(build_index, vectors, ids, "flat")
    exact_times, truth = latencies(exact, queries)
    exact_summary = {**summary(exact_times), "build_s": round(built, 2)}
    print(f"exact   p50 {exact_summary['p50_ms']:8.3f} ms  p95 {exact_summary['p95_ms']:8.3f} ms"
          f"  (build {built:.1f} s)", flush=True)
    del exact

    nlist = ivf_lists(n)
    ivf, built = C.timed(build_index, vectors, ids, "ivf")
    default = default_nprobe(nlist)
    ivf_times, found = latencies(ivf, queries)
    ivf_summary = {**summary(ivf_times), "build_s": round(built, 2), "nlist": nlist,
                   "nprobe": default, "recall_at_10": round(recall(found, truth), 4)}
    ratio = ivf_summary["p50_ms"] / exact_summary["p50_ms"]
    print(f"ivf     p50 {ivf_summary['p50_ms']:8.3f} ms  p95 {ivf_summary['p95_ms']:8.3f} ms"
          f"  recall@10 {ivf_summary['recall_at_10']:.3f}  (nlist {nlist}, nprobe {default}, "
          f"build {built:.1f} s)  ivf/exact {ratio:.3f}", flush=True)
    swept = []
    for nprobe in sorted({p for p in sweep if p <= nlist} | {default}):
        times, found = latencies(ivf, queries, faiss.SearchParametersIVF(nprobe=nprobe))
        row = {"nprobe": nprobe, **summary(times), "recall_at_10": round(recall(found, truth), 4)}
        row["ratio_to_exact"] = round(row["p50_ms"] / exact_summary["p50_ms"], 4)
        swept.append(row)
        print(f"  nprobe {nprobe:5d}: p50 {row['p50_ms']:8.3f} ms  recall@10 "
              f"{row['recall_at_10']:.3f}  ivf/exact {row['ratio_to_exact']:.3f}", flush=True)
    del ivf

    result = {"n": n, "dim": dim, "queries": queries_count, "exact": exact_summary,
              "ivf": ivf_summary, "ivf_over_exact_p50": round(ratio, 4), "nprobe_sweep": swept}
    if with_collection:
        overhead = collection_overhead(vectors, queries, work)
        result["collection_exact"] = overhead
        print(f"Collection.search_vector (exact, with SQLite metadata): p50 "
              f"{overhead['p50_ms']:.3f} ms", flush=True)
    after = C.mm_yardstick()
    result["yardstick"] = {"before": before, "after": after,
                           "gflops": C.yardstick_pair(before, after)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k items only")
    parser.add_argument("--sizes", type=str, default=None,
                        help="comma-separated item counts (default 100000,1000000)")
    parser.add_argument("--dim", type=int, default=512, help="vector width (CLIP's: 512)")
    parser.add_argument("--queries", type=int, default=200, help="searches per index")
    parser.add_argument("--sweep", type=str, default="8,16,32,64,128,256",
                        help="nprobe values to sweep")
    args = parser.parse_args()
    import faiss

    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [100_000] if args.quick else [100_000, 1_000_000])
    sweep = [int(p) for p in args.sweep.split(",")]
    machine = {**C.machine(), "faiss": faiss.__version__,
               "faiss_threads": faiss.omp_get_max_threads()}
    print(f"machine: {machine}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as work:
        for number, n in enumerate(sizes):
            results.append(bench_size(n, args.dim, args.queries, sweep, Path(work),
                                      with_collection=number == 0))
    C.emit({"benchmark": "search", "quick": args.quick, "machine": machine,
            "results": results})


if __name__ == "__main__":
    main()
