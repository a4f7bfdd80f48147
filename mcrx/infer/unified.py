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
        #: space → params replacing the manifest's (``load(params=...)``)
        self.param_overrides: dict[str, dict[str, Any]] = {}
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
    def space_params(self, name: str) -> dict[str, Any]:
        """The params ``name`` is built with: the manifest's, relative paths resolved from
        the folder the run started in (:func:`mcrx.store.artifact.anchored_params`), then
        the overrides given to :meth:`load` (weights that moved)."""
        info = self.manifest["spaces"][name]
        params = artifact.anchored_params(info.get("params"), self.manifest.get("paths_root"))
        return {**params, **self.param_overrides.get(name, {})}

    def space(self, name: str):
        """The live space object (built from its plugin on first use)."""
        if name not in self._spaces:
            from pydantic import ValidationError

            from mcrx.plugin.manager import get_registry
            from mcrx.recipe.load import pydantic_errors

            registry = self._registry or get_registry()
            self._refuse_missing_plugin(name, registry)
            try:
                self._spaces[name] = registry.space(name).build(
                    name, params=self.space_params(name))
            except ValidationError as exc:
                problems = "; ".join(f"{where}: {what}" for where, what in
                                     pydantic_errors(exc, ()))
                root = self.manifest.get("paths_root")
                raise McrxError(
                    f"the model's space {name} cannot be built: {problems}"
                    + (f" (relative paths are read from here and from {root}, where the run "
                       "started)" if root else "")
                    + f". Point the model at files that moved with mcrx.load(model, "
                    f"params={{{name!r}: {{'<param>': '<new path>'}}}}) or "
                    f"`mcrx repoint MODEL {name}.<param>=<new path>`") from None
        return self._spaces[name]

    def _refuse_missing_plugin(self, name: str, registry: Registry) -> None:
        """A space whose plugin is absent is named by the distribution to install and the
        plugin version the manifest records, not as an unknown space name."""
        from mcrx.plugin.manager import missing_plugin_message

        if registry.has("space", name):
            return
        plugin = self.manifest["spaces"][name].get("plugin") or name.split("/", 1)[0]
        version = self.manifest.get("versions", {}).get(f"plugin:{plugin}")
        raise McrxError(missing_plugin_message(plugin, version, f"the model's space {name}",
                                               registry))

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
             device: str | Any = "cpu",
             params: dict[str, dict[str, Any]] | None = None) -> UnifiedModel:
        """Read a model folder; ``device`` ("cpu", "auto", "cuda:1", ...) places the
        connectors (the CPU by default: loading never takes a GPU unasked). ``params``
        replaces space params of the manifest, e.g. weights that moved:
        ``{"clap/630k-fusion": {"checkpoint": "/data/630k-fusion-best.pt"}}``. The folder
        is untrusted: a manifest that fails validation, a file outside the folder or weights
        that do not fit raise :class:`~mcrx.errors.McrxError`."""
        from mcrx.plugin.manager import get_registry

        registry = registry or get_registry()
        manifest = artifact.read_manifest(path)
        unknown = sorted(set(params or {}) - set(manifest["spaces"]))
        if unknown:
            raise McrxError(f"{path}: params given for {unknown}, but the model's spaces are "
                            f"{sorted(manifest['spaces'])}")
        model = cls(manifest, artifact.load_connectors(path, manifest, registry), registry)
        model.param_overrides = {space: dict(values) for space, values in (params or {}).items()}
        return model.to(device)
