"""The unified-model artifact on disk: a folder with ``manifest.json`` (recipe, spaces, the
chain of leaves, modalities, versions, metrics) and one safetensors file per connector.

    model/manifest.json
    model/connectors/<leaf>.safetensors

Written beside its final path and renamed into place (:mod:`mcrx.store.atomic`). Format 1 is
the only format so far; an artifact written by any mcrx since 0.1 loads (a test keeps one).

A model folder is untrusted input when it is loaded: the manifest is validated
(:class:`ManifestModel` plus the chain checks of :func:`check_manifest`), connector files
must lie inside the folder, and every failure is an :class:`McrxError` naming the folder.
Writing never deletes what mcrx did not write (:func:`check_model_destination`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcrx.errors import McrxError
from mcrx.plugin.registry import Registry
from mcrx.store.atomic import atomic_path, clean_stale_siblings
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
        # relative paths in the spaces' params (weights/…) are relative to this folder
        "paths_root": os.getcwd(),
        "versions": versions(registry),
        "metrics": metrics or {},
    }



def anchored_params(params: dict[str, Any] | None, root: str | None) -> dict[str, Any]:
    """A space's params with each relative path that is not found from the current folder
    but is found from ``root`` (the folder the run started in, ``paths_root`` in the
    manifest) made absolute, so that a model loads from any folder. A path found from here,
    a tag (``openai``) or any other value is kept as written: embeddings cached by the run
    stay under the same keys when the model is used where it was made."""
    params = dict(params or {})
    if not root:
        return params
    for key, value in params.items():
        if not isinstance(value, str) or not value or "://" in value:
            continue
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            continue
        anchored = Path(root) / path
        if anchored.exists():
            params[key] = str(anchored)
    return params


# ---------------------------------------------------------------------------------------
# The manifest, validated when a model is loaded
# ---------------------------------------------------------------------------------------
_MAX_DIM = 1 << 20  # far above any embedding width; a tampered 10^12 must not allocate


class _Entry(BaseModel):
    # extra keys allowed: later formats may add fields an older mcrx can ignore
    model_config = ConfigDict(extra="allow")


class SpaceEntry(_Entry):
    plugin: str
    params: dict[str, Any] | None = None
    dim: int = Field(gt=0, le=_MAX_DIM)
    modalities: list[str] = Field(min_length=1)


class ConnectorEntry(_Entry):
    name: str
    params: dict[str, Any] | None = None
    spec: dict[str, Any]


class LeafEntry(_Entry):
    space: str
    parent: str
    bridge: str
    modality: str
    parent_modality: str
    connector: ConnectorEntry
    file: str


class ManifestModel(_Entry):
    """What ``manifest.json`` must hold for :func:`mcrx.load` to use it."""

    format_version: int = Field(ge=1)
    name: str = ""
    method: str
    target: Literal["parent", "new"] = "parent"
    base: str
    dim: int = Field(gt=0, le=_MAX_DIM)
    spaces: dict[str, SpaceEntry] = Field(min_length=1)
    leaves: list[LeafEntry] = Field(min_length=1)
    embedders: dict[str, str]


def check_manifest(path: Path, manifest: Any) -> dict[str, Any]:
    """Validate a manifest read from ``path``: its fields, then that every name it uses
    exists and that the chain of leaves reaches the base without a cycle (``project``
    walks it hop by hop: a leaf that is its own ancestor would loop for ever)."""
    if not isinstance(manifest, dict):
        raise McrxError(f"{path}/{MANIFEST}: expected a JSON object, got "
                        f"{type(manifest).__name__}")
    if isinstance(manifest.get("format_version"), int) and manifest["format_version"] > \
            FORMAT_VERSION:
        raise McrxError(f"{path} was written by a newer mcrx (format "
                        f"{manifest['format_version']}); upgrade mcrx to load it")
    try:
        model = ManifestModel.model_validate(manifest)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()[:6]
        )
        raise McrxError(f"{path}/{MANIFEST} is not a valid unified-model manifest: "
                        f"{problems}") from None

    def bad(message: str) -> McrxError:
        return McrxError(f"{path}/{MANIFEST}: {message}")

    if model.base not in model.spaces:
        raise bad(f"base {model.base!r} is not among the spaces {sorted(model.spaces)}")
    leaves = {leaf.space: leaf for leaf in model.leaves}
    if len(leaves) != len(model.leaves):
        raise bad("two leaves name the same space")
    if model.base in leaves:
        raise bad(f"the base {model.base!r} is also a leaf")
    if model.target == "new" and len(leaves) != 1:
        raise bad("a model with target 'new' (C-MCR) has exactly one leaf")
    for leaf in model.leaves:
        for role in ("space", "parent"):
            if getattr(leaf, role) not in model.spaces:
                raise bad(f"leaf {leaf.space!r}: {role} {getattr(leaf, role)!r} is not "
                          f"among the spaces")
        if leaf.parent != model.base and leaf.parent not in leaves:
            raise bad(f"leaf {leaf.space!r}: parent {leaf.parent!r} is neither the base nor "
                      "a leaf")
    for leaf in model.leaves:  # every chain reaches the base: ``project`` walks it
        seen, hop = [leaf.space], leaf
        while hop.parent != model.base:  # terminates: each hop adds a new space or fails
            if hop.parent in seen:
                raise bad(f"the chain of leaf {leaf.space!r} is a cycle "
                          f"({' → '.join([*seen, hop.parent])}); it must reach the base")
            seen.append(hop.parent)
            hop = leaves[hop.parent]
    for leaf in model.leaves:
        for name, space in (("modality", leaf.space), ("bridge", leaf.space),
                            ("bridge", leaf.parent), ("parent_modality", leaf.parent)):
            if getattr(leaf, name) not in model.spaces[space].modalities:
                raise bad(f"leaf {leaf.space!r}: {name} {getattr(leaf, name)!r} is not a "
                          f"modality of {space}")
    for modality, space in model.embedders.items():
        if space not in model.spaces:
            raise bad(f"embedders.{modality}: unknown space {space!r}")
    # the widths must agree: the connectors are built from each spec, and a collection
    # sizes its vectors by ``dim``
    if model.target == "parent" and model.dim != model.spaces[model.base].dim:
        raise bad(f"dim is {model.dim}, but the base {model.base!r} is "
                  f"{model.spaces[model.base].dim}-d (vectors of this model live there)")
    for leaf in model.leaves:
        for key, space in (("leaf_dim", leaf.space), ("parent_dim", leaf.parent)):
            if key in leaf.connector.spec and leaf.connector.spec[key] != \
                    model.spaces[space].dim:
                raise bad(f"leaf {leaf.space!r}: connector.spec.{key} is "
                          f"{leaf.connector.spec[key]!r}, but {space!r} is "
                          f"{model.spaces[space].dim}-d")
    for leaf in model.leaves:
        inside(path, leaf.file, f"leaf {leaf.space!r} file")
    return manifest


def inside(root: Path, relative: str, what: str) -> Path:
    """``root/relative``, refusing a path that leaves ``root`` (absolute, ``..``, or a
    symlink pointing out): a tampered manifest must not make mcrx open other files."""
    candidate = Path(relative)
    resolved_root = Path(root).resolve()
    target = (resolved_root / candidate).resolve()
    if candidate.is_absolute() or not target.is_relative_to(resolved_root):
        raise McrxError(f"{root}/{MANIFEST}: {what} {relative!r} lies outside the model folder")
    return Path(root) / candidate


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The validated manifest of the model folder ``path``."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise McrxError(f"{path} is not a unified model (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise McrxError(f"{manifest_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise McrxError(f"{manifest_path}: cannot read it ({exc})") from None
    return check_manifest(path, manifest)


# safetensors refuses headers above 100 MB itself, but only after reading them; a connector's
# header lists a few tensors (kilobytes): anything above this is not a connector file
_MAX_HEADER = 1 << 24


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a connector file, every failure an McrxError naming the file."""
    from safetensors.torch import load_file

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = int.from_bytes(handle.read(8), "little")
    except OSError as exc:
        raise McrxError(f"{path}: cannot read the connector weights ({exc})") from None
    if size < 8 or header > _MAX_HEADER or header + 8 > size:
        raise McrxError(f"{path}: not a safetensors file (header of {header:,} bytes in a "
                        f"file of {size:,})")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors' own SafetensorError, OSError, ...
        raise McrxError(f"{path}: not a readable safetensors file ({exc})") from None


