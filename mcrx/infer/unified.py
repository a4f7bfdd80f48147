"""The unified model: connector weights (safetensors) + a JSON manifest (recipe, spaces,
modalities, versions, metrics). ``embed`` works for every modality of every chained space.

    model = mcrx.load("runs/demo/model")
    model.embed("audio", ["a.wav", "b.wav"])          # raw inputs → unified space
    model.project("toy/clap", "audio", embeddings)    # pre-extracted CLAP features → unified

Ex-MCR (target "parent"): base modalities pass through untouched; a leaf modality goes
through its leaf's connector, then along the chain to the base, one connector per hop. A
vector that crossed a hop lives in the parent space aligned with the child's bridge, so the
next hop treats it as that bridge modality (D –audio→ CLAP –text→ CLIP: D's outputs cross
CLAP's connector as CLAP audio). C-MCR (target "new"): each side has its own projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.methods.common import Connector, module_device
from mcrx.plugin.registry import Registry
from mcrx.store import artifact


class UnifiedModel:
    """Connectors plus the chain that says which connector each modality crosses."""

    def __init__(
        self,
        manifest: dict[str, Any],
        connectors: dict[str, Connector],
        registry: Registry | None = None,
    ) -> None:
        self.manifest = manifest
        self.connectors = connectors
        self._registry = registry
        self._spaces: dict[str, Any] = {}
        self._device = torch.device("cpu")
        for connector in connectors.values():
            connector.eval()
            self._device = module_device(connector)  # where training left it

    # -- where it runs ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the connectors are: ``project`` and ``embed`` return tensors here."""
        return self._device

    def to(self, device: str | Any) -> UnifiedModel:
        """Move every connector to ``device`` (resolved by :func:`mcrx.device.resolve_device`:
        "auto" is this process's GPU when there is one); returns the model."""
        from mcrx.device import resolve_device

        self._device = resolve_device(device)
        for connector in self.connectors.values():
            connector.to(self._device)
        return self

    # -- description ----------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.manifest["base"]

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def target(self) -> str:
        return self.manifest.get("target", "parent")

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def modalities(self) -> list[str]:
        return sorted(self.manifest["embedders"])

    @property
    def leaves(self) -> list[dict[str, Any]]:
        return self.manifest["leaves"]

    def space_of(self, modality: str) -> str:
        """The space whose encoder embeds ``modality`` (the one nearest the base)."""
        try:
            return self.manifest["embedders"][modality]
        except KeyError:
            raise McrxError(
                f"the unified model has no {modality!r}; it embeds {self.modalities}"
            ) from None

    def _leaf(self, space: str) -> dict[str, Any] | None:
        return next((leaf for leaf in self.leaves if leaf["space"] == space), None)

    # -- projection -----------------------------------------------------------------------
    @torch.no_grad()
    def project(self, space: str, modality: str, embeddings: Any) -> torch.Tensor:
        """Map embeddings already computed in ``space`` (N×d_space) into the unified space."""
        spaces = self.manifest["spaces"]
        if space not in spaces:
            raise McrxError(f"space {space!r} is not part of this model ({sorted(spaces)})")
        if modality not in spaces[space]["modalities"]:
            raise McrxError(f"{modality!r} is not a modality of {space} "
                            f"({spaces[space]['modalities']})")
        if isinstance(embeddings, torch.Tensor):  # any device in, the model's device out
            x = embeddings.to(device=self.device, dtype=torch.float32)
        else:
            x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32), device=self.device)
        if x.ndim != 2 or x.shape[1] != spaces[space]["dim"]:
            raise McrxError(f"expected N×{spaces[space]['dim']} embeddings of {space}, "
                            f"got shape {tuple(x.shape)}")
        x = F.normalize(x, dim=-1)
        if self.target == "new":  # C-MCR: each side has its own projector
            (leaf,) = self.leaves
            side = "parent" if space == self.base else "leaf"
            return self.connectors[leaf["space"]].project(side, modality, x)
        leaf = self._leaf(space)
        while leaf is not None:  # Ex-MCR: hop by hop towards the base
            x = self.connectors[leaf["space"]].project("leaf", modality, x)
            modality = leaf["bridge"]
            leaf = self._leaf(leaf["parent"])
        return F.normalize(x, dim=-1)

    # -- raw inputs -------------------------------------------------------------------------
    def space(self, name: str):
        """The live space object (built from its plugin on first use)."""
        if name not in self._spaces:
            from mcrx.plugin.manager import get_registry

            registry = self._registry or get_registry()
            info = self.manifest["spaces"][name]
            self._spaces[name] = registry.space(name).build(name, params=info.get("params"))
        return self._spaces[name]

    def embed(
        self,
        modality: str,
        inputs: Sequence[Any],
        space: str | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """L2-normalised unified-space vectors for raw ``inputs`` of ``modality``."""
        space = space or self.space_of(modality)
        encoder = self.space(space).encoder(modality)
        batch_size = batch_size or encoder.batch_size
        parts = [
            encoder.encode(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)
        ]
        if not parts:
            return torch.zeros(0, self.dim, device=self.device)
        return self.project(space, modality, torch.cat(parts))

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the model folder atomically (:func:`mcrx.store.artifact.save_artifact`);
        a non-empty folder that is not an mcrx model is refused unless ``force`` (its files
        are kept either way)."""
        return artifact.save_artifact(path, self.manifest, self.connectors, force=force)

    @classmethod
    def load(cls, path: str | Path, registry: Registry | None = None,
             device: str | Any = "cpu") -> UnifiedModel:
        """Read a model folder; ``device`` ("cpu", "auto", "cuda:1", ...) places the
        connectors (the CPU by default: loading never takes a GPU unasked). The folder is
        untrusted: a manifest that fails validation, a file outside the folder or weights
        that do not fit raise :class:`~mcrx.errors.McrxError`."""
        from mcrx.plugin.manager import get_registry

        registry = registry or get_registry()
        manifest = artifact.read_manifest(path)
        model = cls(manifest, artifact.load_connectors(path, manifest, registry), registry)
        return model.to(device)
