"""Paper scale on one machine: peak RSS against the memories' size, and time per stage.

    python benchmarks/bench_scale.py            # 2M rows per memory × 512-d, float16 on disk
    python benchmarks/bench_scale.py --quick    # 1/10: 200k rows per memory
    python benchmarks/bench_scale.py --share 16 # rank 0's share of a 16-process launch

One Ex-MCR leaf (CLAP → CLIP shape: X^L, B^L, B^P, Y^P, 512-d each) with synthetic clustered
memories written as mcrx memory folders in float16, then the stages ``mcrx extend`` runs on
them, in a fresh process: load (each memory normalised once into one file and memory-mapped,
float16 in RAM, as :meth:`mcrx.store.memory.Memory.mapped_tensor` does for every run), pseudo
pairs in ann mode (indexes built once, stored and read memory-mapped; pairs stored in
float16), the closed-form baseline (normal equations by
block), the memories released, training of the Ex-MCR connector (batch 4096). Per stage:
seconds, the peak resident set (VmHWM, reset before each stage: it counts the mapped
memories' pages) and the peak anonymous RSS (heap and tensors, sampled: what cannot be
dropped), beside the memories' bytes.

Scale on 2 cores: the pair stage is 6 retrievals of 2M queries (12M queries); even ann takes
hours for that here. ``--share K`` computes every K-th chunk of pairs, exactly the work of
rank 0 in a K-process launch (``torchrun --nproc-per-node K``): the indexes, memories and
pair files are full size, so the RAM figures are a real process's, and the time is one
process's share. Training then runs ``--train-steps`` steps (default: one epoch of the pairs
computed) and the epoch time over all pairs is extrapolated from the measured s/step.
``--index ivf-flat`` is the default here (an HNSW graph over 2M rows takes tens of minutes
to build on 2 cores, five builds per leaf); ``--index hnsw`` runs the pipeline's default.

Target (issue 9): peak RSS ≤ memories in RAM + 3 GiB.
"""

from __future__ import annotations

