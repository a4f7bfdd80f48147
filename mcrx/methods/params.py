"""Parameters of the core connectors (``training.connector.params`` in recipes). Kept apart
from the paper modules (:mod:`mcrx.methods.exmcr`, :mod:`mcrx.methods.cmcr`): validating a
recipe does not import torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExMcrParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_dim: int = Field(
        1024,
        gt=0,
        description="width of the f_m MLP blocks. 1024 is the papers' setting, 2× their "
        "512-d spaces; an absolute width, not a ratio: for spaces of another width choose "
        "it (README.md, 'Defaults')",
    )
    blocks: int = Field(2, ge=1, description="number of MLP blocks in f_m (papers: 2)")


class CMcrParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: Literal["mlp", "half"] = Field(
        "mlp",
        description="'mlp': Linear+BN+ReLU → Linear+BN (CLIP–CLAP); "
        "'half': one Linear+BN+ReLU (CLIP–ULIP)",
    )
    hidden_dim: int = Field(1024, gt=0, description="hidden width of the 'mlp' layout "
                            "(the paper's, 2× its 512-d spaces)")
    out_dim: int | None = Field(None, gt=0, description="dimension of the new space "
                                "(default: the parent's)")


class LinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    solver: Literal["lstsq", "procrustes"] = Field(
        "lstsq", description="least squares, or orthogonal Procrustes (a rotation)"
    )
