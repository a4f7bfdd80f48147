"""The SQLite store of a collection: its schema, the meta rows (validated on every open),
transactions, and the one lock that serialises creating and writing a collection.

``COLLECTION/items.sqlite`` is the source of truth: item rows (path, modality, size,
mtime, sha256, st_dev/st_ino, vector) and meta rows (the pinned model, the dimension, the
indexed roots). Every SQLite failure surfaces as one :class:`McrxError` naming the file;
a damaged file (SQLite's ``SQLITE_CORRUPT``/``SQLITE_NOTADB``, "database disk image is
malformed", "file is not a database") also says how to rebuild it from the files.

Paths are stored losslessly: a name that is valid UTF-8 as TEXT, any other (bytes kept by
``os.fsdecode`` as lone surrogates, PEP 383) as the BLOB of its raw bytes; SQLite compares
a BLOB only with a BLOB, so one name never matches the other form
(https://www.sqlite.org/datatype3.html, "Comparison Expressions").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError
from mcrx.store.atomic import atomic_path
from mcrx.store.locks import file_lock

FORMAT_VERSION = 1
DATABASE = "items.sqlite"
INDEX_DIR = "index"
#: the lock file that serialises creating, indexing and removing (never deleted: deleting
#: a lock file races with a process waiting on it)
LOCK = ".lock"
#: above this many items of one modality its index is IVF instead of exact (see
#: benchmarks/bench_search.py: at 100k × 512-d an exact query takes a few ms here)
DEFAULT_IVF_THRESHOLD = 200_000
_MAX_DIM = 1 << 20  # as mcrx.store.artifact: far above any embedding width

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the faiss id; never reused after a delete
    path TEXT NOT NULL UNIQUE,             -- absolute, resolved; BLOB when not UTF-8
    modality TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    indexed_at REAL NOT NULL,
    vector BLOB NOT NULL,                  -- float32 × dim, L2-normalised
    dev INTEGER,                           -- st_dev and st_ino when indexed (NULL in
    ino INTEGER                            -- collections written before they were kept)
);
CREATE INDEX IF NOT EXISTS items_modality ON items (modality);
CREATE INDEX IF NOT EXISTS items_sha256 ON items (modality, sha256);
-- bumped in the same transaction as any change to a modality's items; an index file is
-- valid for exactly one version
CREATE TABLE IF NOT EXISTS versions (modality TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""


def to_db(path: str | os.PathLike) -> str | bytes:
    """The stored form of a path: its text when it is valid UTF-8, else its raw bytes."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def from_db(value: str | bytes) -> str:
    """A stored path back as ``str`` (undecodable bytes as lone surrogates, PEP 383)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def inside(path: str, root: str) -> bool:
    """Whether the absolute ``path`` is ``root`` or lies under it (by components)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass(frozen=True)
class Meta:
    """The validated meta rows of a collection."""

    format_version: int
    model_path: Path
    model_fingerprint: str
    model_name: str
    dim: int
    modalities: list[str]
    ivf_threshold: int
    roots: list[str]


def _is_damage(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("malformed", "not a database", "disk i/o",
                                         "corrupt", "no such table", "no such column"))


