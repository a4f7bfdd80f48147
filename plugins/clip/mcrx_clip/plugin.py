"""The ``clip`` plugin's hooks: the ``clip/*`` family of open_clip spaces.

Imports without torch or open_clip: the factory imports :mod:`mcrx_clip.space` when a
space is actually built."""

from __future__ import annotations

from collections.abc import Callable
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
