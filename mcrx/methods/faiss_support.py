"""faiss, shared by ``retrieval.mode: ann`` (:mod:`mcrx.methods.ann`) and search collections
(:mod:`mcrx.search.index`): importing it with a clear message, and the number of inverted
lists of an IVF index."""

from __future__ import annotations

import math

from mcrx.errors import McrxError


def import_faiss(purpose: str = "this"):
    """The faiss module (faiss-cpu, or faiss-gpu where installed), or a McrxError saying how
    to install it for ``purpose``."""
    try:
        import faiss
    except ImportError:
        raise McrxError(f"{purpose} needs faiss: pip install faiss-cpu (or faiss-gpu on a CUDA "
                        "machine), e.g. `pip install 'mcrx[ann]'`") from None
    return faiss


def ivf_lists(count: int) -> int:
    """Inverted lists for ``count`` vectors: ~4·√N (faiss's guideline), with at least 39
    training points per list so k-means has something to fit."""
    return max(1, min(int(round(4 * math.sqrt(count))), count // 39))
