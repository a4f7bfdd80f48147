"""The ``params:`` of the ``ulip/pointbert`` space. Imports without torch: recipes are
validated (``mcrx validate``) before any model is built."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mcrx.device import check_device_name
from mcrx.store.weights import weights_file

CHECKPOINT_NAME = "pointbert_ULIP-2.pt"
CHECKPOINT_SOURCE = (
    "download it from the ULIP-2 release (https://huggingface.co/datasets/SFXX/ulip, "
    "linked from github.com/salesforce/ULIP)"
)


class PointBertParams(BaseModel):
    """ULIP-2's PointBERT space. Defaults are the released model's architecture
    (``PointTransformer_8192point.yaml``); the small-architecture knobs exist for tests."""

    model_config = ConfigDict(extra="forbid")

    # declared before `checkpoint`: its validator reads this value
    random_weights: bool = Field(
        False,
        description="build the architecture with seeded random weights instead of loading "
        "'checkpoint' (tests only: the embeddings mean nothing)",
    )
    checkpoint: Path | None = Field(
        None,
        validate_default=True,
        description=f"path to {CHECKPOINT_NAME} (ULIP-2 PointBERT, 8k xyz points); "
        f"{CHECKPOINT_SOURCE}",
        json_schema_extra=weights_file(trust="trust_checkpoint"),
    )
    trust_checkpoint: bool = Field(
        False,
        description="allow a checkpoint that pickles Python objects beyond tensors, numpy "
        "scalars and dtypes and argparse.Namespace to be unpickled in full (which can run "
        "code from the file): only for a file you trust. Not needed for the released "
        f"{CHECKPOINT_NAME}, which mcrx reads without running anything",
    )
    seed: int = Field(0, description="seed of the random weights (with random_weights)")
    npoints: int = Field(
        8192, ge=1, description="points per cloud fed to PointBERT with sampling fps or "
        "random (and mesh surface samples); the released model was trained on 8192"
    )
    # -- preprocessing: the defaults are ULIP's own loaders; the paper recipes set what
    #    C-MCR / Ex-MCR did (sampling: none, normalize: false); the earlier mcrx pipeline is
    #    sampling: fps, normalize: true, fps_seed: null, centre_fps: pointnet2_ops ------------
    sampling: Literal["none", "fps", "random"] = Field(
        "fps",
        description="'none': the cloud as it is, any number of points >= groups (what C-MCR "
        "and Ex-MCR feed PointBERT: their 10k-point Objaverse files whole); 'fps': thinned "
        "to 'npoints' by farthest point sampling (ULIP's loaders); 'random': a seeded random "
        "subset (faster on huge clouds); fps and random pad smaller clouds with seeded "
        "repeats",
    )
    normalize: bool = Field(
        True,
        description="centre on the centroid and scale to the unit sphere after sampling "
        "(ULIP's pc_normalize); C-MCR and Ex-MCR do not",
    )
    fps_seed: int | None = Field(
        0,
        description="first point of every farthest point sampling (sampling: fps, and "
        "PointBERT's centres with centre_fps: torch), drawn at random from this seed as "
        "ULIP does from its global generators; null = point 0",
    )
    centre_fps: Literal["torch", "pointnet2_ops"] = Field(
        "torch",
        description="how PointBERT picks its 'groups' centres: 'torch' = ULIP's misc.fps as "
        "released with ULIP-2 and run by C-MCR / Ex-MCR (random first point, see fps_seed); "
        "'pointnet2_ops' = the CUDA kernel of ULIP's 2024 code (first point 0, points within "
        "~0.032 of the origin never chosen)",
    )
    exif_transpose: bool = Field(
        True,
        description="turn images upright by their EXIF orientation tag before the image "
        "transform; ULIP's loader (Image.open + convert('RGB')) does not",
    )
    device: str = Field(
        "auto", description="'auto' (this process's GPU when there is one, else the CPU), "
        "'cpu', 'cuda', 'cuda:1', ..."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device_name(value)
    batch_size: int = Field(8, ge=1, description="items per forward pass")
    # -- architecture (paper defaults; change only for tests) ------------------------------
    depth: int = Field(12, ge=1, description="PointBERT transformer blocks")
    width: int = Field(384, ge=1, description="PointBERT token width (trans_dim)")
    heads: int = Field(6, ge=1, description="PointBERT attention heads (must divide width)")
    groups: int = Field(512, ge=1, description="FPS centres (point patches) per cloud")
    group_size: int = Field(32, ge=1, description="kNN neighbours per patch")
    image_depth: int = Field(12, ge=1, description="ViT-B/16 blocks of the image tower")
    text_depth: int = Field(12, ge=1, description="layers of the text transformer")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        random_weights = info.data.get("random_weights", False)
        if value is None:
            if random_weights:
                return None
            raise ValueError(
                f"required: the path to {CHECKPOINT_NAME}; {CHECKPOINT_SOURCE} "
                "(or set random_weights: true, for tests only)"
            )
        if random_weights:
            raise ValueError("give either 'checkpoint' or 'random_weights: true', not both")
        path = value.expanduser()
        if not path.is_file():
            raise ValueError(
                f"{path} not found: it should be {CHECKPOINT_NAME}; {CHECKPOINT_SOURCE}"
            )
        return path

    @model_validator(mode="after")
    def _consistent(self) -> PointBertParams:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if self.group_size > self.npoints or self.groups > self.npoints:
            raise ValueError(
                f"npoints ({self.npoints}) must be at least groups ({self.groups}) and "
                f"group_size ({self.group_size})"
            )
        return self
