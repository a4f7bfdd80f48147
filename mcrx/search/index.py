"""The faiss index of one modality of a collection: exact inner product (``IndexFlatIP``:
cosine of unit vectors) or an inverted-file index (``IndexIVFFlat``) above a size
threshold, trained here."""

from __future__ import annotations

import numpy as np

from mcrx.errors import McrxError
from mcrx.methods.faiss_support import import_faiss, ivf_lists

__all__ = ["build_index", "default_nprobe", "index_kind", "ivf_lists"]


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
