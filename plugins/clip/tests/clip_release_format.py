"""CLIP weights in the layout of the files users download, built from random weights.

:func:`write_transformers_folder` writes what ``huggingface.co/openai/clip-vit-base-patch32``
holds and what the C-MCR / Ex-MCR authors loaded with ``CLIPModel.from_pretrained`` and
``CLIPProcessor``: ``config.json`` (its legacy ``eos_token_id`` 2), ``model.safetensors`` or
``pytorch_model.bin``, ``vocab.json`` + ``merges.txt`` with OpenAI's two special tokens, a
``tokenizer_config.json`` and a ``preprocessor_config.json`` with int ``size``/``crop_size``,
bicubic resampling and OpenAI's mean and std. The default architecture is transformers'
default ``CLIPConfig``, i.e. ViT-B/32 (a full-size file, about 600 MB); tests pass a tiny one.
The BPE files are open_clip's own vocabulary (the same 49,408 entries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def write_transformers_folder(folder: str | Path, *, text: dict[str, Any] | None = None,
                              vision: dict[str, Any] | None = None,
                              projection_dim: int = 512, image_size: int = 224,
                              weights: str = "model.safetensors", seed: int = 2) -> Path:
    """Write a transformers CLIP folder (random weights) at ``folder``; ``text``/``vision``
    override the default ViT-B/32 configuration."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 2,
                     "pad_token_id": 1, **(text or {})},
        vision_config={"image_size": image_size, **(vision or {})},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    if weights == "pytorch_model.bin":
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    bpe = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): index for token, index in bpe.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": image_size, "do_center_crop": True, "do_normalize": True,
        "do_resize": True, "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD, "resample": 3,
        "size": image_size}))
    return folder
