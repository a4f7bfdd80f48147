"""The nose space: one encoder per modality, rows L2-normalised. Imported by the factory."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import mcrx
from mcrx_smell.plugin import DIM, SENSORS, NoseParams

BUCKETS = 256  # text: a hashed bag of words


def save_weights(path: Path, seed: int = 0) -> Path:
    """Random weights of the right shapes (a real plugin loads trained ones)."""
    rng = np.random.default_rng(seed)
    np.savez(path, smell=rng.standard_normal((SENSORS, DIM)).astype(np.float32),
             text=rng.standard_normal((BUCKETS, DIM)).astype(np.float32))
    return path


class SmellEncoder(mcrx.Encoder):
    """Sensor readings (an (n, 16) array, or a list of 16-number rows) → (n, 32)."""

    modality, dim = "smell", DIM

    def __init__(self, weight: torch.Tensor, fingerprint: str, batch_size: int) -> None:
        self.weight, self._fingerprint, self.batch_size = weight, fingerprint, batch_size

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(items, dtype=np.float32)).reshape(-1, SENSORS)
        if len(x) != len(items):
            raise mcrx.McrxError(f"smell items are rows of {SENSORS} sensor values")
        return F.normalize(x @ self.weight, dim=-1)  # (n, 32), rows L2-normalised

    def fingerprint(self) -> str:  # the cache key of encoded memories: weights + modality
        return mcrx.fingerprint_of(self._fingerprint, self.modality)


class TextEncoder(SmellEncoder):
    """Strings → (n, 32): a hashed bag of lower-cased words through one linear map."""

    modality = "text"

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        counts = torch.zeros(len(items), BUCKETS)
        for row, text in enumerate(items):
            for word in str(text).lower().split():
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                counts[row, int.from_bytes(digest, "little") % BUCKETS] += 1
        return F.normalize(counts @ self.weight, dim=-1)


class NoseSpace(mcrx.Space):
    """``smell/nose``: smell and text in one 32-d contrastive space."""

    modalities = ("smell", "text")
    dim = DIM

    def __init__(self, name: str, params: NoseParams) -> None:
        self.name = name
        weights = np.load(params.weights)
        # the file's path, size and time identify the weights (cheap, like mcrx's own files)
        stat = params.weights.stat()
        self._fingerprint = mcrx.fingerprint_of(name, str(params.weights), stat.st_size,
                                                stat.st_mtime_ns)
        self._encoders = {
            "smell": SmellEncoder(torch.from_numpy(weights["smell"]), self._fingerprint,
                                  params.batch_size),
            "text": TextEncoder(torch.from_numpy(weights["text"]), self._fingerprint,
                                params.batch_size),
        }

    def encoder(self, modality: str) -> mcrx.Encoder:
        if modality not in self._encoders:
            raise mcrx.McrxError(f"{self.name} embeds {self.modalities}, not {modality!r}")
        return self._encoders[modality]

    def fingerprint(self) -> str:
        return self._fingerprint
