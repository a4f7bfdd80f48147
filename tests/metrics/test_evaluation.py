"""Retrieval metrics against a brute-force reference written with plain Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcrx.metrics.retrieval import cross_modal_retrieval, retrieval_metrics


def brute_force(queries, gallery, relevant):
    """relevant[i][j]: gallery j is relevant to query i. Returns R@k and mAP."""
    sims = (queries @ gallery.T).tolist()
    recall = {1: [], 5: [], 10: []}
    aps = []
    for i, row in enumerate(sims):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        rel = [relevant[i][j] for j in order]
        if not any(rel):
            continue
        for k in recall:
            recall[k].append(float(any(rel[:k])))
        hits, precisions = 0, []
        for rank, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / hits)
    return {f"R@{k}": sum(v) / len(v) for k, v in recall.items()}, sum(aps) / len(aps)


def data(n=60, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    queries = F.normalize(gallery + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    return queries, gallery


def test_pairs_match_brute_force():
    queries, gallery = data()
    metrics = retrieval_metrics(queries, gallery, "pairs", block=7)
    relevant = [[i == j for j in range(60)] for i in range(60)]
    recalls, mean_ap = brute_force(queries, gallery, relevant)
    for key, value in recalls.items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["mAP"] == pytest.approx(mean_ap)
    assert metrics["chance_R@1"] == pytest.approx(1 / 60)
    assert metrics["chance_R@5"] == pytest.approx(5 / 60)
    harmonic = sum(1 / r for r in range(1, 61))
    assert metrics["chance_mAP"] == pytest.approx(harmonic / 60)


def test_labels_match_brute_force():
    queries, gallery = data(seed=1)
    rng = np.random.default_rng(0)
    query_labels, gallery_labels = rng.integers(0, 6, 60), rng.integers(0, 6, 60)
    metrics = retrieval_metrics(queries, gallery, "labels", query_labels, gallery_labels, block=9)
    relevant = [[query_labels[i] == gallery_labels[j] for j in range(60)] for i in range(60)]
    recalls, mean_ap = brute_force(queries, gallery, relevant)
    for key, value in recalls.items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["mAP"] == pytest.approx(mean_ap)
    # chance R@1 is the mean fraction of relevant gallery items
    counts = np.array([sum(row) for row in relevant if any(row)])
    assert metrics["chance_R@1"] == pytest.approx(np.mean(counts / 60))
    expected_r5 = np.mean([1 - math.comb(60 - c, 5) / math.comb(60, 5) for c in counts])
    assert metrics["chance_R@5"] == pytest.approx(expected_r5)


def test_perfect_embeddings_score_one():
    _, gallery = data()
    metrics = retrieval_metrics(gallery, gallery, "pairs")
    assert metrics["R@1"] == metrics["mAP"] == 1.0


def test_cross_modal_retrieval_covers_both_directions():
    queries, gallery = data()
    results = cross_modal_retrieval({"audio": queries, "image": gallery}, "pairs")
    assert set(results) == {"audio->image", "image->audio"}
    assert results["audio->image"]["n"] == 60


def test_pairs_need_row_aligned_sets():
    queries, gallery = data()
    with pytest.raises(ValueError, match="row-aligned"):
        retrieval_metrics(queries[:10], gallery, "pairs")
