"""Parameters of the ``clip/<architecture>`` spaces. Imports without torch or open_clip, so
``mcrx validate`` checks a recipe instantly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mcrx.device import check_device_name
from mcrx.store.weights import weights_file

#: suffixes of weight files open_clip reads (``.npz`` is big_vision's SigLIP format)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")

OPENAI_VIT_B32_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
)

_WHERE_TO_GET = (
    "give a local weights file (.pt/.bin/.safetensors) or a folder holding one, e.g. "
    f"OpenAI's ViT-B/32 weights from {OPENAI_VIT_B32_URL}, or an open_clip pretrained tag "
    "such as 'openai' or 'laion2b_s34b_b79k' (a tag only works where open_clip's cache "
    "already holds its weights; `python -c \"import open_clip; "
    "print(open_clip.list_pretrained())\"` lists the tags)"
)

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


def looks_like_path(value: str) -> bool:
    """open_clip tags are bare words (``openai``, ``laion2b_s34b_b79k``); anything with a
    path separator, a leading ``~`` or ``.``, a weights suffix, or that exists on disk is a
    path."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or value.lower().endswith(WEIGHT_SUFFIXES)
        or Path(value).exists()
    )


class ClipParams(BaseModel):
    """``params:`` of a ``clip/<architecture>`` space."""

    model_config = ConfigDict(extra="forbid")

    # before `pretrained`, whose validator reads it: random weights are asked for, never a
    # silent default (a recipe that forgot its weights would train on noise)
    random_weights: bool = Field(
        False,
        description="build with RANDOM (seeded) weights and no `pretrained`: for tests and "
        "benchmarks only, never for real embeddings",
    )
    pretrained: str | None = Field(
        None,
        validate_default=True,
        # `mcrx validate` opens the file (or each file of the folder) before any work
        json_schema_extra=weights_file(folder=True, torchscript=True),
        description="weights: OpenAI's TorchScript release file (ViT-B-32.pt); an open_clip "
        "weights file (.pt/.bin/.safetensors) or a folder holding one (open_clip Hub folders: "
        "open_clip_model.safetensors / open_clip_pytorch_model.bin beside "
        "open_clip_config.json, which decides QuickGELU and preprocessing); a transformers "
        "CLIP folder (config.json, model.safetensors or pytorch_model.bin, vocab.json + "
        "merges.txt, preprocessor_config.json, e.g. openai/clip-vit-base-patch32), run with "
        "transformers' CLIPModel, tokenizer and image processor; or an open_clip pretrained "
        "tag such as 'openai' (only where open_clip's cache already has it: mcrx runs "
        "offline). Required unless `random_weights: true`",
    )
    config_file: Path | None = Field(
        None,
        alias="model_config",
        description="a custom open_clip model-config JSON (or a folder of them) registered "
        "with open_clip.add_model_config before building; open_clip names a config by its "
        "file stem, so clip/tiny needs tiny.json",
    )
    quick_gelu: bool | None = Field(
        None,
        description="use QuickGELU activations. Default: decided by the weights themselves — "
        "on for tag 'openai' (or any tag open_clip marks QuickGELU), an OpenAI TorchScript "
        "archive, a state dict carrying OpenAI's input_resolution/context_length/vocab_size "
        "entries or a *-quickgelu architecture; as open_clip_config.json's "
        "model_cfg.quick_gelu says for an open_clip Hub file; as config.json's hidden_act "
        "says for a transformers folder. A bare state dict that tells none of these is "
        "refused until you set this (true for OpenAI-trained weights, false for LAION / "
        "DataComp ones): OpenAI weights with plain GELU give silently wrong embeddings",
    )
    exif_transpose: bool = Field(
        True,
        description="turn photos upright by their EXIF orientation tag before preprocessing "
        "(what a person sees). The CLIP references do not (transformers' CLIPProcessor, "
        "open_clip's transform): set false to reproduce their embeddings, as the paper "
        "recipes do",
    )
    device: str = Field("auto", description="torch device: auto (this process's GPU under "
                        "torchrun / accelerate launch, else the CPU), cpu, cuda, cuda:1, mps")
    batch_size: int | None = Field(
        None, gt=0, description="items per forward pass (default: 512 on a GPU, 32 on the CPU)")
    autocast: Literal["none", "fp16", "bf16"] = Field(
        "none", description="run the towers under fp16 / bf16 autocast (faster on GPUs; the "
        "embeddings change slightly, so the cache keeps them apart from float32 ones)")

    @field_validator("pretrained")
    @classmethod
    def _weights_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        random = info.data.get("random_weights", False)
        if value is None:
            if not random:
                raise ValueError(f"weights are required: {_WHERE_TO_GET}; tests and "
                                 "benchmarks may set `random_weights: true` instead")
            return None
        if random:
            raise ValueError("give either `pretrained` or `random_weights: true`, not both")
        value = value.strip()
        if value.startswith("local-dir:"):  # open_clip's own folder schema
            value = value.removeprefix("local-dir:")
        if looks_like_path(value):
            path = Path(value).expanduser()
            if not path.exists():
                raise ValueError(f"weights file not found: {path}; {_WHERE_TO_GET}")
            if path.is_file() and path.suffix.lower() not in WEIGHT_SUFFIXES:
                raise ValueError(
                    f"{path}: not a weights file (expected one of {', '.join(WEIGHT_SUFFIXES)})"
                )
            return str(path)
        if not _TAG.match(value):
            raise ValueError(f"{value!r} is neither an existing file nor an open_clip tag; "
                             f"{_WHERE_TO_GET}")
        return value

    @field_validator("config_file")
    @classmethod
    def _config_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.exists():
            raise ValueError(f"open_clip model config not found: {value}")
        if value.is_file() and value.suffix != ".json":
            raise ValueError(f"{value}: an open_clip model config is a .json file")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device_name(value)
