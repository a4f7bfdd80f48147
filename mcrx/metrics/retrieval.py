"""Cross-modal retrieval metrics: R@1/R@5/R@10 and mAP, with the exact chance level of each.

Ground truth is either row-aligned pairs (query i matches gallery item i) or class labels
(every gallery item of the query's class is relevant). Similarities are computed in query
blocks, so the (Q × G) matrix never exists whole. Conventions (one for every metric here,
in :mod:`mcrx.metrics.captions` and in :mod:`mcrx.metrics.zeroshot`):

- Ties: rows of equal similarity keep their order, the earlier row ranks first (a stable
  descending sort), the rule of ``torch.argmax`` / ``np.argmax`` ("the first maximal value"),
  i.e. of CLIP_benchmark's top-1 prediction (``logits.argmax``). ``torch.topk`` (CLIP_benchmark
  recall@k, ULIP top-k) and WavCaps's ``np.argsort(d)[::-1]`` leave ties to the sorting
  algorithm (the latter puts the later row first in galleries of ≤ 16 rows).
- Queries without a relevant gallery item (a class or id absent from the gallery):
  ``"skip"`` leaves them out of every figure (``n`` counts the rest); ``"miss"`` counts them
  as failures (R@k 0, AP 0), as CLIP_benchmark's ``recall_at_k`` does (0/0 = NaN, and
  ``NaN > 0`` is False). Either way their number is ``queries_without_match``.
- Chance levels are exact expectations under a uniformly random ranking of the gallery,
  given each query's number r of relevant rows among G (hypergeometric):
    chance R@k = 1 − C(G−r, k) / C(G, k);
    chance AP  = H_G/G + (r−1)(G−H_G) / (G(G−1)),  H_n = Σ_{i≤n} 1/i
  (Bestgen, "Exact expected average precision of the random baseline for system
  evaluation", Prague Bull. Math. Linguistics 103, 2015); for AP truncated at depth D
  (mAP@10, normalised by r) the same sums stop at D: H_D/G + (r−1)(D−H_D) / (G(G−1)).
  A query counted as a miss has chance 0.
"""

from __future__ import annotations

import math
from itertools import permutations
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.metrics.vocabulary import shared_codes

KS = (1, 5, 10)
UnmatchedQueries = Literal["skip", "miss"]


# ---------------------------------------------------------------------------------------
# Chance levels: exact expectations under a random ranking
# ---------------------------------------------------------------------------------------
def _harmonic(n: int) -> float:
    return float(np.sum(1.0 / np.arange(1, n + 1))) if n > 0 else 0.0


def chance_recall(gallery: int, relevant: np.ndarray, k: int) -> float:
    """Mean over queries of 1 − C(G−r, k)/C(G, k): at least one of r relevant rows among k
    drawn without replacement from G."""
    k = min(k, gallery)
    total = 0.0
    for r, count in zip(*np.unique(np.asarray(relevant), return_counts=True), strict=True):
        r = int(r)
        if r <= 0:
            continue  # a query counted as a miss
        if gallery - r < k:
            miss = 0.0
        else:  # C(G−r,k)/C(G,k) = Π_{i<k} (G−r−i)/(G−i), computed in logs
            miss = math.exp(sum(math.log((gallery - r - i) / (gallery - i)) for i in range(k)))
        total += (1.0 - miss) * int(count)
    return total / max(len(relevant), 1)


def chance_ap(gallery: int, relevant: np.ndarray, depth: int | None = None) -> float:
    """Mean over queries of E[AP] (or E[AP@depth], normalised by r):
    H_D/G + (r−1)(D − H_D)/(G(G−1)) with D = min(depth, G) (D = G: the full ranking).

    AP = (1/r) Σ_j Σ_l [rank_l ≤ rank_j ≤ D] / rank_j over relevant j, l; each rank is
    uniform on 1..G, so the r diagonal terms give H_D/G and the r(r−1) pairs, with
    P(rank_l < p | rank_j = p) = (p−1)/(G−1), give (D − H_D)/(G(G−1))."""
    d = gallery if depth is None else min(depth, gallery)
    h = _harmonic(d)
    total = 0.0
    for r, count in zip(*np.unique(np.asarray(relevant), return_counts=True), strict=True):
        r = int(r)
        if r <= 0:
            continue
        pairs = (r - 1) * (d - h) / (gallery * (gallery - 1)) if gallery > 1 else 0.0
        total += (h / gallery + pairs) * int(count)
    return total / max(len(relevant), 1)


