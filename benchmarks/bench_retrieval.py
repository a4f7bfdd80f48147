"""Pseudo-pair retrieval (``mcrx.methods.retrieval.soft_retrieve``): achieved FLOP/s ÷ ``torch.mm``
FLOP/s, and peak RSS against the size of the memories.

    python benchmarks/bench_retrieval.py            # 100k queries × 100k memory × 512-d
    python benchmarks/bench_retrieval.py --quick    # 16k × 16k (under a minute)
    python benchmarks/bench_retrieval.py --device cuda --precision fp16   # on a GPU

``--device`` / ``--precision`` (fp32, tf32, fp16) place the work AND the ``torch.mm``
yardstick: same device, same input dtype, same run. On a GPU the memory is moved to the
device once (in float16 for fp16, as a run with ``memory_dtype: float16`` does), timings
wait for the device, and peak GPU memory (``torch.cuda.max_memory_allocated``) is reported.

Useful FLOPs counted: 2·Q·M·d for the similarities + 2·Q·M·d_v for the weighted sum
(d_v = d: the memory is its own value). The exp / max / sum passes are not counted.

How: the memory and the queries are written to disk as mcrx memories (``MemoryWriter``,
float32 shards); every measurement runs in a FRESH subprocess that opens them with
``Memory``, applies ``retain_freed_memory()`` as ``Method.build`` does, measures the
``torch.mm`` yardstick (4096² @ 4096²), runs ``soft_retrieve``, records
``ru_maxrss``, then measures the yardstick again. Ratio = retrieval GFLOP/s ÷ mean of the
before/after yardstick medians.

The (query_block, memory_block) sweep runs on a subset of the queries against the WHOLE
memory (same tiles, same per-tile cost, shorter), in ONE subprocess, round-robin: chunk 1
of every setting, then chunk 2 of every setting, …, each chunk (one ``soft_retrieve`` call
on a slice of the queries) followed by one ``torch.mm`` probe, so that every setting sees
the same load from other jobs; a setting's ratio is its GFLOP/s ÷ the median probe. The
best setting is then run on all queries (one call, bracketed yardstick, peak RSS). One more
subprocess repeats the default blocks WITHOUT ``retain_freed_memory`` (what a direct caller
of ``soft_retrieve`` gets; ``Method.build`` applies it).

Peak RSS: ``ru_maxrss`` of the measuring subprocess, and its VmHWM alongside. Linux starts
a child's ``ru_maxrss`` at its parent's peak, so the memories are written by yet another
subprocess and the parent stays lean (torch imported, nothing else).

Targets: ratio ≥ 0.70; peak RSS − (memory + query bytes) ≤ memories on disk + 2 GiB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_RATIO = 0.70


def write_memories(root: Path, queries: int, memory: int, dim: int, seed: int) -> dict:
    """Clustered L2-normalised memory rows and queries near the same centres, as mcrx
    memories (float32 shards of 65,536 rows)."""
    import torch

    from mcrx.store.memory import MemoryWriter

    generator = torch.Generator().manual_seed(seed)
    chunk = 16384
    mem_writer = MemoryWriter(root / "memory", {"key": "bench-memory"}, dim)
    q_writer = MemoryWriter(root / "queries", {"key": "bench-queries"}, dim)
    centers = torch.nn.functional.normalize(
        torch.randn(max(1, memory // 32), dim, generator=generator), dim=-1)
    for start in range(0, memory, chunk):
        rows, _ = C.clustered_rows(min(chunk, memory - start), dim, generator, centers=centers)
        mem_writer.append(rows.numpy())
    for start in range(0, queries, chunk):
        rows, _ = C.clustered_rows(min(chunk, queries - start), dim, generator, centers=centers)
        q_writer.append(rows.numpy())
    mem_writer.close()
    q_writer.close()
    disk = sum(p.stat().st_size for p in root.rglob("shard-*.npy"))
    return {"disk_bytes": disk}


def implementation(spec: str | None):
    """``mcrx.methods.retrieval.soft_retrieve``, or the ``module:function`` of ``--impl``."""
    import importlib

    module, _, name = (spec or "mcrx.methods.retrieval:soft_retrieve").partition(":")
    return getattr(importlib.import_module(module), name)


def placed(args: argparse.Namespace):
    """(device, retrieval keyword arguments, function moving a memory to the device)."""
    import torch

    device = C.device_of(args.device)
    options = ({} if device.type == "cpu" and args.precision == "fp32"
               else {"precision": args.precision, "device": device})
    half = args.precision == "fp16" and device.type != "cpu"

    def place(rows: torch.Tensor) -> torch.Tensor:
        return rows.to(device, torch.float16 if half else torch.float32)

    return device, options, place


def retrieve_synced(soft_retrieve, wait_on, *args, **kwargs):
    """``soft_retrieve(*args, **kwargs)``, returning once ``wait_on``'s kernels are done."""
    out = soft_retrieve(*args, **kwargs)
    C.sync(wait_on)
    return out


