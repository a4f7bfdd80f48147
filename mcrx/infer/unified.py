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

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.methods.connectors import Connector, ConnectorSpec
from mcrx.plugin.registry import Registry
from mcrx.store.paths import slug

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def versions(registry: Registry | None = None) -> dict[str, str]:
    import mcrx

    found = {"mcrx": mcrx.__version__, "torch": torch.__version__}
    if registry is not None:
        for name, info in registry.plugins.items():
            if info.version and name != "mcrx":
                found[f"plugin:{name}"] = info.version
    return found


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
        for connector in connectors.values():
            connector.eval()

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
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
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
            return torch.zeros(0, self.dim)
        return self.project(space, modality, torch.cat(parts))

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model folder atomically: a half-written folder never exists at
        ``path`` (written beside it, then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "connectors").mkdir(parents=True)
        for leaf in self.leaves:
            weights = self.connectors[leaf["space"]].state_dict()
            state = {key: value.contiguous() for key, value in weights.items()}
            save_file(state, str(tmp / leaf["file"]))
        (tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2, default=str))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, registry: Registry | None = None) -> UnifiedModel:
        from safetensors.torch import load_file

        from mcrx.plugin.manager import get_registry

        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise McrxError(f"{path} is not a unified model (no {MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise McrxError(f"{path} was written by a newer mcrx (format "
                            f"{manifest['format_version']})")
        registry = registry or get_registry()
        connectors = {}
        for leaf in manifest["leaves"]:
            spec = ConnectorSpec(**leaf["connector"]["spec"])
            connector = registry.connector(leaf["connector"]["name"]).build(
                spec, params=leaf["connector"].get("params")
            )
            connector.load_state_dict(load_file(str(path / leaf["file"])))
            connectors[leaf["space"]] = connector
        return cls(manifest, connectors, registry)


def build_manifest(
    *,
    name: str,
    method: str,
    base: str,
    target: str,
    dim: int,
    spaces: dict[str, dict[str, Any]],
    leaves: list[dict[str, Any]],
    recipe: dict[str, Any] | None = None,
    registry: Registry | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a unified model. ``leaves`` entries: space, parent, bridge, modality,
    parent_modality, connector {name, params, spec}."""
    embedders: dict[str, str] = {}
    for space_name in [base, *[leaf["space"] for leaf in leaves]]:  # nearest the base first
        for modality in spaces[space_name]["modalities"]:
            embedders.setdefault(modality, space_name)
    for leaf in leaves:
        leaf.setdefault("file", f"connectors/{slug(leaf['space'])}.safetensors")
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "method": method,
        "target": target,
        "base": base,
        "dim": dim,
        "spaces": spaces,
        "leaves": leaves,
        "embedders": embedders,
        "recipe": recipe or {},
        "versions": versions(registry),
        "metrics": metrics or {},
    }
