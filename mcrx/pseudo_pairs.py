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

from dataclasses import dataclass

import torch

from mcrx.retrieval import soft_retrieve

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


def cmcr_pseudo_pairs(
    memories: LeafMemories, temperature: float = 0.01, **blocks: int
) -> dict[str, torch.Tensor]:
    """C-MCR: bridge-centric pairs only. Each bridge item i (a text for CLIP–CLAP) gives
    b_i^P and b_i^L; ỹ_i = retrieve(b_i^P, Y^P) and x̃_i = retrieve(b_i^L, X^L)."""
    (parent_y,) = soft_retrieve(
        memories.parent_bridge, memories.parent_y, temperature=temperature, **blocks
    )
    (leaf_x,) = soft_retrieve(
        memories.leaf_bridge, memories.leaf_x, temperature=temperature, **blocks
    )
    return {
        "leaf_x": leaf_x,
        "leaf_bridge": memories.leaf_bridge.float(),
        "parent_bridge": memories.parent_bridge.float(),
        "parent_y": parent_y,
    }


def exmcr_pseudo_pairs(
    memories: LeafMemories,
    temperature: float = 0.01,
    seed: int = 0,
    **blocks: int,
) -> dict[str, torch.Tensor]:
    """Ex-MCR: every modality is a query; three pools, concatenated and shuffled.

    - bridge-centric: the C-MCR pairs above;
    - x-centric (audio-centric for CLAP): x̃ = x; w = softmax(x·B^L/τ1) over the bridge
      memory; b̃^L = w·B^L and b̃^P = w·B^P (same weights, same items); ỹ = retrieve(b̃^P, Y^P);
    - y-centric (image-centric): symmetric, y queries B^P, the weights are carried to B^L,
      then x̃ = retrieve(b̃^L, X^L).
    """
    bridge_centric = cmcr_pseudo_pairs(memories, temperature, **blocks)

    x = memories.leaf_x.float()
    leaf_bridge, parent_bridge = soft_retrieve(
        x, memories.leaf_bridge, [memories.leaf_bridge, memories.parent_bridge], temperature,
        **blocks,
    )
    (parent_y,) = soft_retrieve(parent_bridge, memories.parent_y, None, temperature, **blocks)
    x_centric = {
        "leaf_x": x,
        "leaf_bridge": leaf_bridge,
        "parent_bridge": parent_bridge,
        "parent_y": parent_y,
    }

    y = memories.parent_y.float()
    parent_bridge, leaf_bridge = soft_retrieve(
        y, memories.parent_bridge, [memories.parent_bridge, memories.leaf_bridge], temperature,
        **blocks,
    )
    (leaf_x,) = soft_retrieve(leaf_bridge, memories.leaf_x, None, temperature, **blocks)
    y_centric = {
        "leaf_x": leaf_x,
        "leaf_bridge": leaf_bridge,
        "parent_bridge": parent_bridge,
        "parent_y": y,
    }

    pools = (bridge_centric, x_centric, y_centric)
    total = sum(pool["leaf_x"].shape[0] for pool in pools)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return {role: torch.cat([pool[role] for pool in pools])[order] for role in PAIR_ROLES}


def build_pseudo_pairs(
    method: str, memories: LeafMemories, temperature: float = 0.01, seed: int = 0, **blocks: int
) -> dict[str, torch.Tensor]:
    """Pseudo pairs for ``method`` (``ex-mcr`` or ``c-mcr``)."""
    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()  # retrieval tiles are large and short-lived too
    if method == "ex-mcr":
        return exmcr_pseudo_pairs(memories, temperature, seed, **blocks)
    if method == "c-mcr":
        return cmcr_pseudo_pairs(memories, temperature, **blocks)
    raise ValueError(f"unknown method {method!r}; expected 'ex-mcr' or 'c-mcr'")
