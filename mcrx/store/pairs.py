"""Pseudo pairs on disk: a folder with one ``.npy`` per role, written chunk by chunk and read
memory-mapped by the aligner, plus ``manifest.json`` (fingerprint, method, count, dtype).

    OUT/pseudo_pairs/<leaf>/leaf_x.npy  leaf_bridge.npy  parent_bridge.npy  parent_y.npy

The folder is built beside its final path and renamed into place: it is complete or absent.
Its ``integrity.json`` (:mod:`mcrx.store.integrity`), written last inside the folder before
the rename, names every file with its size and digests; :func:`pairs_problem` checks it on
every read, so rows rewritten or truncated since are rebuilt, never used.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.methods.common import PAIR_ROLES, LeafMemories, Method
from mcrx.store import integrity
from mcrx.store.atomic import commit, write_json_atomic

MANIFEST = "manifest.json"


def write_pseudo_pairs(
    path: Path,
    method: Method,
    memories: LeafMemories,
    temperature: float = 0.01,
    metadata: dict[str, Any] | None = None,
    dtype: str = "float32",
    chunk: int = 65536,
    on_chunk: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    **blocks: int,
) -> dict[str, np.ndarray]:
    """Build the pseudo pairs of ``method`` straight into ``path``. Peak memory is one chunk.

    Under several processes (``rank`` of ``world``, with a ``barrier``) the chunks are shared
    round-robin and every process writes its rows into the same pre-allocated files."""
    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()
    total = method.count(memories)
    widths = memories.widths()
    # the same name in every process (not one per pid): they all write into it
    tmp = path.with_name(f".{path.name}.tmp")
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for role in PAIR_ROLES:
            np.lib.format.open_memmap(tmp / f"{role}.npy", mode="w+", dtype=dtype,
                                      shape=(total, widths[role])).flush()
    barrier()
    # rows go to the files with positioned writes, not through a writable mapping: the
    # written pages are then page cache, not this process's resident set (a mapping keeps
    # every page it wrote resident until unmapped: the whole pairs' size, measured by
    # benchmarks/bench_scale.py)
    files = {role: _RowFile(tmp / f"{role}.npy") for role in PAIR_ROLES}
    try:
        for start, rows in method.chunks(memories, temperature, chunk, rank, world, **blocks):
            count = len(rows["leaf_x"])
            for role in PAIR_ROLES:
                files[role].write(start, rows[role].cpu().numpy())
            if on_chunk is not None:
                on_chunk(min(count * world, total))  # the others advance alongside
        for file in files.values():
            file.sync()
    finally:
        for file in files.values():
            file.close()
    barrier()
    if rank == 0:
        write_json_atomic(tmp / MANIFEST, {**(metadata or {}), "method": method.name,
                                           "count": total, "dtype": dtype})
        integrity.record_files(tmp, [MANIFEST, *(f"{role}.npy" for role in PAIR_ROLES)],
                               "pairs")
        commit(tmp, path)
    barrier()
    return read_pseudo_pairs(path)


class _RowFile:
    """Rows written at their place in a pre-allocated ``.npy`` (``os.pwrite``: several
    processes write disjoint rows of the same file)."""

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r")
        self.offset, self.dtype = header.offset, header.dtype
        self.row_bytes = header.shape[1] * header.dtype.itemsize
        del header
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        view, position = memoryview(data).cast("B"), self.offset + start * self.row_bytes
        while view:  # pwrite may write less than asked
            written = os.pwrite(self.fd, view, position)
            view, position = view[written:], position + written

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_pseudo_pairs(path: Path) -> dict[str, np.ndarray]:
    """Memory-mapped (read-only) arrays of a pseudo-pair folder, one per role."""
    return {role: np.load(path / f"{role}.npy", mmap_mode="r") for role in PAIR_ROLES}


def pairs_problem(path: Path, full: bool = False, upgrade: bool = True) -> str | None:
    """Why the pseudo-pair folder at ``path`` must not be used, or None when it is whole:
    its record's sizes and sampled digests (``full``: every byte); a role file missing,
    truncated, of another row count than the manifest says, or rewritten since. A folder
    written by an earlier mcrx (no record) is checked by its headers and sizes and, with
    ``upgrade`` (the caller holds the entry's lock), given its record: never rebuilt for
    that alone."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} is missing"
    try:
        meta = json.loads(manifest.read_text())
        count = int(meta["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is not a manifest mcrx wrote"
    record, problem = integrity.check_entry(path, full=full, refresh=upgrade)
    if problem is not None:
        return problem
    names = [MANIFEST, *(f"{role}.npy" for role in PAIR_ROLES)]
    if record is not None:
        missing = [name for name in names if name not in record["files"]]
        if missing:
            return f"{missing[0]} is not in the entry's record"
    for role in PAIR_ROLES:
        try:
            rows = np.load(path / f"{role}.npy", mmap_mode="r")  # the header, then the size
        except (OSError, ValueError) as exc:  # missing, truncated or scribbled
            return f"{role}.npy cannot be read ({exc})"
        if rows.ndim != 2 or len(rows) != count:
            return f"{role}.npy holds {rows.shape} rows, the manifest says {count:,}"
        del rows
    if record is None and upgrade:
        try:
            integrity.record_files(path, names, "pairs")
        except OSError:
            pass  # a read-only cache: checked the same way next time
    return None


def finished_pairs_fingerprint(path: Path) -> str | None:
    """The fingerprint a complete pseudo-pair folder was built for; None when it is absent
    or not whole (:func:`pairs_problem`: an unreadable manifest, a role file missing,
    truncated, of another row count than the manifest says, or rewritten since it was
    recorded): such a folder is rebuilt, never used. The caller holds the entry's lock."""
    if not (path / MANIFEST).is_file():
        return None
    problem = pairs_problem(path)
    if problem is not None:
        from rich.markup import escape

        from mcrx.ui.console import console

        console.print(f"  [yellow]cache entry {escape(str(path))}: {escape(problem)}[/]; "
                      "building it again", highlight=False)
        return None
    try:
        fingerprint = json.loads((path / MANIFEST).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fingerprint if isinstance(fingerprint, str) else None
