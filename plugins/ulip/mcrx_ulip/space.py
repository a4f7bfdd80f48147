"""The ``ulip/pointbert`` space: ULIP-2's PointBERT with ULIP's image and text towers, one
512-d space for point clouds, images and text.

The model is loaded on first use (asking for a fingerprint or an encoder loads nothing), so
cached embeddings are reused without reading the 600 MB checkpoint. Encoders split loading
from the forward pass (``prepare`` per item, in DataLoader workers when mcrx encodes
datasets; ``encode_prepared`` per batch), and return L2-normalised float32 rows on the CPU.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcrx import Encoder, McrxError, Space, fingerprint_of
from mcrx.device import resolve_device
from mcrx.store.fingerprint import file_sha256
from mcrx.store.inputs import open_image, read_inputs
from mcrx_ulip.model import Ulip2, Ulip2Config, load_model, random_model, read_checkpoint
from mcrx_ulip.params import CHECKPOINT_NAME, PointBertParams
from mcrx_ulip.pointbert import PointBertConfig
from mcrx_ulip.pointclouds import list_pointcloud_files, prepare_cloud
from mcrx_ulip.text import TextConfig, Tokenizer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# SLIP's evaluation transform (facebookresearch/SLIP eval_zeroshot.py, commit d1de3e7:
# Resize(224) → CenterCrop(224) → RGB → ToTensor → Normalize(ImageNet stats)); ULIP itself
# (salesforce/ULIP main.py, commit 1998594) defines only a training transform,
# RandomResizedCrop(224, scale=(0.5, 1.0)) with the same statistics, and loads images with
# data/dataset_3d.py pil_loader: Image.open(f).convert('RGB'), no EXIF orientation
IMAGE_SIZE = 224
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def prepare_image(item: Any, exif_transpose: bool = True) -> np.ndarray:
    """A path, PIL image or H×W×3 uint8 array → (3, 224, 224) float32: a file turned
    upright by its EXIF orientation tag with ``exif_transpose`` (ULIP's ``pil_loader`` does
    not), converted to RGB, the shorter side resized to 224 (bilinear, as torchvision's
    ``Resize(224)`` on PIL images), the centre 224×224 cropped, scaled to [0, 1] and
    normalised with ImageNet's mean and std."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(item, (str, Path)):
        try:
            with open_image(item) as opened:  # bombs, extreme ratios refused undecoded
                upright = ImageOps.exif_transpose(opened) if exif_transpose else opened
                image = upright.convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise McrxError(f"cannot read image {item}: {exc}") from None
    elif isinstance(item, Image.Image):
        image = item.convert("RGB")
    elif isinstance(item, np.ndarray) and item.shape[2:] == (3,) and item.dtype == np.uint8:
        image = Image.fromarray(item)
    else:
        what = f"array {item.dtype} {item.shape}" if isinstance(item, np.ndarray) else type(item)
        raise McrxError(f"expected an image path, a PIL image or an H×W×3 uint8 array, got "
                        f"{what}")
    w, h = image.size
    if w <= h:
        size = (IMAGE_SIZE, int(IMAGE_SIZE * h / w))
    else:
        size = (int(IMAGE_SIZE * w / h), IMAGE_SIZE)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    left = int(round((size[0] - IMAGE_SIZE) / 2.0))
    top = int(round((size[1] - IMAGE_SIZE) / 2.0))
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # (224, 224, 3)
    return ((pixels - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1).copy()  # (3, 224, 224)


class UlipEncoder(Encoder):
    """What the three encoders share: batching, device, normalisation, fingerprint."""

    dim = 512

    def __init__(self, space: UlipSpace) -> None:
        self.space = space
        self.batch_size = space.params.batch_size

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        return self.encode_prepared([self.prepare(item) for item in items])

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        if not len(prepared):
            return torch.zeros(0, self.dim)
        model = self.space.model_for(self.modality)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(prepared), self.batch_size):
                batch = self.to_tensor(prepared[start: start + self.batch_size])
                embeddings = self.forward(model, batch.to(self.space.device))  # (b, 512)
                outputs.append(F.normalize(embeddings.float(), dim=-1).cpu())
        return torch.cat(outputs)

    def to_tensor(self, prepared: list[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack(prepared))

    @abstractmethod
    def forward(self, model: Ulip2, batch: torch.Tensor) -> torch.Tensor:
        """The un-normalised embeddings (b, 512) of one batch already on the device."""

    def preprocessing(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> str:
        return fingerprint_of(self.space.name, self.modality, self.space.fingerprint(),
                              self.preprocessing())


class PointCloudEncoder(UlipEncoder):
    """Files (.npy, .ply, .obj, .off), N×3 / N×6 arrays or dicts with ``xyz`` → (n, 512)."""

    modality = "pointcloud"

    def prepare(self, item: Any) -> np.ndarray:
        params = self.space.params
        return prepare_cloud(item, params.npoints, params.sampling, params.normalize,
                             params.fps_seed, min_points=max(params.groups, params.group_size))

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        """Clouds of one size share forward passes; with ``sampling: none`` sizes differ,
        so each size is batched on its own and the rows are put back in input order
        (a cloud's embedding does not depend on its batch)."""
        sizes = sorted({len(cloud) for cloud in prepared})
        if len(sizes) <= 1:
            return super().encode_prepared(prepared)
        out = torch.empty(len(prepared), self.dim)
        for size in sizes:
            rows = [i for i, cloud in enumerate(prepared) if len(cloud) == size]
            out[rows] = super().encode_prepared([prepared[i] for i in rows])
        return out

    def forward(self, model: Ulip2, batch: torch.Tensor) -> torch.Tensor:
        return model.encode_pc(batch)  # (b, N, 3) -> (b, 512)

    def read_inputs(self, path: Path) -> Sequence[Any]:
        return list_pointcloud_files(path)

    def preprocessing(self) -> dict[str, Any]:
        params = self.space.params
        return {"npoints": params.npoints, "sampling": params.sampling,
                "norm": "unit-sphere" if params.normalize else "none",
                "fps_seed": params.fps_seed}  # centre_fps is in the model config


class ImageEncoder(UlipEncoder):
    """Image files, PIL images or H×W×3 uint8 arrays → (n, 512)."""

    modality = "image"

    def prepare(self, item: Any) -> np.ndarray:
        return prepare_image(item, self.space.params.exif_transpose)  # (3, 224, 224)

    def forward(self, model: Ulip2, batch: torch.Tensor) -> torch.Tensor:
        return model.encode_image(batch)

    def read_inputs(self, path: Path) -> Sequence[Any]:
        path = Path(path)
        if path.is_dir():
            files = [f for f in read_inputs(path) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise McrxError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            return files
        return read_inputs(path)

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": IMAGE_SIZE, "crop": IMAGE_SIZE, "mean": IMAGE_MEAN.tolist(),
                "std": IMAGE_STD.tolist(), "exif_transpose": self.space.params.exif_transpose}


class TextEncoder(UlipEncoder):
    """Strings → (n, 512), tokenised with CLIP's BPE (77 tokens)."""

    modality = "text"

    def prepare(self, item: Any) -> str:
        if not isinstance(item, str):
            raise McrxError(f"expected a string, got {type(item).__name__}")
        return item

    def to_tensor(self, prepared: list[Any]) -> torch.Tensor:
        return self.space.tokenizer(prepared)  # (b, 77) token ids

    def forward(self, model: Ulip2, batch: torch.Tensor) -> torch.Tensor:
        return model.encode_text(batch)

    def preprocessing(self) -> dict[str, Any]:
        return {"tokenizer": "clip-bpe-49408", "context_length": 77}


ENCODERS = {"pointcloud": PointCloudEncoder, "image": ImageEncoder, "text": TextEncoder}


class UlipSpace(Space):
    """ULIP-2 PointBERT: point clouds, images (SLIP ViT-B/16) and text in one 512-d space."""

    dim = 512
    modalities = ("pointcloud", "image", "text")

    def __init__(self, name: str, params: PointBertParams) -> None:
        self.name = name
        self.params = params
        self.config = Ulip2Config(
            point=PointBertConfig(width=params.width, depth=params.depth, heads=params.heads,
                                  groups=params.groups, group_size=params.group_size,
                                  centre_fps=params.centre_fps, fps_seed=params.fps_seed),
            text=TextConfig(layers=params.text_depth),
            image_depth=params.image_depth,
        )
        self._model: Ulip2 | None = None
        self._tokenizer: Tokenizer | None = None
        self._weights_id: str | None = None
        self._encoders: dict[str, UlipEncoder] = {}

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only need the preprocessing: never pickle the model
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    # -- public API -----------------------------------------------------------------------
    def encoder(self, modality: str) -> UlipEncoder:
        if modality not in ENCODERS:
            raise McrxError(f"{self.name} has no {modality!r} encoder (it has "
                            f"{list(self.modalities)})")
        if modality not in self._encoders:
            self._encoders[modality] = ENCODERS[modality](self)
        return self._encoders[modality]

    def fingerprint(self) -> str:
        if self._weights_id is None:  # hash the weights once per process
            checkpoint = self.params.checkpoint
            self._weights_id = (f"sha256:{file_sha256(checkpoint)}" if checkpoint is not None
                                else f"random:{self.params.seed}")
        return fingerprint_of(self.name, self.dim, self._weights_id, repr(self.config))

    # -- lazily built parts ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return resolve_device(self.params.device)  # mcrx's one rule: auto = this process's GPU

    @property
    def model(self) -> Ulip2:
        if self._model is None:
            params = self.params
            if params.random_weights:
                model = random_model(self.config, params.seed)
            else:
                state_dict = read_checkpoint(params.checkpoint, trust=params.trust_checkpoint)
                model = load_model(state_dict, self.config, source=str(params.checkpoint))
            self._model = model.to(self.device)
        return self._model

    def model_for(self, modality: str) -> Ulip2:
        model = self.model
        if modality not in model.towers:
            keys = {"image": "module.visual.*", "text": "module.transformer.*"}[modality]
            raise McrxError(
                f"{self.params.checkpoint} has no {modality} weights (no {keys} keys), so "
                f"{self.name} embeds only {', '.join(model.towers)} with it; use the full "
                f"{CHECKPOINT_NAME} of the ULIP-2 release for {modality}"
            )
        return model

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.config.text.context_length)
        return self._tokenizer
