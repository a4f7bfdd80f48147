"""Ex-MCR connector training (``mcrx.train.aligner.align``): samples/s and achieved FLOP/s ÷
``torch.mm`` FLOP/s at the papers' batch of 4096.

    python benchmarks/bench_aligner.py            # 14 steps per run
    python benchmarks/bench_aligner.py --quick    # 4 steps per run
    python benchmarks/bench_aligner.py --device cuda --precision bf16 --steps 40

``--device`` / ``--precision`` (fp32, tf32, bf16, fp16 = ``training.precision``) place the
training AND the ``torch.mm`` probes: same device, same input dtype. On a GPU every step
waits for the device before its timestamp (so a step is its real time, not its launch),
and the run without ``retain_freed_memory`` (a CPU allocator matter) is skipped.

What runs: ``align`` itself (Accelerate, DataLoader over the pseudo pairs, noise σ² = 0.004 on
the two noised roles, forward, ``ExMcrLoss``: four symmetric InfoNCE + intra, backward,
AdamW step, cosine schedule) on an ``ExMcrConnector`` with 512-d leaf and base, hidden 1024,
two blocks. No checkpoint is written inside the timed steps.

Step time: ``loss_fn`` is wrapped to timestamp every step; a step is the interval between two
consecutive timestamps (backward + AdamW of one step, data + noise + forward of the next).
The first interval (warm-up: first page faults, MKL set-up) is dropped; the last step's
backward is in no interval.
One ``torch.mm`` probe (4096²) runs inside the wrapper at every step, its own time excluded
from the step, so the yardstick sees the same load as the steps; a plain bracketed yardstick
is also measured right before and after ``align``.

Runs twice, each in a fresh subprocess: with ``retain_freed_memory()`` (what ``align`` does)
and without it (``mcrx.tuning.retain_freed_memory`` replaced by a no-op before ``align`` runs),
i.e. glibc's default of serving ≥ 32 MiB buffers with mmap and unmapping them on free.

FLOP count per step (B = batch, d_L = d_P = 512, h = 1024, two f_m blocks), matmuls only
(BatchNorm, ReLU, normalisation, logsumexp, AdamW are elementwise and not counted):
  Linear forward 2·B·in·out; backward 2× that (grad input + grad weight):
    f_l   on ã:                    512→512                        1 Linear
    f_m   on f_l(ã) and on t̃^A:   (512→1024, 1024→512) × 2 blocks  4 Linears × 2 inputs
  InfoNCE(x, z), four of them: the B×B×d logits matmul forward 2·B²·d, and its two backward
    matmuls (grad x, grad z) 2 × 2·B²·d.
  → "flops_per_step" (the convention above, the headline ratio) = 3.16e11 at B = 4096.
  Autograd skips what is not needed: no grad for ã and t̃^A (so f_l's and f_m's first
  Linear on t̃^A have no grad-input matmul) nor for the frozen base targets ṽ, t̃^I (so each
  InfoNCE has ONE backward matmul). "flops_per_step_executed" counts only those executed
  (2.40e11 at B = 4096) and its ratio is reported too.

Target: ratio ≥ 0.40 of mm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_RATIO = 0.40


def flop_count(batch: int, d_leaf: int = 512, d_parent: int = 512, hidden: int = 1024,
               blocks: int = 2) -> dict:
    """Matmul FLOPs of one Ex-MCR training step (see the module docstring)."""
    b = batch
    f_l = 2 * b * d_leaf * d_leaf
    dims = [d_leaf] + [d_parent] * blocks
    f_m_layers = []
    for i in range(blocks):
        f_m_layers += [2 * b * dims[i] * hidden, 2 * b * hidden * dims[i + 1]]
    f_m = sum(f_m_layers)
    linear_fwd = f_l + 2 * f_m  # f_m runs on f_l(ã) and on t̃^A
    info_fwd = 4 * 2 * b * b * d_parent
    convention = linear_fwd * 3 + info_fwd * 3
    # executed: no grad-input for f_l (ã has no grad) nor for f_m's first Linear on t̃^A,
    # and one backward matmul per InfoNCE (base targets are frozen)
    executed = convention - f_l - f_m_layers[0] - info_fwd
    return {"flops_per_step": convention, "flops_per_step_executed": executed,
            "linear_forward": linear_fwd, "infonce_forward": info_fwd}


def child(args: argparse.Namespace) -> None:
    import torch

    import mcrx.tuning
    from mcrx.methods.common import ConnectorSpec
    from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
    from mcrx.methods.params import ExMcrParams
    from mcrx.recipe.schema import Training
    from mcrx.train.aligner import align

    if not args.retain:
        mcrx.tuning.retain_freed_memory = lambda: False  # align imports it at call time

    device = C.device_of(args.device)
    batch, steps = args.batch, args.steps
    g = torch.Generator().manual_seed(0)
    rows = batch * steps
    centers = None
    pairs = {}
    for role in ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y"):
        pairs[role], centers = C.clustered_rows(rows, 512, g, clusters=4096, centers=centers)
    spec = ConnectorSpec(leaf_dim=512, parent_dim=512, bridge="text", leaf_modality="audio",
                         parent_modality="image")
    connector = ExMcrConnector(spec, ExMcrParams(hidden_dim=1024, blocks=2))
    training = Training(batch_size=batch, epochs=1, checkpoint_every=10**9,
                        precision=args.precision)
    loss = ExMcrLoss(training.temperature, training.intra_weight)

    probe = C.Probe(device=device, precision=args.precision)
    stamps: list[float] = []
    probe_seconds: list[float] = []

    def timed_loss(outputs, batch_rows):
        C.sync(device)  # the previous step's kernels are done: the stamp is real time
        began = time.perf_counter()
        probe()
        probe_seconds.append(time.perf_counter() - began)
        stamps.append(time.perf_counter())
        return loss(outputs, batch_rows)

    before = C.mm_yardstick(seconds=args.mm_seconds, device=device, precision=args.precision)
    with tempfile.TemporaryDirectory(prefix="mcrx-bench-aligner-") as tmp:
        began = time.perf_counter()
        result = align(connector, timed_loss, pairs, training, Path(tmp), "bench",
                       show_progress=False, stop_after_steps=steps, device=device)
        C.sync(device)
        total = time.perf_counter() - began
    after = C.mm_yardstick(seconds=args.mm_seconds, device=device, precision=args.precision)
    applied = mcrx.tuning._applied

    # interval i = stamps[i+1] - stamps[i], minus the probe run at the start of step i+1
    intervals = [stamps[i + 1] - stamps[i] - probe_seconds[i + 1]
                 for i in range(len(stamps) - 1)]
    measured = intervals[1:] if len(intervals) > 1 else intervals  # drop the warm-up step
    step_s = sum(measured) / len(measured)
    counts = flop_count(batch)
    gflops = counts["flops_per_step"] / step_s / 1e9
    probes = C.Probe.summary(probe)
    yard_bracket = C.yardstick_pair(before, after)
    yard = probes["median_gflops"]
    print(f"retain_freed_memory={applied}: {step_s:.2f} s/step ({batch / step_s:,.0f} samples/s"
          f"), {gflops:.1f} GFLOP/s; mm probes {yard:.1f} (bracket {before['median_gflops']:.1f}"
          f" → {after['median_gflops']:.1f}) → ratio {gflops / yard:.3f}; steps "
          f"{', '.join(f'{x:.2f}' for x in intervals)}; loss {result.final_loss:.3f}", flush=True)
    C.emit({
        "retain_freed_memory": applied, "batch": batch, "steps": steps,
        "step_seconds": step_s, "step_intervals": intervals, "warmup_step_seconds":
        intervals[0] if intervals else None, "align_seconds": result.seconds,
        "wall_seconds": total, "samples_per_s": batch / step_s, "gflops": gflops,
        "gflops_executed": counts["flops_per_step_executed"] / step_s / 1e9,
        "mm_probes": probes, "mm_before": before, "mm_after": after,
        "mm_gflops": yard, "mm_gflops_bracket": yard_bracket,
        "ratio_to_mm": gflops / yard, "ratio_to_mm_bracket": gflops / yard_bracket,
        "ratio_to_mm_executed": counts["flops_per_step_executed"] / step_s / 1e9 / yard,
        "threads": torch.get_num_threads(), **counts,
        "device": str(device), "precision": args.precision,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, help="training steps per run (≥ 3)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--mm-seconds", type=float)
    C.add_device_arguments(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-retain", dest="retain", action="store_false",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = max(3, args.steps or (4 if args.quick else 14))
    args.mm_seconds = args.mm_seconds or (1.0 if args.quick else 3.0)
    if args.child:
        return child(args)

    info = C.machine()
    counts = flop_count(args.batch)
    print(f"bench_aligner: Ex-MCR connector (512→[1024→512]×2), batch {args.batch}, "
          f"{args.steps} steps per run, {args.device}, {args.precision} (mm probes the same), "
          f"{info['torch_threads']} threads; "
          f"{counts['flops_per_step']:.3e} FLOPs/step counted "
          f"({counts['flops_per_step_executed']:.3e} executed); {info['uptime']}", flush=True)
    base = [__file__, "--child", "--steps", str(args.steps), "--batch", str(args.batch),
            "--mm-seconds", str(args.mm_seconds), "--device", args.device,
            "--precision", args.precision]
    retained = C.run_child(base)
    on_cpu = C.device_of(args.device).type == "cpu"
    default = C.run_child(base + ["--no-retain"]) if on_cpu else retained
    print()
    for r in (retained, default):
        print(f"{'with' if r['retain_freed_memory'] else 'without'} retain_freed_memory: "
              f"{r['step_seconds']:.2f} s/step, {r['samples_per_s']:,.0f} samples/s, "
              f"{r['gflops']:.1f} GFLOP/s ÷ mm {r['mm_gflops']:.1f} = {r['ratio_to_mm']:.3f} "
              f"(bracketed mm {r['mm_gflops_bracket']:.1f}: {r['ratio_to_mm_bracket']:.3f}; "
              f"executed FLOPs: {r['ratio_to_mm_executed']:.3f}) (target ≥ {TARGET_RATIO})")
    speedup = default["step_seconds"] / retained["step_seconds"]
    speedup_corrected = (default["step_seconds"] * default["mm_gflops"]) / (
        retained["step_seconds"] * retained["mm_gflops"])
    print(f"retain_freed_memory speed-up: {speedup:.2f}× (load-corrected {speedup_corrected:.2f}×)")
    C.emit({
        "benchmark": "aligner", "quick": args.quick, **info, "device": retained["device"],
        "precision": args.precision, "batch": args.batch,
        "steps": args.steps, **counts,
        "samples_per_s": round(retained["samples_per_s"], 1),
        "step_seconds": round(retained["step_seconds"], 3),
        "gflops": round(retained["gflops"], 2), "mm_gflops": retained["mm_gflops"],
        "ratio_to_mm": round(retained["ratio_to_mm"], 4), "target_ratio": TARGET_RATIO,
        "ratio_ok": retained["ratio_to_mm"] >= TARGET_RATIO,
        "no_retain_samples_per_s": round(default["samples_per_s"], 1),
        "no_retain_step_seconds": round(default["step_seconds"], 3),
        "no_retain_gflops": round(default["gflops"], 2),
        "no_retain_mm_gflops": default["mm_gflops"],
        "no_retain_ratio_to_mm": round(default["ratio_to_mm"], 4),
        "retain_speedup": round(speedup, 3), "retain_speedup_load_corrected":
        round(speedup_corrected, 3),
        "runs": json.loads(json.dumps({"retain": retained, "no_retain": default})),
    })


if __name__ == "__main__":
    sys.exit(main())