def chance_mean_rank(gallery: int, relevant: np.ndarray) -> float:
    """Mean over queries of E[best rank] = (G+1)/(r+1) (the least of r ranks drawn without
    replacement from 1..G); a miss counts as G+1."""
    r = np.asarray(relevant, dtype=np.float64)
    return float(np.mean(np.where(r > 0, (gallery + 1) / (r + 1), gallery + 1)))


# ---------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------
def _as_rows(x, device: torch.device | None = None) -> torch.Tensor:
    """A tensor where ``x`` is (numpy and lists: the CPU), or on ``device`` when given."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x), device="cpu")
    return x if device is None else x.to(device)


def rank_order(sims: torch.Tensor) -> torch.Tensor:
    """(b, G) gallery indices best first; ties: the earlier row first (stable sort)."""
    return torch.argsort(sims, dim=1, descending=True, stable=True)


@torch.no_grad()
def retrieval_metrics(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    ground_truth: str = "pairs",
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    ks: tuple[int, ...] = KS,
    block: int = 1024,
    unmatched_queries: UnmatchedQueries = "skip",
) -> dict[str, float]:
    """Metrics of ranking ``gallery`` by cosine similarity to each query. Labels may be raw
    (strings, integers: coded together, :mod:`mcrx.metrics.vocabulary`) or codes. Runs where
    the queries are (the gallery and the labels follow them); figures are Python floats."""
    queries = F.normalize(_as_rows(queries).float(), dim=-1)
    device = queries.device
    gallery = F.normalize(_as_rows(gallery, device).float(), dim=-1)
    n_query, n_gallery = len(queries), len(gallery)
    if ground_truth == "pairs":
        if n_query != n_gallery:
            raise ValueError(f"pairs need row-aligned sets; got {n_query} and {n_gallery} rows")
    elif query_labels is None or gallery_labels is None:
        raise ValueError("label ground truth needs labels for queries and gallery")
    else:
        q_codes, g_codes = shared_codes(query_labels, gallery_labels)
        query_labels = torch.as_tensor(q_codes, device=device)
        gallery_labels = torch.as_tensor(g_codes, device=device)

    hits = {k: [] for k in ks}
    average_precisions, relevant_counts = [], []
    ranks = torch.arange(1, n_gallery + 1, dtype=torch.float32, device=device)
    for start in range(0, n_query, block):
        sims = queries[start : start + block] @ gallery.T  # (b, G)
        if ground_truth == "pairs":
            relevant = torch.zeros_like(sims, dtype=torch.bool)
            rows = torch.arange(sims.shape[0], device=device)
            relevant[rows, rows + start] = True
        else:
            relevant = query_labels[start : start + block, None] == gallery_labels[None, :]
        ranked = relevant.gather(1, rank_order(sims))  # (b, G): relevance in rank order
        count = ranked.sum(1)
        if unmatched_queries == "skip":
            ranked, count = ranked[count > 0], count[count > 0]
        for k in ks:
            hits[k].append(ranked[:, :k].any(1))
        precision_at_hits = (ranked.cumsum(1).float() / ranks) * ranked
        average_precisions.append(precision_at_hits.sum(1) / count.clamp(min=1))
        relevant_counts.append(count)

    counts = torch.cat(relevant_counts).cpu().numpy()
    n = int(len(counts))
    metrics = {f"R@{k}": float(torch.cat(hits[k]).float().mean()) if n else 0.0 for k in ks}
    metrics["mAP"] = float(torch.cat(average_precisions).mean()) if n else 0.0
    for k in ks:
        metrics[f"chance_R@{k}"] = chance_recall(n_gallery, counts, k)
    metrics["chance_mAP"] = chance_ap(n_gallery, counts)
    metrics["n"] = n
    metrics["gallery"] = int(n_gallery)
    without = n_query - n if unmatched_queries == "skip" else int((counts == 0).sum())
    metrics["queries_without_match"] = int(without)
    metrics["unmatched_queries"] = unmatched_queries
    return metrics


def cross_modal_retrieval(
    embeddings: dict[str, torch.Tensor],
    ground_truth: str,
    labels: dict[str, np.ndarray | None] | None = None,
    unmatched_queries: UnmatchedQueries = "skip",
) -> dict[str, dict[str, float]]:
    """Every ordered pair of modalities: ``{"audio->image": metrics, ...}``."""
    labels = labels or {}
    results = {}
    for query, target in permutations(sorted(embeddings), 2):
        results[f"{query}->{target}"] = retrieval_metrics(
            embeddings[query], embeddings[target], ground_truth,
            labels.get(query), labels.get(target), unmatched_queries=unmatched_queries,
        )
    return results