import argparse
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
        with C.PeakSampler() as sampler:
            out = work()
        stages[name] = {"seconds": round(time.perf_counter() - began, 1),
                        "peak_rss_gib": round(C.gib(C.hwm_bytes()), 3),
                        "peak_anon_gib": round(C.gib(sampler.peak_anon), 3),
                        "rss_before_gib": round(C.gib(start_rss), 3)}
        print(f"  {name:<10} {stages[name]['seconds']:>8.1f} s   peak RSS "
              f"{stages[name]['peak_rss_gib']:.2f} GiB (anonymous "
              f"{stages[name]['peak_anon_gib']:.2f})", flush=True)
        return out

    held = {"memories": stage("load", lambda: LeafMemories(*[
        Memory(folder / role).mapped_tensor(dtype=None) for role in ROLES]))}
    memories = held["memories"]
    memory_bytes = sum(t.numel() * t.element_size() for t in vars(memories).values())
    print(f"  memories: {C.gib(memory_bytes):.2f} GiB (float16, memory-mapped)", flush=True)
    # indexes stored and read memory-mapped, as mcrx extend does ($MCRX_CACHE_DIR/ann)
    retriever = AnnRetriever(AnnSettings(index=args.index, k=args.k, nprobe=args.nprobe,
                                         nlist=args.nlist), store=folder / "indexes")
    for role in ROLES:
        retriever.name(getattr(memories, role), role)
    deviation = stage("deviation", lambda: ann_deviation(
        memories.leaf_bridge, memories.leaf_x, 0.01, retriever, sample=1024))
    pairs = stage("pairs", lambda: write_pseudo_pairs(
        folder / "pairs", METHOD, memories, 0.01, dtype="float16", retriever=retriever,
        rank=0, world=args.share))
    index_builds, build_seconds = retriever.builds, retriever.build_seconds
    retriever.release()
    spec = ConnectorSpec(args.dim, args.dim, "text", "audio", "image", ["audio", "text"],
                         ["image", "text"])
    stage("baseline", lambda: LinearConnector(spec).fit(memories.leaf_bridge,
                                                        memories.parent_bridge))
    # released once the leaf's pairs and baseline are done, as mcrx extend does
    held.clear()
    memories = None
    total_pairs = len(pairs["leaf_x"])
    # with --share K only every K-th chunk was computed; the first chunk always is
    computed = total_pairs if args.share == 1 else min(total_pairs, 65536)
    trained_on = {role: array[:computed] for role, array in pairs.items()}
    registry = get_registry()
    training = Training(epochs=1, batch_size=args.batch, checkpoint_every=10**6)
    connector = registry.connector("mcrx/ex-mcr").build(spec, params={})
    loss = registry.loss("mcrx/ex-mcr").build(training)
    began = time.perf_counter()
    result = stage("train", lambda: align(
        connector, loss, trained_on, training, checkpoint_dir=folder / "checkpoints",
        fingerprint="bench-scale", show_progress=False, stop_after_steps=args.train_steps))
    steps = min(result.steps, args.train_steps or result.steps)
    per_step = (time.perf_counter() - began) / max(steps, 1)
    epoch_steps = total_pairs // args.batch
    return {"stages": stages, "memory_bytes": memory_bytes, "pairs": total_pairs,
            "pairs_computed": -(-total_pairs // 65536 // args.share) * 65536
            if args.share > 1 else total_pairs, "share": args.share,
            "index": args.index, "index_builds": index_builds,
            "index_build_seconds": round(build_seconds, 1),
            "train_steps": steps, "seconds_per_step": round(per_step, 3),
            "epoch_seconds_estimated": round(per_step * epoch_steps, 1),
            "ann_deviation": deviation, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, help="rows per memory (2M; --quick 200k)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--index", choices=["ivf-flat", "hnsw"], default="ivf-flat")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--share", type=int, default=1,
                        help="compute rank 0's share of pairs of a launch of this many")
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
        options = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                   if value is not None and name not in ("quick", "rows", "folder", "child")]
        base = [__file__, *options, "--rows", str(rows), "--folder", tmp]
        began = time.perf_counter()
        C.run_child([*base, "--child", "generate"])
        generated = time.perf_counter() - began
        print(f"generated 4 memories × {rows:,} × {args.dim} (float16) in {generated:.0f} s")
        result = C.run_child([*base, "--child", "run"])
    peak = max(s["peak_rss_gib"] for s in result["stages"].values())
    anon = max(s["peak_anon_gib"] for s in result["stages"].values())
    memories = C.gib(result["memory_bytes"])
    # two indexes alive at a time, each a float16 copy of a memory plus its ids (IVF) or
    # graph (HNSW): what ann mode holds beside the memories by design
    per_row = args.dim * 2 + (2 * 32 * 4 if args.index == "hnsw" else 8)
    indexes = C.gib(2 * rows * per_row)
    summary = {"benchmark": "scale", "rows_per_memory": rows, "dim": args.dim,
               "memories_gib": round(memories, 3), "indexes_gib": round(indexes, 3),
               "peak_rss_gib": peak, "peak_anon_gib": anon,
               "peak_over_memories": round(peak / memories, 3),
               "peak_minus_memories_gib": round(peak - memories, 3),
               "peak_minus_memories_and_indexes_gib": round(peak - memories - indexes, 3),
               "pass": bool(peak <= memories + 3),
               "pass_beside_indexes": bool(peak <= memories + indexes + 3),
               **result, **C.machine()}
    print(f"→ peak RSS {peak:.2f} GiB (anonymous {anon:.2f}) for {memories:.2f} GiB of "
          f"memories and {indexes:.2f} GiB of two live indexes (× {peak / memories:.2f} the "
          f"memories, + {peak - memories:.2f} GiB)")
    C.emit(summary)


if __name__ == "__main__":
    main()
