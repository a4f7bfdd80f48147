"""Where mcrx keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The shared cache: ``$MCRX_CACHE_DIR``, default ``~/.cache/mcrx`` (encoded memories
    under ``embeddings/``, plugins' own caches beside them)."""
    root = os.environ.get("MCRX_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "mcrx"


def slug(name: str) -> str:
    """A file-name-safe form of a component name (``toy/clip`` → ``toy--clip``)."""
    return name.replace("/", "--").replace(" ", "_")