class ItemStore:
    """One connection to ``FOLDER/items.sqlite`` shared by threads (a lock around every
    statement), in WAL mode so that readers (a server) never block the writer
    (https://www.sqlite.org/wal.html)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = folder / DATABASE
        self.lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        with self.guard():
            self._db = sqlite3.connect(self.file, check_same_thread=False,
                                       isolation_level=None)
            # the timeout first: the statements below may wait for a writer
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._check_tables()
            self._migrate()

    # -- errors ----------------------------------------------------------------------------
    def damaged(self, why: object) -> McrxError:
        return McrxError(
            f"{self.file}: the collection's database is damaged ({why}); rebuild it from the "
            f"files with: mcrx index --rebuild MODEL {self.folder} FILES...")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """SQLite errors as one McrxError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            if _is_damage(exc):
                raise self.damaged(exc) from None
            raise McrxError(f"{self.file}: {exc}") from None

    # -- statements ------------------------------------------------------------------------
    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self.lock, self.guard():
            return self._conn.execute(sql, tuple(args)).fetchall()

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        with self.lock, self.guard():
            return self._conn.execute(sql, tuple(args)).fetchone()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise McrxError(f"{self.file}: the collection is closed")
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (https://www.sqlite.org/lang_transaction.html):
        the write lock is taken at the start, so the body never meets SQLITE_BUSY halfway."""
        with self.lock, self.guard():
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        return writer_lock(self.folder)

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- schema and meta -------------------------------------------------------------------
    def _check_tables(self) -> None:
        tables = {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"meta", "items", "versions"} - tables
        if missing:
            raise self.damaged(f"no table {', '.join(sorted(missing))}")

    def _migrate(self) -> None:
        """Add the columns of later formats to an older collection's ``items`` (SQLite
        ``ALTER TABLE ... ADD COLUMN``: existing rows get NULL, which readers tolerate)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(items)")}
        for name in ("dev", "ino"):
            if name not in columns:
                # another process may add it at the same time; a read-only disk cannot:
                # both leave the rows as they were, and readers compare what they have
                with contextlib.suppress(sqlite3.OperationalError):
                    self._conn.execute(f"ALTER TABLE items ADD COLUMN {name} INTEGER")

    def raw_meta(self) -> dict[str, str]:
        return {str(k): v for k, v in self.all("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self.lock, self.guard():
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                   [(k, str(v)) for k, v in values.items()])

    def meta(self) -> Meta:
        """The meta rows, each checked: a missing or malformed one is an McrxError naming
        the file, the row and what it should hold."""
        rows = self.raw_meta()

        def bad(key: str, expected: str) -> McrxError:
            found = "missing" if key not in rows else f"is {str(rows[key])[:60]!r}"
            return self.damaged(f"meta row {key!r} {found}, expected {expected}")

        def integer(key: str, low: int, high: int, default: int | None = None) -> int:
            if key not in rows and default is not None:
                return default
            try:
                value = int(str(rows[key]))
            except (KeyError, ValueError):
                raise bad(key, f"an integer from {low} to {high}") from None
            if not low <= value <= high:
                raise bad(key, f"an integer from {low} to {high}")
            return value

        def strings(key: str, default: list[str] | None = None) -> list[str]:
            if key not in rows and default is not None:
                return default
            try:
                value = json.loads(str(rows[key]))
            except (KeyError, ValueError, RecursionError):
                raise bad(key, "a JSON list of names") from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(key, "a JSON list of names")
            return value

        if integer("format_version", 1, 1 << 30) > FORMAT_VERSION:
            raise McrxError(f"{self.folder} was written by a newer mcrx (format "
                            f"{rows['format_version']}); upgrade mcrx to read it")
        model_path = rows.get("model_path")
        if not isinstance(model_path, str) or not model_path.strip() or "\0" in model_path:
            raise bad("model_path", "the path of the model folder")
        fingerprint = rows.get("model_fingerprint")
        if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{8,128}",
                                                                 fingerprint):
            raise bad("model_fingerprint", "a hexadecimal fingerprint")
        modalities = strings("modalities")
        if not modalities:
            raise bad("modalities", "the model's modalities (a non-empty JSON list)")
        return Meta(
            format_version=FORMAT_VERSION,
            model_path=Path(model_path),
            model_fingerprint=fingerprint,
            model_name=str(rows.get("model_name", "")),
            dim=integer("dim", 1, _MAX_DIM),
            modalities=modalities,
            ivf_threshold=integer("ivf_threshold", 1, 1 << 62, DEFAULT_IVF_THRESHOLD),
            roots=strings("roots", []),
        )

    # -- item rows -------------------------------------------------------------------------
    def versions(self) -> dict[str, int]:
        return dict(self.all("SELECT modality, version FROM versions"))

    @staticmethod
    def bump(db: sqlite3.Connection, modalities: set[str]) -> None:
        for modality in modalities:
            db.execute("INSERT INTO versions VALUES (?, 1) ON CONFLICT(modality) "
                       "DO UPDATE SET version = version + 1", (modality,))

    @staticmethod
    def upsert(db: sqlite3.Connection, path: str | Path, modality: str, stat: Any, sha: str,
               item_id: int | None, vector: bytes) -> None:
        """Insert or update the row of ``path`` (``stat``: a FileStat)."""
        values = (to_db(path), modality, stat.size, stat.mtime_ns, sha, time.time(), vector,
                  stat.dev, stat.ino)
        if item_id is None:
            db.execute("INSERT INTO items (path, modality, size, mtime_ns, sha256, indexed_at,"
                       " vector, dev, ino) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        else:  # a changed file keeps its id: "#12" still means the same file
            db.execute("UPDATE items SET path = ?, modality = ?, size = ?, mtime_ns = ?, "
                       "sha256 = ?, indexed_at = ?, vector = ?, dev = ?, ino = ? "
                       "WHERE id = ?", (*values, item_id))


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """One process at a time creates, indexes or removes from the collection at
    ``folder``; another one waits (POSIX ``flock`` via :func:`mcrx.store.locks.file_lock`,
    released by the kernel when its holder dies)."""
    with file_lock(folder / LOCK, f"the collection {folder}", wait=True):
        yield


def _leftover(name: str) -> bool:
    """What a collection folder may hold before its database exists: the lock file and
    what a killed creator left (mcrx.store.atomic's ``.items.sqlite.tmp-<pid>``)."""
    return name == LOCK or name.startswith(f".{DATABASE}.")


def check_new_folder(folder: Path) -> None:
    """Refuse to create a collection in a file or a folder holding anything else."""
    if folder.exists() and (not folder.is_dir() or any(
            not _leftover(entry.name) for entry in folder.iterdir())):
        raise McrxError(f"{folder} exists and is not a collection: choose a new folder "
                        "for it")


def create_database(folder: Path, meta: dict[str, str]) -> None:
    """Write ``folder/items.sqlite`` with ``meta``, under a temporary name renamed into
    place: a folder holding an items.sqlite always holds a complete one. The caller holds
    :func:`writer_lock`, so no other process opens the file while it is replaced."""
    with atomic_path(folder / DATABASE) as tmp:
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once, in the file
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.commit()
        finally:
            db.close()


def set_aside_damaged(folder: Path) -> Path | None:
    """Move a damaged database (and its WAL files) to ``items.sqlite.damaged`` and remove
    the index files derived from it; returns where it went. Called under :func:`writer_lock`
    by ``mcrx index --rebuild``."""
    import shutil

    database = folder / DATABASE
    target = folder / f"{DATABASE}.damaged"
    moved = None
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{database}{suffix}")
        if source.exists() or source.is_symlink():
            os.replace(source, Path(f"{target}{suffix}"))
            moved = target
    shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)
    return moved
