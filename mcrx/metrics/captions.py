"""Multi-caption retrieval (AudioCaps, Clotho, COCO: several captions per item), with the
ground truth given as item ids: a row is relevant to a query when both carry the same id.

Text→audio then ranks the one paired audio of each caption; audio→text takes the best rank
among the audio's captions. The figures are those of WavCaps's retrieval code
(``retrieval/tools/utils.py``, ``t2a``/``a2t``), generalised from its fixed 5 captions per
item to any number:

- R@k: the share of queries whose best relevant rank is ≤ k;
- median and mean rank of the best relevant rank, 1-based (``floor(median(r0)) + 1`` and
  ``mean(r0) + 1`` over 0-based ranks r0, as WavCaps writes them);
- mAP@10 = mean over queries of Σ_{relevant j in the top 10} (hits up to j / rank of j),
  divided by the query's number of relevant rows (WavCaps divides by its 5 captions; with one
  relevant row it is 1/rank inside the top 10, else 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.metrics.retrieval import _chance_recall

KS = (1, 5, 10)
AP_DEPTH = 10  # mAP@10


def _as_codes(query_ids: Sequence, gallery_ids: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes for any ids (strings, ints), shared by both sides."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if query_ids.dtype.kind != gallery_ids.dtype.kind:  # "3" and 3 name the same item
        query_ids, gallery_ids = query_ids.astype(str), gallery_ids.astype(str)
    _, codes = np.unique(np.concatenate([query_ids, gallery_ids]), return_inverse=True)
    codes = torch.from_numpy(codes.reshape(-1).astype(np.int64))
    return codes[: len(query_ids)], codes[len(query_ids):]


@torch.no_grad()
def item_retrieval_metrics(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_ids: Sequence,
    gallery_ids: Sequence,
    ks: tuple[int, ...] = KS,
    block: int = 1024,
) -> dict[str, float]:
    """R@k, median/mean rank and mAP@10 of ranking ``gallery`` by cosine to each query."""
    queries = F.normalize(torch.as_tensor(queries).float(), dim=-1)
    gallery = F.normalize(torch.as_tensor(gallery).float(), dim=-1).to(queries.device)
    if len(query_ids) != len(queries) or len(gallery_ids) != len(gallery):
        raise McrxError(f"item ids: {len(query_ids)} for {len(queries)} queries and "
                        f"{len(gallery_ids)} for {len(gallery)} gallery rows; one id per row")
    q_codes, g_codes = (c.to(queries.device) for c in _as_codes(query_ids, gallery_ids))
    n_gallery = len(gallery)
    depth = min(AP_DEPTH, n_gallery)
    positions = torch.arange(1, depth + 1, dtype=torch.float32, device=queries.device)
    best_ranks, ap10, counts = [], [], []
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ gallery.T  # (b, G)
        order = torch.argsort(sims, dim=1, descending=True, stable=True)
        relevant = q_codes[start : start + block, None] == g_codes[None, :]  # (b, G)
        ranked = relevant.gather(1, order)  # (b, G): relevance in rank order
        count = ranked.sum(1)
        keep = count > 0  # a query whose id is not in the gallery has no rank
        ranked, count = ranked[keep], count[keep]
        best_ranks.append(ranked.float().argmax(1))  # 0-based rank of the first relevant row
        top = ranked[:, :depth].float()  # (b, 10)
        precision = top.cumsum(1) / positions * top  # hits so far / rank, at relevant ranks
        ap10.append(precision.sum(1) / count)
        counts.append(count)
    ranks = torch.cat(best_ranks).cpu().numpy().astype(np.float64)
    if len(ranks) == 0:
        raise McrxError("item ids: no query shares an id with any gallery row")
    relevant_counts = torch.cat(counts).cpu().numpy()
    metrics = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    metrics["mAP@10"] = float(torch.cat(ap10).mean())
    metrics["median_rank"] = float(np.floor(np.median(ranks)) + 1)
    metrics["mean_rank"] = float(ranks.mean() + 1)
    for k in ks:
        metrics[f"chance_R@{k}"] = _chance_recall(n_gallery, relevant_counts, k)
    metrics["n"] = int(len(ranks))
    metrics["gallery"] = int(n_gallery)
    metrics["unmatched"] = int(len(queries) - len(ranks))
    return metrics


def cross_modal_items(
    embeddings: dict[str, torch.Tensor],
    ids: dict[str, Sequence | None],
) -> dict[str, dict[str, float]]:
    """Every ordered pair of modalities with item-id ground truth; a modality without ids
    is one item per row (ids 0..N-1)."""
    full = {m: ids.get(m) if ids.get(m) is not None else np.arange(len(e))
            for m, e in embeddings.items()}
    return {
        f"{query}->{target}": item_retrieval_metrics(
            embeddings[query], embeddings[target], full[query], full[target])
        for query, target in permutations(sorted(embeddings), 2)
    }
