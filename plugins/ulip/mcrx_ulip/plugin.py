"""Hook module of the ``ulip`` plugin (entry point ``mcrx``: ``ulip = "mcrx_ulip.plugin"``).
Imports without torch: the space is built by the factory, on demand."""

from __future__ import annotations

from typing import Any

from mcrx import hookimpl
from mcrx_ulip.params import PointBertParams


def build_pointbert(full_name: str, params: PointBertParams) -> Any:
    """Factory of ``ulip/pointbert`` (the model itself loads on first use)."""
    from mcrx_ulip.space import UlipSpace

    return UlipSpace(full_name, params)


@hookimpl
def register_spaces(register: Any) -> None:
    register(
        "pointbert",
        build_pointbert,
        modalities=("pointcloud", "image", "text"),
        dim=512,
        params=PointBertParams,
        description="ULIP-2 PointBERT (pointbert_ULIP-2.pt, 8k xyz points) with ULIP's SLIP "
        "ViT-B/16 image and text towers; pure PyTorch",
    )