def child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process (the parent passes ``--child``)."""
    import torch

    from mcrx.store.memory import Memory
    from mcrx.tuning import retain_freed_memory

    soft_retrieve = implementation(args.impl)
    device, options, place = placed(args)
    retained = retain_freed_memory() if args.retain else False
    rss_after_import = C.peak_rss_bytes()
    before = C.mm_yardstick(seconds=args.mm_seconds, device=device, precision=args.precision)

    (keys, queries), load_s = C.timed(
        lambda: (place(Memory(args.dir / "memory").tensor()),
                 place(Memory(args.dir / "queries").tensor()))
    )
    queries = queries[: args.queries]
    data_bytes = keys.numel() * keys.element_size() + queries.numel() * queries.element_size()
    status_loaded = C.proc_status()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    (out,), seconds = C.timed(
        retrieve_synced, soft_retrieve, device, queries, keys, None, 0.01,
        query_block=args.query_block, memory_block=args.memory_block, **options,
    )
    peak = C.peak_rss_bytes()
    status_peak = C.proc_status()  # VmHWM: this process's own peak (see C.peak_rss_bytes)
    gpu_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    after = C.mm_yardstick(seconds=args.mm_seconds, device=device, precision=args.precision)

    q, m, d = queries.shape[0], keys.shape[0], keys.shape[1]
    flops = 2 * q * m * d + 2 * q * m * d
    gflops = flops / seconds / 1e9
    yard = C.yardstick_pair(before, after)

    # exactness on a few rows against a float64 dense reference (after the RSS reading)
    check = min(256, q)
    keys64 = keys.cpu().double()
    q64 = torch.nn.functional.normalize(queries[:check].cpu().double(), dim=-1)
    reference = torch.softmax(q64 @ keys64.T / 0.01, dim=1) @ keys64
    reference = torch.nn.functional.normalize(reference, dim=-1)
    max_abs_diff = float((out[:check].cpu().double() - reference).abs().max())
    one_minus_cos = 1 - (out[:check].cpu().double() * reference).sum(dim=1)

    print(f"Q={q:,} M={m:,} d={d} blocks=({args.query_block}, {args.memory_block}) "
          f"{device} {args.precision} retain={retained}: {seconds:.2f} s, {gflops:.1f} "
          f"GFLOP/s; mm before "
          f"{before['median_gflops']:.1f} after {after['median_gflops']:.1f} → ratio "
          f"{gflops / yard:.3f}; peak RSS {C.gib(peak)} GiB; max|Δ| vs fp64 {max_abs_diff:.1e}")
    C.emit({
        "query_block": args.query_block, "memory_block": args.memory_block,
        "retain_freed_memory": retained, "queries": q, "memory": m, "dim": d,
        "seconds": round(seconds, 3), "load_seconds": round(load_s, 3), "flops": flops,
        "gflops": round(gflops, 2), "mm_before": before, "mm_after": after,
        "mm_gflops": round(yard, 2), "ratio_to_mm": round(gflops / yard, 4),
        "peak_rss_bytes": peak, "rss_after_import_bytes": rss_after_import,
        "data_bytes": data_bytes, "status_loaded": status_loaded, "status_peak": status_peak,
        "max_abs_diff_vs_fp64": max_abs_diff, "threads": torch.get_num_threads(),
        "mean_one_minus_cos_vs_fp64": float(one_minus_cos.mean()),
        "device": str(device), "precision": args.precision, "gpu_peak_bytes": gpu_peak,
    })


def sweep_child(args: argparse.Namespace) -> None:
    """Round-robin over block settings in one process, an mm probe after every chunk."""
    import torch

    from mcrx.store.memory import Memory
    from mcrx.tuning import retain_freed_memory

    soft_retrieve = implementation(args.impl)
    device, options, place = placed(args)
    retain_freed_memory()
    settings = [tuple(int(x) for x in b.split("x")) for b in args.sweep.split(",")]
    keys = place(Memory(args.dir / "memory").tensor())
    queries = place(Memory(args.dir / "queries").tensor())[: args.queries]
    chunk = max(qb for qb, _ in settings)  # every chunk is whole query blocks for all
    probe = C.Probe(device=device, precision=args.precision)
    spent = {s: 0.0 for s in settings}
    flops = {s: 0 for s in settings}
    m, d = keys.shape
    for start in range(0, queries.shape[0], chunk):
        part = queries[start : start + chunk]
        for qb, mb in settings:
            _, seconds = C.timed(retrieve_synced, soft_retrieve, device, part, keys, None,
                                 0.01, query_block=qb, memory_block=mb, **options)
            spent[qb, mb] += seconds
            flops[qb, mb] += 4 * part.shape[0] * m * d
            rate = probe()
            print(f"chunk {start // chunk}: ({qb}, {mb}) {seconds:.2f} s "
                  f"{4 * part.shape[0] * m * d / seconds / 1e9:.1f} GFLOP/s; mm probe "
                  f"{rate:.1f}", flush=True)
    yard = probe.summary()
    rows = []
    for qb, mb in settings:
        gflops = flops[qb, mb] / spent[qb, mb] / 1e9
        rows.append({
            "query_block": qb, "memory_block": mb, "retain_freed_memory": True,
            "queries": queries.shape[0], "seconds": round(spent[qb, mb], 3),
            "gflops": round(gflops, 2), "mm_gflops": yard["median_gflops"],
            "ratio_to_mm": round(gflops / yard["median_gflops"], 4), "peak_rss_bytes": None,
        })
    C.emit({"sweep": rows, "probes": yard, "threads": torch.get_num_threads(),
            "device": str(device), "precision": args.precision})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16k × 16k, under a minute")
    parser.add_argument("--queries", type=int)
    parser.add_argument("--memory", type=int)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sweep-queries", type=int, help="queries per sweep run")
    parser.add_argument("--blocks", help="sweep settings, e.g. 4096x16384,2048x8192")
    parser.add_argument("--mm-seconds", type=float)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the memories on disk")
    parser.add_argument("--impl", help="benchmark another implementation with soft_retrieve's "
                        "signature instead, as module:function (e.g. a candidate patch)")
    C.add_device_arguments(parser, precisions=("fp32", "tf32", "fp16"))
    # child mode (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--query-block", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-block", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-retain", dest="retain", action="store_false",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return sweep_child(args) if args.sweep else child(args)
    if args.write:
        return C.emit(write_memories(args.dir, args.queries, args.memory, args.dim, seed=0))

    quick = args.quick
    queries = args.queries or (16384 if quick else 100_000)
    memory = args.memory or (16384 if quick else 100_000)
    sweep_queries = min(queries, args.sweep_queries or 8192)
    mm_seconds = args.mm_seconds or (1.0 if quick else 3.0)
    default_blocks = "4096x16384,4096x4096,1024x4096" if quick else (
        "4096x16384,2048x8192,1024x4096,4096x4096,1024x16384")
    blocks = [tuple(int(x) for x in b.split("x"))
              for b in (args.blocks or default_blocks).split(",")]

    info = C.machine()
    print(f"bench_retrieval: {queries:,} queries × {memory:,} memory × {args.dim}-d on "
          f"{args.device}, {args.precision} inputs (mm yardstick the same), "
          f"{info['torch_threads']} torch threads; {info['uptime']}", flush=True)
    work = args.dir or Path(tempfile.mkdtemp(prefix="mcrx-bench-retrieval-"))
    try:
        began = time.perf_counter()
        # in a subprocess: a child's ru_maxrss starts at its parent's peak, keep this one lean
        written = C.run_child([__file__, "--write", "--dir", str(work), "--queries", str(queries),
                               "--memory", str(memory), "--dim", str(args.dim)])
        print(f"wrote memories ({C.gib(written['disk_bytes'])} GiB on disk) in "
              f"{time.perf_counter() - began:.1f} s", flush=True)

        base = [__file__, "--child", "--dir", str(work), "--mm-seconds", str(mm_seconds),
                "--device", args.device, "--precision", args.precision]
        if args.impl:
            base += ["--impl", args.impl]
        print(f"sweep on {sweep_queries:,} queries × {memory:,} memory, round-robin:",
              flush=True)
        sweep = C.run_child(base + ["--queries", str(sweep_queries), "--sweep",
                                    ",".join(f"{qb}x{mb}" for qb, mb in blocks)])["sweep"]
        qb0, mb0 = blocks[0]
        no_retain = C.run_child(base + ["--queries", str(sweep_queries), "--query-block",
                                        str(qb0), "--memory-block", str(mb0), "--no-retain"])
        best = max(sweep, key=lambda r: r["ratio_to_mm"])
        print(f"best blocks: ({best['query_block']}, {best['memory_block']}); full run on "
              f"{queries:,} queries:", flush=True)
        full = C.run_child(base + ["--queries", str(queries), "--query-block",
                                   str(best["query_block"]), "--memory-block",
                                   str(best["memory_block"])])
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    overhead = full["peak_rss_bytes"] - full["data_bytes"]
    work_rss = full["peak_rss_bytes"] - full["status_loaded"].get("VmRSS", 0)
    rss_budget = written["disk_bytes"] + 2 * C.GIB
    print()
    print("setting (qb × mb)      GFLOP/s   mm GFLOP/s   ratio   peak RSS GiB")
    for r in sweep + [no_retain]:
        tag = "" if r["retain_freed_memory"] else "  (no retain_freed_memory)"
        print(f"{r['query_block']:>6} × {r['memory_block']:<8}   {r['gflops']:>8.1f}   "
              f"{r['mm_gflops']:>10.1f}   {r['ratio_to_mm']:.3f}   "
              f"{C.gib(r['peak_rss_bytes'] or 0) or '-':>6}{tag}")
    print(f"FULL {queries:,}×{memory:,}: {full['seconds']:.1f} s, {full['gflops']:.1f} GFLOP/s, "
          f"mm {full['mm_gflops']:.1f} → ratio {full['ratio_to_mm']:.3f} "
          f"(target ≥ {TARGET_RATIO})")
    print(f"peak RSS (ru_maxrss) {C.gib(full['peak_rss_bytes'])} GiB (VmHWM "
          f"{C.gib(full['status_peak'].get('VmHWM', 0))} GiB) − memory+queries "
          f"{C.gib(full['data_bytes'])} GiB = {C.gib(overhead)} GiB "
          f"(target ≤ disk {C.gib(written['disk_bytes'])} + 2 GiB = {C.gib(rss_budget)} GiB); "
          f"RSS after importing torch {C.gib(full['rss_after_import_bytes'])} GiB; "
          f"soft_retrieve's own peak (peak − RSS with the data loaded) {C.gib(work_rss)} GiB")
    C.emit({
        "benchmark": "retrieval", "quick": quick, **info, "device": full["device"],
        "precision": args.precision, "gpu_peak_gib": C.gib(full["gpu_peak_bytes"] or 0),
        "mean_one_minus_cos_vs_fp64": full["mean_one_minus_cos_vs_fp64"],
        "implementation": args.impl or "mcrx.methods.retrieval:soft_retrieve",
        "queries": queries, "memory": memory, "dim": args.dim,
        "best_query_block": full["query_block"], "best_memory_block": full["memory_block"],
        "seconds": full["seconds"], "gflops": full["gflops"], "mm_gflops": full["mm_gflops"],
        "ratio_to_mm": full["ratio_to_mm"], "target_ratio": TARGET_RATIO,
        "ratio_ok": full["ratio_to_mm"] >= TARGET_RATIO,
        "peak_rss_gib": C.gib(full["peak_rss_bytes"]),
        "peak_vmhwm_gib": C.gib(full["status_peak"].get("VmHWM", 0)),
        "data_gib": C.gib(full["data_bytes"]), "disk_gib": C.gib(written["disk_bytes"]),
        "rss_overhead_gib": C.gib(overhead), "rss_budget_gib": C.gib(rss_budget),
        "rss_ok": overhead <= rss_budget, "rss_after_import_gib":
        C.gib(full["rss_after_import_bytes"]), "retrieval_work_rss_gib": C.gib(work_rss),
        "max_abs_diff_vs_fp64": full["max_abs_diff_vs_fp64"],
        "sweep": [{k: r[k] for k in ("query_block", "memory_block", "retain_freed_memory",
                                     "queries", "seconds", "gflops", "mm_gflops",
                                     "ratio_to_mm", "peak_rss_bytes")}
                  for r in sweep + [no_retain]],
        "full": full,
    })


if __name__ == "__main__":
    sys.exit(main())
