"""Memories: the embeddings of one unpaired unimodal collection in one space, on disk.

A memory is a folder::

    manifest.json       space, modality, source, count, dim, dtype, fingerprints, shards
    shard-00000.npy     rows 0 … shard_rows-1  (float32 or float16), memory-mapped on read
    shard-00001.npy     …

Shards are written whole then renamed into place and the manifest is rewritten after each
one, so a crash loses at most the shard being encoded: encoding again resumes after the last
complete shard. Reading any slice touches only the shards it spans.

Encoded memories live in the embedding cache (``$MCRX_CACHE_DIR/embeddings``, default
``~/.cache/mcrx/embeddings``), keyed by the encoder's fingerprint (space, weights,
preprocessing) and the source's fingerprint (dataset and params, or input files with their
sizes and modification times): encoding the same data twice encodes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.errors import McrxError
from mcrx.store.atomic import atomic_path, write_json_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class Memory:
    """A read-only view of a memory folder; rows are read lazily from memory-mapped shards."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise McrxError(f"{self.path} is not a memory (no {MANIFEST})")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self._shards: list[np.ndarray] | None = None

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def __len__(self) -> int:
        return self.count

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def shards(self) -> list[np.ndarray]:
        if self._shards is None:
            self._shards = [
                np.load(self.path / shard["file"], mmap_mode="r", allow_pickle=False)
                for shard in self.manifest["shards"]
            ]
        return self._shards

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32, touching only the shards they span."""
        stop = self.count if stop is None else min(stop, self.count)
        parts, offset = [], 0
        for shard in self.shards():
            lo, hi = max(start - offset, 0), min(stop - offset, len(shard))
            if lo < hi:
                parts.append(np.asarray(shard[lo:hi], dtype=np.float32))
            offset += len(shard)
            if offset >= stop:
                break
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, self.count, rows):
            yield self.read(start, start + rows)

    def tensor(self):
        """The whole memory as one float32 torch tensor."""
        import torch

        return torch.from_numpy(self.read())


class MemoryWriter:
    """Appends rows to a memory folder shard by shard; resumes an interrupted write when the
    folder's manifest carries the same fingerprints."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        dim: int,
        shard_rows: int = 65536,
        dtype: str = "float32",
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise McrxError(f"memory dtype must be float32 or float16, got {dtype!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.shard_rows = shard_rows
        self.dtype = dtype
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        manifest_path = self.path / MANIFEST
        previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if previous and previous.get("key") == meta.get("key") and previous["dim"] == dim:
            self.manifest = previous  # resume after the last complete shard
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION, **meta, "dim": dim, "dtype": dtype,
                "count": 0, "shards": [], "complete": False,
            }
            for stale in self.path.glob("shard-*.npy"):
                stale.unlink()
            write_json_atomic(manifest_path, self.manifest)

    @property
    def count(self) -> int:
        """Rows safely on disk (a resumed write starts from here)."""
        return int(self.manifest["count"])

    def append(self, rows: np.ndarray) -> None:
        self._buffer.append(np.asarray(rows, dtype=self.dtype))
        self._buffered += len(rows)
        while self._buffered >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int) -> None:
        data = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        shard, rest = data[:rows], data[rows:]
        self._buffer, self._buffered = ([rest], len(rest)) if len(rest) else ([], 0)
        name = f"shard-{len(self.manifest['shards']):05d}.npy"
        with atomic_path(self.path / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, shard)  # to a handle: np.save would append ".npy" to a name
        self.manifest["shards"].append({"file": name, "rows": int(len(shard))})
        self.manifest["count"] += int(len(shard))
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def close(self) -> Memory:
        if self._buffered:
            self._flush(self._buffered)
        self.manifest["complete"] = True
        self.manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(self.path / MANIFEST, self.manifest)
        return Memory(self.path)
