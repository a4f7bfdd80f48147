"""Paper scale on one machine: peak RSS against the memories' size, and time per stage.

    python benchmarks/bench_scale.py            # 2M rows per memory × 512-d, float16 on disk
    python benchmarks/bench_scale.py --quick    # 1/10: 200k rows per memory

One Ex-MCR leaf (CLAP → CLIP shape: X^L, B^L, B^P, Y^P, 512-d each) with synthetic clustered
memories written as mcrx memory folders in float16, then the stages ``mcrx extend`` runs on
them, in a fresh process: load (one preallocated read each, normalised in place, float16 in
RAM), pseudo pairs in ann mode (faiss IVF-Flat, pairs stored in float16), the closed-form
baseline (normal equations by block), the memories released, one training epoch of the
Ex-MCR connector (batch 4096; ``--train-steps`` caps it). Per stage: seconds, and the peak
resident set (VmHWM reset before each stage) minus the memories' bytes in RAM.

Target (issue 9): peak RSS ≤ memories in RAM + 3 GiB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as C

ROLES = ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")


def generate(folder: Path, rows: int, dim: int, seed: int = 0) -> None:
    """Four memories in float16, block by block (this process stays small). The bridge
    memories are the same items seen by two spaces: row i of both comes from concept i."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mcrx.store.memory import MemoryWriter

    generator = torch.Generator().manual_seed(seed)
    concepts = max(1, rows // 32)
    leaf_centres = F.normalize(torch.randn(concepts, dim, generator=generator), dim=-1)
    mix = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0]  # a rotation
    parent_centres = leaf_centres @ mix  # the same concepts in the parent space
    writers = {role: MemoryWriter(folder / role, {"key": role}, dim=dim, dtype="float16")
               for role in ROLES}
    for start in range(0, rows, 65536):
        n = min(65536, rows - start)

        def around(centres, index, n=n):
            noise = torch.randn(n, dim, generator=generator) / dim**0.5
            return F.normalize(centres[index] + noise, dim=-1).numpy().astype(np.float16)

        bridge = torch.randint(0, concepts, (n,), generator=generator)
        writers["leaf_bridge"].append(around(leaf_centres, bridge))
        writers["parent_bridge"].append(around(parent_centres, bridge))
        writers["leaf_x"].append(around(leaf_centres, torch.randint(0, concepts, (n,),
                                                                    generator=generator)))
        writers["parent_y"].append(around(parent_centres, torch.randint(0, concepts, (n,),
                                                                        generator=generator)))
    for writer in writers.values():
        writer.close()


def run_stages(folder: Path, args) -> dict:
    """The stages, each with its own time and peak resident set."""
    import torch

    from mcrx.methods.ann import AnnRetriever, AnnSettings, ann_deviation
    from mcrx.methods.common import ConnectorSpec, LeafMemories, LinearConnector
    from mcrx.methods.exmcr import METHOD
    from mcrx.plugin.manager import get_registry
    from mcrx.recipe.schema import Training
    from mcrx.store.memory import Memory
    from mcrx.store.pairs import write_pseudo_pairs
    from mcrx.train.aligner import align

    stages: dict[str, dict] = {}

    def stage(name: str, work):
        start_rss = C.reset_peak_rss()
        began = time.perf_counter()
        out = work()
        stages[name] = {"seconds": round(time.perf_counter() - began, 1),
                        "peak_rss_gib": round(C.gib(C.hwm_bytes()), 3),
                        "rss_before_gib": round(C.gib(start_rss), 3)}
        print(f"  {name:<10} {stages[name]['seconds']:>8.1f} s   peak RSS "
              f"{stages[name]['peak_rss_gib']:.2f} GiB", flush=True)
        return out

    held = {"memories": stage("load", lambda: LeafMemories(*[
        Memory(folder / role).tensor(dtype=None, normalize=True) for role in ROLES]))}
    memories = held["memories"]
    memory_bytes = sum(t.numel() * t.element_size() for t in vars(memories).values())
    print(f"  memories in RAM: {C.gib(memory_bytes):.2f} GiB (float16)", flush=True)
    retriever = AnnRetriever(AnnSettings(k=args.k, nprobe=args.nprobe, nlist=args.nlist))
    deviation = stage("deviation", lambda: ann_deviation(
        memories.leaf_bridge, memories.leaf_x, 0.01, retriever, sample=1024))
    pairs = stage("pairs", lambda: write_pseudo_pairs(
        folder / "pairs", METHOD, memories, 0.01, dtype="float16", retriever=retriever))
    retriever.release()
    spec = ConnectorSpec(args.dim, args.dim, "text", "audio", "image", ["audio", "text"],
                         ["image", "text"])
    stage("baseline", lambda: LinearConnector(spec).fit(memories.leaf_bridge,
                                                        memories.parent_bridge))
    # released once the leaf's pairs and baseline are done, as mcrx extend does
    held.clear()
    memories = None
    registry = get_registry()
    training = Training(epochs=1, batch_size=args.batch, checkpoint_every=10**6)
    connector = registry.connector("mcrx/ex-mcr").build(spec, params={})
    loss = registry.loss("mcrx/ex-mcr").build(training)
    result = stage("train", lambda: align(
        connector, loss, pairs, training, checkpoint_dir=folder / "checkpoints",
        fingerprint="bench-scale", show_progress=False, stop_after_steps=args.train_steps))
    return {"stages": stages, "memory_bytes": memory_bytes, "pairs": len(pairs["leaf_x"]),
            "train_steps": min(result.steps, args.train_steps or result.steps),
            "ann_deviation": deviation, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, help="rows per memory (2M; --quick 200k)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--nlist", type=int)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--train-steps", type=int, help="stop training after N steps")
    parser.add_argument("--folder", help="where to write the memories (default: a temp dir)")
    parser.add_argument("--child", choices=["generate", "run"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = args.rows or (200_000 if args.quick else 2_000_000)

    if args.child:  # a fresh process per step: its peak RSS is its own
        folder = Path(args.folder)
        if args.child == "generate":
            generate(folder, rows, args.dim)
            C.emit({"generated": rows})
        else:
            C.emit(run_stages(folder, args))
        return

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        passed = [a for a in sys.argv[1:] if not a.startswith("--folder")]
        base = [__file__, *passed, "--rows", str(rows), "--folder", tmp]
        began = time.perf_counter()
        C.run_child([*base, "--child", "generate"])
        generated = time.perf_counter() - began
        print(f"generated 4 memories × {rows:,} × {args.dim} (float16) in {generated:.0f} s")
        result = C.run_child([*base, "--child", "run"])
    peak = max(s["peak_rss_gib"] for s in result["stages"].values())
    memories = C.gib(result["memory_bytes"])
    summary = {"benchmark": "scale", "rows_per_memory": rows, "dim": args.dim,
               "memories_gib": round(memories, 3), "peak_rss_gib": peak,
               "peak_over_memories": round(peak / memories, 3),
               "peak_minus_memories_gib": round(peak - memories, 3),
               "pass": bool(peak <= memories + 3), **result, **C.machine()}
    print(f"→ peak RSS {peak:.2f} GiB for {memories:.2f} GiB of memories "
          f"(× {peak / memories:.2f}, + {peak - memories:.2f} GiB)")
    C.emit(summary)


if __name__ == "__main__":
    main()
