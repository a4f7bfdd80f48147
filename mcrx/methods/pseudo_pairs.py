"""Pseudo pairs: semantically matched rows across two spaces, made by retrieval from
unpaired memories, never from real pairs. Both papers' recipes are here, side by side.

Roles (one leaf space L attached to its parent space P through a shared bridge modality b;
x is the leaf's other modality, y the parent's other modality):

    leaf_x         x̃ in L        (audio in CLAP for CLAP → CLIP)
    leaf_bridge    b̃ in L        (text in CLAP)
    parent_bridge  b̃ in P        (text in CLIP, the same texts as leaf_bridge)
    parent_y       ỹ in P        (image in CLIP)

Memories: X^L (leaf_x), B^L and B^P (the same bridge items encoded by both spaces, row
aligned), Y^P (parent_y). All rows are L2-normalised.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcrx.methods.retrieval import soft_retrieve

PAIR_ROLES = ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")


@dataclass
class LeafMemories:
    """The four memories one leaf needs. ``leaf_bridge`` and ``parent_bridge`` hold the
    same bridge items (row i is one text, image, ...) encoded by each space."""

    leaf_x: torch.Tensor  # (N_x, d_L)
    leaf_bridge: torch.Tensor  # (N_b, d_L)
    parent_bridge: torch.Tensor  # (N_b, d_P)
    parent_y: torch.Tensor  # (N_y, d_P)

    def __post_init__(self) -> None:
        if self.leaf_bridge.shape[0] != self.parent_bridge.shape[0]:
            raise ValueError(
                "the bridge memory must hold the same items in both spaces: "
                f"{self.leaf_bridge.shape[0]} rows in the leaf, "
                f"{self.parent_bridge.shape[0]} in the parent"
            )


# ---------------------------------------------------------------------------------------
# The pools. Each computes the pseudo pairs of one slice of its queries, so a pool can be
# built chunk by chunk and streamed to disk (paper scale: millions of rows).
# ---------------------------------------------------------------------------------------
def bridge_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """C-MCR, and Ex-MCR's first pool: each bridge item i (a text for CLIP–CLAP) gives b_i^P
    and b_i^L; ỹ_i = retrieve(b_i^P, Y^P) and x̃_i = retrieve(b_i^L, X^L)."""
    leaf_bridge, parent_bridge = m.leaf_bridge[rows].float(), m.parent_bridge[rows].float()
    (parent_y,) = soft_retrieve(parent_bridge, m.parent_y, None, temperature, **blocks)
    (leaf_x,) = soft_retrieve(leaf_bridge, m.leaf_x, None, temperature, **blocks)
    return {"leaf_x": leaf_x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": parent_y}


def leaf_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """Ex-MCR x-centric (audio-centric for CLAP): x̃ = x; w = softmax(x·B^L/τ1) over the
    bridge memory; b̃^L = w·B^L and b̃^P = w·B^P (same weights, same items: the text weights
    are carried across spaces); ỹ = retrieve(b̃^P, Y^P)."""
    x = m.leaf_x[rows].float()
    leaf_bridge, parent_bridge = soft_retrieve(
        x, m.leaf_bridge, [m.leaf_bridge, m.parent_bridge], temperature, **blocks
    )
    (parent_y,) = soft_retrieve(parent_bridge, m.parent_y, None, temperature, **blocks)
    return {"leaf_x": x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": parent_y}


def parent_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """Ex-MCR y-centric (image-centric for CLAP → CLIP): symmetric to :func:`leaf_centric`;
    y queries B^P, the weights are carried to B^L, then x̃ = retrieve(b̃^L, X^L)."""
    y = m.parent_y[rows].float()
    parent_bridge, leaf_bridge = soft_retrieve(
        y, m.parent_bridge, [m.parent_bridge, m.leaf_bridge], temperature, **blocks
    )
    (leaf_x,) = soft_retrieve(leaf_bridge, m.leaf_x, None, temperature, **blocks)
    return {"leaf_x": leaf_x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": y}


#: C-MCR uses bridge-centric pairs only; Ex-MCR makes every modality a query. The pools are
#: concatenated; the aligner draws a fresh shuffle of all rows every epoch.
POOLS: dict[str, tuple[tuple[Callable, str], ...]] = {
    "c-mcr": ((bridge_centric, "leaf_bridge"),),
    "ex-mcr": ((bridge_centric, "leaf_bridge"), (leaf_centric, "leaf_x"),
               (parent_centric, "parent_y")),
}


def _pools(method: str):
    if method not in POOLS:
        raise ValueError(f"unknown method {method!r}; expected 'ex-mcr' or 'c-mcr'")
    return POOLS[method]


def count_pseudo_pairs(method: str, memories: LeafMemories) -> int:
    return sum(len(getattr(memories, queries)) for _, queries in _pools(method))


def iter_pseudo_pairs(
    method: str, memories: LeafMemories, temperature: float = 0.01, chunk: int = 65536,
    **blocks: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """The pseudo pairs of ``method`` in consecutive chunks of at most ``chunk`` rows."""
    for pool, queries in _pools(method):
        for start in range(0, len(getattr(memories, queries)), chunk):
            yield pool(memories, slice(start, start + chunk), temperature, **blocks)


def build_pseudo_pairs(
    method: str, memories: LeafMemories, temperature: float = 0.01, **blocks: int
) -> dict[str, torch.Tensor]:
    """All pseudo pairs of ``method`` (``ex-mcr`` or ``c-mcr``) in memory."""
    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()  # retrieval tiles are large and short-lived too
    chunks = list(iter_pseudo_pairs(method, memories, temperature, **blocks))
    return {role: torch.cat([chunk[role] for chunk in chunks]) for role in PAIR_ROLES}


# ---------------------------------------------------------------------------------------
# On disk: one .npy per role, written chunk by chunk, read memory-mapped by the aligner.
# ---------------------------------------------------------------------------------------
def write_pseudo_pairs(
    path: Path,
    method: str,
    memories: LeafMemories,
    temperature: float = 0.01,
    metadata: dict[str, Any] | None = None,
    dtype: str = "float32",
    chunk: int = 65536,
    on_chunk: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    **blocks: int,
) -> dict[str, np.ndarray]:
    """Build the pseudo pairs of ``method`` straight into ``path`` (a folder written beside
    and renamed into place: it is complete or absent). Peak memory is one chunk.

    Under several processes (``rank`` of ``world``, with a ``barrier``) the chunks are shared
    round-robin and every process writes its rows into the same pre-allocated files."""
    from mcrx.store.atomic import write_json_atomic
    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()
    total = count_pseudo_pairs(method, memories)
    widths = {"leaf_x": memories.leaf_x.shape[1], "leaf_bridge": memories.leaf_bridge.shape[1],
              "parent_bridge": memories.parent_bridge.shape[1],
              "parent_y": memories.parent_y.shape[1]}
    tmp = path.with_name(f".{path.name}.tmp")
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for role in PAIR_ROLES:
            np.lib.format.open_memmap(tmp / f"{role}.npy", mode="w+", dtype=dtype,
                                      shape=(total, widths[role])).flush()
    barrier()
    arrays = {role: np.load(tmp / f"{role}.npy", mmap_mode="r+") for role in PAIR_ROLES}
    for start, rows in _my_chunks(method, memories, temperature, chunk, rank, world, **blocks):
        count = len(rows["leaf_x"])
        for role in PAIR_ROLES:
            arrays[role][start : start + count] = rows[role].numpy()
        if on_chunk is not None:
            on_chunk(min(count * world, total))  # the others advance alongside
    for array in arrays.values():
        array.flush()
    del arrays
    barrier()
    if rank == 0:
        write_json_atomic(tmp / "manifest.json", {**(metadata or {}), "method": method,
                                                  "count": total, "dtype": dtype})
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    barrier()
    return read_pseudo_pairs(path)


def _my_chunks(method, memories, temperature, chunk, rank, world, **blocks):
    """(first row, pairs) of the chunks this process computes: every world-th chunk."""
    offset, index = 0, 0
    for pool, queries in _pools(method):
        size = len(getattr(memories, queries))
        for start in range(0, size, chunk):
            if index % world == rank:
                rows = pool(memories, slice(start, start + chunk), temperature, **blocks)
                yield offset + start, rows
            index += 1
        offset += size


def read_pseudo_pairs(path: Path) -> dict[str, np.ndarray]:
    """Memory-mapped (read-only) arrays of a pseudo-pair folder, one per role."""
    return {role: np.load(path / f"{role}.npy", mmap_mode="r") for role in PAIR_ROLES}
