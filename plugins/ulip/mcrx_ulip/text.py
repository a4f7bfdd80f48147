"""ULIP's text tower: the CLIP-style causal transformer of SLIP (12 layers, 512 wide, 8 heads,
QuickGELU, 77 tokens, CLIP's BPE vocabulary of 49,408). The embedding is read at the
end-of-text token (the highest token id of each row).

Attribute names follow ``models/ULIP_models.py`` (``resblocks.{i}.attn.in_proj_weight``,
``mlp.c_fc``, ...); the attention keeps ``nn.MultiheadAttention``'s parameter names
(``in_proj_weight``, ``in_proj_bias``, ``out_proj``) so upstream weights load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextConfig:
    width: int = 512  # transformer_width
    layers: int = 12  # transformer_layers
    heads: int = 8  # transformer_heads
    context_length: int = 77  # tokens per text, start and end tokens included
    vocab_size: int = 49408  # CLIP BPE


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.normal_(self.in_proj_weight, std=dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3C)
        q, k, v = qkv.reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, hd)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(dim, 4 * dim)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * dim, dim)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """The block stack only (upstream ``Transformer``); embeddings live on the ULIP model."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(config.width, config.heads) for _ in range(config.layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class Tokenizer:
    """CLIP's BPE tokenizer (the one ULIP ships as ``utils/tokenizer.py``), taken from
    open_clip, which carries the vocabulary file offline. Texts are cleaned and lower-cased;
    rows are ``[SOT] tokens [EOT] 0 …`` of ``context_length`` ids. Unlike ULIP, a text too
    long is cut so that it still ends with EOT (open_clip's rule)."""

    def __init__(self, context_length: int = 77) -> None:
        try:
            from open_clip.tokenizer import SimpleTokenizer
        except ImportError as exc:  # pragma: no cover - open_clip_torch is a dependency
            from mcrx import McrxError

            raise McrxError(
                f"the ULIP text tower needs open_clip_torch for its tokenizer ({exc})"
            ) from None
        self.context_length = context_length
        self._tokenizer = SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self._tokenizer(list(texts), context_length=self.context_length)  # (n, 77) long
