"""The ``clip`` plugin's hooks: the ``clip/*`` family of open_clip spaces.

Imports without torch or open_clip: the factory imports :mod:`mcrx_clip.space` when a
space is actually built."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcrx import hookimpl
from mcrx_clip.params import ClipParams


def build_clip_space(full_name: str, params: ClipParams) -> Any:
    """Factory of ``clip/<architecture>``: builds the open_clip model (see
    :func:`mcrx_clip.space.build_space`)."""
    from mcrx.offline import ensure_hub_offline

    ensure_hub_offline()  # before open_clip imports huggingface_hub
    from mcrx_clip.space import build_space

    return build_space(full_name, params)


#: widths of the usual architectures, for when open_clip's configs cannot be read here
KNOWN_DIMS = {
    "RN50": 1024, "RN101": 512, "RN50x4": 640, "RN50x16": 768, "RN50x64": 1024,
    "ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768, "ViT-L-14-336": 768,
    "ViT-H-14": 1024, "ViT-g-14": 1024, "ViT-bigG-14": 1280,
}


def _config_dim(path: Path) -> int | None:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("model_cfg", config)  # a release folder's open_clip_config.json
    dim = config.get("embed_dim") if isinstance(config, dict) else None
    return dim if isinstance(dim, int) and dim > 0 else None


def clip_dim(full_name: str, params: dict[str, Any] | None = None) -> int | None:
    """The width of ``clip/<architecture>`` without building the model (``mcrx plan`` must
    not load weights): the recipe's ``model_config`` file, else open_clip's own config of
    that architecture (read from its package folder; importing open_clip takes seconds),
    else the table of usual architectures. ``None`` when no source knows it."""
    arch = full_name.split("/", 1)[-1].removesuffix("-quickgelu")
    config = (params or {}).get("model_config")
    if config:
        path = Path(str(config)).expanduser()
        return _config_dim(path / "open_clip_config.json" if path.is_dir() else path)
    spec = importlib.util.find_spec("open_clip")  # locates the package, imports nothing
    for folder in (spec.submodule_search_locations or ()) if spec else ():
        for name in (full_name.split("/", 1)[-1], arch):
            dim = _config_dim(Path(folder) / "model_configs" / f"{name}.json")
            if dim is not None:
                return dim
    return KNOWN_DIMS.get(arch)


build_clip_space.dim_of = clip_dim  # type: ignore[attr-defined]  (see mcrx.stages.plan)


@hookimpl
def register_spaces(register: Callable[..., None]) -> None:
    register(
        "*",
        build_clip_space,
        modalities=("image", "text"),
        params=ClipParams,
        description="open_clip image-text space of any architecture: clip/ViT-B-32, "
        "clip/ViT-L-14, clip/RN50, ... (weights from a local file, folder or cached tag)",
    )
