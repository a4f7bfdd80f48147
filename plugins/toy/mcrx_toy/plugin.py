"""The ``toy`` plugin's hooks: a new modality (``tactile``), four toy contrastive spaces and
the world dataset.

Imports without numpy or torch; the factories import the heavy modules when a space or
dataset is actually built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcrx import hookimpl
from mcrx_toy.config import (
    MODALITIES,
    NEW_MODALITIES,
    SPACE_DEFINITIONS,
    SpaceDefinition,
    ToySpaceParams,
    WorldDatasetParams,
)


def _space_factory(definition: SpaceDefinition) -> Callable[[str, ToySpaceParams], Any]:
    def build(full_name: str, params: ToySpaceParams) -> Any:
        from mcrx_toy.spaces import build_space

        return build_space(full_name, definition, params)

    return build


def _world_dataset(params: WorldDatasetParams) -> Any:
    from mcrx_toy.dataset import WorldDataset

    return WorldDataset(params)


@hookimpl
def register_modalities(register: Callable[..., None]) -> None:
    # image, text, audio and pointcloud come with mcrx; a plugin registers what it adds
    for name, description in NEW_MODALITIES.items():
        register(name, description=description)


@hookimpl
def register_spaces(register: Callable[..., None]) -> None:
    for name, definition in SPACE_DEFINITIONS.items():
        register(
            name,
            _space_factory(definition),
            modalities=definition.modalities,
            dim=definition.dim,
            params=ToySpaceParams,
            description=f"{definition.description}; trained on first use, then cached",
        )


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register(
        "world",
        _world_dataset,
        modalities=MODALITIES,
        params=WorldDatasetParams,
        description="the toy world's raw items: unpaired memories or a row-aligned, "
        "labelled evaluation split",
    )
