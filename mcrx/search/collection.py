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

Re-indexing is incremental (:mod:`mcrx.search.indexing`). The jobs live in modules:

- :mod:`mcrx.search.store`: the SQLite store (schema, validated meta rows, transactions,
  the one writer lock taken before the database is created);
- :mod:`mcrx.search.files`: walking the inputs (links, regular files), file identity,
  opening an indexed file without following links, printing names safely;
- :mod:`mcrx.search.index`: the faiss index of each modality and its lifecycle;
- :mod:`mcrx.search.embedding`: embedding files and turning queries into vectors;
- :mod:`mcrx.search.indexing`: one indexing run and its report.

This module is the facade users hold: :class:`Collection` (also ``mcrx.Collection``).

    import mcrx
    sounds = mcrx.Collection("sounds.mcrx", model="runs/demo/model")   # created on first use
    sounds.index(["recordings/"], modality="audio")
    for hit in sounds.search('"2:dog barking" + cat.png - indoors', n=5):
        print(hit.score, hit.path)
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mcrx.errors import McrxError
from mcrx.search.embedding import FilePolicy, query_vector
from mcrx.search.files import display_path, fd_sha256, open_no_follow
from mcrx.search.fingerprint import model_fingerprint
from mcrx.search.index import ModalityIndexes, index_kind
from mcrx.search.indexing import EMBED_CHUNK, IndexReport, remove_paths, run_index
from mcrx.search.query import Term
from mcrx.search.store import (
    DATABASE,
    DEFAULT_IVF_THRESHOLD,
    FORMAT_VERSION,
    INDEX_DIR,
    ItemStore,
    check_new_folder,
    create_database,
    from_db,
    inside,
    set_aside_damaged,
    to_db,
    writer_lock,
)

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.infer.unified import UnifiedModel

__all__ = ["DATABASE", "DEFAULT_IVF_THRESHOLD", "EMBED_CHUNK", "FORMAT_VERSION", "INDEX_DIR",
           "Collection", "FilePolicy", "Hit", "IndexReport", "Item"]

_ITEM_COLUMNS = "id, path, modality, size, mtime_ns, sha256"


@dataclass(frozen=True)
class Item:
    """One file of a collection (``path``: undecodable bytes as lone surrogates, PEP 383;
    print it with :func:`mcrx.search.files.display_path`)."""

    id: int
    path: str
    modality: str
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of_row(cls, row: tuple) -> Item:
        return cls(row[0], from_db(row[1]), *row[2:6])

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


