"""Pseudo-pair retrieval time against memory size: is the cost per memory row constant?

    python benchmarks/bench_scaling.py            # 8,192 queries × 25k, 50k, 100k, 200k rows
    python benchmarks/bench_scaling.py --quick    # 2,048 queries × 8k, 16k, 32k, 64k rows

``soft_retrieve`` (default blocks, ``retain_freed_memory()`` applied as
``Method.build`` does), 512-d float32, the same queries against the first M rows of
one clustered memory. A ``torch.mm`` probe (4096²) runs right before and after every size;
besides the raw time, each size's time is also given in "mm-seconds" (seconds × the probes'
GFLOP/s: the work an unloaded mm would do meanwhile), which cancels most of the drift in load
from other jobs.

Linearity: per-row cost c(M) = t(M) / M; the reference is the least-squares line through the
origin (t ≈ b·M); deviation(M) = t(M) / (b·M) − 1. Reported for raw and load-corrected
times, with the intercept of a free fit t ≈ a + b·M. Target: max |deviation| ≤ 15%.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import _common as C

TARGET_DEVIATION = 0.15


def linearity(sizes: list[int], times: list[float]) -> dict:
    slope0 = sum(t * m for t, m in zip(times, sizes, strict=True)) / sum(m * m for m in sizes)
    deviations = [t / (slope0 * m) - 1 for t, m in zip(times, sizes, strict=True)]
    n, mean_m, mean_t = len(sizes), statistics.fmean(sizes), statistics.fmean(times)
    pairs = list(zip(sizes, times, strict=True))
    slope = sum((m - mean_m) * (t - mean_t) for m, t in pairs) / max(
        1e-30, sum((m - mean_m) ** 2 for m in sizes))
    return {"per_row_cost_fit": slope0, "deviations": [round(d, 4) for d in deviations],
            "max_abs_deviation": round(max(abs(d) for d in deviations), 4),
            "free_fit_intercept": mean_t - slope * mean_m, "free_fit_slope": slope,
            "points": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--queries", type=int)
    parser.add_argument("--sizes", help="memory rows, e.g. 25000,50000,100000,200000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes over the sizes (ascending, then descending, …)")
    args = parser.parse_args()

    import torch

    from mcrx.methods.retrieval import soft_retrieve
    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()
    queries = args.queries or (2048 if args.quick else 8192)
    sizes = [int(x) for x in (args.sizes or ("8000,16000,32000,64000" if args.quick else
                                             "25000,50000,100000,200000")).split(",")]
    info = C.machine()
    print(f"bench_scaling: {queries:,} queries × {sizes} memory rows × {args.dim}-d float32, "
          f"{info['torch_threads']} threads; {info['uptime']}", flush=True)
    g = torch.Generator().manual_seed(0)
    memory, centers = C.clustered_rows(max(sizes), args.dim, g)
    q, _ = C.clustered_rows(queries, args.dim, g, centers=centers)
    probe = C.Probe()
    soft_retrieve(q[:256], memory[: min(sizes)], None, 0.01)  # warm-up

    runs: dict[int, list[tuple[float, float]]] = {m: [] for m in sizes}
    for r in range(args.repeats):
        for m in sizes if r % 2 == 0 else sizes[::-1]:
            before = probe()
            _, seconds = C.timed(soft_retrieve, q, memory[:m], None, 0.01)
            after = probe()
            yard = (before + after) / 2
            runs[m].append((seconds, yard))
            flops = 4 * queries * m * args.dim
            print(f"M={m:>8,}: {seconds:7.2f} s  {seconds / m * 1e6:7.2f} µs/row  "
                  f"{flops / seconds / 1e9:6.1f} GFLOP/s  mm probes {before:.1f}/{after:.1f} → "
                  f"ratio {flops / seconds / 1e9 / yard:.3f}", flush=True)

    times = [statistics.fmean(s for s, _ in runs[m]) for m in sizes]
    mm_seconds = [statistics.fmean(s * y for s, y in runs[m]) for m in sizes]
    raw, corrected = linearity(sizes, times), linearity(sizes, mm_seconds)
    print()
    print("memory rows   seconds   µs/row   deviation   load-corrected deviation")
    for i, m in enumerate(sizes):
        print(f"{m:>11,}   {times[i]:7.2f}   {times[i] / m * 1e6:6.2f}   "
              f"{raw['deviations'][i]:+8.1%}   {corrected['deviations'][i]:+8.1%}")
    print(f"max |deviation| from linear: {raw['max_abs_deviation']:.1%} raw, "
          f"{corrected['max_abs_deviation']:.1%} load-corrected (target ≤ "
          f"{TARGET_DEVIATION:.0%}); free-fit intercept {raw['free_fit_intercept']:.2f} s")
    C.emit({
        "benchmark": "scaling", "quick": args.quick, **info, "queries": queries,
        "dim": args.dim, "sizes": sizes, "seconds": [round(t, 3) for t in times],
        "us_per_row": [round(t / m * 1e6, 3) for t, m in zip(times, sizes, strict=True)],
        "mm_gflops": [round(statistics.fmean(y for _, y in runs[m]), 2) for m in sizes],
        "deviations": raw["deviations"], "max_abs_deviation": raw["max_abs_deviation"],
        "deviations_load_corrected": corrected["deviations"],
        "max_abs_deviation_load_corrected": corrected["max_abs_deviation"],
        "free_fit_intercept_seconds": round(raw["free_fit_intercept"], 3),
        "target_deviation": TARGET_DEVIATION,
        "linear_ok": min(raw["max_abs_deviation"], corrected["max_abs_deviation"])
        <= TARGET_DEVIATION, "repeats": args.repeats, "mm_probes": probe.summary(),
    })


if __name__ == "__main__":
    sys.exit(main())
