"""The faiss indexes of a collection, one per modality: exact inner product
(``IndexFlatIP``: cosine of unit vectors) or an inverted-file index (``IndexIVFFlat``)
above a size threshold, trained here; and their lifecycle (:class:`ModalityIndexes`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.errors import McrxError
from mcrx.methods.faiss_support import import_faiss, ivf_lists
from mcrx.search.store import INDEX_DIR, ItemStore, slug
from mcrx.store.atomic import atomic_path

__all__ = ["ModalityIndexes", "build_index", "default_nprobe", "index_kind", "ivf_lists"]


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/16 of them, at least 8 (recall@10 ≥ 0.95 on clustered
    data in bench_search.py)."""
    return max(1, min(nlist, max(8, nlist // 16)))


def build_index(vectors: np.ndarray, ids: np.ndarray, kind: str, nlist: int | None = None):
    """A faiss inner-product index over ``vectors`` (n, d) with ``ids`` (n,) int64:
    ``kind`` "flat" (exact) or "ivf" (trained here on a sample of ``vectors``)."""
    faiss = import_faiss("a collection")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf":
        nlist = nlist or ivf_lists(len(vectors))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means (faiss: 10 iterations) on 40 points per list, just above faiss's minimum
        # of 39: the centroids barely move with more, and training time grows with the
        # sample (1M × 512-d: ~4,000 lists trained on 160k vectors)
        sample = min(len(vectors), 40 * nlist)
        rng = np.random.default_rng(0)
        chosen = rng.choice(len(vectors), size=sample, replace=False) if sample < len(
            vectors) else slice(None)
        index.train(vectors[chosen])
        index.nprobe = default_nprobe(nlist)
    else:
        raise McrxError(f"unknown index kind {kind!r} (flat or ivf)")
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index


def index_kind(index) -> str:
    faiss = import_faiss("a collection")
    return "ivf" if isinstance(faiss.try_extract_index_ivf(index), faiss.IndexIVF) else "flat"


class ModalityIndexes:
    """The faiss index of every modality of a collection, kept at the database's versions.

    ``FOLDER/index/<modality>-<version>.faiss`` is valid for exactly one version of the
    modality's rows (bumped in the same transaction as any change to them): an index whose
    file is missing, stale or unreadable is rebuilt from the stored vectors, so a crash
    between a commit and the index write heals itself on the next open."""

    def __init__(self, store: ItemStore, dim: int, ivf_threshold: int) -> None:
        self.store = store
        self.folder = store.folder / INDEX_DIR
        self.dim = dim
        self.ivf_threshold = ivf_threshold
        self._loaded: dict[str, tuple[int, Any]] = {}  # modality → (version, faiss index)

    def file(self, modality: str, version: int) -> Path:
        return self.folder / f"{slug(modality)}-{version}.faiss"

    def stale(self, versions: dict[str, int] | None = None) -> bool:
        versions = self.store.versions() if versions is None else versions
        return any(self._loaded.get(m, (None,))[0] != v for m, v in versions.items())

    def get(self, modality: str) -> Any:
        """The current index of ``modality`` (None when it has no items)."""
        if self._loaded.get(modality, (None,))[0] != self.store.versions().get(modality):
            self.refresh()
        entry = self._loaded.get(modality)
        return entry[1] if entry else None

    def loaded(self) -> dict[str, Any]:
        return {modality: entry[1] for modality, entry in self._loaded.items()}

    def refresh(self, write: bool = False) -> None:
        """Bring every modality's index up to its database version: load its file if one
        was written for that version, else build it from the stored vectors and write it
        (best effort: a collection on a read-only disk is still searchable). ``write``: also
        remove the files of older versions (the indexing process does)."""
        faiss = import_faiss("a collection")
        counts = dict(self.store.all("SELECT modality, COUNT(*) FROM items GROUP BY modality"))
        for modality, version in self.store.versions().items():
            loaded = self._loaded.get(modality)
            if loaded is not None and loaded[0] == version:
                continue
            if counts.get(modality, 0) == 0:  # every item of it was removed
                self._loaded[modality] = (version, None)
                if write:
                    self._remove_files(modality, keep=None)
                continue
            file = self.file(modality, version)
            index = None
            if file.is_file():
                with contextlib.suppress(RuntimeError, OSError):  # damaged: rebuilt below
                    index = faiss.read_index(str(file))
                if index is not None and (index.d != self.dim
                                          or index.ntotal != counts[modality]):
                    index = None
            if index is None:
                index = self._build(modality, loaded)
                with contextlib.suppress(OSError, RuntimeError):  # faiss: RuntimeError
                    file.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(file) as tmp:
                        faiss.write_index(index, str(tmp))
            if write:
                self._remove_files(modality, keep=file)
            self._loaded[modality] = (version, index)

    def _remove_files(self, modality: str, keep: Path | None) -> None:
        for old in self.folder.glob(f"{slug(modality)}-*.faiss"):
            if old != keep and re.fullmatch(rf"{re.escape(slug(modality))}-\d+\.faiss",
                                            old.name):
                with contextlib.suppress(OSError):
                    old.unlink()

    def _build(self, modality: str, previous: tuple[int, Any] | None) -> Any:
        """The index of ``modality``'s stored vectors. An IVF index of the right size is
        updated in place (its trained lists kept); otherwise one is built from scratch."""
        rows = self.store.all("SELECT id, vector FROM items WHERE modality = ? ORDER BY id",
                              (modality,))
        width = self.dim * 4
        bad = next((row[0] for row in rows
                    if not isinstance(row[1], bytes) or len(row[1]) != width), None)
        if bad is not None:
            raise self.store.damaged(f"the vector of item #{bad} is not {self.dim} float32")
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

    def search(self, query: np.ndarray, n: int, modalities: Sequence[str],
               nprobe: int | None) -> list[list[tuple[float, int, str]]]:
        """Per modality of ``modalities``: its up to ``n`` (score, id, modality), best
        first. The caller refreshed the indexes."""
        groups: list[list[tuple[float, int, str]]] = []
        for modality in modalities:
            index = self._loaded.get(modality, (None, None))[1]
            if index is None or index.ntotal == 0:
                continue
            params = None
            if nprobe is not None and index_kind(index) == "ivf":
                faiss = import_faiss("a collection")
                params = faiss.SearchParametersIVF(nprobe=int(nprobe))
            scores, ids = index.search(query, min(n, index.ntotal), params=params)
            groups.append([(float(s), int(i), modality)
                           for s, i in zip(scores[0], ids[0], strict=True) if i >= 0])
        return groups
