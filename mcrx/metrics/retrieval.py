"""Cross-modal retrieval metrics: R@1/R@5/R@10 and mAP, with the chance level beside each.

Ground truth is either row-aligned pairs (query i matches gallery item i) or class labels
(every gallery item of the query's class is relevant). Similarities are computed in query
blocks, so the (Q × G) matrix never exists whole.
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10)


def _chance_recall(gallery: int, relevant: np.ndarray, k: int) -> float:
    """Expected R@k of a uniformly random ranking: 1 − C(G−r, k) / C(G, k), averaged."""
    k = min(k, gallery)
    values = []
    for r in np.unique(relevant):
        if gallery - r < k:
            miss = 0.0
        else:  # C(G−r,k)/C(G,k) = Π_{i<k} (G−r−i)/(G−i), computed in logs
            miss = math.exp(sum(math.log((gallery - r - i) / (gallery - i)) for i in range(k)))
        values.append((1.0 - miss) * np.sum(relevant == r))
    return float(np.sum(values) / len(relevant))


def _chance_ap(gallery: int, relevant: np.ndarray) -> float:
    """Expected AP of a random ranking: exactly H_G/G for one relevant item; r/G (its
    large-gallery limit) otherwise."""
    harmonic = float(np.sum(1.0 / np.arange(1, gallery + 1)))
    return float(np.mean(np.where(relevant == 1, harmonic / gallery, relevant / gallery)))


def _as_rows(x, device: torch.device | None = None) -> torch.Tensor:
    """A tensor where ``x`` is (numpy and lists: the CPU), or on ``device`` when given."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x), device="cpu")
    return x if device is None else x.to(device)


@torch.no_grad()
def retrieval_metrics(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    ground_truth: str = "pairs",
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    ks: tuple[int, ...] = KS,
    block: int = 1024,
) -> dict[str, float]:
    """Metrics of ranking ``gallery`` by cosine similarity to each query. Runs where the
    queries are (the gallery and the labels follow them); the figures are Python floats."""
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
        query_labels = torch.as_tensor(np.asarray(query_labels), device=device)
        gallery_labels = torch.as_tensor(np.asarray(gallery_labels), device=device)

    hits = {k: [] for k in ks}
    average_precisions, relevant_counts = [], []
    for start in range(0, n_query, block):
        sims = queries[start : start + block] @ gallery.T  # (b, G)
        order = torch.argsort(sims, dim=1, descending=True, stable=True)
        if ground_truth == "pairs":
            relevant = torch.zeros_like(sims, dtype=torch.bool)
            rows = torch.arange(sims.shape[0], device=device)
            relevant[rows, rows + start] = True
        else:
            relevant = query_labels[start : start + block, None] == gallery_labels[None, :]
        ranked = relevant.gather(1, order)  # (b, G): relevance in rank order
        count = ranked.sum(1)
        keep = count > 0  # a query with nothing relevant has no defined recall or AP
        ranked, count = ranked[keep], count[keep]
        for k in ks:
            hits[k].append(ranked[:, :k].any(1))
        cumulative = ranked.cumsum(1).float()
        ranks = torch.arange(1, n_gallery + 1, dtype=torch.float32, device=device)
        precision_at_hits = (cumulative / ranks) * ranked
        average_precisions.append(precision_at_hits.sum(1) / count)
        relevant_counts.append(count)

    counts = torch.cat(relevant_counts).cpu().numpy()
    metrics = {f"R@{k}": float(torch.cat(hits[k]).float().mean()) for k in ks}
    metrics["mAP"] = float(torch.cat(average_precisions).mean())
    for k in ks:
        metrics[f"chance_R@{k}"] = _chance_recall(n_gallery, counts, k)
    metrics["chance_mAP"] = _chance_ap(n_gallery, counts)
    metrics["n"] = int(len(counts))
    metrics["gallery"] = int(n_gallery)
    return metrics


def cross_modal_retrieval(
    embeddings: dict[str, torch.Tensor],
    ground_truth: str,
    labels: dict[str, np.ndarray | None] | None = None,
) -> dict[str, dict[str, float]]:
    """Every ordered pair of modalities: ``{"audio->image": metrics, ...}``."""
    labels = labels or {}
    results = {}
    for query, target in permutations(sorted(embeddings), 2):
        results[f"{query}->{target}"] = retrieval_metrics(
            embeddings[query], embeddings[target], ground_truth,
            labels.get(query), labels.get(target),
        )
    return results