def load_connectors(path: str | Path, manifest: dict[str, Any], registry: Registry):
    """Leaf space → connector rebuilt through the registry, with its saved weights."""
    from mcrx.methods.common import ConnectorSpec

    path = Path(path)
    connectors = {}
    for leaf in manifest["leaves"]:
        where = f"{path}/{MANIFEST}: leaf {leaf['space']!r}"
        try:
            spec = ConnectorSpec(**leaf["connector"]["spec"])
        except (TypeError, ValueError) as exc:
            raise McrxError(f"{where}: connector.spec is not a connector spec ({exc})") from None
        try:
            connector = registry.connector(leaf["connector"]["name"]).build(
                spec, params=leaf["connector"].get("params")
            )
        except McrxError as exc:
            raise McrxError(f"{where}: {exc}") from None
        except Exception as exc:  # a connector's own check of a tampered spec or params
            raise McrxError(f"{where}: cannot build the connector ({exc})") from None
        weights = read_safetensors(inside(path, leaf["file"], "connector file"))
        try:
            connector.load_state_dict(weights)
        except RuntimeError as exc:  # missing/unexpected keys, wrong shapes
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:4])
            raise McrxError(f"{where}: the weights in {leaf['file']} do not fit the "
                            f"connector ({detail})") from None
        _check_weights(path / leaf["file"], weights)
        _check_widths(path / leaf["file"], manifest, leaf, spec, connector)
        connectors[leaf["space"]] = connector
    return connectors


