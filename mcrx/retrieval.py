"""Memory retrieval with a softmax over the WHOLE memory (DESIGN "semantic consistency"):

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

DEFAULT_QUERY_BLOCK = 4096
DEFAULT_MEMORY_BLOCK = 16384


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


def retrieve(queries: torch.Tensor, memory: torch.Tensor, temperature: float = 0.01, **blocks):
    """``retrieve(q, M)`` of DESIGN: each query's softmax-weighted average of the memory."""
    return soft_retrieve(queries, memory, [memory], temperature, **blocks)[0]
