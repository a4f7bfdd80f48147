"""ann retrieval (a faiss index, exact softmax over the k found) against exact retrieval.

    python benchmarks/bench_ann.py            # 1M queries × 1M memory rows × 512-d, HNSW
    python benchmarks/bench_ann.py --quick    # 100k × 100k × 512
    python benchmarks/bench_ann.py --index ivf-flat --nprobe 128   # the IVF alternative

One clustered memory (``_common.clustered_rows``, like a real collection's embeddings) and
queries drawn around the same centres. Both methods cost time linear in the number of
queries, so each is timed on a sample of queries and scaled to the full count: exact
``soft_retrieve`` on ``--exact-sample`` queries (1M × 1M exactly would take hours on this
machine), ann on ``--ann-sample`` queries plus the WHOLE index build (the HNSW graph over
every row; for IVF the k-means training and adding every row), paid once per memory.
Quality: cosine between the ann and exact rows on the exact sample (mean and minimum), as
``mcrx extend`` reports it.

Targets (issue 9): speed-up ≥ 10× at 1M × 1M × 512 with mean cosine ≥ 0.99. A torch.mm
yardstick runs before and after, for the load.
"""

from __future__ import annotations

import argparse
import time

import _common as C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, help="memory rows (1M; --quick 100k)")
    parser.add_argument("--queries", type=int, help="queries (default: as many as rows)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--index", choices=["hnsw", "ivf-flat"], default="hnsw")
    parser.add_argument("--k", type=int, default=64, help="rows kept per query")
    parser.add_argument("--ef-search", type=int, default=64, help="HNSW beam (raised to k)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--nlist", type=int, help="IVF lists (mcrx's default rule if unset)")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--exact-sample", type=int, default=2048)
    parser.add_argument("--ann-sample", type=int, default=65536)
    args = parser.parse_args()

    import torch

    from mcrx.methods.ann import AnnRetriever, AnnSettings
    from mcrx.methods.retrieval import soft_retrieve
    from mcrx.tuning import retain_freed_memory

    rows = args.rows or (100_000 if args.quick else 1_000_000)
    queries = args.queries or rows
    generator = torch.Generator().manual_seed(0)
    # generated block by block: one clustered_rows call at 1M × 512 holds three 2 GiB
    # temporaries (centres, noise, result), enough for the OOM killer on a shared 24 GiB
    _, centres = C.clustered_rows(1, args.dim, generator, clusters=max(1, rows // 32))
    memory = torch.empty(rows, args.dim)
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        memory[start:stop] = C.clustered_rows(stop - start, args.dim, generator,
                                              centers=centres)[0]
    sample, _ = C.clustered_rows(max(args.exact_sample, args.ann_sample), args.dim, generator,
                                 centers=centres)
    retain_freed_memory()  # as Method.build does, after the data exist
    before = C.mm_yardstick()
    print(f"memory {rows:,} × {args.dim}, {queries:,} queries; torch.mm "
          f"{before['median_gflops']} GFLOP/s", flush=True)

    exact_rows = sample[: args.exact_sample]
    began = time.perf_counter()
    (exact,) = soft_retrieve(exact_rows, memory, None, 0.01)
    exact_per_query = (time.perf_counter() - began) / len(exact_rows)
    print(f"exact: {exact_per_query * 1e3:.3f} ms a query ({len(exact_rows):,} timed)",
          flush=True)

    settings = AnnSettings(index=args.index, k=args.k, nlist=args.nlist, nprobe=args.nprobe,
                           hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                           ef_search=args.ef_search)
    retriever = AnnRetriever(settings)
    began = time.perf_counter()
    retriever.index_for(memory)
    build = time.perf_counter() - began
    ann_rows = sample[: args.ann_sample]
    began = time.perf_counter()
    retriever(ann_rows, memory, None, 0.01)
    ann_per_query = (time.perf_counter() - began) / len(ann_rows)
    (approx,) = retriever(exact_rows, memory, None, 0.01)
    cosine = (approx * exact).sum(dim=1)
    after = C.mm_yardstick()
    shape = (f"M {args.hnsw_m}, ef_construction {args.ef_construction}, ef_search "
             f"{max(args.ef_search, args.k)}" if args.index == "hnsw" else
             f"nlist {settings.lists_for(rows)}, nprobe {args.nprobe}")
    print(f"ann: {args.index} index built in {build:.1f} s ({shape}), "
          f"{ann_per_query * 1e3:.3f} ms a query ({len(ann_rows):,} timed)")

    exact_total = exact_per_query * queries
    ann_total = build + ann_per_query * queries
    speedup = exact_total / ann_total
    result = {
        "benchmark": "ann", "rows": rows, "queries": queries, "dim": args.dim, "k": args.k,
        "index": args.index, **({"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                                 "ef_search": max(args.ef_search, args.k)}
                                if args.index == "hnsw" else
                                {"nlist": settings.lists_for(rows), "nprobe": args.nprobe}),
        "exact_seconds_estimated": round(exact_total, 1),
        "exact_ms_per_query": round(exact_per_query * 1e3, 4),
        "ann_build_seconds": round(build, 2), "ann_ms_per_query": round(ann_per_query * 1e3, 4),
        "ann_seconds_estimated": round(ann_total, 1), "speedup": round(speedup, 2),
        "mean_cosine": round(float(cosine.mean()), 5),
        "min_cosine": round(float(cosine.min()), 5),
        "exact_sample": len(exact_rows), "ann_sample": len(ann_rows),
        "mm_before": before, "mm_after": after,
        "pass": bool(speedup >= 10 and float(cosine.mean()) >= 0.99), **C.machine(),
    }
    print(f"→ speed-up {speedup:.1f}× (exact ≈ {exact_total:,.0f} s, ann ≈ {ann_total:,.0f} s "
          f"for {queries:,} queries); cosine to exact mean {cosine.mean():.5f}, min "
          f"{cosine.min():.5f}")
    C.emit(result)


if __name__ == "__main__":
    main()
