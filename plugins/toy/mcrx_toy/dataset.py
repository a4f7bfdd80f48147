"""The ``toy/world`` dataset: raw items of the toy world in all five modalities.

- split ``memory``: unpaired unimodal collections, as the papers' memories are. Each modality
  draws its own latents from a stream named by (seed, modality), so no latent item is shared
  across modalities; the class labels are still known.
- split ``eval``: held-out latents rendered in every modality, row aligned (row i of every
  modality is one latent item, with private nuisance and noise per modality), labelled.

Every stream is named by the split, so memory, evaluation and the spaces' training pairs
never share a draw, whatever the seeds."""

from __future__ import annotations

import numpy as np

from mcrx import Dataset, McrxError, fingerprint_of
from mcrx_toy.config import FORMAT_VERSION, MODALITIES, WorldDatasetParams
from mcrx_toy.world import Latents, World, derive_rng, world_for


class WorldDataset(Dataset):
    """``count`` raw items per modality of one split of the toy world."""

    modalities = MODALITIES

    def __init__(self, params: WorldDatasetParams) -> None:
        self.params = params
        self.world: World = world_for(params.world)
        self._latents: dict[str, Latents] = {}
        self._items: dict[str, np.ndarray] = {}

    def _stream(self, *keys: int | str) -> np.random.Generator:
        params = self.params
        return derive_rng(params.world.seed, "dataset", params.split, params.seed, *keys)

    def latents(self, modality: str) -> Latents:
        """The ground-truth latent items behind ``items(modality)``."""
        if modality not in MODALITIES:
            raise McrxError(f"toy/world has no modality {modality!r}; it has {MODALITIES}")
        if modality not in self._latents:
            # eval: one stream shared by all modalities (row aligned); memory: one per modality
            keys = ("latents",) if self.params.split == "eval" else ("latents", modality)
            self._latents[modality] = self.world.sample_latents(
                self.params.count, self._stream(*keys)
            )
        return self._latents[modality]

    def items(self, modality: str) -> np.ndarray:
        """Raw vectors of ``modality``: (count, raw_dim) float32."""
        if modality not in self._items:
            latents = self.latents(modality)
            self._items[modality] = self.world.render(
                modality, latents, self._stream("render", modality)
            )
        return self._items[modality]

    def labels(self, modality: str) -> np.ndarray:
        """Class id of every item of ``modality``: (count,) int64."""
        return self.latents(modality).classes

    def fingerprint(self) -> str:
        return fingerprint_of("mcrx-toy-world", FORMAT_VERSION, self.params.model_dump(mode="json"))