def _check_weights(file: Path, weights: dict[str, Any]) -> None:
    """Every floating-point tensor of a connector file holds finite numbers: a NaN or
    infinite weight makes every vector NaN (a model would load, embed and index NaN)."""
    import torch

    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise McrxError(f"{file}: the weight {name!r} holds {bad:,} NaN or infinite "
                            f"values of {tensor.numel():,}; the model is broken (re-train "
                            "or restore it)")


def _check_widths(file: Path, manifest: dict[str, Any], leaf: dict[str, Any], spec: Any,
                  connector: Any) -> None:
    """Project a probe through the connector and check the width that comes out against
    the manifest: the parent space's ``dim`` (Ex-MCR hops towards the base), or the
    model's ``dim`` (C-MCR's new space), on each side."""
    import torch

    spaces = manifest["spaces"]
    if manifest.get("target", "parent") == "new":
        expected = int(manifest["dim"])
        probes = [("leaf", leaf["modality"], spec.leaf_dim, expected),
                  ("parent", leaf["parent_modality"], spec.parent_dim, expected)]
    else:
        probes = [("leaf", leaf["modality"], spec.leaf_dim, int(spaces[leaf["parent"]]["dim"]))]
    training = connector.training
    connector.eval()
    try:
        for side, modality, width, expected in probes:
            with torch.no_grad():
                try:
                    out = connector.project(side, modality, torch.ones(2, width) / width ** .5)
                except Exception as exc:  # a spec that contradicts the weights
                    raise McrxError(f"{file}: the connector cannot map {width}-d {modality} "
                                    f"vectors ({type(exc).__name__}: {exc})") from None
            if out.ndim != 2 or out.shape[1] != expected:
                raise McrxError(f"{file}: the connector maps {modality} to "
                                f"{tuple(out.shape)[1:]} values, but the manifest says "
                                f"{expected}-d (dim)")
            if not bool(torch.isfinite(out).all()):
                raise McrxError(f"{file}: the connector maps {modality} to NaN or infinity; "
                                "the model is broken")
    finally:
        connector.train(training)


