"""Memory retrieval with a softmax over the WHOLE memory (C-MCR §3.2 and Ex-MCR §3.2,
"semantic consistency"):

    retrieve(q, M) = Σ_k softmax_k(q·m_k / τ1) · m_k            τ1 = 0.01

computed block by block with a running max and running sum (the log-sum-exp trick), so the
result is exact while peak memory is one (query block × memory block) tile, whatever the
memory size. The same pass can average other row-aligned values with the same weights, as
Ex-MCR does when it carries text weights from one space to the other:

    w = softmax(a·T^A / τ1);   t̃^A = w·T^A,  t̃^I = w·T^I
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_QUERY_BLOCK = 2048
DEFAULT_MEMORY_BLOCK = 8192


def _normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


@torch.no_grad()
def soft_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: Sequence[torch.Tensor] | None = None,
    temperature: float = 0.01,
    query_block: int = DEFAULT_QUERY_BLOCK,
    memory_block: int = DEFAULT_MEMORY_BLOCK,
    top_k: int | None = None,
) -> list[torch.Tensor]:
    """For each query row, the softmax(q·k/τ)-weighted average of each ``values`` tensor.

    queries (Q, d), keys (M, d), values: tensors of shape (M, d_j) row-aligned with keys
    (default: ``[keys]``). Returns one (Q, d_j) tensor per value, each row L2-normalised:
    every embedding in the papers' notation is a normalised row, and retrieved rows are
    used again as queries (Ex-MCR) or as training targets.
    """
    if values is None:
        values = [keys]
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-d but keys are {keys.shape[1]}-d")
    for value in values:
        if value.shape[0] != keys.shape[0]:
            raise ValueError(f"values have {value.shape[0]} rows but keys have {keys.shape[0]}")
    if top_k is not None:
        return top_k_retrieve(queries, keys, values, temperature, top_k, query_block,
                              memory_block)
    values = [v if v.dtype == torch.float32 else v.float() for v in values]  # no copies
    keys = keys if keys.dtype == torch.float32 else keys.float()
    # scale the (b, d) queries by 1/τ once instead of every (b, m) tile
    queries = _normalize_rows(queries) * (1.0 / temperature)
    outputs: list[list[torch.Tensor]] = [[] for _ in values]
    for q_start in range(0, queries.shape[0], query_block):
        q = queries[q_start : q_start + query_block]  # (b, d)
        running_max = torch.full((q.shape[0], 1), float("-inf"))  # (b, 1)
        running_sum = torch.zeros(q.shape[0], 1)  # (b, 1)
        accumulated = [torch.zeros(q.shape[0], v.shape[1]) for v in values]  # (b, d_j)
        for m_start in range(0, keys.shape[0], memory_block):
            k = keys[m_start : m_start + memory_block]  # (m, d)
            logits = torch.mm(q, k.T)  # (b, m) = q·k/τ
            new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
            rescale = torch.exp(running_max - new_max)  # 0 on the first block
            weights = logits.sub_(new_max).exp_()  # (b, m), in place: one tile alive
            running_sum.mul_(rescale).add_(weights.sum(dim=1, keepdim=True))
            for acc, value in zip(accumulated, values, strict=True):
                acc.mul_(rescale).addmm_(weights, value[m_start : m_start + memory_block])
            running_max = new_max
        for out, acc in zip(outputs, accumulated, strict=True):
            out.append(_normalize_rows(acc.div_(running_sum)))
    return [
        torch.cat(out) if out else torch.zeros(0, value.shape[1])
        for out, value in zip(outputs, values, strict=True)
    ]


@torch.no_grad()
def top_k_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: Sequence[torch.Tensor],
    temperature: float = 0.01,
    k: int = 256,
    query_block: int = DEFAULT_QUERY_BLOCK,
    memory_block: int = DEFAULT_MEMORY_BLOCK,
) -> list[torch.Tensor]:
    """The approximation: the softmax restricted to each query's k most similar memory rows
    (found exactly, block by block). At τ1 = 0.01 the weights beyond the top few hundred rows
    are tiny; the cosine to the exact result measures what is lost (see
    :func:`deviation_from_exact`)."""
    keys = keys if keys.dtype == torch.float32 else keys.float()
    values = [v if v.dtype == torch.float32 else v.float() for v in values]
    k = min(k, keys.shape[0])
    queries = _normalize_rows(queries) * (1.0 / temperature)
    outputs: list[list[torch.Tensor]] = [[] for _ in values]
    for q_start in range(0, queries.shape[0], query_block):
        q = queries[q_start : q_start + query_block]  # (b, d)
        best = torch.full((q.shape[0], 0), float("-inf"))  # (b, ≤k) logits kept so far
        best_index = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for m_start in range(0, keys.shape[0], memory_block):
            logits = torch.mm(q, keys[m_start : m_start + memory_block].T)  # (b, m)
            top, index = logits.topk(min(k, logits.shape[1]), dim=1)
            merged = torch.cat([best, top], dim=1)
            merged_index = torch.cat([best_index, index + m_start], dim=1)
            best, position = merged.topk(min(k, merged.shape[1]), dim=1)
            best_index = merged_index.gather(1, position)
        weights = torch.softmax(best, dim=1)  # (b, k)
        for out, value in zip(outputs, values, strict=True):
            picked = value[best_index.reshape(-1)].reshape(*best_index.shape, value.shape[1])
            out.append(_normalize_rows(torch.einsum("bk,bkd->bd", weights, picked)))
    return [
        torch.cat(out) if out else torch.zeros(0, value.shape[1])
        for out, value in zip(outputs, values, strict=True)
    ]


def deviation_from_exact(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float, k: int, sample: int = 2048,
) -> dict[str, float]:
    """Cosine between exact and top-k retrieved rows on a sample of queries."""
    sample_rows = queries[:sample]
    (exact,) = soft_retrieve(sample_rows, keys, None, temperature)
    (approx,) = top_k_retrieve(sample_rows, keys, [keys], temperature, k)
    cosine = (exact * approx).sum(dim=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "k": k, "sample": int(len(sample_rows))}


def retrieve(queries: torch.Tensor, memory: torch.Tensor, temperature: float = 0.01, **blocks):
    """``retrieve(q, M)`` of both papers: each query's softmax-weighted average of the memory."""
    return soft_retrieve(queries, memory, [memory], temperature, **blocks)[0]
