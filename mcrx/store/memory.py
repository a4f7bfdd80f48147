"""Memories: the embeddings of one unpaired unimodal collection in one space, on disk.

A memory is a folder::

    manifest.json       space, modality, source, count, dim, dtype, fingerprints, shards
    shard-00000.npy     rows 0 … shard_rows-1  (float32 or float16), memory-mapped on read
    shard-00001.npy     …

Shards are written whole then renamed into place and the manifest is rewritten after each
one, so a crash loses at most the shard being encoded: encoding again resumes after the last
complete shard. Reading any slice touches only the shards it spans.

Under several processes each one encodes a contiguous share of the items into its own
resumable part, ``part-<rank>-of-<world>/`` (a memory folder of its own), and
:func:`merge_parts` then writes the top manifest listing every part's shards in order —
``{"file": "part-000-of-002/shard-00000.npy", ...}`` — without copying a row. Readers only
follow the ``file`` of each shard, so such a memory reads like any other.

What the stages read is :meth:`Memory.mapped_tensor`: the rows L2-normalised once into one
contiguous ``normalized-<dtype>.npy`` beside the shards, then memory-mapped. The rows are
then page cache, not process memory: every process of a ``torchrun`` launch maps the same
pages (one copy in RAM, not one per process), and the kernel may drop and re-read them
under pressure instead of killing the run.

Every complete memory carries ``integrity.json`` (:mod:`mcrx.store.integrity`), written
last: the size and digests of its manifest, its shards and its normalised copies. Readers
check it before using the rows (:func:`memory_problem`); a memory written by an earlier mcrx,
without one, gets it on first read (its rows checked for NaN/Inf once), never re-encoded.

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
from mcrx.store import integrity
from mcrx.store.atomic import atomic_path, write_json_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
NORMALIZED = "normalized-{dtype}.npy"  # the rows, L2-normalised, in one contiguous array


class Memory:
    """A read-only view of a memory folder; rows are read lazily from memory-mapped shards."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise McrxError(f"{self.path} is not a memory (no {MANIFEST})")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
            int(self.manifest["count"]), int(self.manifest["dim"]), list(self.manifest["shards"])
        except (OSError, ValueError, KeyError, TypeError):
            raise McrxError(f"{self.path}: {MANIFEST} is not a memory manifest mcrx wrote; "
                            f"delete the folder to encode it again (rm -r {self.path})"
                            ) from None
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
            self._shards = [self._map(entry) for entry in self.manifest["shards"]]
        return self._shards

    @property
    def dtype(self) -> str:
        """How rows are stored on disk (``float32`` or ``float16``); for a manifest written
        before the field existed, the first shard's dtype."""
        if "dtype" in self.manifest:
            return str(self.manifest["dtype"])
        return str(self.shards()[0].dtype) if self.manifest["shards"] else "float32"

    @property
    def nbytes(self) -> int:
        """Size of the rows in their stored dtype (what :meth:`tensor` holds in RAM)."""
        return self.count * self.dim * np.dtype(self.dtype).itemsize

    def read(self, start: int = 0, stop: int | None = None,
             dtype: np.dtype | str = np.float32, out: np.ndarray | None = None,
             keep_mapped: bool = True) -> np.ndarray:
        """Rows [start, stop) as ``dtype`` (float32 by default), touching only the shards
        they span. The rows are copied once, straight into one preallocated array (``out``
        when given): no list of parts and no concatenated copy, so the peak is 1× the
        slice. ``keep_mapped=False`` maps each shard only while it is copied: the file's
        pages then leave this process's resident set shard by shard (a whole-memory read
        would otherwise hold the memory twice in RSS, once mapped and once copied)."""
        start = max(start, 0)
        stop = self.count if stop is None else min(stop, self.count)
        if out is None:
            out = np.empty((max(stop - start, 0), self.dim), dtype=dtype)
        offset = 0
        for index, entry in enumerate(self.manifest["shards"]):
            rows = int(entry["rows"])
            lo, hi = max(start - offset, 0), min(stop - offset, rows)
            if lo < hi:
                shard = (self.shards()[index] if keep_mapped or self._shards is not None
                         else self._map(entry))
                # numpy widens float16 → float32 while copying: no intermediate array
                out[offset + lo - start : offset + hi - start] = shard[lo:hi]
                del shard  # unmapped here unless the shards are kept
            offset += rows
            if offset >= stop:
                break
        return out

    def _map(self, entry: dict[str, Any]) -> np.ndarray:
        return np.load(self.path / entry["file"], mmap_mode="r", allow_pickle=False)

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, self.count, rows):
            yield self.read(start, start + rows)

    def tensor(self, dtype: str | None = "float32", normalize: bool = False,
               block: int = 65536):
        """The whole memory as one torch tensor: float32 by default, or ``dtype=None`` to
        keep the stored dtype (a float16 memory then stays float16 in RAM, half the bytes;
        consumers widen it block by block). ``normalize`` L2-normalises the rows in place,
        ``block`` rows at a time in float32, so the peak stays 1× the memory."""
        import torch

        rows = torch.from_numpy(self.read(dtype=dtype or self.dtype, keep_mapped=False))
        if normalize:
            normalize_rows_(rows, block)
        return rows


    def mapped_tensor(self, dtype: str | None = "float32", block: int = 65536):
        """The whole memory L2-normalised, as one torch tensor memory-mapped (copy-on-write)
        from ``normalized-<dtype>.npy`` in the memory's folder, which is written the first
        time, block by block with :func:`normalize_rows_` (bit-identical to
        ``tensor(dtype, normalize=True)``), and recorded in ``integrity.json``. A copy that
        does not match its record (or has none) is written again: it is derived from the
        shards, never trusted alone. ``dtype=None`` keeps the stored dtype. Several
        processes mapping it share one copy of the rows in RAM. A folder that cannot be
        written (read-only) falls back to :meth:`tensor`. The caller holds the entry's lock
        (:func:`mcrx.store.locks.cache_entry_lock`) when other processes may write it."""
        import torch

        dtype = dtype or self.dtype
        if not self.complete:
            raise McrxError(f"{self.path}: the memory is incomplete; encode again to finish it")
        name = NORMALIZED.format(dtype=dtype)
        path = self.path / name
        try:
            record = integrity.read_record(self.path / integrity.RECORD)
        except integrity.Unreadable:
            record = None
        recorded = record is not None and name in record["files"]
        problem = None
        if recorded:
            _, problem = integrity.check_entry(self.path, refresh=True, names=[name])
            if problem is not None:
                from rich.markup import escape

                from mcrx.ui.console import console

                console.print(f"  [yellow]cache entry {escape(str(self.path))}: "
                              f"{escape(problem)}[/]; writing it again from the shards")
        if not path.is_file() or not recorded or problem is not None:
            try:
                self._write_normalized(path, dtype, block)
                self._record_normalized(name)
            except OSError:
                if recorded or not path.is_file():
                    return self.tensor(dtype=dtype, normalize=True, block=block)
        rows = np.load(path, mmap_mode="c", allow_pickle=False)
        if rows.shape != (self.count, self.dim) or rows.dtype != np.dtype(dtype):
            raise McrxError(f"{path}: holds {rows.shape} {rows.dtype} rows, but the memory "
                            f"has {self.count} × {self.dim} {dtype}; delete it to rebuild it")
        return torch.from_numpy(rows)

    def _record_normalized(self, name: str) -> None:
        """Add the normalised copy ``name`` to the entry's record (one written for the
        shards first when the memory has none: written by an earlier mcrx)."""
        try:
            record = integrity.read_record(self.path / integrity.RECORD)
        except integrity.Unreadable:
            record = None
        if record is None:
            record = record_memory(self.path)
        files = {**record["files"], name: integrity.describe(self.path / name)}
        integrity.write_record(self.path, files, "memory")

    def _write_normalized(self, path: Path, dtype: str, block: int) -> None:
        import torch

        from mcrx.store.validate_rows import bad_rows

        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype,
                                            shape=(self.count, self.dim))
            buffer = np.empty((min(block, self.count), self.dim), dtype=dtype)
            for start in range(0, self.count, block):
                stop = min(start + block, self.count)
                rows = self.read(start, stop, dtype=dtype, out=buffer[: stop - start],
                                 keep_mapped=False)
                normalized = normalize_rows_(torch.from_numpy(rows), block)
                # as a user's file's rows are refused: NaN/Inf, or all zero (no direction);
                # the cheap test on the normalised block, the row named only when it fails
                if not (torch.isfinite(normalized).all()
                        and normalized.abs().amax(dim=1).gt(0).all()):
                    non_finite, zero = bad_rows(self.read(start, stop, keep_mapped=False))
                    first = int(np.concatenate([non_finite, zero, [len(rows)]]).min()) + start
                    raise McrxError(
                        f"{self.path}: the cached memory holds NaN, infinite or all-zero "
                        f"rows (first: row {first}); delete the entry to encode it again "
                        f"(rm -r {self.path})")
                out[start : start + len(rows)] = normalized.numpy()
            out.flush()
            del out


