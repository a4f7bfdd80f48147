"""Stage 2, pseudo pairs: per leaf, the method's pools run over that leaf's four memories and
stream their rows into the shared cache (see :mod:`mcrx.store.pairs`):

    $MCRX_CACHE_DIR/pairs/<leaf>/<fingerprint>/   the pairs (hours of work at paper scale)
    OUT/pseudo_pairs/<leaf>.json                   OUT's reference to them

keyed by the fingerprint of their inputs (method, memories, retrieval settings), as memories
are: another output folder or run name reuses them. Pairs that an older mcrx left under
``OUT/pseudo_pairs/<leaf>/`` are still found. Under several processes the query chunks are
shared among them. ``retrieval.mode: ann`` hands the pools a faiss retriever
(:mod:`mcrx.methods.ann`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from mcrx.methods.common import LeafMemories
from mcrx.recipe.chain import Link
from mcrx.stages.context import Embeddings, Run
from mcrx.store.atomic import write_json_atomic
from mcrx.store.cache import note_use
from mcrx.store.fingerprint import fingerprint_of
from mcrx.store.pairs import finished_pairs_fingerprint, read_pseudo_pairs, write_pseudo_pairs
from mcrx.store.paths import cache_root, slug
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
    recipe = run.recipe
    method = run.chain.method.build()
    result = {}
    for link in run.chain.links:
        mems, fingerprints = leaf_memories(link, memories)
        fingerprint = pairs_fingerprint(recipe, fingerprints)
        path = pairs_path(link.space, fingerprint)
        # another run sharing the cache may be building the same entry: one builds, the
        # other waits for it, then finds the entry whole and reuses it
        with pairs_entry_lock(run, path):
            found = next((p for p in (path, run.out / "pseudo_pairs" / slug(link.space))
                          if finished_pairs_fingerprint(p) == fingerprint), None)
            if found is not None:
                pairs = read_pseudo_pairs(found)
                _refer(run, link.space, found, fingerprint)
                console.print(f"  {link.space}: {len(pairs['leaf_x']):,} pseudo pairs (done "
                              f"before, {found})")
            else:
                pairs = _build_leaf_pairs(run, link, method, mems, fingerprints, fingerprint,
                                          path)
        result[link.space] = (pairs, fingerprint)
    return result


@contextmanager
def pairs_entry_lock(run: Run, path: Path) -> Iterator[None]:
    """The cache entry's lock, held by the main process of this launch while its processes
    look for the entry and build it; the others of the launch wait at a barrier until it
    holds the lock, so that all of them see the same entry (whole, or to be built)."""
    from mcrx.store.locks import cache_entry_lock

    state = run.state
    with cache_entry_lock(path) if state.is_main_process else nullcontext():
        state.wait_for_everyone()
        yield
        state.wait_for_everyone()


def _build_leaf_pairs(run: Run, link: Link, method, mems: LeafMemories,
                      fingerprints: list[str], fingerprint: str, path: Path):
    """Build one leaf's pseudo pairs into the shared cache at ``path``."""
    recipe, retrieval = run.recipe, run.recipe.retrieval
    began = time.perf_counter()
    total = method.count(mems)
    metadata = {"fingerprint": fingerprint, "leaf": link.space,
                "retrieval": retrieval.model_dump()}
    top_k = retrieval.k if retrieval.mode == "top-k" else None
    retriever = None
    if retrieval.mode == "ann":
        from mcrx.methods.ann import AnnRetriever, AnnSettings, ann_deviation

        # indexes kept in the cache beside the memories, read memory-mapped: built once
        # for all processes and all later runs over the same memories
        retriever = AnnRetriever(AnnSettings.from_retrieval(retrieval), device=run.device,
                                 store=cache_root() / "ann")
        for rows, memory_fingerprint in zip(vars(mems).values(), fingerprints,
                                            strict=True):
            retriever.name(rows, memory_fingerprint)
        deviation = ann_deviation(mems.leaf_bridge, mems.leaf_x, retrieval.temperature,
                                  retriever)
        metadata["ann_deviation"] = deviation
        console.print(f"  ann ({deviation['index']}, k={deviation['k']}) vs exact: mean "
                      f"cosine {deviation['mean_cosine']:.5f}, min "
                      f"{deviation['min_cosine']:.5f} ({deviation['sample']} queries)")
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
            dtype=recipe.memory_dtype, precision=retrieval.precision, device=run.device,
            **({"retriever": retriever} if retriever is not None else {}),
        )
    if retriever is not None:
        retriever.release()
    _refer(run, link.space, path, fingerprint)
    console.print(f"  {link.space} → {link.parent}: {total:,} pseudo pairs "
                  f"in {time.perf_counter() - began:.1f} s")
    return pairs


def pairs_fingerprint(recipe, memory_fingerprints: list[str]) -> str:
    """What the pseudo pairs of one leaf depend on: the method, its four memories and the
    retrieval settings (the ann index settings in ann mode only, the dtype when not float32,
    so that pairs built before these existed keep their fingerprint)."""
    retrieval = recipe.retrieval
    settings = retrieval.model_dump(exclude=None if retrieval.mode == "ann" else {"ann"})
    if retrieval.precision == "fp32":  # pairs built before precisions existed keep theirs
        settings.pop("precision")
    extra = [recipe.memory_dtype] if recipe.memory_dtype != "float32" else []
    return fingerprint_of("pairs", recipe.method, memory_fingerprints, settings, *extra)


def pairs_path(leaf: str, fingerprint: str) -> Path:
    """Where the pseudo pairs of ``leaf`` with ``fingerprint`` live in the shared cache."""
    return cache_root() / "pairs" / slug(leaf) / fingerprint


def _refer(run: Run, leaf: str, path: Path, fingerprint: str) -> None:
    """OUT/pseudo_pairs/<leaf>.json: which cached pairs this run used."""
    if run.state.is_main_process:
        write_json_atomic(run.out / "pseudo_pairs" / f"{slug(leaf)}.json",
                          {"leaf": leaf, "fingerprint": fingerprint, "path": str(path)})
        note_use(path, run.out)  # for `mcrx cache list` / `prune --older-than`
