"""Multi-caption retrieval (AudioCaps, Clotho, COCO: several captions per item), with the
ground truth given as item ids: a row is relevant to a query when both carry the same id.

Text→audio then ranks the one paired audio of each caption; audio→text takes the best rank
among the audio's captions. The figures are those of WavCaps's retrieval code
(XinhaoMei/WavCaps ``retrieval/tools/utils.py`` at 59694bd, ``t2a``/``a2t``), generalised
from its fixed 5 captions per item to any number:

- one row per item: WavCaps's layout repeats each audio row once per caption and keeps the
  first copy (``audio_embs[5 * index]``); here rows of one modality that share an id and are
  the same row (equal embeddings) are one item, the first row kept (``copies`` counts the
  rows merged). Rows that share an id but differ (several captions) stay distinct;
- R@k: the share of queries whose best relevant rank is ≤ k;
- median and mean rank of the best relevant rank, 1-based (``floor(median(r0)) + 1`` and
  ``mean(r0) + 1`` over 0-based ranks r0, as WavCaps writes them);
- mAP@10 = mean over queries of Σ_{relevant j in the top 10} (hits up to j / rank of j),
  divided by the query's number r of relevant rows (WavCaps divides by its 5 captions; with
  one relevant row it is 1/rank inside the top 10, else 0).

Ties, queries without a relevant row and the exact chance levels follow
:mod:`mcrx.metrics.retrieval` (a miss has rank G+1).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.metrics.retrieval import (
    UnmatchedQueries,
    chance_ap,
    chance_mean_rank,
    chance_recall,
    rank_order,
)
from mcrx.metrics.vocabulary import shared_codes

KS = (1, 5, 10)
AP_DEPTH = 10  # mAP@10


def first_copies(rows: torch.Tensor, ids: Sequence | np.ndarray) -> np.ndarray:
    """Indices of the rows to keep: every row except those equal to the first row of the
    same id (repeated copies of one item), in their original order."""
    codes = torch.as_tensor(shared_codes(ids, ids)[0])
    first = torch.full((int(codes.max()) + 1 if len(codes) else 0,), len(codes),
                       dtype=torch.long)
    first = first.scatter_reduce(0, codes, torch.arange(len(codes)), reduce="amin")
    leader = first[codes]  # the first row of each row's id
    rows = torch.as_tensor(rows)
    same = (rows == rows[leader].to(rows.device)).all(1).cpu()
    keep = (leader == torch.arange(len(codes))) | ~same
    return torch.nonzero(keep).flatten().numpy()


@torch.no_grad()
def item_retrieval_metrics(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_ids: Sequence,
    gallery_ids: Sequence,
    ks: tuple[int, ...] = KS,
    block: int = 1024,
    unmatched_queries: UnmatchedQueries = "skip",
) -> dict:
    """R@k, median/mean rank and mAP@10 of ranking ``gallery`` by cosine to each query.
    Ids may be raw (strings, integers) or codes; rows are taken as given (no merging)."""
    queries = F.normalize(torch.as_tensor(queries).float(), dim=-1)
    gallery = F.normalize(torch.as_tensor(gallery).float(), dim=-1).to(queries.device)
    if len(query_ids) != len(queries) or len(gallery_ids) != len(gallery):
        raise McrxError(f"item ids: {len(query_ids)} for {len(queries)} queries and "
                        f"{len(gallery_ids)} for {len(gallery)} gallery rows; one id per row")
    q_codes, g_codes = (torch.as_tensor(c, device=queries.device)
                        for c in shared_codes(query_ids, gallery_ids))
    n_gallery = len(gallery)
    depth = min(AP_DEPTH, n_gallery)
    positions = torch.arange(1, depth + 1, dtype=torch.float32, device=queries.device)
    best_ranks, ap10, counts = [], [], []
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ gallery.T  # (b, G)
        relevant = q_codes[start : start + block, None] == g_codes[None, :]  # (b, G)
        ranked = relevant.gather(1, rank_order(sims))  # (b, G): relevance in rank order
        count = ranked.sum(1)
        if unmatched_queries == "skip":
            ranked, count = ranked[count > 0], count[count > 0]
        # 0-based rank of the first relevant row; a miss ranks past the gallery (G)
        first = torch.where(count > 0, ranked.float().argmax(1), n_gallery)
        best_ranks.append(first)
        top = ranked[:, :depth].float()  # (b, 10)
        precision = top.cumsum(1) / positions * top  # hits so far / rank, at relevant ranks
        ap10.append(precision.sum(1) / count.clamp(min=1))
        counts.append(count)
    ranks = torch.cat(best_ranks).cpu().numpy().astype(np.float64)
    if len(ranks) == 0:
        raise McrxError("item ids: no query shares an id with any gallery row")
    relevant_counts = torch.cat(counts).cpu().numpy()
    metrics: dict = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    metrics["mAP@10"] = float(torch.cat(ap10).mean())
    metrics["median_rank"] = float(np.floor(np.median(ranks)) + 1)
    metrics["mean_rank"] = float(ranks.mean() + 1)
    for k in ks:
        metrics[f"chance_R@{k}"] = chance_recall(n_gallery, relevant_counts, k)
    metrics["chance_mAP@10"] = chance_ap(n_gallery, relevant_counts, AP_DEPTH)
    metrics["chance_mean_rank"] = chance_mean_rank(n_gallery, relevant_counts)
    metrics["n"] = int(len(ranks))
    metrics["gallery"] = int(n_gallery)
    metrics["queries_without_match"] = int(
        len(queries) - len(ranks) if unmatched_queries == "skip" else (relevant_counts == 0).sum())
    metrics["unmatched_queries"] = unmatched_queries
    return metrics


def cross_modal_items(
    embeddings: dict[str, torch.Tensor],
    ids: dict[str, Sequence | None],
    unmatched_queries: UnmatchedQueries = "skip",
) -> dict[str, dict]:
    """Every ordered pair of modalities with item-id ground truth; a modality without ids
    is one item per row (ids 0..N-1). Repeated copies of a row are merged first
    (:func:`first_copies`), in each modality, as query and as gallery alike."""
    rows, full, copies = {}, {}, {}
    for m, e in embeddings.items():
        given = ids.get(m)
        given = np.arange(len(e)) if given is None else np.asarray(given)
        keep = first_copies(e, given) if len(e) else np.arange(0)
        rows[m], full[m], copies[m] = torch.as_tensor(e)[keep], given[keep], len(e) - len(keep)
    results = {}
    for query, target in permutations(sorted(embeddings), 2):
        metrics = item_retrieval_metrics(rows[query], rows[target], full[query], full[target],
                                         unmatched_queries=unmatched_queries)
        metrics["copies"] = {"query": copies[query], "gallery": copies[target]}
        results[f"{query}->{target}"] = metrics
    return results
