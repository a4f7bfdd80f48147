"""Importing the projector weights the C-MCR and Ex-MCR authors released.

Their layouts (the authors' released ``*_projector.py`` and checkpoints):

- C-MCR ``clap_clip.pt``: ``Head_A`` (CLAP side) and ``Head_B`` (CLIP side), each
  ``net1 = Linear(512→1024)+BN+ReLU``, ``net2 = Linear(1024→512)+BN``;
- C-MCR ``ulip_clip.pt``: ``Head_A`` (CLIP side) and ``Head_B`` (ULIP side), each
  ``net = Linear(512→512)+BN+ReLU``;
- Ex-MCR ``ex_clap.pt`` / ``ex_ulip.pt``: ``Head1 = Linear(512→512)`` on the leaf modality
  (audio, point cloud), then ``Head2 = mlp1, mlp2``, each ``net1/net2`` as above.

Each becomes an mcrx unified model whose connectors hold the same numbers under mcrx's
names, so ``model.project(...)`` gives what the authors' code gives on the same embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcrx.errors import McrxError
from mcrx.infer.unified import UnifiedModel
from mcrx.methods.cmcr import CMcrConnector
from mcrx.methods.common import ConnectorSpec
from mcrx.methods.exmcr import ExMcrConnector
from mcrx.methods.params import CMcrParams, ExMcrParams
from mcrx.plugin.manager import get_registry
from mcrx.store.artifact import build_manifest, check_model_destination
from mcrx.store.weights import load_weights

DIM = 512  # every released head works on 512-d embeddings


@dataclass(frozen=True)
class OfficialSpaces:
    """Which mcrx spaces the released heads connect, and their params (weights files)."""

    clip: str = "clip/ViT-B-32"
    # what both papers' authors used ("the weight we use"): 630k-fusion-best.pt, fusion on
    clap: str = "clap/630k-fusion"
    ulip: str = "ulip/pointbert"
    clip_params: dict | None = None
    clap_params: dict | None = None
    ulip_params: dict | None = None


SPACE_MODALITIES = {"clip": ["image", "text"], "clap": ["audio", "text"],
                    "ulip": ["pointcloud", "image", "text"]}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A released head file: a plain state dict (possibly under ``state_dict`` or with a
    ``module.`` prefix), loaded without unpickling arbitrary objects."""
    path = Path(path)
    # McrxError naming the file, with mcrx's own advice; a head file is a plain state dict,
    # so not even the training-state allowlist (numpy scalars, Namespace) applies
    loaded = load_weights(path, allowlist=False, trust_hint=None)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise McrxError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    not_tensors = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise McrxError(f"{path}: a state dict maps names to tensors; these entries are not "
                        f"tensors: {not_tensors[:6]}")
    return {str(key).removeprefix("module."): value for key, value in loaded.items()}


def _take(state: dict[str, torch.Tensor], mapping: dict[str, str], path: Path) -> dict:
    """Rename ``official prefix → mcrx prefix`` for every key; refuse leftovers or gaps."""
    renamed, used = {}, set()
    for key, value in state.items():
        for official, ours in mapping.items():
            if key.startswith(official + "."):
                renamed[ours + key[len(official):]] = value
                used.add(key)
                break
    unused = sorted(set(state) - used)
    if unused:
        raise McrxError(f"{path}: unexpected keys for this layout: {unused[:6]}")
    return renamed


