"""What a cache entry is made of, recorded when it is published and checked before it is used.

The shared cache (``$MCRX_CACHE_DIR``) holds hours of work: memories, their normalised
copies, pseudo pairs, ann indexes. Fingerprints name an entry by its *inputs*; nothing in
the name says that the files still hold what was written. A file rewritten in place (rows
shuffled, NaN written into it), truncated by a full disk or half copied would otherwise be
memory-mapped as it is: the run "succeeds" at chance, or ends in an ``mmap`` or SVD error
far from the cause. So every entry is published with a record of its files, written last
(after every file is whole) and atomically::

    integrity.json   {"format": 1, "kind": "memory", "written_at": ...,
                      "files": {"shard-00000.npy": {"size": 67108992, "mtime_ns": ...,
                                "sampled": "<sha256 of size + 16 blocks of 64 KiB>",
                                "full": "<sha256 of the whole file>"}, ...}}

for a folder entry (inside it), or ``<file>.integrity.json`` beside a one-file entry. An
entry without a record is either being written or was written by an earlier mcrx (which
had none): readers upgrade the latter under the entry's lock, never re-encode it.

On every read the sizes are compared (a ``stat``) and the sampled digest recomputed: the
first, the last and evenly spaced 64 KiB blocks, 1 MiB a file whatever its size, so the
check costs milliseconds at 1M × 512 (measured in tests/store/test_cache_integrity.py) and
catches a truncation, an appended tail and any rewrite that moves many rows. A file whose
modification time is not the recorded one was written since: its full digest decides (then
the new time is recorded, so a copied cache pays this once). ``mcrx cache verify --full``
hashes every byte of every entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mcrx.store.atomic import write_json_atomic

RECORD = "integrity.json"
FORMAT = 1
BLOCK = 1 << 16  # bytes per sampled block
SAMPLES = 16  # sampled blocks per file: first, last and 14 evenly spaced
_CHUNK = 8 << 20  # bytes read at a time by the full digest


def record_path(entry: Path) -> Path:
    """Where the record of ``entry`` lives: inside a folder, beside a file."""
    entry = Path(entry)
    return entry / RECORD if entry.is_dir() else entry.with_name(f"{entry.name}.{RECORD}")


def _offsets(size: int) -> list[int]:
    if size <= BLOCK * SAMPLES:  # small file: every block, i.e. the whole file
        return list(range(0, size, BLOCK))
    last = size - BLOCK
    return [round(i * last / (SAMPLES - 1)) for i in range(SAMPLES)]


def sampled_digest(path: Path) -> str:
    """sha256 of the size and of :data:`SAMPLES` blocks of :data:`BLOCK` bytes (the whole
    file when it is smaller than that): ~1 MiB read per file, whatever its size."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest.update(f"{size}:".encode())
        for offset in _offsets(size):
            digest.update(os.pread(fd, BLOCK, offset))
    finally:
        os.close(fd)
    return digest.hexdigest()


def full_digest(path: Path) -> str:
    """sha256 of every byte of the file."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path, full: bool = True) -> dict[str, Any]:
    """One file's line of a record: size, modification time, sampled (and full) digest."""
    stat = os.stat(path)
    line: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                            "sampled": sampled_digest(path)}
    if full:
        line["full"] = full_digest(path)
    return line


def write_record(entry: Path, files: dict[str, dict[str, Any]], kind: str,
                 record: Path | None = None, **extra: Any) -> dict[str, Any]:
    """Publish the record of ``entry`` (``files``: name relative to the entry's folder →
    :func:`describe` line). Written atomically, last: the entry is then whole."""
    data = {"format": FORMAT, "kind": kind, **extra, "files": files,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(record or record_path(entry), data)
    return data


def record_files(entry: Path, names: Iterable[str], kind: str, full: bool = True,
                 **extra: Any) -> dict[str, Any]:
    """Describe ``names`` (relative to the folder ``entry``) and publish their record."""
    entry = Path(entry)
    return write_record(entry, {name: describe(entry / name, full) for name in names}, kind,
                        **extra)


class Unreadable(Exception):
    """A record that is there but cannot be parsed (the entry is then damaged)."""


def read_record(record: Path) -> dict[str, Any] | None:
    """The record at ``record``; None when there is none (an entry of an earlier mcrx, or
    one being written); :class:`Unreadable` when it is not a record mcrx wrote whole."""
    try:
        text = record.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unreadable(f"{record.name} cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
        files = data["files"]
        if not isinstance(files, dict) or not all(
                isinstance(line, dict) and isinstance(line.get("size"), int)
                and isinstance(line.get("sampled"), str) for line in files.values()):
            raise ValueError("files")
    except (ValueError, KeyError, TypeError):
        raise Unreadable(f"{record.name} is not a record mcrx wrote") from None
    return data


def check_files(base: Path, record: dict[str, Any], full: bool = False,
                refresh: Path | None = None, names: Iterable[str] | None = None) -> str | None:
    """The first problem of the files a record names (relative to ``base``), or None.
    Sizes always; sampled digests; the full digest with ``full`` or for a file modified
    since it was recorded. With ``refresh`` (the record's path, the caller holding the
    entry's lock) the new modification time of a file whose full digest still matches is
    recorded, so that the full hash runs once, not on every read. ``names``: only these
    of the record's files."""
    refreshed = False
    for name, want in record["files"].items():
        if names is not None and name not in names:
            continue
        path = base / name
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if stat.st_size != want["size"]:
            return f"{name} holds {stat.st_size:,} bytes, {want['size']:,} were written"
        try:
            if sampled_digest(path) != want["sampled"]:
                return f"{name} does not hold the bytes that were written (sampled digest)"
            modified = want.get("mtime_ns") not in (None, stat.st_mtime_ns)
            if (full or modified) and "full" in want:
                if full_digest(path) != want["full"]:
                    return f"{name} does not hold the bytes that were written (full digest)"
                if modified:
                    want["mtime_ns"], refreshed = stat.st_mtime_ns, True
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
    if refreshed and refresh is not None:
        try:
            write_json_atomic(refresh, record)
        except OSError:
            pass  # a read-only cache: the full digest runs again next time
    return None


def check_entry(entry: Path, full: bool = False, refresh: bool = False,
                names: Iterable[str] | None = None, record: Path | None = None
                ) -> tuple[dict[str, Any] | None, str | None]:
    """(record, first problem) of ``entry``; (None, None) when it has no record."""
    path = record or record_path(entry)
    try:
        data = read_record(path)
    except Unreadable as exc:
        return None, str(exc)
    if data is None:
        return None, None
    return data, check_files(path.parent, data, full, refresh=path if refresh else None,
                             names=names)
