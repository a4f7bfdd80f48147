"""The shared cache as a whole: its entries, what they weigh, whether they are whole, and
removing them (``mcrx cache``).

    $MCRX_CACHE_DIR/embeddings/<space>/<modality>/<key>/   memories (and normalised copies)
    $MCRX_CACHE_DIR/pairs/<leaf>/<fingerprint>/             pseudo pairs
    $MCRX_CACHE_DIR/ann/<key>.faiss                         ann indexes
    $MCRX_CACHE_DIR/connectors/…/<name>.safetensors         connectors kept in the cache

Each entry has a lock file beside it (``.<name>.lock``, :func:`mcrx.store.locks.
cache_entry_lock`), held by whoever writes or reads it: removing an entry takes that lock
first, without waiting, so an entry in use is never removed. Readers note when and by
which run an entry was last used (``used.json``) so that ``prune --older-than`` removes what
nobody used lately, not what was written long ago and is read every day.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError
from mcrx.store import integrity
from mcrx.store.atomic import temporary_sibling, write_json_atomic
from mcrx.store.paths import cache_root

KINDS = ("memories", "pairs", "ann", "connectors")
USED = "used.json"
_RUNS_KEPT = 8  # runs named in used.json, the latest last


def _used_path(entry: Path) -> Path:
    return entry / USED if entry.is_dir() else entry.with_name(f"{entry.name}.{USED}")


def _lock_path(entry: Path) -> Path:
    return entry.with_name(f".{entry.name}.lock")


def note_use(entry: Path, run: Path | str | None = None) -> None:
    """Record that ``entry`` was used now (by the run writing ``run``). Best effort: a
    read-only cache is used without a note. The caller holds the entry's lock."""
    path = _used_path(Path(entry))
    try:
        runs = json.loads(path.read_text()).get("runs", [])
        runs = [r for r in runs if isinstance(r, str)]
    except (OSError, ValueError, AttributeError):
        runs = []
    if run is not None:
        runs = [r for r in runs if r != str(run)] + [str(run)]
    try:
        write_json_atomic(path, {"last_used": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "last_used_s": time.time(), "runs": runs[-_RUNS_KEPT:]})
    except OSError:
        pass


def discard_entry(entry: Path) -> None:
    """Remove a cache entry (the caller holds its lock): renamed aside in one step, then
    deleted, so no reader ever sees half of it. One-file entries take their records along."""
    entry = Path(entry)
    aside = temporary_sibling(entry, "tmp")
    try:
        if entry.exists():
            if aside.exists():
                shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
            os.replace(entry, aside)
            shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
        if not entry.is_dir():
            for sidecar in (integrity.record_path(entry), _used_path(entry)):
                sidecar.unlink(missing_ok=True)
    except OSError as exc:
        raise McrxError(f"the cache entry {entry} is damaged and cannot be removed "
                        f"({exc.strerror or exc}); delete it yourself: rm -r {entry}"
                        ) from None


@contextmanager
def held_if_free(entry: Path) -> Iterator[bool]:
    """``with held_if_free(entry) as free:`` the entry's lock when nobody holds it (``free``
    True, held for the body), else ``free`` False at once: in use by another process."""
    lock = _lock_path(Path(entry))
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One cache entry as ``mcrx cache list`` shows it."""

    kind: str
    path: Path
    size: int = 0
    space: str = ""
    modality: str = ""
    rows: int | None = None
    dtype: str = ""
    last_used: float = 0.0  # seconds since the epoch
    runs: list[str] = field(default_factory=list)
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["last_used"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.last_used))
        return data


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(kind: str, path: Path) -> Entry:
    entry = Entry(kind, path, size=_size(path))
    if path.is_file():
        entry.size += sum(_size(p) for p in (integrity.record_path(path), _used_path(path))
                          if p.is_file())
    if kind == "memories":
        manifest = _read_json(path / "manifest.json")
        entry.space, entry.modality = manifest.get("space", ""), manifest.get("modality", "")
        entry.rows, entry.dtype = manifest.get("count"), manifest.get("dtype", "")
        entry.complete = bool(manifest.get("complete"))
    elif kind == "pairs":
        manifest = _read_json(path / "manifest.json")
        entry.space, entry.modality = manifest.get("leaf", path.parent.name), "pairs"
        entry.rows, entry.dtype = manifest.get("count"), manifest.get("dtype", "")
        entry.complete = bool(manifest)
    used = _read_json(_used_path(path))
    entry.runs = [r for r in used.get("runs", []) if isinstance(r, str)]
    written = max((p.stat().st_mtime for p in (integrity.record_path(path), path)
                   if p.exists()), default=0.0)
    noted = used.get("last_used_s")
    entry.last_used = float(noted) if isinstance(noted, (int, float)) else written
    return entry


def entries(root: Path | None = None, kinds: tuple[str, ...] = KINDS) -> list[Entry]:
    """Every entry of the cache at ``root`` (default ``$MCRX_CACHE_DIR``) of ``kinds``."""
    root = Path(root or cache_root())
    found: list[Entry] = []

    def visible(paths: Iterator[Path]) -> list[Path]:
        return sorted(p for p in paths if not p.name.startswith("."))

    if "memories" in kinds:
        found += [_describe("memories", p) for p in visible(root.glob("embeddings/*/*/*"))
                  if p.is_dir()]
    if "pairs" in kinds:
        found += [_describe("pairs", p) for p in visible(root.glob("pairs/*/*")) if p.is_dir()]
    if "ann" in kinds:
        found += [_describe("ann", p) for p in visible(root.glob("ann/*.faiss"))]
    if "connectors" in kinds:
        found += [_describe("connectors", p)
                  for p in visible(root.glob("connectors/**/*.safetensors"))]
    return found


def entry_problem(entry: Entry, full: bool = False) -> str | None:
    """Why ``entry`` must not be used, or None (see each kind's check)."""
    if entry.kind == "memories":
        from mcrx.store.memory import memory_problem

        return memory_problem(entry.path, full=full, upgrade=False, normalized=True)
    if entry.kind == "pairs":
        from mcrx.store.pairs import pairs_problem

        return pairs_problem(entry.path, full=full, upgrade=False)
    _, problem = integrity.check_entry(entry.path, full=full)
    return problem


def has_record(entry: Entry) -> bool:
    return integrity.record_path(entry.path).is_file()


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 86400
    except ValueError:
        raise McrxError(f"--older-than: expected an age like 30d, 12h or 90m, got {text!r}"
                        ) from None


def prune(found: list[Entry], older_than: float | None = None, dry_run: bool = False
          ) -> list[tuple[Entry, str]]:
    """Remove the entries of ``found`` unused for ``older_than`` seconds (all when None);
    an entry whose lock is held is in use and kept. (entry, "removed" | "would remove" |
    "in use, kept") for each candidate."""
    now, done = time.time(), []
    for entry in found:
        if older_than is not None and now - entry.last_used < older_than:
            continue
        with held_if_free(entry.path) as free:
            if not free:
                done.append((entry, "in use, kept"))
            elif dry_run:
                done.append((entry, "would remove"))
            else:
                discard_entry(entry.path)
                done.append((entry, "removed"))
    return done