def _load_into(connector: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        missing, unexpected = connector.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # "size mismatch for ...": a head of another width
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise McrxError(f"{path}: weights of the wrong shape for the released layout "
                        f"({'; '.join(lines[:3]) or exc})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise McrxError(f"{path}: does not match the released layout "
                        f"(missing {missing[:6]}, unexpected {unexpected[:6]})")


def _mlp_block(official: str, ours: str) -> dict[str, str]:
    """``net1 = Linear+BN(+ReLU)``, ``net2 = Linear+BN`` → ``expand``/``contract``."""
    return {f"{official}.net1": f"{ours}.expand", f"{official}.net2": f"{ours}.contract"}


def cmcr_clap_clip(path: Path) -> CMcrConnector:
    state = load_state_dict(path)
    spec = ConnectorSpec(DIM, DIM, "text", "audio", "image", SPACE_MODALITIES["clap"],
                         SPACE_MODALITIES["clip"])
    connector = CMcrConnector(spec, CMcrParams(layout="mlp", hidden_dim=2 * DIM))
    mapping = {**_mlp_block("Head_B", "parent_projector"), **_mlp_block("Head_A", "leaf_projector")}
    _load_into(connector, _take(state, mapping, path), path)
    return connector


def cmcr_ulip_clip(path: Path) -> CMcrConnector:
    state = load_state_dict(path)
    spec = ConnectorSpec(DIM, DIM, "image", "pointcloud", "text", SPACE_MODALITIES["ulip"],
                         SPACE_MODALITIES["clip"])
    connector = CMcrConnector(spec, CMcrParams(layout="half"))
    mapping = {"Head_A.net": "parent_projector.expand", "Head_B.net": "leaf_projector.expand"}
    _load_into(connector, _take(state, mapping, path), path)
    return connector


def exmcr_head(path: Path, bridge: str, leaf_modality: str, leaf: str) -> ExMcrConnector:
    state = load_state_dict(path)
    spec = ConnectorSpec(DIM, DIM, bridge, leaf_modality,
                         "image" if bridge == "text" else "text",
                         SPACE_MODALITIES[leaf], SPACE_MODALITIES["clip"])
    connector = ExMcrConnector(spec, ExMcrParams(hidden_dim=2 * DIM, blocks=2))
    mapping = {"Head1": f"f_l.{leaf_modality}", **_mlp_block("Head2.mlp1", "f_m.0"),
               **_mlp_block("Head2.mlp2", "f_m.1")}
    _load_into(connector, _take(state, mapping, path), path)
    return connector


def check_spaces(spaces: OfficialSpaces, kinds: list[str]) -> None:
    """Each space the model will name must be installed, have the released heads' width and
    the modalities they connect, and its params (when given) must validate: a typo'd name,
    key or weights file is refused now, not when ``model.embed`` first runs."""
    from pydantic import ValidationError

    from mcrx.plugin.manager import get_registry

    registry = get_registry()
    for kind in kinds:
        name, params = getattr(spaces, kind), getattr(spaces, f"{kind}_params") or {}
        option = f"--{kind}-space"
        try:
            spec = registry.space(name)
        except McrxError as exc:
            raise McrxError(f"{option} {name}: {exc}") from None
        if spec.dim is not None and spec.dim != DIM:
            raise McrxError(f"{option} {name}: the released heads work on {DIM}-d embeddings, "
                            f"this space is {spec.dim}-d")
        missing = sorted(set(SPACE_MODALITIES[kind]) - set(spec.modalities))
        if missing:
            raise McrxError(f"{option} {name}: lacks the modalities {missing} the released "
                            f"heads connect (it has {list(spec.modalities)})")
        if params:  # empty params: a model for ``project`` only, weights named later
            try:
                spec.validate_params(params)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                    for err in exc.errors()[:6])
                raise McrxError(f"--{kind}-params: {problems}") from None
            except McrxError as exc:
                raise McrxError(f"--{kind}-params: {exc}") from None


#: the authors' preprocessing, under the params given (theirs win): C-MCR / Ex-MCR
#: ``trunks.py`` feed PointBERT the raw ``xyz`` of their dict files (no sampling, no
#: re-centring or rescaling; PointBERT's patch centres by ULIP's torch ``misc.fps``) and
#: load images with HF's CLIPProcessor / ULIP's ``pil_loader``, which ignore EXIF orientation
AUTHORS_PREPROCESSING: dict[str, dict[str, Any]] = {
    "clip": {"exif_transpose": False},
    "clap": {},
    "ulip": {"sampling": "none", "normalize": False, "centre_fps": "torch", "fps_seed": 0,
             "exif_transpose": False},
}


