"""Stage 2, pseudo pairs: per leaf, the method's pools run over that leaf's four memories and
stream their rows to ``OUT/pseudo_pairs/<leaf>/`` (see :mod:`mcrx.store.pairs`). Skipped
when the folder was built for the same inputs; under several processes the query chunks are
shared among them."""

from __future__ import annotations

import time
from typing import Any

from mcrx.methods.common import LeafMemories
from mcrx.recipe.chain import Link
from mcrx.stages.context import Embeddings, Run
from mcrx.store.fingerprint import fingerprint_of
from mcrx.store.pairs import finished_pairs_fingerprint, read_pseudo_pairs, write_pseudo_pairs
from mcrx.store.paths import slug
from mcrx.ui.console import console, progress, rate_text


def leaf_memories(link: Link, memories: dict[tuple[str, str], Embeddings]):
    """The four memories of one leaf, and their fingerprints (in role order)."""
    keys = link.memory_keys()
    return LeafMemories(*[memories[key].rows for key in keys]), [
        memories[key].fingerprint for key in keys
    ]


def memories_on_device(mems: LeafMemories, device, memory_dtype: str = "float32"):
    """The four memories of one leaf on ``device``, moved ONCE per leaf (in float16 when
    the recipe stores memories in float16: half the device memory, and the fp16 retrieval
    precision reads them as they are). A memory that does not fit in half the free device
    memory stays on the host; retrieval then copies each of its blocks once per query chunk.
    On the CPU nothing moves (rows stay float32, bit-for-bit what they were)."""
    import torch

    from mcrx.device import fits_on_device

    if device.type == "cpu":
        return mems
    dtype = torch.float16 if memory_dtype == "float16" else torch.float32
    budget = sum(t.numel() for t in vars(mems).values()) * (2 if memory_dtype == "float16"
                                                              else 4)
    if not fits_on_device(budget, device):
        console.print(f"  memories ({budget / 2**30:.1f} GiB) stay on the host: they do not "
                      f"fit in half of {device}'s free memory")
        return mems
    return LeafMemories(*[getattr(mems, role).to(device, dtype) for role in
                          ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")])


def build_pairs(run: Run, memories) -> dict[str, tuple[dict[str, Any], str]]:
    """Leaf space → (pseudo pairs as memory-mapped arrays, fingerprint)."""
    console.rule("[bold]2 · pseudo pairs")
    recipe, retrieval = run.recipe, run.recipe.retrieval
    method = run.chain.method.build()
    result = {}
    for link in run.chain.links:
        mems, fingerprints = leaf_memories(link, memories)
        fingerprint = fingerprint_of("pairs", recipe.method, fingerprints,
                                     retrieval.model_dump(exclude={"precision"} if
                                                          retrieval.precision == "fp32"
                                                          else None))
        path = run.out / "pseudo_pairs" / slug(link.space)
        if finished_pairs_fingerprint(path) == fingerprint:
            pairs = read_pseudo_pairs(path)
            console.print(f"  {link.space}: {len(pairs['leaf_x']):,} pseudo pairs (done before)")
            result[link.space] = (pairs, fingerprint)
            continue
        began = time.perf_counter()
        total = method.count(mems)
        metadata = {"fingerprint": fingerprint, "leaf": link.space,
                    "retrieval": retrieval.model_dump()}
        top_k = retrieval.k if retrieval.mode == "top-k" else None
        if retrieval.mode != "ann":  # the faiss retriever places its own index
            mems = memories_on_device(mems, run.device, recipe.memory_dtype)
        if top_k is not None:
            from mcrx.methods.retrieval import deviation_from_exact

            deviation = deviation_from_exact(mems.leaf_bridge, mems.leaf_x,
                                             retrieval.temperature, top_k)
            metadata["top_k_deviation"] = deviation
            console.print(f"  top-{top_k} retrieval vs exact: mean cosine "
                          f"{deviation['mean_cosine']:.5f}, min {deviation['min_cosine']:.5f} "
                          f"({deviation['sample']} queries)")
        with progress(disable=not run.show_progress) as bar:
            task = bar.add_task(f"pairs {link.space}", total=total, rate="")
            done = [0]

            def advance(count: int, task=task, bar=bar, done=done, began=began) -> None:
                done[0] += count
                bar.update(task, advance=count, rate=rate_text(
                    done[0], time.perf_counter() - began, "rows"))

            pairs = write_pseudo_pairs(
                path, method, mems, retrieval.temperature, metadata=metadata, top_k=top_k,
                query_block=retrieval.query_block, memory_block=retrieval.memory_block,
                on_chunk=advance, rank=run.state.process_index,
                world=run.state.num_processes, barrier=run.state.wait_for_everyone,
                precision=retrieval.precision, device=run.device,
            )
        console.print(f"  {link.space} → {link.parent}: {total:,} pseudo pairs "
                      f"in {time.perf_counter() - began:.1f} s")
        result[link.space] = (pairs, fingerprint)
    return result
