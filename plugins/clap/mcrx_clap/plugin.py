"""The ``clap`` plugin's hooks: one space per released LAION CLAP checkpoint
(``clap/630k-audioset-fusion``, ``clap/music``, ...) plus ``clap/*`` for custom ones.

Imports without torch or laion_clap: the factory imports :mod:`mcrx_clap.space` when a
space is actually built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcrx import hookimpl
from mcrx_clap.params import DEFAULT_AMODEL, PRESETS, ClapParams


def build_clap_space(full_name: str, params: ClapParams) -> Any:
    """Factory of ``clap/<model>`` (see :func:`mcrx_clap.space.build_space`)."""
    from mcrx.offline import ensure_hub_offline

    ensure_hub_offline()  # laion_clap downloads tokenizers while it is being imported
    from mcrx_clap.space import build_space

    return build_space(full_name, params)


@hookimpl
def register_spaces(register: Callable[..., None]) -> None:
    for name, preset in PRESETS.items():
        register(
            name,
            build_clap_space,
            modalities=("audio", "text"),
            dim=512,
            params=ClapParams,
            description=f"LAION CLAP {preset.amodel}{' fusion' if preset.fusion else ''}, "
            f"trained on {preset.trained_on} (checkpoint {preset.checkpoint})",
        )
    register(
        "*",
        build_clap_space,
        modalities=("audio", "text"),
        dim=512,
        params=ClapParams,
        description=f"any other laion_clap model: `amodel` (default {DEFAULT_AMODEL}), "
        "`tmodel`, fusion as the checkpoint is",
    )