def _space_entry(name: str, kind: str, params: dict | None) -> dict[str, Any]:
    return {"plugin": name.split("/")[0],
            "params": {**AUTHORS_PREPROCESSING[kind], **(params or {})}, "dim": DIM,
            "modalities": SPACE_MODALITIES[kind]}


def _leaf_entry(connector, space: str, parent: str, name: str, params: dict) -> dict[str, Any]:
    spec = connector.spec
    return {"space": space, "parent": parent, "bridge": spec.bridge,
            "modality": spec.leaf_modality, "parent_modality": spec.parent_modality,
            "connector": {"name": name, "params": params, "spec": spec.as_dict()}}


def import_official(
    out: Path,
    *,
    clap_clip: Path | None = None,
    ulip_clip: Path | None = None,
    ex_clap: Path | None = None,
    ex_ulip: Path | None = None,
    spaces: OfficialSpaces | None = None,
    force: bool = False,
) -> UnifiedModel:
    """Write the unified model of released heads to ``out``. Give exactly one C-MCR file,
    or one or both Ex-MCR files (one model with CLIP as base). ``out`` must be new, empty
    or an mcrx model; ``force`` allows a folder of other files (kept, never deleted)."""
    spaces = spaces or OfficialSpaces()
    cmcr = [p for p in (clap_clip, ulip_clip) if p is not None]
    exmcr = [p for p in (ex_clap, ex_ulip) if p is not None]
    if bool(cmcr) == bool(exmcr) or len(cmcr) > 1:
        raise McrxError("give one C-MCR head file (--clap-clip or --ulip-clip), or the Ex-MCR "
                        "head files (--ex-clap and/or --ex-ulip)")
    check_model_destination(out, force)  # before any work: refuse early, delete nothing
    check_spaces(spaces, ["clip", *[kind for kind, given in (
        ("clap", clap_clip or ex_clap), ("ulip", ulip_clip or ex_ulip)) if given]])
    space_entries = {spaces.clip: _space_entry(spaces.clip, "clip", spaces.clip_params)}
    connectors, leaves = {}, []
    if clap_clip is not None or ulip_clip is not None:
        method, target = "c-mcr", "new"
        if clap_clip is not None:
            leaf_kind, leaf_space, connector = "clap", spaces.clap, cmcr_clap_clip(clap_clip)
            params = {"layout": "mlp", "hidden_dim": 2 * DIM}
        else:
            leaf_kind, leaf_space, connector = "ulip", spaces.ulip, cmcr_ulip_clip(ulip_clip)
            params = {"layout": "half"}
        space_entries[leaf_space] = _space_entry(
            leaf_space, leaf_kind, getattr(spaces, f"{leaf_kind}_params"))
        connectors[leaf_space] = connector
        leaves.append(_leaf_entry(connector, leaf_space, spaces.clip, "mcrx/c-mcr", params))
    else:
        method, target = "ex-mcr", "parent"
        for path, kind, bridge, modality in ((ex_clap, "clap", "text", "audio"),
                                             (ex_ulip, "ulip", "image", "pointcloud")):
            if path is None:
                continue
            space = getattr(spaces, kind)
            space_entries[space] = _space_entry(space, kind, getattr(spaces, f"{kind}_params"))
            connectors[space] = exmcr_head(path, bridge, modality, kind)
            leaves.append(_leaf_entry(connectors[space], space, spaces.clip, "mcrx/ex-mcr",
                                      {"hidden_dim": 2 * DIM, "blocks": 2}))
    sources = {k: str(v) for k, v in (("clap_clip", clap_clip), ("ulip_clip", ulip_clip),
                                      ("ex_clap", ex_clap), ("ex_ulip", ex_ulip)) if v}
    manifest = build_manifest(
        name=f"official-{method}", method=method, base=spaces.clip, target=target, dim=DIM,
        spaces=space_entries, leaves=leaves, recipe={"imported_from": sources},
        registry=get_registry(),  # the plugins' versions, named if one is missing later
    )
    model = UnifiedModel(manifest, connectors)
    model.save(out, force=force)
    return model
