"""The ULIP-2 PointBERT model (upstream ``ULIP_WITH_IMAGE`` built by ``ULIP_PointBERT``):
PointBERT + ``pc_projection`` for point clouds, SLIP's ViT-B/16 (timm) + ``image_projection``
for images, the CLIP-style text transformer + ``text_projection`` for text; all three land in
one 512-d space.

``Ulip2.state_dict()`` names are the upstream names without the ``module.`` prefix that
DistributedDataParallel added to the released ``pointbert_ULIP-2.pt``; :func:`read_checkpoint`
strips it, :func:`save_checkpoint` adds it back, and :func:`load_model` loads strictly (every
key, every shape, nothing left over). No rename table is needed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mcrx import McrxError
from mcrx.store.weights import TRUST_HINT, load_weights
from mcrx_ulip.pointbert import PointBERT, PointBertConfig
from mcrx_ulip.text import TextConfig, TextTransformer

PREFIX = "module."  # DistributedDataParallel's prefix on every key of the released file
TOWERS = ("pointcloud", "image", "text")
# which key prefixes belong to which optional tower
TOWER_PREFIXES = {
    "image": ("visual.", "image_projection"),
    "text": ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
             "text_projection"),
}


@dataclass(frozen=True)
class Ulip2Config:
    point: PointBertConfig = field(default_factory=PointBertConfig)
    text: TextConfig = field(default_factory=TextConfig)
    image_depth: int = 12  # blocks of timm's vit_base_patch16_224
    vision_width: int = 768  # ViT-B/16 CLS feature width
    embed_dim: int = 512  # the shared space


class Ulip2(nn.Module):
    """One encoder per modality into the shared space (outputs are NOT normalised here)."""

    def __init__(self, config: Ulip2Config = Ulip2Config(), towers: Iterable[str] = TOWERS) -> None:
        super().__init__()
        towers = set(towers)
        self.config = config
        self.towers = tuple(t for t in TOWERS if t in towers or t == "pointcloud")
        self.point_encoder = PointBERT(config.point)
        self.pc_projection = nn.Parameter(torch.empty(config.point.out_dim, config.embed_dim))
        nn.init.normal_(self.pc_projection, std=config.embed_dim**-0.5)
        if "image" in self.towers:
            import timm

            self.visual = timm.create_model(
                "vit_base_patch16_224", pretrained=False, num_classes=0, depth=config.image_depth
            )
            self.image_projection = nn.Parameter(torch.empty(config.vision_width, config.embed_dim))
            nn.init.normal_(self.image_projection, std=config.vision_width**-0.5)
        if "text" in self.towers:
            text = config.text
            self.transformer = TextTransformer(text)
            self.token_embedding = nn.Embedding(text.vocab_size, text.width)
            self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
            self.ln_final = nn.LayerNorm(text.width)
            self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
            self._init_text()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _init_text(self) -> None:
        """Upstream's initialisation (matters only for random weights)."""
        width, layers = self.config.text.width, self.config.text.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def encode_pc(self, points: torch.Tensor) -> torch.Tensor:
        return self.point_encoder(points) @ self.pc_projection  # (B, N, 3) -> (B, 512)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images) @ self.image_projection  # (B, 3, 224, 224) -> (B, 512)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        # attention is causal, so what follows the last end-of-text token (padding) cannot
        # change the outputs read here: drop it (77 → ~10 tokens for short captions)
        tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]  # (B, T)
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x))  # (B, T, C)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (B, C)
        return eot @ self.text_projection  # (B, 512)


# ---------------------------------------------------------------------------------------
# Building: seeded random weights, or a checkpoint loaded strictly
# ---------------------------------------------------------------------------------------
def random_model(config: Ulip2Config, seed: int = 0, towers: Iterable[str] = TOWERS) -> Ulip2:
    """The architecture with reproducible random weights (tests only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Ulip2(config, towers)
    return model.eval().requires_grad_(False)


def towers_in(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """The towers a (prefix-free) state dict has weights for; point clouds always."""
    present = {"pointcloud"}
    for tower, prefixes in TOWER_PREFIXES.items():
        if any(key.startswith(prefixes) for key in state_dict):
            present.add(tower)
    return tuple(t for t in TOWERS if t in present)


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > limit else "")


def load_model(state_dict: Mapping[str, torch.Tensor], config: Ulip2Config,
               source: str = "checkpoint") -> Ulip2:
    """Build the towers ``state_dict`` has weights for and load it key for key (strict).
    The model is built on the meta device and takes the checkpoint's tensors as they are
    (no random initialisation of 150 M parameters that are overwritten at once)."""
    towers = towers_in(state_dict)
    with torch.device("meta"):
        model = Ulip2(config, towers)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_describe(unexpected)}")
        if wrong:
            problems.append(f"shape mismatches: {_describe(wrong, 4)}")
        raise McrxError(
            f"{source} does not match ULIP-2 PointBERT with {config.point} and image_depth="
            f"{config.image_depth}, text layers={config.text.layers} (the released "
            "pointbert_ULIP-2.pt needs the default architecture params):\n  "
            + "\n  ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval().requires_grad_(False)


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a ULIP checkpoint, ``module.`` prefix removed.

    The released ``pointbert_ULIP-2.pt`` is a whole training state as salesforce/ULIP's
    ``main.py`` saves it (commit a559aa8a5a5866616e3b38e1196b34488e3e8d5f, ``save_on_master``
    of ``utils/utils.py``): ``{"epoch", "state_dict", "optimizer", "scaler", "best_acc1",
    "args"}``, with ``args`` an ``argparse.Namespace`` and the optimizer's learning rate a
    ``numpy.float64`` from ``utils.cosine_scheduler``. It is read by
    :func:`mcrx.store.weights.load_weights`, whose allowlist covers exactly those objects:
    nothing from the file runs. Any other object is refused unless ``trust``
    (``trust_checkpoint: true``)."""
    path = Path(path)
    checkpoint = load_weights(path, trust=trust, trust_hint=TRUST_HINT)  # read, not mapped
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise McrxError(f"{path}: expected a ULIP checkpoint with a 'state_dict' entry, got {keys}")
    return {key.removeprefix(PREFIX): value for key, value in state.items()}


def save_checkpoint(model: Ulip2, path: str | Path, args: argparse.Namespace | None = None,
                    **extra: object) -> None:
    """Write ``model`` in the upstream layout (``module.`` keys under ``state_dict``, the
    training ``args`` as a Namespace), readable by :func:`read_checkpoint` and by ULIP."""
    state = {PREFIX + key: value for key, value in model.state_dict().items()}
    args = args or argparse.Namespace(model="ULIP_PointBERT", npoints=8192)
    torch.save({"epoch": 0, "state_dict": state, "args": args, **extra}, path)
