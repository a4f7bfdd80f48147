"""Approximate retrieval (``retrieval.mode: ann``): an inner-product faiss index per memory
finds each query's k nearest rows, then the papers' softmax runs exactly over those k:

    retrieve(q, M) ≈ Σ_{k ∈ N_k(q)} softmax_k(q·m_k / τ1) · m_k          τ1 = 0.01

At τ1 = 0.01 the weights of rows far from the query are negligible (a similarity 0.05 below
the best one weighs e⁻⁵ of it), so the k nearest carry nearly all of the softmax mass. What
is lost is measured, not assumed: :func:`ann_deviation` compares ann with exact retrieval on
a sample of queries, and ``mcrx extend`` reports the mean and minimum cosine (as it does for
``top-k``).

Exact and top-k retrieval cost one full (queries × memory) product; an index visits a graph
neighbourhood (HNSW, the default) or ``nprobe / nlist`` of the memory (IVF-Flat) per query,
which is what makes 10M-row memories or CPU-only machines practical. Why HNSW is the default
(benchmarks/bench_ann.py, 1M × 1M × 512, this 2-core CPU): embeddings form many small tight
groups (32-row clusters in the benchmark) that coarse k-means cells do not follow, so IVF
cells cut groups apart and a query misses part of its own group (mean cosine to exact 0.948
at nprobe 32; 0.975 at nprobe 128, where it is only 8.8× faster than exact); the graph links
each row to its true neighbours: k = ef_search = 128 is 10.9× faster than exact (graph
built in 579 s, then 0.89 ms a query against 16.0 ms) at mean cosine 0.9948; an
exploratory run of the same index gave k = 256: 9.4×, 0.9987 and k = 64: 20×, 0.953.
IVF-Flat remains the choice on a GPU (faiss-gpu has IVF, not HNSW).

Indexes store their own copy of the memory (float32, or float16 for a float16 memory: the
same numbers, so no precision is lost) and return exact inner products of the rows they
visit; the softmax uses those. faiss-cpu is the dependency (``pip install mcrx[ann]``); with
``faiss-gpu`` installed and a CUDA device in use, IVF indexes are moved to the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.methods.faiss_support import import_faiss, ivf_lists
from mcrx.store.fingerprint import fingerprint_of


@dataclass(frozen=True)
class AnnSettings:
    """How indexes are built and searched (the recipe's ``retrieval.ann``)."""

    index: str = "hnsw"  # "hnsw" or "ivf-flat"
    k: int = 256  # rows kept per query (the softmax runs over these)
    nlist: int | None = None  # IVF lists; None: 4·√N, at most N/39 (faiss's training rule)
    nprobe: int = 32  # IVF lists visited per query
    train_rows: int = 65536  # rows sampled to train the IVF centroids (k-means)
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 80  # HNSW build-time beam
    ef_search: int = 128  # HNSW search beam (raised to k)
    query_block: int = 2048  # queries searched at once
    gpu: bool = True  # use faiss-gpu when installed and the device is CUDA
    seed: int = 0

    @classmethod
    def from_retrieval(cls, retrieval: Any) -> AnnSettings:
        """From a recipe's ``Retrieval`` (its ``ann`` block and ``k``)."""
        return cls(k=retrieval.k, query_block=retrieval.query_block,
                   **retrieval.ann.model_dump())

    def lists_for(self, rows: int) -> int:
        if self.nlist is not None:
            return max(1, min(self.nlist, rows))
        return ivf_lists(rows)


def _float32_rows(x: torch.Tensor, block: int = 65536) -> np.ndarray:
    """A C-contiguous float32 numpy view or copy of ``x`` (widened block by block)."""
    if x.dtype == torch.float32 and x.is_contiguous() and x.device.type == "cpu":
        return x.numpy()
    out = np.empty(tuple(x.shape), dtype=np.float32)
    for start in range(0, x.shape[0], block):
        out[start : start + block] = x[start : start + block].float().cpu().numpy()
    return out


def _float16_storage(faiss, keys: torch.Tensor):
    """faiss's fp16 scalar quantizer for a float16 memory (its rows stored exactly, half the
    bytes of a float32 copy), else None (float32 rows stored as they are)."""
    return faiss.ScalarQuantizer.QT_fp16 if keys.dtype == torch.float16 else None


def _add_rows(index, keys: torch.Tensor, block: int = 65536) -> None:
    for start in range(0, keys.shape[0], block):
        index.add(_float32_rows(keys[start : start + block]))


def build_index(keys: torch.Tensor, settings: AnnSettings, device: torch.device | None = None):
    """An inner-product faiss index over the (already L2-normalised) rows of ``keys``."""
    faiss = import_faiss("retrieval.mode 'ann'")
    rows, dim = keys.shape
    half = _float16_storage(faiss, keys)
    if settings.index == "hnsw":
        index = (faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                 if half is None else
                 faiss.IndexHNSWSQ(dim, half, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT))
        index.hnsw.efConstruction = settings.ef_construction
        _add_rows(index, keys)  # fp16 storage needs no training (it is not learned)
        return place_index(index, settings, device)
    if settings.index != "ivf-flat":
        raise McrxError(f"retrieval.ann.index: expected 'hnsw' or 'ivf-flat', got "
                        f"{settings.index!r}")
    nlist = settings.lists_for(rows)
    quantizer = faiss.IndexFlatIP(dim)
    index = (faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
             if half is None else
             faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, half,
                                           faiss.METRIC_INNER_PRODUCT))
    if half is not None:
        index.by_residual = False  # the rows themselves in fp16 (exact), not row − centroid
    index.cp.seed = settings.seed
    # k-means on a sample: enough rows per centroid (faiss warns below 39), never all of them
    generator = torch.Generator().manual_seed(settings.seed)
    sample = min(rows, max(settings.train_rows, 39 * nlist))
    picked = torch.randperm(rows, generator=generator)[:sample].sort().values
    index.train(_float32_rows(keys[picked]))
    _add_rows(index, keys)
    return place_index(index, settings, device)