class Collection:
    """A folder of embedded files (see the module docstring).

    ``Collection(path)`` opens an existing collection; ``Collection(path, model=MODEL)``
    also creates it when missing, pinned to that unified model folder, and refuses a
    different model than the one it was built with. ``rebuild=True`` (with ``model``)
    sets a damaged database aside (``items.sqlite.damaged``) and starts a new one, to be
    filled again by :meth:`index`."""

    def __init__(self, path: str | Path, model: str | Path | None = None,
                 ivf_threshold: int | None = None, rebuild: bool = False) -> None:
        self.path = Path(path).expanduser()
        if ivf_threshold is not None and ivf_threshold < 1:
            raise McrxError(f"--ivf-threshold must be at least 1, got {ivf_threshold}")
        database = self.path / DATABASE
        if rebuild and model is None:
            raise McrxError("rebuilding a collection needs its model: mcrx index --rebuild "
                            f"MODEL {self.path} FILES...")
        if rebuild or not database.is_file():
            if model is None:
                raise McrxError(f"{self.path} is not a collection (no {DATABASE}); create one "
                                f"with: mcrx index MODEL {self.path} FILES...")
            if not rebuild:
                check_new_folder(self.path)  # before the lock file is made in it
            self._create(Path(model).expanduser(), ivf_threshold, rebuild)
        self.store = ItemStore(self.path)
        try:
            meta = self.store.meta()
        except BaseException:
            self.store.close()
            raise
        self.model_path = meta.model_path
        self.model_fingerprint = meta.model_fingerprint
        self.model_name = meta.model_name
        self.dim = meta.dim
        self.ivf_threshold = meta.ivf_threshold
        self._model_modalities = list(meta.modalities)
        if ivf_threshold is not None and ivf_threshold != self.ivf_threshold:
            self.store.set_meta(ivf_threshold=ivf_threshold)
            self.ivf_threshold = ivf_threshold
        self._lock = threading.RLock()
        self._model: UnifiedModel | None = None
        self.indexes = ModalityIndexes(self.store, self.dim, self.ivf_threshold)
        if model is not None:
            try:
                self.use_model(model)
            except BaseException:
                self.store.close()
                raise

    # -- creation and the pinned model -----------------------------------------------------
    def _create(self, model: Path, ivf_threshold: int | None, rebuild: bool) -> None:
        """Create the database under the collection's writer lock, taken BEFORE anything
        else is written: of two processes creating one collection, the second waits and
        then finds it (instead of replacing the file the first is writing to)."""
        from mcrx.store.artifact import read_manifest

        manifest = read_manifest(model)  # the one validation of a model folder
        fingerprint = model_fingerprint(model)
        meta = {
            "format_version": str(FORMAT_VERSION),
            "model_path": str(model.resolve()),
            "model_fingerprint": fingerprint,
            "model_name": str(manifest.get("name", "")),
            "dim": str(int(manifest["dim"])),
            "modalities": json.dumps(sorted(manifest["embedders"])),
            "ivf_threshold": str(ivf_threshold or DEFAULT_IVF_THRESHOLD),
            "created": str(time.time()),
        }
        with writer_lock(self.path):
            if rebuild:
                set_aside_damaged(self.path)
            elif (self.path / DATABASE).is_file():
                return  # another process created it while this one waited
            else:
                check_new_folder(self.path)
            create_database(self.path, meta)

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
        """The unified model (loaded on first use, after checking its fingerprint; the
        manifest is validated by :func:`mcrx.store.artifact.read_manifest`)."""
        with self._lock:
            if self._model is None:
                import mcrx

                if not self.model_path.is_dir():
                    raise McrxError(f"the model of collection {self.path} is gone from "
                                    f"{self.model_path}; name where it is now with --model")
                found = model_fingerprint(self.model_path)
                if found != self.model_fingerprint:
                    raise McrxError(
                        f"the model at {self.model_path} changed since collection "
                        f"{self.path} was built (fingerprint {self.model_fingerprint}, now "
                        f"{found}): index into a new collection folder"
                    )
                model = mcrx.load(self.model_path)
                if model.dim != self.dim:
                    raise McrxError(f"the model at {self.model_path} is {model.dim}-d; "
                                    f"collection {self.path} holds {self.dim}-d vectors")
                self._model = model
            return self._model

    @property
    def model_modalities(self) -> list[str]:
        """The modalities the pinned model embeds (without loading it)."""
        return self._model_modalities

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.store.one("SELECT COUNT(*) FROM items")[0]  # type: ignore[index]

    def counts(self) -> dict[str, int]:
        """Items per modality."""
        return dict(self.store.all(
            "SELECT modality, COUNT(*) FROM items GROUP BY modality ORDER BY modality"))

    @property
    def modalities(self) -> list[str]:
        return list(self.counts())

    def item(self, item_id: int) -> Item | None:
        row = self.store.one(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?",
                             (int(item_id),))
        return Item.of_row(row) if row else None

    def item_by_path(self, path: str | Path) -> Item | None:
        row = self.store.one(f"SELECT {_ITEM_COLUMNS} FROM items WHERE path = ?",
                             (to_db(path),))
        return Item.of_row(row) if row else None

    def items(self, modality: str | None = None) -> Iterator[Item]:
        """Every item (of ``modality``), by id."""
        sql = f"SELECT {_ITEM_COLUMNS} FROM items"
        args: tuple = ()
        if modality:
            sql, args = sql + " WHERE modality = ?", (modality,)
        return (Item.of_row(row) for row in self.store.all(sql + " ORDER BY id", args))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids`` (len(ids), dim), in that order."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, item_id in enumerate(ids):
            found = self.store.one("SELECT vector FROM items WHERE id = ?", (int(item_id),))
            if found is None:
                raise McrxError(f"collection {self.path} has no item #{item_id}")
            if not isinstance(found[0], bytes) or len(found[0]) != 4 * self.dim:
                raise self.store.damaged(f"the vector of item #{item_id} is not {self.dim} "
                                         "float32")
            out[row] = np.frombuffer(found[0], dtype=np.float32)
        return out

    @property
    def roots(self) -> list[str]:
        """The real paths indexed (folders and files, and link targets followed with
        ``follow_links``) that items must lie inside; empty for collections written before
        roots were recorded."""
        return self.store.meta().roots

    def info(self) -> dict[str, Any]:
        """A summary: model, counts and the kind of each modality's index."""
        kinds = {}
        for modality in self.counts():
            index = self.indexes.get(modality)
            kinds[modality] = index_kind(index) if index is not None else "none"
        return {
            "path": str(self.path),
            "model": {"path": str(self.model_path), "name": self.model_name,
                      "fingerprint": self.model_fingerprint, "dim": self.dim},
            "items": len(self),
            "counts": self.counts(),
            "indexes": kinds,
            "ivf_threshold": self.ivf_threshold,
            "roots": self.roots,
        }

    # -- writing ---------------------------------------------------------------------------
    def index(
        self,
        inputs: Sequence[str | Path],
        modality: str | None = None,
        show_progress: bool = False,
        follow_links: bool = False,
    ) -> IndexReport:
        """Embed the files named by ``inputs`` (files or folders) into the collection.

        With ``modality`` every file is of it; without, each file's suffix must name a
        modality of the model (``.wav`` audio, ``.png`` image, ...). Only new and changed
        files are embedded; items whose files are gone are dropped. Files the encoder cannot
        read are reported in ``IndexReport.failed`` and left out (tried again next time).
        A symbolic link found in a folder that leads out of it is skipped (listed in
        ``IndexReport.skipped``) unless ``follow_links``."""
        return run_index(self, inputs, modality, show_progress, follow_links)

    def remove(self, paths: Sequence[str | Path]) -> int:
        """Drop the items of ``paths`` (files or folders: everything under them)."""
        return remove_paths(self, paths)

    def refresh_indexes(self, write: bool = False) -> None:
        """Bring every modality's faiss index up to its database version (see
        :class:`mcrx.search.index.ModalityIndexes`)."""
        self.indexes.refresh(write)

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
        if self.indexes.stale():
            self.indexes.refresh()
        selected = sorted(self.indexes.loaded()) if modalities is None else list(modalities)
        groups = self.indexes.search(query, n, selected, nprobe)
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
        query: str | Sequence[str] | Sequence[Term] | np.ndarray,
        n: int = 10,
        modalities: Sequence[str] | None = None,
        default_modality: str | None = None,
        allow_file: FilePolicy | None = None,
        nprobe: int | None = None,
        outside_files: str | None = None,
        each: bool = False,
    ) -> list[Hit]:
        """Search with a query expression (see :mod:`mcrx.search.query`), parsed terms, or
        a vector (dim,); the arguments are those of :meth:`query_vector` and
        :meth:`search_vector`."""
        vector = self.query_vector(query, default_modality, allow_file, outside_files)
        return self.search_vector(vector, n, modalities, nprobe, each)

    def query_vector(
        self,
        query: str | Sequence[str] | Sequence[Term] | np.ndarray,
        default_modality: str | None = None,
        allow_file: FilePolicy | None = None,
        outside_files: str | None = None,
    ) -> np.ndarray:
        """The unit vector of a query: ``normalize(Σ wᵢ·vᵢ)`` over its terms (a vector
        query: itself, normalised).

        ``default_modality`` is the modality of file terms that name none (else the
        collection's record of the file, else its suffix). ``allow_file(path)`` decides
        whether a term may name a file (default: any file); ``outside_files`` is the message
        for a term that names a refused one."""
        return query_vector(self, query, default_modality, allow_file, outside_files)

    # -- the files -------------------------------------------------------------------------
    def contains_path(self, path: str | Path) -> bool:
        """Whether ``path`` is a file of the collection (what the server may read)."""
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return self.item_by_path(resolved) is not None

    def open_indexed_file(self, item_id: int) -> BinaryIO:
        """The file of item ``item_id``, open for reading in binary, when it is still the
        file that was indexed; McrxError otherwise ("not found", "outside the collection",
        "changed since it was indexed").

        The path is opened one component at a time with ``O_NOFOLLOW`` (POSIX ``openat``:
        a symbolic link swapped in anywhere on it is refused), must lie inside the roots
        the collection recorded at index time, and must be the same regular file:
        ``st_dev``, ``st_ino``, size and mtime as recorded (rows of older collections: what
        they recorded); when those differ, the content hash decides."""
        row = self.store.one("SELECT path, size, mtime_ns, sha256, dev, ino FROM items "
                             "WHERE id = ?", (int(item_id),))
        if row is None:
            raise McrxError(f"collection {self.path} has no item #{item_id}: not found")
        path, size, mtime_ns, sha, dev, ino = from_db(row[0]), *row[1:]
        shown = display_path(path)
        roots = self.roots
        if roots and not any(inside(path, root) for root in roots):
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
            os.set_blocking(fd, True)  # O_NONBLOCK only mattered for the open
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={self.model_name!r})"
