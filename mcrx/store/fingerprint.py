"""Fingerprints: short stable hashes that name a stage's inputs. Every cache key and every
"done before" check of ``mcrx extend`` is one of these, so their recipes never change
without a new format version (a cache written by an older mcrx must still be found)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any


def fingerprint_of(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (used as cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def files_fingerprint(paths: Sequence[Any]) -> str:
    """Names input files by path, size and modification time (not content: reading every
    file of a million-item folder to hash it would cost as much as encoding it)."""
    stats = []
    for path in paths:
        try:
            stat = os.stat(path)
            stats.append((str(path), stat.st_size, int(stat.st_mtime_ns)))
        except (OSError, TypeError):
            stats.append((str(path),))
    return fingerprint_of(stats)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex), read ``chunk`` bytes at a time: for what must follow
    the content itself (weights files, a collection's items), not the cheap stat-based
    :func:`files_fingerprint`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
