"""Collections: files of any modality embedded by one unified model, searchable together.

A collection is a folder::

    COLLECTION/
      items.sqlite          item metadata (path, modality, size, mtime, sha256), each item's
                            vector, and the pinned model (path + fingerprint): the source of truth
      index/<modality>-<version>.faiss
                            one faiss index per modality, rebuilt from items.sqlite whenever
                            its version lags the database's (so a crash between the two heals
                            itself on the next open)

Each modality has its own index so that ``--in audio,pointcloud`` filters exactly (no
over-fetching): a query searches the selected modalities' indexes and merges by score.
An index is exact (``IndexFlatIP``, inner product of unit vectors = cosine) up to
``ivf_threshold`` items, and an inverted-file index (``IndexIVFFlat``, ~4·√N lists) above.

Re-indexing is incremental: a file whose size and mtime match its row is not read; one whose
stat changed is hashed, and re-embedded only when its content changed; a new file whose
content is already in the collection (a copy, a move) reuses the stored vector; items whose
files are gone are dropped. Embedded batches are committed as they finish, so an
interrupted run resumes where it stopped.

    import mcrx
    sounds = mcrx.Collection("sounds.mcrx", model="runs/demo/model")   # created on first use
    sounds.index(["recordings/"], modality="audio")
    for hit in sounds.search('"2:dog barking" + cat.png - indoors', n=5):
        print(hit.score, hit.path)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mcrx.errors import McrxError
from mcrx.methods.faiss_support import import_faiss, ivf_lists
from mcrx.search.files import (
    FileStat,
    content_hash,
    display_path,
    encoder_item,
    expand_inputs,
    fd_sha256,
    looks_like_path,
    modality_of_suffix,
    open_no_follow,
)
from mcrx.search.fingerprint import model_fingerprint
from mcrx.search.index import build_index, index_kind
from mcrx.search.query import Term, combine, parse_query
from mcrx.store.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.infer.unified import UnifiedModel

FORMAT_VERSION = 1
DATABASE = "items.sqlite"
INDEX_DIR = "index"
#: above this many items of one modality its index is IVF instead of exact (see
#: benchmarks/bench_search.py: at 100k × 512-d an exact query takes a few ms here)
DEFAULT_IVF_THRESHOLD = 200_000
#: items embedded (and committed) per step when indexing, at most
EMBED_CHUNK = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the faiss id; never reused after a delete
    path TEXT NOT NULL UNIQUE,             -- absolute, resolved
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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass(frozen=True)
class Item:
    """One file of a collection."""

    id: int
    path: str
    modality: str
    size: int
    mtime_ns: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the cosine similarity to the query."""

    id: int
    path: str
    modality: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "modality": self.modality,
                "score": round(self.score, 6)}


@dataclass
class IndexReport:
    """What one :meth:`Collection.index` run did."""

    added: int = 0  # new files, embedded
    changed: int = 0  # content changed: re-embedded
    reused: int = 0  # new path, content already in the collection: stored vector reused
    touched: int = 0  # stat changed, content did not: not re-embedded
    unchanged: int = 0  # stat matched: not even read
    dropped: int = 0  # files gone: removed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.changed

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "embedded": self.embedded,
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


#: decides whether a query may name a file (the server allows only the collection's files)
FilePolicy = Callable[[Path], bool]


