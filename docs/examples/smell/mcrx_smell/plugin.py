"""The hook module: imported by `mcrx list-plugins`, so it imports neither torch nor numpy."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcrx import hookimpl

SENSORS = 16  # a smell item is one reading of a 16-sensor electronic nose
DIM = 32  # the width of the nose space


class NoseParams(BaseModel):
    """``params:`` of ``smell/nose`` in a recipe (``mcrx validate`` reports errors here)."""

    model_config = ConfigDict(extra="forbid")
    weights: Path = Field(description="the nose encoders' weights (.npz with 'smell', 'text')")
    batch_size: int = Field(256, gt=0, description="items per forward pass")

    @field_validator("weights")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():  # name the file and where to get it
            raise ValueError(f"{path} not found: train one with mcrx_smell.space.save_weights")
        return path


def build_nose(full_name: str, params: NoseParams):
    from mcrx_smell.space import NoseSpace  # torch is imported here, not above

    return NoseSpace(full_name, params)


@hookimpl
def register_modalities(register):
    register("smell", description=f"electronic-nose readings ({SENSORS} sensors)")


@hookimpl
def register_spaces(register):
    # dim= is what `mcrx validate` checks precomputed embeddings against before the space
    # is built; the built NoseSpace.dim must agree (it shapes the connectors)
    register("nose", build_nose, modalities=["smell", "text"], dim=DIM, params=NoseParams,
             description="smell–text space of an electronic nose")