# ---------------------------------------------------------------------------------------
# Writing: never delete what mcrx did not write
# ---------------------------------------------------------------------------------------
def _mcrx_entries(path: Path) -> set[str] | None:
    """The entries of the folder ``path`` that an mcrx model wrote (its manifest and the
    connector files it lists), or None when ``path`` does not hold an mcrx model."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = {str(Path(leaf["file"])) for leaf in manifest["leaves"]}
        int(manifest["format_version"])
        # only connector files count as mcrx's, whatever a tampered manifest lists
        files = {f for f in files if f.startswith("connectors/") and f.count("/") == 1
                 and f.endswith(".safetensors")}
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    return {MANIFEST, "connectors", *files}


def check_model_destination(path: str | Path, force: bool = False) -> list[str]:
    """Refuse to write a model at ``path`` where that would delete what mcrx did not write;
    returns the user's entries (relative paths) that a write must carry into the new
    folder. Allowed: no ``path``, an empty folder, an mcrx model (its extra files are kept),
    and with ``force`` a folder of other files (kept too, the model written beside them)."""
    path = Path(path)
    clean_stale_siblings(path)  # a model folder left aside by a kill comes back first
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise McrxError(f"{path} exists and is not a folder; mcrx does not replace it: "
                        "remove it or write the model elsewhere")
    if not path.exists():
        return []
    entries = sorted(p.name for p in path.iterdir())
    ours = _mcrx_entries(path)
    if ours is None:
        if not entries:
            return []
        if not force:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise McrxError(f"{path} is a non-empty folder that is not an mcrx model "
                            f"({shown}); mcrx would have to replace it. Choose an empty or "
                            "new folder, or pass --force to write the model into it "
                            "(its files are kept)")
        clash = sorted({MANIFEST, "connectors"} & set(entries))
        if clash:
            raise McrxError(f"{path} holds {', '.join(clash)} that are not an mcrx model's; "
                            "move them away first (even --force keeps them)")
        return entries
    carried = [name for name in entries if name not in ours]
    connectors = path / "connectors"
    if connectors.is_dir() and not connectors.is_symlink():
        carried += [f"connectors/{p.name}" for p in sorted(connectors.iterdir())
                    if f"connectors/{p.name}" not in ours]
    elif connectors.exists():
        carried.append("connectors")  # not a folder: not mcrx's
    return carried


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (no copy of large user files), else a
    copy: the original stays in the old folder until the new one is in place."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _carry(source: Path, target: Path) -> None:
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(target))


def save_artifact(path: str | Path, manifest: dict[str, Any], connectors: dict[str, Any],
                  force: bool = False) -> Path:
    """Write the model folder: ``connectors`` maps a leaf space to its connector module.
    Files in ``path`` that mcrx did not write are carried into the new folder (linked or
    copied before the old folder is replaced): nothing of the user's is ever deleted."""
    from safetensors.torch import save_file

    path = Path(path)
    carried = check_model_destination(path, force)
    written = {str(Path(leaf["file"])) for leaf in manifest["leaves"]}
    with atomic_path(path, directory=True) as tmp:
        (tmp / "connectors").mkdir()
        for name in carried:
            if name in written:  # a hard-linked copy must never be written over
                raise McrxError(f"{path}/{name}: a file of yours has the name of a connector "
                                "file mcrx writes; move it away first")
            _carry(path / name, tmp / name)
        for leaf in manifest["leaves"]:
            weights = connectors[leaf["space"]].state_dict()
            # safetensors wants contiguous CPU tensors; a model moved to a GPU saves the same
            state = {key: value.detach().contiguous().cpu() for key, value in weights.items()}
            save_file(state, str(tmp / leaf["file"]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return path
