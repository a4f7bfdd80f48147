"""The unified-model artifact on disk: a folder with ``manifest.json`` (recipe, spaces, the
chain of leaves, modalities, versions, metrics) and one safetensors file per connector.

    model/manifest.json
    model/connectors/<leaf>.safetensors

Written beside its final path and renamed into place (:mod:`mcrx.store.atomic`). Format 1 is
the only format so far; an artifact written by any mcrx since 0.1 loads (a test keeps one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError
from mcrx.plugin.registry import Registry
from mcrx.store.atomic import atomic_path
from mcrx.store.paths import slug

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def versions(registry: Registry | None = None) -> dict[str, str]:
    import torch

    import mcrx

    found = {"mcrx": mcrx.__version__, "torch": torch.__version__}
    if registry is not None:
        for name, info in registry.plugins.items():
            if info.version and name != "mcrx":
                found[f"plugin:{name}"] = info.version
    return found


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


def save_artifact(path: str | Path, manifest: dict[str, Any], connectors: dict[str, Any]) -> Path:
    """Write the model folder: ``connectors`` maps a leaf space to its connector module."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path, directory=True) as tmp:
        (tmp / "connectors").mkdir()
        for leaf in manifest["leaves"]:
            weights = connectors[leaf["space"]].state_dict()
            # safetensors wants contiguous CPU tensors; a model moved to a GPU saves the same
            state = {key: value.detach().contiguous().cpu() for key, value in weights.items()}
            save_file(state, str(tmp / leaf["file"]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise McrxError(f"{path} is not a unified model (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise McrxError(f"{path} was written by a newer mcrx (format "
                        f"{manifest['format_version']})")
    return manifest


def load_connectors(path: str | Path, manifest: dict[str, Any], registry: Registry):
    """Leaf space → connector rebuilt through the registry, with its saved weights."""
    from safetensors.torch import load_file

    from mcrx.methods.common import ConnectorSpec

    connectors = {}
    for leaf in manifest["leaves"]:
        spec = ConnectorSpec(**leaf["connector"]["spec"])
        connector = registry.connector(leaf["connector"]["name"]).build(
            spec, params=leaf["connector"].get("params")
        )
        connector.load_state_dict(load_file(str(Path(path) / leaf["file"])))
        connectors[leaf["space"]] = connector
    return connectors
