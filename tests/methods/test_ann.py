"""ann retrieval: a faiss index finds each query's k nearest rows, the softmax over them is
exact; on clustered rows it matches exact retrieval, and it runs inside the papers' pools."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcrx.methods.ann import AnnRetriever, AnnSettings, ann_deviation, build_index
from mcrx.methods.common import LeafMemories, retrieve_rows
from mcrx.methods.exmcr import METHOD
from mcrx.methods.retrieval import soft_retrieve, top_k_retrieve

pytest.importorskip("faiss")


def clustered(n: int, dim: int, seed: int, centres: torch.Tensor | None = None):
    """Rows around cluster centres (like a real collection's embeddings)."""
    generator = torch.Generator().manual_seed(seed)
    if centres is None:
        centres = F.normalize(torch.randn(max(1, n // 32), dim, generator=generator), dim=-1)
    picked = torch.randint(0, len(centres), (n,), generator=generator)
    noise = torch.randn(n, dim, generator=generator) / dim**0.5
    return F.normalize(centres[picked] + noise, dim=-1), centres


@pytest.mark.parametrize("index", ["ivf-flat", "hnsw"])
def test_ann_matches_exact_on_clustered_rows(index):
    keys, centres = clustered(6000, 32, seed=0)
    queries, _ = clustered(300, 32, seed=1, centres=centres)
    retriever = AnnRetriever(AnnSettings(index=index, k=64, nprobe=16))
    (approx,) = retriever(queries, keys, None, 0.01)
    (exact,) = soft_retrieve(queries, keys, None, 0.01)
    cosine = (approx * exact).sum(dim=1)
    assert approx.shape == (300, 32)
    torch.testing.assert_close(approx.norm(dim=1), torch.ones(300))
    # a query whose cluster straddles lists it does not probe loses some of its neighbours:
    # the mean is the guarantee, the minimum only a sanity bound
    assert cosine.mean() > 0.99 and cosine.min() > 0.5, (cosine.mean(), cosine.min())


def test_with_every_list_searched_ann_is_top_k():
    """nprobe = nlist visits every row: the k found are the true k nearest, so ann gives
    top-k retrieval's result (the softmax over the same k rows), for every value."""
    keys, centres = clustered(2000, 16, seed=2)
    values = [keys, torch.randn(2000, 8)]
    queries, _ = clustered(100, 16, seed=3, centres=centres)
    retriever = AnnRetriever(AnnSettings(index="ivf-flat", k=32, nlist=8, nprobe=8))
    approx = retriever(queries, keys, values, 0.01)
    expected = top_k_retrieve(queries, keys, values, 0.01, 32)
    for a, b in zip(approx, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("index", "stored"), [("ivf-flat", "IndexIVFScalarQuantizer"),
                                               ("hnsw", "IndexHNSWSQ")])
def test_float16_memory_is_indexed_in_float16_and_searched_exactly(index, stored):
    """A float16 memory is indexed with faiss's fp16 storage (half a float32 copy's bytes,
    the same numbers): with every row reachable the result is top-k's on the float16 rows."""
    keys, centres = clustered(3000, 16, seed=4)
    half = keys.half()
    queries, _ = clustered(50, 16, seed=5, centres=centres)
    settings = AnnSettings(index=index, k=32, nlist=4, nprobe=4, ef_search=256)
    retriever = AnnRetriever(settings)
    (approx,) = retriever(queries, half, None, 0.01)
    (exact,) = top_k_retrieve(queries, half.float(), [half.float()], 0.01, 32)
    torch.testing.assert_close(approx, exact, atol=1e-4, rtol=1e-3)
    assert half.dtype == torch.float16  # the memory itself is untouched
    assert type(retriever.index_for(half)).__name__ == stored
    assert type(build_index(keys, settings)).__name__ != stored  # float32 rows stay float32


def test_fewer_rows_than_k_and_unfilled_lists():
    keys, _ = clustered(40, 8, seed=6)
    retriever = AnnRetriever(AnnSettings(index="ivf-flat", k=256, nlist=1, nprobe=1))
    (approx,) = retriever(keys[:5], keys, None, 0.01)
    (exact,) = soft_retrieve(keys[:5], keys, None, 0.01)
    torch.testing.assert_close(approx, exact, atol=2e-5, rtol=1e-4)
    # IVF with one list of many: a query may see fewer than k rows; missing ones weigh 0
    index = build_index(keys, AnnSettings(index="ivf-flat", k=8, nlist=2, nprobe=1))
    assert index.nprobe == 1


def test_ann_runs_inside_the_ex_mcr_pools_and_reports_its_deviation():
    # one world of concepts seen by both spaces: the parent's rows are a fixed map of the
    # leaf's (as two real spaces embedding the same concepts)
    leaf_x, centres = clustered(1500, 16, seed=7)
    bridge, _ = clustered(1200, 16, seed=8, centres=centres)
    projection = torch.randn(16, 24, generator=torch.Generator().manual_seed(10))
    parent_y, _ = clustered(1300, 24, seed=9, centres=F.normalize(centres @ projection, dim=-1))
    memories = LeafMemories(leaf_x, bridge, F.normalize(bridge @ projection, dim=-1), parent_y)
    retriever = AnnRetriever(AnnSettings(k=64, nprobe=8))
    ann = METHOD.build(memories, 0.01, retriever=retriever)
    exact = METHOD.build(memories, 0.01)
    for role in exact:
        assert ann[role].shape == exact[role].shape
        cosine = (ann[role] * exact[role]).sum(dim=1)
        assert cosine.mean() > 0.98, (role, cosine.mean())
    assert len(retriever.indexes) <= retriever.keep  # the index RAM stays bounded
    deviation = ann_deviation(bridge, leaf_x, 0.01, retriever, sample=200)
    assert deviation["sample"] == 200 and 0.98 < deviation["mean_cosine"] <= 1.0 + 1e-5
    # without a retriever the pools' calls are exact retrieval itself
    (plain,) = retrieve_rows(bridge[:10], leaf_x, None, 0.01)
    torch.testing.assert_close(plain, soft_retrieve(bridge[:10], leaf_x, None, 0.01)[0])


@pytest.mark.parametrize("index", ["hnsw", "ivf-flat"])
def test_stored_indexes_are_built_once_and_read_memory_mapped(tmp_path, index):
    """With a store, an index is built once per memory and build parameters, written to the
    cache, and read back memory-mapped (page cache: shared by the processes of a launch);
    a later retriever, or other search-time parameters, reuse the file."""
    from pathlib import Path

    keys, centres = clustered(3000, 16, seed=11)
    keys = keys.half()
    queries, _ = clustered(60, 16, seed=12, centres=centres)
    settings = AnnSettings(index=index, k=32, nlist=8, nprobe=8, ef_search=128)
    in_ram = AnnRetriever(settings)(queries, keys, None, 0.01)[0]

    first = AnnRetriever(settings, store=tmp_path)
    first.name(keys, "memory-fingerprint")
    (stored,) = first(queries, keys, None, 0.01)
    # the same index, built in RAM or read back (HNSW's threaded inserts may order a graph
    # differently from build to build: the rows found agree, not always bit for bit)
    assert (stored * in_ram).sum(dim=1).min() > 0.999
    files = sorted(tmp_path.glob("*.faiss"))
    assert first.builds == 1 and len(files) == 1
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(files[0]) in maps.read_text()  # mapped, not copied into the heap

    other_search = AnnSettings(index=index, k=16, nlist=8, nprobe=4, ef_search=64)
    second = AnnRetriever(other_search, store=tmp_path)
    second.name(keys, "memory-fingerprint")
    second(queries, keys, None, 0.01)
    assert second.builds == 0 and sorted(tmp_path.glob("*.faiss")) == files

    rebuilt = AnnSettings(index=index, k=32, nlist=4, nprobe=4, hnsw_m=8)  # build parameters
    third = AnnRetriever(rebuilt, store=tmp_path)
    third.name(keys, "memory-fingerprint")
    third(queries, keys, None, 0.01)
    assert third.builds == 1 and len(list(tmp_path.glob("*.faiss"))) == 2
    assert not list(tmp_path.glob(".*tmp*"))  # written whole, then renamed
