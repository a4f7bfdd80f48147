"""Reading raw inputs and embedding files named in recipes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.errors import McrxError


def read_inputs(path: Path) -> Sequence[Any]:
    """Items at ``path``: a folder gives its files (recursively, sorted, hidden files
    skipped), a ``.txt`` file its non-empty lines, a ``.npy`` file its rows, any other file
    is itself the single item."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise McrxError(f"{path}: the folder holds no files")
        return [str(p) for p in files]
    if not path.exists():
        raise McrxError(f"not found: {path}")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return [str(path)]


def read_embeddings(path: Path, dim: int | None = None) -> np.ndarray:
    """An N×d float array from ``.npy`` or ``.safetensors`` (a single tensor, or the one
    named ``embeddings``); checks its shape against ``dim`` and that it holds numbers."""
    path = Path(path)
    if not path.is_file():
        raise McrxError(f"embeddings file not found: {path}")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False, mmap_mode="r")
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "embeddings" in tensors:
                array = tensors["embeddings"]
            elif len(tensors) == 1:
                array = next(iter(tensors.values()))
            else:
                raise McrxError(f"{path}: several tensors {sorted(tensors)} and none is named "
                                "'embeddings'")
        else:
            raise McrxError(f"{path}: expected a .npy or .safetensors file")
    except McrxError:
        raise
    except Exception as exc:
        raise McrxError(f"{path}: cannot read embeddings ({exc})") from None
    if array.ndim != 2:
        raise McrxError(f"{path}: expected an N×d array, got shape {tuple(array.shape)}")
    if dim is not None and array.shape[1] != dim:
        raise McrxError(f"{path}: rows are {array.shape[1]}-d but the space is {dim}-d")
    if not np.issubdtype(array.dtype, np.floating):
        raise McrxError(f"{path}: expected floating-point values, got {array.dtype}")
    return np.asarray(array, dtype=np.float32)


def read_labels(path: Path) -> np.ndarray:
    """Integer class labels from ``.npy`` or ``.txt`` (one label per line, any strings)."""
    path = Path(path)
    if path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        _, labels = np.unique(np.array(lines), return_inverse=True)
    return np.asarray(labels).reshape(-1)