def place_index(index, settings: AnnSettings, device: torch.device | None = None):
    """Set the search-time parameters (not part of what is built or stored: the same index
    serves any ``nprobe`` / ``ef_search``), and move an IVF index to the GPU when faiss-gpu
    is installed and the run's device is CUDA."""
    faiss = import_faiss("retrieval.mode 'ann'")
    if settings.index == "hnsw":
        index.hnsw.efSearch = max(settings.ef_search, settings.k)
        return index
    index.nprobe = min(settings.nprobe, index.nlist)
    if settings.gpu and device is not None and device.type == "cuda":
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, device.index or 0, index)
            index.nprobe = min(settings.nprobe, index.nlist)
            index.resources = resources  # keep them alive with the index
    return index


def index_key(settings: AnnSettings, name: str, keys: torch.Tensor) -> str:
    """What a stored index depends on: the memory (its cache fingerprint), its shape and
    dtype, and the build parameters of the index kind (never k, nprobe or ef_search)."""
    build = ({"hnsw_m": settings.hnsw_m, "ef_construction": settings.ef_construction}
             if settings.index == "hnsw" else
             {"nlist": settings.lists_for(keys.shape[0]), "train_rows": settings.train_rows,
              "seed": settings.seed})
    return fingerprint_of("ann-index", 1, name, list(keys.shape), str(keys.dtype),
                          settings.index, build)


def stored_index(keys: torch.Tensor, settings: AnnSettings, store: Path, name: str,
                 device: torch.device | None = None) -> tuple[Any, bool]:
    """The index of the memory ``name`` from ``store`` (``<key>.faiss``), built and written
    there first if absent: (index, built here). Read memory-mapped (faiss's
    IO_FLAG_MMAP_IFC): its rows and lists are page cache, so the processes of a launch
    share one copy in RAM, and every later run over the same memory skips the build. The
    entry's file lock makes one process build while the others wait, then read it."""
    from mcrx.store import integrity
    from mcrx.store.atomic import atomic_path
    from mcrx.store.cache import discard_entry
    from mcrx.store.locks import cache_entry_lock

    faiss = import_faiss("retrieval.mode 'ann'")
    path = Path(store) / f"{index_key(settings, name, keys)}.faiss"
    path.parent.mkdir(parents=True, exist_ok=True)
    built = False
    with cache_entry_lock(path):
        # checked like every cache entry (size, sampled digest; the record beside it): an
        # index rewritten or truncated since is built again, never searched
        record, problem = integrity.check_entry(path, refresh=True) if path.is_file() \
            else (None, None)
        if problem is not None:
            from rich.markup import escape

            from mcrx.ui.console import console

            console.print(f"  [yellow]cache entry {escape(str(path))}: {escape(problem)}[/]; "
                          "building it again", highlight=False)
            discard_entry(path)
        if not path.is_file():
            index = build_index(keys, settings)
            with atomic_path(path) as tmp:
                faiss.write_index(index, str(tmp))
            del index
            built = True
        if built or record is None:  # an index of an earlier mcrx gets its record now
            integrity.write_record(path, {path.name: integrity.describe(path)}, "ann",
                                   record=integrity.record_path(path))
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    return place_index(index, settings, device), built


