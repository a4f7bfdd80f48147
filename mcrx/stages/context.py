"""What the stages of one ``mcrx extend`` share: the recipe, the registry, the chain resolved
once, the live spaces, this process among those launched, and where tensors go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcrx.methods.common import ConnectorSpec
from mcrx.plugin.registry import Registry
from mcrx.recipe.chain import Chain, Link, resolve_chain
from mcrx.recipe.schema import Recipe
from mcrx.ui.console import console


@dataclass
class Embeddings:
    """One modality of one source in one space: rows, their fingerprint, optional labels."""

    rows: torch.Tensor  # (N, d), L2-normalised, on the CPU
    fingerprint: str
    labels: np.ndarray | None = None


@dataclass
class Run:
    """Everything one ``mcrx extend`` shares between stages."""

    recipe: Recipe
    registry: Registry
    show_progress: bool = True
    workers: int = 0
    drop_bad_rows: bool = False  # leave NaN/Inf/all-zero embedding rows out (counted)
    spaces: dict[str, Any] = field(default_factory=dict)
    encoded: int = 0  # items encoded in this run (0 when every memory came from the cache)
    state: Any = None  # accelerate.PartialState: this process among those launched
    chain: Chain = field(init=False)

    def __post_init__(self) -> None:
        if self.state is None:
            from mcrx.train.distributed import process_state

            self.state = process_state(cpu=self.recipe.device == "cpu" or None)
        if not self.state.is_main_process:  # one process speaks for all
            console.quiet = True
            self.show_progress = False
        self.chain = resolve_chain(self.recipe, self.registry)
        self._specs: dict[str, ConnectorSpec] = {}

    @property
    def out(self) -> Path:
        return self.recipe.output_dir

    @property
    def device(self) -> torch.device:
        """This process's device (Accelerate's choice: its local GPU, else the CPU)."""
        return self.state.device

    def space(self, name: str):
        """The live space object, built by its plugin on first use."""
        if name not in self.spaces:
            ref = next(r for r in self.recipe.space_refs() if r.space == name)
            self.spaces[name] = self.registry.space(name).build(name, params=ref.params)
        return self.spaces[name]

    def space_modalities(self, name: str) -> tuple[str, ...]:
        return self.registry.space(name).modalities

    def space_of(self, modality: str) -> str:
        """The space that embeds ``modality`` in the unified model (nearest the base)."""
        return self.chain.space_of(modality, self.registry)

    def connector_spec(self, link: Link) -> ConnectorSpec:
        """The shapes of ``link``'s connector (built once per leaf)."""
        if link.space not in self._specs:
            self._specs[link.space] = ConnectorSpec(
                leaf_dim=self.space(link.space).dim,
                parent_dim=self.space(link.parent).dim,
                bridge=link.bridge,
                leaf_modality=link.leaf_modality,
                parent_modality=link.parent_modality,
                leaf_modalities=list(self.space_modalities(link.space)),
                parent_modalities=list(self.space_modalities(link.parent)),
            )
        return self._specs[link.space]
