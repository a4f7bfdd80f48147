"""Refusing embedding rows that would silently ruin a run.

A NaN or infinite value in one memory row spreads through the softmax of the pseudo pairs
(Ex-MCR eq. 2 / C-MCR eq. 1 weigh every memory row) into every pair, then into the loss:
training "finishes" with loss NaN and retrieval at chance. An all-zero row has no direction
(L2 normalisation divides by 0). So every row is checked where embeddings enter a run: a
bad row is refused with the file and its first index, or dropped (and counted) when the
user asks (``--drop-bad-rows``). A training loss that stops being finite ends the run at
that step instead of finishing at chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mcrx.errors import McrxError

# a row this short has no usable direction; real embeddings have norms near 1 (normalised
# encoders) or far above this, whatever their precision (float16's smallest normal: 6e-5)
MIN_NORM = 1e-6
_CHUNK = 1 << 16  # rows per pass: bounded memory on a memory-mapped 100M-row file


def bad_rows(array: Any) -> tuple[np.ndarray, np.ndarray]:
    """(indices of rows with a NaN/Inf value, indices of rows of norm < MIN_NORM)."""
    non_finite, zero = [], []
    for begin in range(0, len(array), _CHUNK):
        chunk = np.asarray(array[begin : begin + _CHUNK], dtype=np.float32)  # (c, d)
        finite = np.isfinite(chunk).all(axis=1)  # (c,)
        norms = np.sqrt(np.square(np.where(np.isfinite(chunk), chunk, 0)).sum(axis=1))
        non_finite.append(np.flatnonzero(~finite) + begin)
        zero.append(np.flatnonzero(finite & (norms < MIN_NORM)) + begin)
    if not non_finite:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(non_finite), np.concatenate(zero)


def _describe(indices: np.ndarray, kind: str) -> str:
    kind = kind.replace("rows", "row", 1) if len(indices) == 1 else kind
    return f"{len(indices):,} {kind} (first: row {int(indices[0])})"


def check_rows(array: Any, labels: np.ndarray | None, where: str, drop: bool = False,
               siblings: Sequence[Any] = ()) -> tuple[Any, np.ndarray | None]:
    """``(array, labels)`` when every row is usable; otherwise an McrxError naming ``where``
    (a file) and the first bad row, or with ``drop`` the good rows only (labels alike) and
    a printed count. ``siblings``: the same items' rows in the other spaces (a bridge
    memory is row aligned across spaces): a row bad in any of them is dropped from all, so
    the alignment holds. A set whose rows all point the same way is refused either way: its
    similarities carry no information (every retrieval ties)."""
    non_finite, zero = bad_rows(array)
    elsewhere = np.zeros(0, dtype=np.int64)
    if drop:
        for other in siblings:  # the union keeps row i of every space the same item
            elsewhere = np.union1d(elsewhere, np.concatenate(bad_rows(other[: len(array)])))
        elsewhere = np.setdiff1d(elsewhere, np.union1d(non_finite, zero))
    if len(non_finite) or len(zero) or len(elsewhere):
        found = ", ".join(
            _describe(ix, kind) for ix, kind in (
                (non_finite, "rows with NaN or infinite values"), (zero, "all-zero rows"),
                (elsewhere, "rows bad in another space's file")) if len(ix))
        if not drop:
            raise McrxError(f"{where}: {found}; fix the embeddings, or pass --drop-bad-rows "
                            "to leave such rows out (and count them)")
        keep = np.ones(len(array), dtype=bool)
        keep[non_finite], keep[zero], keep[elsewhere] = False, False, False
        if not keep.any():
            raise McrxError(f"{where}: every row is bad ({found})")
        from rich.markup import escape

        from mcrx.ui.console import console

        dropped = int((~keep).sum())
        console.print(f"  [yellow]{escape(where)}: dropped {dropped:,} of {len(array):,} "
                      f"rows[/] ({found})")
        array = np.asarray(array)[keep]
        labels = labels[keep] if labels is not None and len(labels) == len(keep) else labels
    if len(array) > 1:
        first = np.asarray(array[:1], dtype=np.float64)
        sample = np.asarray(array[: min(len(array), 4096)], dtype=np.float64)
        cos = (sample @ first.T).ravel() / (
            np.linalg.norm(sample, axis=1) * np.linalg.norm(first) + 1e-30)
        if np.all(cos > 1 - 1e-6) and _all_parallel(array, first):
            raise McrxError(f"{where}: all {len(array):,} rows point the same way (a constant "
                            "embedding); these are not embeddings of different items")
    return array, labels


def _all_parallel(array: Any, first: np.ndarray) -> bool:
    unit = first / np.linalg.norm(first)
    for begin in range(0, len(array), _CHUNK):
        chunk = np.asarray(array[begin : begin + _CHUNK], dtype=np.float64)
        cos = (chunk @ unit.T).ravel() / np.linalg.norm(chunk, axis=1)
        if not np.all(cos > 1 - 1e-6):
            return False
    return True


def refuse_bad_encoded(rows: np.ndarray, description: str, offset: int,
                       items: Any = None) -> None:
    """An encoder returned a NaN/Inf/zero row: name the item it came from (re-encoding the
    same file would give the same row, so this is refused, not dropped)."""
    non_finite, zero = bad_rows(rows)
    bad = np.sort(np.concatenate([non_finite, zero]))
    if len(bad):
        index = offset + int(bad[0])
        item = f" ({items[index]!s:.200})" if items is not None and index < len(items) else ""
        kind = "NaN or infinite values" if int(bad[0]) in set(non_finite.tolist()) else "zeros"
        raise McrxError(f"{description}: the encoder returned {kind} for item {index}{item}; "
                        "the input is probably corrupt")


def refuse_nonfinite_loss(loss: Any, step: int, description: str) -> None:
    """Stop training at the first non-finite loss (NaN from a bad pair or an exploding
    learning rate): continuing would only end at chance with exit 0."""
    value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
    if not np.isfinite(value):
        raise McrxError(f"{description}: the loss is {value} at step {step}; training "
                        "stopped. Check the embeddings for bad rows, or lower training.lr")