def memory_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The files a complete memory is made of (relative to its folder)."""
    return [MANIFEST, *(shard["file"] for shard in manifest["shards"])]


def record_memory(path: Path) -> dict[str, Any]:
    """Publish the record of the complete memory at ``path`` (its manifest and shards)."""
    memory = Memory(path)
    return integrity.record_files(path, memory_files(path, memory.manifest), "memory")


def memory_problem(path: Path, full: bool = False, upgrade: bool = True,
                   normalized: bool = False) -> str | None:
    """Why the cached memory at ``path`` must not be used (a missing, truncated or rewritten
    file, an unreadable manifest or record, NaN/Inf rows), or None: absent, incomplete
    (encoding resumes it) or whole. Sizes and sampled digests are compared on every call
    (``full``: every byte). A complete memory without a record (an earlier mcrx's) is
    checked once the long way — every shard's shape against its manifest, every row finite
    — and, with ``upgrade`` (the caller holds the entry's lock), its record written: it is
    then checked like any other, never re-encoded. The normalised copies are checked with
    ``normalized`` only (``mcrx cache verify``): a run rewrites a damaged one from the shards
    (:meth:`Memory.mapped_tensor`) instead of encoding the memory again."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return None
    try:
        memory = Memory(path)
    except McrxError:
        return f"{MANIFEST} is not a memory manifest mcrx wrote"
    if not memory.complete:
        return None
    own = memory_files(path, memory.manifest)
    record, problem = integrity.check_entry(path, full=full, refresh=upgrade,
                                            names=None if normalized else own)
    if problem is not None:
        return problem
    if record is not None:
        names = set(record["files"])
        missing = [name for name in own if name not in names]
        return f"{missing[0]} is not in the entry's record" if missing else None
    return _check_unrecorded(memory, upgrade)


def _check_unrecorded(memory: Memory, upgrade: bool) -> str | None:
    from mcrx.store.validate_rows import bad_rows

    count = 0
    for entry in memory.manifest["shards"]:
        try:
            shard = memory._map(entry)
        except (OSError, ValueError) as exc:  # missing, or shorter than its header says
            return f"{entry['file']} cannot be read ({exc})"
        if shard.shape != (int(entry["rows"]), memory.dim):
            return f"{entry['file']} holds {shard.shape} rows, the manifest says " \
                   f"({entry['rows']}, {memory.dim})"
        non_finite, zero = bad_rows(shard)
        if len(non_finite) or len(zero):
            first = int(np.concatenate([non_finite, zero]).min())
            return f"{entry['file']} holds NaN, infinite or all-zero rows (first: row {first})"
        count += len(shard)
        del shard
    if count != memory.count:
        return f"its shards hold {count:,} rows, the manifest says {memory.count:,}"
    if upgrade:
        try:
            record_memory(memory.path)
        except OSError:
            pass  # a read-only cache: trusted by this check, checked again next time
    return None


def normalize_rows_(rows, block: int = 65536):
    """L2-normalise the rows of a float32 or float16 tensor in place, ``block`` rows at a time
    (norms computed in float32; the largest temporary is one block). Bit-identical to
    ``F.normalize`` on float32 rows: the same norm, clamp and division."""
    for start in range(0, rows.shape[0], block):
        part = rows[start : start + block]
        norms = part.float().norm(dim=1, keepdim=True).clamp_min_(1e-12)  # as F.normalize
        part.div_(norms.to(part.dtype))
    return rows


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
            for stale in [*self.path.glob("shard-*.npy"), *self.path.glob("normalized-*.npy"),
                          self.path / integrity.RECORD]:
                stale.unlink(missing_ok=True)
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
        record_memory(self.path)  # last: the memory is whole from here on
        return Memory(self.path)


def part_folder(path: Path, rank: int, world: int) -> Path:
    """Where process ``rank`` of ``world`` writes its share of the memory at ``path``."""
    return Path(path) / f"part-{rank:03d}-of-{world:03d}"


def merge_parts(path: Path, meta: dict[str, Any], parts: list[Path]) -> Memory:
    """One memory at ``path`` made of the complete memories in ``parts`` (sub-folders of
    ``path``, in row order): the manifest lists their shards, no row is copied."""
    path = Path(path)
    shards, count, dim, dtype, files = [], 0, None, None, {}
    for part in parts:
        memory = Memory(part)
        if not memory.complete:
            raise McrxError(f"{part}: this share of the memory is incomplete; encode again "
                            "to resume it")
        dim, dtype = dim or memory.dim, dtype or memory.dtype
        if (memory.dim, memory.dtype) != (dim, dtype):
            raise McrxError(f"{part}: {memory.dim}-d {memory.dtype} rows, but the other "
                            f"shares hold {dim}-d {dtype} rows")
        prefix = part.relative_to(path).as_posix()
        record = integrity.read_record(part / integrity.RECORD) or record_memory(part)
        files.update({f"{prefix}/{shard['file']}": record["files"][shard["file"]]
                      for shard in memory.manifest["shards"]})
        shards += [{**shard, "file": f"{prefix}/{shard['file']}"}
                   for shard in memory.manifest["shards"]]
        count += memory.count
    manifest = {"format_version": FORMAT_VERSION, **meta, "dim": dim, "dtype": dtype,
                "count": count, "shards": shards, "complete": True,
                "parts": [part.relative_to(path).as_posix() for part in parts],
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(path / MANIFEST, manifest)
    # the parts' shards as their records describe them (no byte hashed twice), then the
    # manifest: published last, the memory is whole from here on
    (path / integrity.RECORD).unlink(missing_ok=True)
    integrity.write_record(path, {MANIFEST: integrity.describe(path / MANIFEST), **files},
                           "memory")
    return Memory(path)
