"""Parameters of the toy world, its spaces and its dataset, plus the fixed facts (raw
dimensions, which space covers which modalities). Imports neither numpy nor torch: the hook
module reads it at ``mcrx list-plugins`` time.

One :class:`WorldConfig` is nested in both the spaces' and the dataset's params, so the
defaults agree: a recipe that leaves ``world`` alone gets spaces trained on the very world
its memories and evaluation sets are drawn from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: raw vector length of each modality; different on purpose, so no encoder can be reused
#: for another modality by accident. The first four are mcrx's standard modalities; the
#: toy world's raw dims of those four are part of every toy space's cache key since format 1
CORE_RAW_DIMS: dict[str, int] = {"image": 48, "text": 32, "audio": 40, "pointcloud": 56}
#: ``tactile`` is a modality no built-in space has: the toy plugin registers it itself
#: (``register_modalities``), the worked example of a plugin that adds a modality
NEW_MODALITIES: dict[str, str] = {
    "tactile": "toy touch-sensor readings (a modality the toy plugin adds to mcrx)",
}
RAW_DIMS: dict[str, int] = {**CORE_RAW_DIMS, "tactile": 24}
MODALITIES: tuple[str, ...] = tuple(RAW_DIMS)

#: bump when the world's rendering or the spaces' training changes, so caches are refreshed
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SpaceDefinition:
    """What makes toy/clip a CLIP look-alike: the two modalities it pairs and its width."""

    name: str  # short name, registered as toy/<name>
    modalities: tuple[str, str]
    dim: int
    description: str


SPACE_DEFINITIONS: dict[str, SpaceDefinition] = {
    "clip": SpaceDefinition(
        "clip", ("image", "text"), 64, "toy image–text space (the CLIP of the toy world)"
    ),
    "clap": SpaceDefinition(
        "clap", ("audio", "text"), 48, "toy audio–text space (the CLAP of the toy world)"
    ),
    "ulip": SpaceDefinition(
        "ulip", ("pointcloud", "image"), 56, "toy 3D–image space (the ULIP of the toy world)"
    ),
    # shares audio with toy/clap only: attached to toy/clap, it is two hops from toy/clip
    "haptic": SpaceDefinition(
        "haptic", ("tactile", "audio"), 40, "toy tactile–audio space (touch heard as sound)"
    ),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldConfig(_Strict):
    """The synthetic world: latent concepts and the fixed maps that render them."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # frozen: hashable, cacheable

    seed: int = Field(0, ge=0, description="world seed: class centres and rendering maps")
    classes: int = Field(40, ge=2, description="number of concept classes")
    latent_dim: int = Field(16, ge=2, description="dimension of the shared latent concept space")
    class_spread: float = Field(
        0.5,
        ge=0,
        description="std of the continuous within-class variation (class centres have unit "
        "std per latent dimension)",
    )
    nuisance_dim: int = Field(
        4, ge=0, description="modality-specific nuisance factors, never shared across modalities"
    )
    noise: float = Field(0.1, ge=0, description="std of the additive noise on raw vectors")


class ToySpaceParams(_Strict):
    """How a toy space is trained (symmetric InfoNCE on pairs of its own two modalities)."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="the world to train on")
    pairs: int = Field(
        16384, gt=1, description="paired training samples drawn from the space's own latents"
    )
    epochs: int = Field(8, gt=0, description="passes over the training pairs")
    batch_size: int = Field(512, gt=1, description="pairs per step (the InfoNCE negatives)")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate (cosine decay to zero)")
    temperature: float = Field(
        0.01,
        gt=0,
        description="fixed InfoNCE temperature; 0.01 is where CLIP's learnt temperature ends, "
        "and a temperature this low is what keeps the modality gap open",
    )
    hidden: int = Field(128, gt=0, description="width of the encoders' two hidden layers")
    seed: int = Field(0, ge=0, description="training seed: latent draws, init and shuffling")


class WorldDatasetParams(_Strict):
    """Which items of the world to draw."""

    split: Literal["memory", "eval"] = Field(
        "memory",
        description="'memory': unpaired, every modality draws its own latents; 'eval': "
        "held-out latents rendered in every modality, row aligned",
    )
    # 10^7 rows of ≤ 56 floats are 2 GiB per modality; 10^12 would ask for 7 TiB (issue 7)
    count: int = Field(10_000, gt=0, le=10_000_000, description="items per modality")
    seed: int = Field(0, ge=0, description="sampling seed (streams differ per split anyway)")
    world: WorldConfig = Field(
        default_factory=WorldConfig, description="the world (must match the spaces' world)"
    )