@dataclass
class AnnRetriever:
    """Drop-in for :func:`mcrx.methods.retrieval.soft_retrieve` in ann mode: builds (and
    keeps) one index per memory tensor it is asked to search, then answers queries with the
    exact softmax over each query's k nearest rows. The pools of both papers receive it as
    ``retriever=`` (see :func:`mcrx.methods.common.retrieve_rows`).

    With a ``store`` (``mcrx extend``: ``$MCRX_CACHE_DIR/ann``) and the memories' cache
    fingerprints in ``names`` (keyed by tensor), indexes are built once, kept on disk and
    read memory-mapped (:func:`stored_index`); without, they are built in RAM."""

    settings: AnnSettings = field(default_factory=AnnSettings)
    device: torch.device | None = None
    #: memories indexed at once: each pool of Ex-MCR searches two, and consecutive pools
    #: share one, so two bound the index RAM; without a store a memory evicted and needed
    #: again is rebuilt (6 builds per leaf, measured), with one it is re-read (4 builds)
    keep: int = 2
    store: Path | None = None
    names: dict[tuple[int, tuple[int, ...]], str] = field(default_factory=dict)
    indexes: dict[tuple[int, tuple[int, ...]], Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    builds: int = 0

    def name(self, keys: torch.Tensor, fingerprint: str) -> None:
        """Tell the retriever which cached memory ``keys`` holds (its index is then stored)."""
        self.names[_identity(keys)] = fingerprint

    def index_for(self, keys: torch.Tensor):
        key = _identity(keys)
        if key not in self.indexes:
            while len(self.indexes) >= self.keep:
                self.indexes.pop(next(iter(self.indexes)))  # the oldest
            began = time.perf_counter()
            if self.store is not None and key in self.names:
                self.indexes[key], built = stored_index(keys, self.settings, self.store,
                                                        self.names[key], self.device)
            else:
                self.indexes[key], built = build_index(keys, self.settings, self.device), True
            if built:
                self.build_seconds += time.perf_counter() - began
                self.builds += 1
        else:  # most recently used last
            self.indexes[key] = self.indexes.pop(key)
        return self.indexes[key]

    def release(self) -> None:
        self.indexes.clear()

    @torch.no_grad()
    def __call__(self, queries: torch.Tensor, keys: torch.Tensor,
                 values: Sequence[torch.Tensor] | None = None, temperature: float = 0.01,
                 **_blocks: Any) -> list[torch.Tensor]:
        """Like ``soft_retrieve``: one (Q, d_j) L2-normalised tensor per value."""
        values = [keys] if values is None else list(values)
        if queries.shape[1] != keys.shape[1]:
            raise ValueError(f"queries are {queries.shape[1]}-d but keys are "
                             f"{keys.shape[1]}-d")
        index = self.index_for(keys)
        k = min(self.settings.k, keys.shape[0])
        queries = F.normalize(queries.float(), dim=-1)
        outputs: list[list[torch.Tensor]] = [[] for _ in values]
        for start in range(0, queries.shape[0], self.settings.query_block):
            q = queries[start : start + self.settings.query_block]  # (b, d)
            similarity, neighbours = index.search(np.ascontiguousarray(q.numpy()), k)  # (b, k)
            similarity, neighbours = torch.from_numpy(similarity), torch.from_numpy(neighbours)
            missing = neighbours < 0  # IVF: fewer than k rows in the visited lists
            logits = (similarity / temperature).masked_fill_(missing, float("-inf"))
            weights = torch.softmax(logits, dim=1)  # (b, k), exact softmax over the k
            neighbours = neighbours.masked_fill_(missing, 0)
            for out, value in zip(outputs, values, strict=True):
                out.append(_weighted_rows(weights, neighbours, value))
        return [torch.cat(out) if out else torch.zeros(0, value.shape[1])
                for out, value in zip(outputs, values, strict=True)]


def _identity(keys: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    return keys.data_ptr(), tuple(keys.shape)


def _weighted_rows(weights: torch.Tensor, neighbours: torch.Tensor, value: torch.Tensor,
                   block: int = 128) -> torch.Tensor:
    """normalize(Σ_k w_bk · value[n_bk]) per query b, gathering ``block`` queries' k rows at
    a time (128 × 256 × 512 float32 = 64 MiB, the size of one exact-retrieval tile); float16
    values are widened per block."""
    b, k = neighbours.shape
    out = torch.empty(b, value.shape[1])
    # two buffers reused by every block: fresh 64 MiB tensors per block fragment the heap
    # that mcrx.tuning keeps (measured: 2× the peak RSS of the pair stage)
    gathered = torch.empty(min(block, b) * k, value.shape[1], dtype=value.dtype)
    wide = gathered if value.dtype == torch.float32 else torch.empty(gathered.shape)
    for start in range(0, b, block):
        index = neighbours[start : start + block].reshape(-1)
        rows = torch.index_select(value, 0, index, out=gathered[: len(index)])
        if wide is not gathered:
            rows = wide[: len(index)].copy_(rows)
        picked = rows.view(-1, k, value.shape[1])  # (s, k, d_j)
        out[start : start + block] = torch.bmm(weights[start : start + block, None], picked)[:, 0]
    return F.normalize(out, dim=-1)


def ann_deviation(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
                  retriever: AnnRetriever, sample: int = 2048) -> dict[str, float]:
    """Cosine between exact and ann retrieved rows on the first ``sample`` queries."""
    from mcrx.methods.retrieval import soft_retrieve

    rows = queries[:sample].float()
    (exact,) = soft_retrieve(rows, keys, None, temperature)
    (approx,) = retriever(rows, keys, None, temperature)
    cosine = (exact * approx).sum(dim=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "k": retriever.settings.k, "index": retriever.settings.index,
            "sample": int(len(rows))}