class Collection:
    """A folder of embedded files (see the module docstring).

    ``Collection(path)`` opens an existing collection; ``Collection(path, model=MODEL)``
    also creates it when missing, pinned to that unified model folder, and refuses a
    different model than the one it was built with."""

    def __init__(self, path: str | Path, model: str | Path | None = None,
                 ivf_threshold: int | None = None) -> None:
        self.path = Path(path).expanduser()
        database = self.path / DATABASE
        if not database.is_file():
            if model is None:
                raise McrxError(f"{self.path} is not a collection (no {DATABASE}); create one "
                                f"with: mcrx index MODEL {self.path} FILES...")
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise McrxError(f"{self.path} exists and is not a collection: choose a new "
                                "folder for it")
            self._create(Path(model), ivf_threshold)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (a server) never block a writer
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        meta = self._meta()
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise McrxError(f"{self.path} was written by a newer mcrx (format "
                            f"{meta['format_version']})")
        self.model_path = Path(meta["model_path"])
        self.model_fingerprint = meta["model_fingerprint"]
        self.model_name = meta.get("model_name", "")
        self.dim = int(meta["dim"])
        self.ivf_threshold = int(meta["ivf_threshold"])
        if ivf_threshold is not None and ivf_threshold != self.ivf_threshold:
            self._set_meta(ivf_threshold=ivf_threshold)
            self.ivf_threshold = ivf_threshold
        self._model: UnifiedModel | None = None
        self._model_modalities: list[str] = []
        if model is not None:
            self.use_model(model)
        self._indexes: dict[str, tuple[int, Any]] = {}  # modality → (version, faiss index)

    # -- creation and the pinned model -----------------------------------------------------
    def _create(self, model: Path, ivf_threshold: int | None) -> None:
        import json

        fingerprint = model_fingerprint(model)
        manifest = json.loads((model / "manifest.json").read_text())
        meta = {
            "format_version": str(FORMAT_VERSION),
            "model_path": str(model.resolve()),
            "model_fingerprint": fingerprint,
            "model_name": str(manifest.get("name", "")),
            "dim": str(int(manifest["dim"])),
            "modalities": json.dumps(sorted(manifest.get("embedders", {}))),
            "ivf_threshold": str(ivf_threshold or DEFAULT_IVF_THRESHOLD),
            "created": str(time.time()),
        }
        # the database is built under a temporary name and renamed: a folder holding an
        # items.sqlite is always a complete collection
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path / DATABASE) as tmp:
            db = sqlite3.connect(tmp)
            try:
                db.executescript(_SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                db.commit()
            finally:
                db.close()

    def _migrate(self) -> None:
        """Add the columns of later formats to an older collection's ``items`` (SQLite
        ``ALTER TABLE ... ADD COLUMN``: existing rows get NULL, which readers tolerate)."""
        with self._lock:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
            for name in ("dev", "ino"):
                if name not in columns:
                    # another process may add it at the same time; a read-only disk cannot:
                    # both leave the rows as they were, and readers compare what they have
                    with contextlib.suppress(sqlite3.OperationalError):
                        self._db.execute(f"ALTER TABLE items ADD COLUMN {name} INTEGER")

    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, **values: Any) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, str(v)) for k, v in values.items()])

    def use_model(self, model: str | Path) -> None:
        """Embed with the model folder ``model`` (for a model that moved): refused unless it
        is the model the collection was built with."""
        model = Path(model).expanduser()
        found = model_fingerprint(model)
        if found != self.model_fingerprint:
            raise McrxError(
                f"{model} is not the model collection {self.path} was built with "
                f"({self.model_path}, fingerprint {self.model_fingerprint}; this one is "
                f"{found}): vectors of two models cannot be compared. Index into a new "
                "collection folder instead"
            )
        if model.resolve() != self.model_path:
            self.model_path = model.resolve()
            self._model = None

    @property
    def model(self) -> UnifiedModel:
        """The unified model (loaded on first use, after checking its fingerprint)."""
        if self._model is None:
            import mcrx

            if not self.model_path.is_dir():
                raise McrxError(f"the model of collection {self.path} is gone from "
                                f"{self.model_path}; name where it is now with --model")
            found = model_fingerprint(self.model_path)
            if found != self.model_fingerprint:
                raise McrxError(
                    f"the model at {self.model_path} changed since collection {self.path} "
                    f"was built (fingerprint {self.model_fingerprint}, now {found}): index "
                    "into a new collection folder"
                )
            self._model = mcrx.load(self.model_path)
        return self._model

    @property
    def model_modalities(self) -> list[str]:
        """The modalities the pinned model embeds (without loading it)."""
        import json

        if not self._model_modalities:
            self._model_modalities = json.loads(self._meta().get("modalities", "[]"))
        return self._model_modalities

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Items per modality."""
        with self._lock:
            rows = self._db.execute(
                "SELECT modality, COUNT(*) FROM items GROUP BY modality ORDER BY modality")
            return dict(rows.fetchall())

    @property
    def modalities(self) -> list[str]:
        return list(self.counts())

    def item(self, item_id: int) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, path, modality, size, mtime_ns, sha256 FROM items WHERE id = ?",
                (int(item_id),)).fetchone()
        return Item(*row) if row else None

    def item_by_path(self, path: str | Path) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, path, modality, size, mtime_ns, sha256 FROM items WHERE path = ?",
                (str(path),)).fetchone()
        return Item(*row) if row else None

    def items(self, modality: str | None = None) -> Iterator[Item]:
        """Every item (of ``modality``), by id."""
        sql = "SELECT id, path, modality, size, mtime_ns, sha256 FROM items"
        args: tuple = ()
        if modality:
            sql, args = sql + " WHERE modality = ?", (modality,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return (Item(*row) for row in rows)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids`` (len(ids), dim), in that order."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        with self._lock:
            for row, item_id in enumerate(ids):
                found = self._db.execute("SELECT vector FROM items WHERE id = ?",
                                         (int(item_id),)).fetchone()
                if found is None:
                    raise McrxError(f"collection {self.path} has no item #{item_id}")
                out[row] = np.frombuffer(found[0], dtype=np.float32)
        return out

    def info(self) -> dict[str, Any]:
        """A summary: model, counts and the kind of each modality's index."""
        kinds = {}
        for modality in self.counts():
            index = self._index(modality)
            kinds[modality] = index_kind(index) if index is not None else "none"
        return {
            "path": str(self.path),
            "model": {"path": str(self.model_path), "name": self.model_name,
                      "fingerprint": self.model_fingerprint, "dim": self.dim},
            "items": len(self),
            "counts": self.counts(),
            "indexes": kinds,
            "ivf_threshold": self.ivf_threshold,
        }

    # -- indexing --------------------------------------------------------------------------
    def index(
        self,
        inputs: Sequence[str | Path],
        modality: str | None = None,
        show_progress: bool = False,
    ) -> IndexReport:
        """Embed the files named by ``inputs`` (files or folders) into the collection.

        With ``modality`` every file is of it; without, each file's suffix must name a
        modality of the model (``.wav`` audio, ``.png`` image, ...). Only new and changed
        files are embedded; items whose files are gone are dropped. Files the encoder cannot
        read are reported in ``IndexReport.failed`` and left out (tried again next time)."""
        from mcrx.ui.console import progress, rate_text

        started = time.perf_counter()
        report = IndexReport()
        model_modalities = self.model_modalities
        if modality is not None and modality not in model_modalities:
            raise McrxError(f"the model of {self.path} embeds {', '.join(model_modalities)}, "
                            f"not {modality!r}")

        def encoder_for(name: str):
            model = self.model
            return model.space(model.space_of(name)).encoder(name)

        targets = expand_inputs(inputs, modality, model_modalities, encoder_for)
        with self._writer_lock(), progress(disable=not show_progress) as bar:
            self._add_roots([str(Path(raw).expanduser().resolve()) for raw in inputs])
            with self._lock:
                known = {row[1]: row for row in self._db.execute(
                    "SELECT id, path, modality, size, mtime_ns, sha256, dev FROM items")}
            # 1. decide per file, reading only those whose stat changed
            checking = bar.add_task("checking files", total=len(targets), rate="")
            pending: list[tuple[Path, str, FileStat, str, int | None]] = []
            refreshed: list[tuple[int, FileStat]] = []
            filled: list[tuple[int, FileStat]] = []
            reuse: list[tuple[Path, str, FileStat, str, int | None, bytes]] = []
            for path, file_modality in targets:
                bar.advance(checking)
                try:
                    stat = FileStat.of(path)
                    row = known.get(str(path))
                    same_modality = row is not None and row[2] == file_modality
                    if same_modality and (row[3], row[4]) == (stat.size, stat.mtime_ns):
                        report.unchanged += 1
                        if row[6] is None:  # a row of an older format: record dev/ino
                            filled.append((row[0], stat))
                        continue
                    sha = content_hash(path)
                except OSError as exc:
                    report.failed.append((str(path), f"cannot read: {exc.strerror or exc}"))
                    continue
                if same_modality and row[5] == sha:
                    refreshed.append((row[0], stat))
                    continue
                stored = self._vector_by_content(file_modality, sha)
                item_id = row[0] if row is not None else None
                if stored is not None:
                    reuse.append((path, file_modality, stat, sha, item_id, stored))
                else:
                    pending.append((path, file_modality, stat, sha, item_id))
            report.touched = len(refreshed)
            gone = [row for path, row in known.items() if not os.path.exists(path)]

            # 2. rows that need no embedding, in one transaction
            with self._transaction() as db:
                for item_id, stat in refreshed + filled:
                    db.execute("UPDATE items SET size = ?, mtime_ns = ?, dev = ?, ino = ? "
                               "WHERE id = ?",
                               (stat.size, stat.mtime_ns, stat.dev, stat.ino, item_id))
                for path, file_modality, stat, sha, item_id, vector in reuse:
                    self._upsert(db, path, file_modality, stat, sha, item_id, vector)
                    report.reused += 1
                for row in gone:
                    db.execute("DELETE FROM items WHERE id = ?", (row[0],))
                    report.dropped += 1
                self._bump(db, {row[2] for row in gone} | {r[1] for r in reuse}
                           | {known[str(r[0])][2] for r in reuse if r[4] is not None})

            # 3. embed, one modality at a time, committing every chunk
            embedding = bar.add_task("embedding", total=len(pending), rate="")
            done, embed_started = 0, time.perf_counter()
            for file_modality in sorted({p[1] for p in pending}):
                group = [p for p in pending if p[1] == file_modality]
                chunk_size = min(EMBED_CHUNK, max(1, encoder_for(file_modality).batch_size))
                for start in range(0, len(group), chunk_size):
                    chunk = group[start : start + chunk_size]
                    vectors, failures = self._embed_files(
                        file_modality, [p[0] for p in chunk])
                    report.failed.extend(failures)
                    with self._transaction() as db:
                        for (path, _, stat, sha, item_id), vector in zip(chunk, vectors,
                                                                         strict=True):
                            if vector is None:
                                continue
                            self._upsert(db, path, file_modality, stat, sha, item_id,
                                         vector.tobytes())
                            if item_id is None:
                                report.added += 1
                            else:
                                report.changed += 1
                        # a file indexed before as another modality leaves that index too
                        self._bump(db, {file_modality} | {known[str(p[0])][2] for p in chunk
                                                          if p[4] is not None})
                    done += len(chunk)
                    bar.update(embedding, advance=len(chunk), rate=rate_text(
                        done, time.perf_counter() - embed_started, "items"))
            self.refresh_indexes(write=True)
        report.seconds = time.perf_counter() - started
        return report

    def _vector_by_content(self, modality: str, sha: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT vector FROM items WHERE modality = ? AND sha256 = ? LIMIT 1",
                (modality, sha)).fetchone()
        return row[0] if row else None

    def _embed_files(self, modality: str, paths: list[Path]
                     ) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
        """Vectors of ``paths`` (None where the encoder failed) and the failures. A batch
        that fails is retried file by file, so one bad file costs only itself."""
        try:
            return list(self._embed_items(modality, paths)), []
        except Exception:  # noqa: BLE001 - find the file(s) at fault below
            pass
        vectors: list[np.ndarray | None] = []
        failures = []
        for path in paths:
            try:
                vectors.append(self._embed_items(modality, [path])[0])
            except McrxError as exc:
                vectors.append(None)
                failures.append((str(path), str(exc)))
            except Exception as exc:  # a decoder's own error (PIL, soundfile): name the file
                vectors.append(None)
                failures.append((str(path), f"{type(exc).__name__}: {exc}"))
        return vectors, failures

    def _embed_items(self, modality: str, paths: Sequence[Path]) -> np.ndarray:
        items = [encoder_item(path, modality) for path in paths]
        vectors = self.model.embed(modality, items).numpy().astype(np.float32)  # (n, dim)
        return np.ascontiguousarray(vectors)

    @staticmethod
    def _upsert(db: sqlite3.Connection, path: Path, modality: str, stat: FileStat, sha: str,
                item_id: int | None, vector: bytes) -> None:
        values = (str(path), modality, stat.size, stat.mtime_ns, sha, time.time(), vector,
                  stat.dev, stat.ino)
        if item_id is None:
            db.execute("INSERT INTO items (path, modality, size, mtime_ns, sha256, indexed_at,"
                       " vector, dev, ino) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        else:  # a changed file keeps its id: "#12" still means the same file
            db.execute("UPDATE items SET path = ?, modality = ?, size = ?, mtime_ns = ?, "
                       "sha256 = ?, indexed_at = ?, vector = ?, dev = ?, ino = ? "
                       "WHERE id = ?", (*values, item_id))

    @staticmethod
    def _bump(db: sqlite3.Connection, modalities: set[str]) -> None:
        for modality in modalities:
            db.execute("INSERT INTO versions VALUES (?, 1) ON CONFLICT(modality) "
                       "DO UPDATE SET version = version + 1", (modality,))

    def remove(self, paths: Sequence[str | Path]) -> int:
        """Drop the items of ``paths`` (files or folders: everything under them)."""
        removed = set()
        with self._writer_lock(), self._transaction() as db:
            for raw in paths:
                target = str(Path(raw).expanduser().resolve())
                rows = db.execute("SELECT id, modality FROM items WHERE path = ? OR path LIKE ?",
                                  (target, target.rstrip("/") + "/%")).fetchall()
                for item_id, modality in rows:
                    db.execute("DELETE FROM items WHERE id = ?", (item_id,))
                    removed.add((item_id, modality))
            self._bump(db, {modality for _, modality in removed})
        self.refresh_indexes(write=True)
        return len(removed)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """One indexing process at a time (two would race on the index files)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: SQLite still keeps rows whole
            yield
            return
        with open(self.path / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise McrxError(f"another process is indexing {self.path}; wait for it "
                                "to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- faiss indexes ---------------------------------------------------------------------
    def _db_versions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT modality, version FROM versions").fetchall())

    def _index_file(self, modality: str, version: int) -> Path:
        return self.path / INDEX_DIR / f"{_slug(modality)}-{version}.faiss"

    def refresh_indexes(self, write: bool = False) -> None:
        """Bring every modality's faiss index up to its database version: load its file if
        one was written for that version, else build it from the stored vectors and write
        it (best effort: a collection on a read-only disk is still searchable). ``write``:
        also remove the files of older versions (the indexing process does)."""
        faiss = import_faiss("a collection")
        counts = self.counts()
        for modality, version in self._db_versions().items():
            loaded = self._indexes.get(modality)
            if loaded is not None and loaded[0] == version:
                continue
            if counts.get(modality, 0) == 0:  # every item of it was removed
                self._indexes[modality] = (version, None)
                if write:
                    self._remove_index_files(modality, keep=None)
                continue
            file = self._index_file(modality, version)
            if file.is_file():
                index = faiss.read_index(str(file))
            else:
                index = self._build_modality_index(modality, loaded)
                with contextlib.suppress(OSError, RuntimeError):  # faiss: RuntimeError
                    file.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(file) as tmp:
                        faiss.write_index(index, str(tmp))
            if write:
                self._remove_index_files(modality, keep=file)
            self._indexes[modality] = (version, index)

    def _remove_index_files(self, modality: str, keep: Path | None) -> None:
        for old in (self.path / INDEX_DIR).glob(f"{_slug(modality)}-*.faiss"):
            if old != keep and re.fullmatch(rf"{re.escape(_slug(modality))}-\d+\.faiss",
                                            old.name):
                with contextlib.suppress(OSError):
                    old.unlink()

    def _build_modality_index(self, modality: str, previous: tuple[int, Any] | None):
        """The index of ``modality``'s stored vectors. An IVF index of the right size is
        updated in place (its trained lists kept); otherwise one is built from scratch."""
        with self._lock:
            rows = self._db.execute("SELECT id, vector FROM items WHERE modality = ? "
                                    "ORDER BY id", (modality,)).fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        vectors = vectors.reshape(len(rows), self.dim)
        kind = "ivf" if len(rows) >= self.ivf_threshold else "flat"
        if (previous is not None and previous[1] is not None and kind == "ivf"
                and index_kind(previous[1]) == "ivf"):
            faiss = import_faiss("a collection")
            index = previous[1]
            nlist = faiss.extract_index_ivf(index).nlist
            wanted = ivf_lists(len(rows))
            if wanted / 2 <= nlist <= wanted * 2:  # the lists still fit: keep the training
                index.reset()
                index.add_with_ids(np.ascontiguousarray(vectors), ids)
                return index
        return build_index(vectors, ids, kind)

    def _index(self, modality: str):
        if self._indexes.get(modality, (None,))[0] != self._db_versions().get(modality):
            self.refresh_indexes()
        entry = self._indexes.get(modality)
        return entry[1] if entry else None

    # -- searching -------------------------------------------------------------------------
    def search_vector(
        self,
        vector: np.ndarray,
        n: int = 10,
        modalities: Sequence[str] | None = None,
        nprobe: int | None = None,
        each: bool = False,
    ) -> list[Hit]:
        """The ``n`` items nearest to the unit ``vector`` (dim,), among ``modalities``
        (default all), best first; with ``each``, the ``n`` nearest of every modality,
        modality by modality (the modality gap makes one modality's scores higher than
        another's: a merged list may show only one of them)."""
        if n < 1:
            raise McrxError(f"-n must be at least 1, got {n}")
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != self.dim:
            raise McrxError(f"query vectors of {self.path} are {self.dim}-d, got "
                            f"{query.shape[1]}")
        unknown = [m for m in modalities or () if m not in self.model_modalities]
        if unknown:
            raise McrxError(f"the model of {self.path} embeds {', '.join(self.model_modalities)}"
                            f"; no {', '.join(unknown)}")
        # one look at the (tiny) versions table per query: another process may have
        # re-indexed since; the indexes are reloaded only then
        versions = self._db_versions()
        if any(self._indexes.get(m, (None,))[0] != v for m, v in versions.items()):
            self.refresh_indexes()
        selected = sorted(self._indexes) if modalities is None else list(modalities)
        found: list[tuple[float, int, str]] = []
        groups: list[list[tuple[float, int, str]]] = []
        for modality in selected:
            index = self._indexes.get(modality, (None, None))[1]
            if index is None or index.ntotal == 0:
                continue
            params = None
            if nprobe is not None and index_kind(index) == "ivf":
                faiss = import_faiss("a collection")
                params = faiss.SearchParametersIVF(nprobe=int(nprobe))
            scores, ids = index.search(query, min(n, index.ntotal), params=params)
            groups.append([(float(s), int(i), modality)
                           for s, i in zip(scores[0], ids[0], strict=True) if i >= 0])
        if each:
            found = [hit for group in groups for hit in group]  # each group is sorted
        else:
            found = sorted((hit for group in groups for hit in group), key=lambda h: -h[0])[:n]
        hits = []
        for score, item_id, modality in found:
            item = self.item(item_id)
            if item is not None:  # deleted since the index was loaded
                hits.append(Hit(item.id, item.path, modality, score))
        return hits

    def search(
        self,
        query: str | Sequence[str] | Sequence[Term],
        n: int = 10,
        modalities: Sequence[str] | None = None,
        default_modality: str | None = None,
        allow_file: FilePolicy | None = None,
        nprobe: int | None = None,
        outside_files: str | None = None,
        each: bool = False,
    ) -> list[Hit]:
        """Search with a query expression (see :mod:`mcrx.search.query`) or parsed terms;
        the arguments are those of :meth:`query_vector` and :meth:`search_vector`."""
        vector = self.query_vector(query, default_modality, allow_file, outside_files)
        return self.search_vector(vector, n, modalities, nprobe, each)

    def query_vector(
        self,
        query: str | Sequence[str] | Sequence[Term],
        default_modality: str | None = None,
        allow_file: FilePolicy | None = None,
        outside_files: str | None = None,
    ) -> np.ndarray:
        """The unit vector of a query: ``normalize(Σ wᵢ·vᵢ)`` over its terms.

        ``default_modality`` is the modality of file terms that name none (else the
        collection's record of the file, else its suffix). ``allow_file(path)`` decides
        whether a term may name a file (default: any file); ``outside_files`` is the message
        for a term that names a refused one."""
        if query and all(isinstance(t, Term) for t in query):
            terms = list(query)  # type: ignore[arg-type]
        else:
            terms = parse_query(query, self.model_modalities)  # type: ignore[arg-type]
        vectors = np.stack([self._term_vector(t, default_modality, allow_file, outside_files)
                            for t in terms])
        return combine([t.weight for t in terms], vectors)

    def _term_vector(self, term: Term, default_modality: str | None,
                     allow_file: FilePolicy | None, outside_files: str | None) -> np.ndarray:
        if term.item is not None:
            return self.vectors([term.item])[0]
        if term.modality == "text":
            return self._embed_text(term.value)
        path = Path(term.value).expanduser()
        allowed = allow_file is None or allow_file(path)
        if allowed and path.is_file():
            return self._file_vector(path.resolve(), term.modality or default_modality,
                                     term.value)
        if looks_like_path(term.value) or term.modality is not None:
            if not allowed and outside_files:
                raise McrxError(f"{term.value}: {outside_files}")
            if term.modality is not None:
                raise McrxError(f"not found: {term.value} (a {term.modality} term is a file)")
            raise McrxError(f"not found: {term.value} (to search for this text itself, write "
                            f"text:{term.value})")
        return self._embed_text(term.value)

    def _embed_text(self, text: str) -> np.ndarray:
        if "text" not in self.model_modalities:
            raise McrxError(f"{text!r} is not a file, and the model embeds no text "
                            f"({', '.join(self.model_modalities)})")
        return self.model.embed("text", [text]).numpy()[0]

    def _file_vector(self, path: Path, modality: str | None, written: str) -> np.ndarray:
        item = self.item_by_path(path)
        modality = (modality or (item.modality if item else None)
                    or modality_of_suffix(path, self.model_modalities))
        if modality is None:
            raise McrxError(
                f"{written}: cannot tell the modality of a {path.suffix or 'suffix-less'} "
                f"file; write it as MODALITY:{written} (or pass --modality), MODALITY one "
                f"of {', '.join(self.model_modalities)}")
        if modality not in self.model_modalities:
            raise McrxError(f"the model embeds {', '.join(self.model_modalities)}, "
                            f"not {modality!r}")
        if item is not None and item.modality == modality:
            stat = FileStat.of(path)
            if (stat.size, stat.mtime_ns) == (item.size, item.mtime_ns):
                return self.vectors([item.id])[0]  # indexed and unchanged: no need to embed
        return self._embed_items(modality, [path])[0]

    def contains_path(self, path: str | Path) -> bool:
        """Whether ``path`` is a file of the collection (what the server may read)."""
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, RuntimeError):
            return False
        return self.item_by_path(resolved) is not None

    def open_indexed_file(self, item_id: int) -> BinaryIO:
        """The file of item ``item_id``, open for reading in binary, when it is still the
        file that was indexed; McrxError otherwise ("not found", "outside the collection",
        "changed since it was indexed").

        The path is opened one component at a time with ``O_NOFOLLOW`` (a symbolic link
        swapped in anywhere on it is refused), must lie inside the roots the collection
        recorded at index time, and must be the same regular file: ``st_dev``, ``st_ino``,
        size and mtime as recorded (rows of older collections: what they recorded); when
        those differ, the content hash decides."""
        with self._lock:
            row = self._db.execute(
                "SELECT path, size, mtime_ns, sha256, dev, ino FROM items WHERE id = ?",
                (int(item_id),)).fetchone()
        if row is None:
            raise McrxError(f"collection {self.path} has no item #{item_id}: not found")
        path, size, mtime_ns, sha, dev, ino = row
        path = os.fsdecode(path) if isinstance(path, bytes) else path
        shown = display_path(path)
        roots = self.roots
        if roots and not any(_inside(path, root) for root in roots):
            raise McrxError(f"{shown}: outside the collection {self.path} (its roots: "
                            f"{', '.join(display_path(r) for r in roots)})")
        try:
            fd = open_no_follow(path)
        except FileNotFoundError:
            raise McrxError(f"{shown}: not found (item #{item_id} of {self.path})") from None
        except OSError as exc:  # ELOOP, ENOTDIR: a link on the way; EACCES, ...
            raise McrxError(f"{shown}: changed since it was indexed, or cannot be opened "
                            f"({exc.strerror or exc})") from None
        try:
            found = os.fstat(fd)
            same = stat.S_ISREG(found.st_mode) and found.st_size == size
            if same and (found.st_mtime_ns != mtime_ns
                         or (dev is not None and (found.st_dev, found.st_ino) != (dev, ino))):
                same = bool(sha) and fd_sha256(fd) == sha
            if not same:
                raise McrxError(f"{shown}: changed since it was indexed into {self.path} "
                                "(re-index it)")
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _add_roots(self, roots: Sequence[str]) -> None:
        known = self.roots
        new = [root for root in roots if root not in known]
        if new:
            self._set_meta(roots=json.dumps(known + new))

    @property
    def roots(self) -> list[str]:
        """The real paths indexed (folders and files) that items must lie inside; empty for
        collections written before roots were recorded."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'roots'").fetchone()
        try:
            roots = json.loads(row[0]) if row else []
        except ValueError:
            return []
        return [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={self.model_name!r})"
