"""mcrx's pseudo-pair retrieval against what a user would otherwise write, at equal output.

    python benchmarks/bench_online.py            # (a) 32,768 texts × 65,536-row memories
                                                 # (b) 8,192 queries × 65,536 rows
    python benchmarks/bench_online.py --quick    # (a) 8,192 × 16,384   (b) 4,096 × 16,384

(a) ONLINE vs ONCE. Third-party C-MCR reimplementations retrieve inside the training loop:
    for every batch of bridge queries (texts, batch 4096), a softmax over the WHOLE image
    memory (CLIP) and the whole audio memory (CLAP), every step of every epoch:
        ṽ = normalize(softmax(t^I_b·Vᵀ/τ1)·V),  ã = normalize(softmax(t^A_b·Aᵀ/τ1)·A)
    mcrx builds the same C-MCR pseudo pairs once (``mcrx.methods.cmcr.METHOD.build(…)``) and
    the aligner then reads them for 36 epochs. We time a few online batches (after one
    warm-up batch) and EXTRAPOLATE to the 36-epoch schedule (36 × ⌊Q/4096⌋ batches),
    time mcrx's one build, and check that the online batches equal mcrx's rows.
(b) DENSE vs STREAMED. ``normalize(torch.softmax(q @ M.T / τ, dim=1) @ M)`` (the Q×M matrix
    materialised) against ``soft_retrieve`` (tiles, running max): time ratio, peak RSS
    (VmHWM of a fresh subprocess, its peak mark reset right before the work, minus its
    RSS then: the memory the work itself needs; VmHWM rather than ``ru_maxrss``, which a
    child inherits from its parent's peak) and max |Δ|.
    The dense version also runs once with ``retain_freed_memory()`` to separate the effect
    of streaming from the effect of the allocator setting.

Every variant runs in its own subprocess with a ``torch.mm`` yardstick (4096²) right before
and after it. Because the variants run at different times on a shared machine, each time is
also given in "mm-seconds" (seconds × yardstick GFLOP/s, i.e. the work an unloaded mm would
do meanwhile) and the load-corrected ratio uses those. Target (a): ≥ 20× over 36 epochs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import _common as C

TARGET_SPEEDUP = 20.0
EPOCHS = 36
BATCH = 4096
TAU = 0.01


def make_data(work: Path, texts: int, memory: int, queries: int, dense_memory: int, dim: int):
    import torch

    g = torch.Generator().manual_seed(0)
    images, image_centers = C.clustered_rows(memory, dim, g)
    audios, audio_centers = C.clustered_rows(memory, dim, g)
    parent_bridge, _ = C.clustered_rows(texts, dim, g, centers=image_centers)
    leaf_bridge, _ = C.clustered_rows(texts, dim, g, centers=audio_centers)
    torch.save({"parent_bridge": parent_bridge, "leaf_bridge": leaf_bridge,
                "parent_y": images, "leaf_x": audios}, work / "cmcr.pt")
    dense_memory_rows, centers = C.clustered_rows(dense_memory, dim, g)
    dense_queries, _ = C.clustered_rows(queries, dim, g, centers=centers)
    torch.save({"queries": dense_queries, "memory": dense_memory_rows},
               work / "dense.pt")


def dense_retrieve(q, memory, tau=TAU):
    """What one writes without mcrx: the whole (B, M) softmax in memory."""
    import torch
    import torch.nn.functional as F

    return F.normalize(torch.softmax(q @ memory.T / tau, dim=1) @ memory, dim=-1)


def child(kind: str, work: Path, mm_seconds: float, measured_batches: int) -> None:
    import torch

    from mcrx.methods.cmcr import METHOD as CMCR
    from mcrx.methods.common import LeafMemories
    from mcrx.methods.retrieval import soft_retrieve
    from mcrx.tuning import retain_freed_memory

    if kind in ("dense_retain", "streamed"):
        retain_freed_memory()  # Method.build does this before retrieving
    data = torch.load(work / ("dense.pt" if kind in ("dense", "dense_retain", "streamed")
                              else "cmcr.pt"))
    before = C.mm_yardstick(seconds=mm_seconds)
    rss_before = C.reset_peak_rss()  # the work's peak is measured from here
    result: dict = {"kind": kind}
    if kind == "once":
        memories = LeafMemories(**{k: data[k] for k in ("leaf_x", "leaf_bridge",
                                                        "parent_bridge", "parent_y")})
        pairs, seconds = C.timed(CMCR.build, memories, TAU)
        torch.save({k: pairs[k] for k in ("parent_y", "leaf_x")}, work / "once_out.pt")
        result.update(seconds=seconds)
    elif kind == "online":
        texts = data["parent_bridge"].shape[0]
        times, outputs = [], {"parent_y": [], "leaf_x": []}
        for step in range(measured_batches + 1):  # batch 0 is a warm-up
            rows = slice(step * BATCH, (step + 1) * BATCH)
            (v, a), seconds = C.timed(lambda r=rows: (
                dense_retrieve(data["parent_bridge"][r], data["parent_y"]),
                dense_retrieve(data["leaf_bridge"][r], data["leaf_x"])))
            print(f"online batch {step}{' (warm-up)' if step == 0 else ''}: {seconds:.2f} s",
                  flush=True)
            if step:
                times.append(seconds)
            outputs["parent_y"].append(v)
            outputs["leaf_x"].append(a)
        torch.save({k: torch.cat(v) for k, v in outputs.items()}, work / "online_out.pt")
        per_batch = statistics.median(times)
        batches = EPOCHS * (texts // BATCH)
        result.update(seconds_per_batch=per_batch, batch_times=times,
                      batches_in_schedule=batches, seconds=per_batch * batches,
                      seconds_one_epoch=per_batch * (texts // BATCH))
    else:
        q, memory = data["queries"], data["memory"]
        if kind == "streamed":
            (out,), seconds = C.timed(soft_retrieve, q, memory, None, TAU)
        else:
            out, seconds = C.timed(dense_retrieve, q, memory)
        torch.save(out, work / f"{kind}_out.pt")
        flops = 4 * q.shape[0] * memory.shape[0] * memory.shape[1]
        result.update(seconds=seconds, gflops=flops / seconds / 1e9)
    peak = C.hwm_bytes()
    after = C.mm_yardstick(seconds=mm_seconds)
    yard = C.yardstick_pair(before, after)
    result.update(mm_before=before, mm_after=after, mm_gflops=yard,
                  mm_seconds=result["seconds"] * yard, peak_rss_bytes=peak,
                  rss_before_bytes=rss_before, work_rss_bytes=peak - rss_before)
    if "gflops" in result:
        result["ratio_to_mm"] = result["gflops"] / yard
    print(f"{kind}: {result['seconds']:.2f} s; mm {before['median_gflops']:.1f} → "
          f"{after['median_gflops']:.1f} GFLOP/s; peak RSS {C.gib(peak)} GiB "
          f"(+{C.gib(peak - rss_before)} GiB for the work)", flush=True)
    C.emit(result)


def max_abs_diff(work: Path, a: str, b: str, rows: int | None = None) -> float:
    import torch

    x, y = torch.load(work / a), torch.load(work / b)
    if isinstance(x, dict):
        return max(float((x[k][:rows] - y[k][: len(x[k][:rows])]).abs().max()) for k in x)
    return float((x - y).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--texts", type=int, help="(a) bridge queries (texts)")
    parser.add_argument("--memory", type=int, help="(a) rows of the image and audio memories")
    parser.add_argument("--batches", type=int, help="(a) online batches timed (after warm-up)")
    parser.add_argument("--queries", type=int, help="(b) queries")
    parser.add_argument("--dense-memory", type=int, help="(b) memory rows")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--mm-seconds", type=float)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-data", type=int, nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    mm_seconds = args.mm_seconds or (1.0 if quick else 3.0)
    batches = args.batches or (1 if quick else 2)
    if args.child:
        return child(args.child, args.dir, mm_seconds, batches)
    if args.make_data:
        make_data(args.dir, *args.make_data, args.dim)
        return C.emit({"made": True})

    texts = args.texts or (8192 if quick else 32768)
    memory = args.memory or (16384 if quick else 65536)
    queries = args.queries or (4096 if quick else 8192)
    dense_memory = args.dense_memory or (16384 if quick else 65536)
    texts = max(texts, (batches + 1) * BATCH)
    info = C.machine()
    print(f"bench_online: (a) {texts:,} texts, image & audio memories of {memory:,} rows; "
          f"(b) {queries:,} queries × {dense_memory:,} rows; {args.dim}-d float32, "
          f"{info['torch_threads']} threads; {info['uptime']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="mcrx-bench-online-"))
    try:
        # in a subprocess: a child's ru_maxrss starts at its parent's peak, keep this one lean
        C.run_child([__file__, "--dir", str(work), "--dim", str(args.dim), "--make-data",
                     str(texts), str(memory), str(queries), str(dense_memory)])
        base = [__file__, "--dir", str(work), "--mm-seconds", str(mm_seconds),
                "--batches", str(batches)] + (["--quick"] if quick else [])
        print("(a) online retrieval every step, extrapolated to 36 epochs:", flush=True)
        online = C.run_child(base + ["--child", "online"])
        print("(a) mcrx: C-MCR pseudo pairs built once:", flush=True)
        once = C.run_child(base + ["--child", "once"])
        diff_a = max_abs_diff(work, "online_out.pt", "once_out.pt",
                              rows=(batches + 1) * BATCH)
        print("(b) dense (Q×M materialised) vs streamed:", flush=True)
        dense = C.run_child(base + ["--child", "dense"])
        dense_retain = C.run_child(base + ["--child", "dense_retain"])
        streamed = C.run_child(base + ["--child", "streamed"])
        diff_b = max_abs_diff(work, "dense_out.pt", "streamed_out.pt")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    speedup = online["seconds"] / once["seconds"]
    speedup_corrected = online["mm_seconds"] / once["mm_seconds"]
    epoch_ratio = online["seconds_one_epoch"] / once["seconds"]
    print()
    print(f"(a) online: {online['seconds_per_batch']:.2f} s/batch × "
          f"{online['batches_in_schedule']} batches = {online['seconds']:.0f} s (extrapolated) "
          f"| mcrx once: {once['seconds']:.1f} s → {speedup:.1f}× "
          f"(load-corrected {speedup_corrected:.1f}×; target ≥ {TARGET_SPEEDUP:.0f}×); "
          f"one epoch of online ÷ mcrx once = {epoch_ratio:.2f}; max|Δ| {diff_a:.1e}")
    for r in (dense, dense_retain, streamed):
        print(f"(b) {r['kind']:<13} {r['seconds']:7.2f} s  {r['gflops']:6.1f} GFLOP/s "
              f"(mm {r['mm_gflops']:.1f}, ratio {r['ratio_to_mm']:.3f})  "
              f"work RSS {C.gib(r['work_rss_bytes'])} GiB")
    time_ratio = dense["seconds"] / streamed["seconds"]
    time_ratio_corrected = dense["mm_seconds"] / streamed["mm_seconds"]
    print(f"(b) dense ÷ streamed time: {time_ratio:.2f} (load-corrected "
          f"{time_ratio_corrected:.2f}); dense-with-retain ÷ streamed "
          f"{dense_retain['mm_seconds'] / streamed['mm_seconds']:.2f}; work memory "
          f"{C.gib(dense['work_rss_bytes'])} vs {C.gib(streamed['work_rss_bytes'])} GiB; "
          f"max|Δ| {diff_b:.1e}")
    C.emit({
        "benchmark": "online", "quick": quick, **info,
        "texts": texts, "memory": memory, "batch": BATCH, "epochs": EPOCHS,
        "online_seconds_per_batch": round(online["seconds_per_batch"], 3),
        "online_batches_timed": len(online["batch_times"]),
        "online_seconds_36_epochs_extrapolated": round(online["seconds"], 1),
        "once_seconds": round(once["seconds"], 3),
        "speedup_36_epochs": round(speedup, 2),
        "speedup_36_epochs_load_corrected": round(speedup_corrected, 2),
        "online_one_epoch_over_once": round(epoch_ratio, 3),
        "target_speedup": TARGET_SPEEDUP, "speedup_ok": min(speedup, speedup_corrected)
        >= TARGET_SPEEDUP, "max_abs_diff_online_vs_once": diff_a,
        "dense_queries": queries, "dense_memory": dense_memory,
        "dense_seconds": round(dense["seconds"], 3),
        "dense_retain_seconds": round(dense_retain["seconds"], 3),
        "streamed_seconds": round(streamed["seconds"], 3),
        "dense_over_streamed_time": round(time_ratio, 3),
        "dense_over_streamed_time_load_corrected": round(time_ratio_corrected, 3),
        "dense_ratio_to_mm": round(dense["ratio_to_mm"], 4),
        "dense_retain_ratio_to_mm": round(dense_retain["ratio_to_mm"], 4),
        "streamed_ratio_to_mm": round(streamed["ratio_to_mm"], 4),
        "dense_work_rss_gib": C.gib(dense["work_rss_bytes"]),
        "dense_retain_work_rss_gib": C.gib(dense_retain["work_rss_bytes"]),
        "streamed_work_rss_gib": C.gib(streamed["work_rss_bytes"]),
        "dense_peak_rss_gib": C.gib(dense["peak_rss_bytes"]),
        "streamed_peak_rss_gib": C.gib(streamed["peak_rss_bytes"]),
        "max_abs_diff_dense_vs_streamed": diff_b,
        "children": {"online": online, "once": once, "dense": dense,
                     "dense_retain": dense_retain, "streamed": streamed},
    })


if __name__ == "__main__":
    sys.exit(main())
