"""Memory retrieval with a softmax over the WHOLE memory (C-MCR §3.2 and Ex-MCR §3.2,
"semantic consistency"):

    retrieve(q, M) = Σ_k softmax_k(q·m_k / τ1) · m_k            τ1 = 0.01

computed block by block with a running max and running sum (the log-sum-exp trick), so the
result is exact while peak memory is one (query block × memory block) tile, whatever the
memory size. The same pass can average other row-aligned values with the same weights, as
Ex-MCR does when it carries text weights from one space to the other:

    w = softmax(a·T^A / τ1);   t̃^A = w·T^A,  t̃^I = w·T^I

Where and how precisely (issue 8):

- Device: the work runs on ``device`` (default: the queries' device). Every tensor made
  here is made there; memory blocks that live elsewhere (a memory too large for the GPU)
  are copied over once per memory block per call, and the loop runs memory blocks OUTER and
  query blocks inner, so each memory row crosses PCIe once per call (the pair builder
  calls once per chunk of 65,536 queries), not once per query block. For one query block
  the arithmetic is the same sequence as a query-outer loop: results are unchanged.
- Values: the carried memories are fused into one (m, Σd_j) block, one matrix product per
  tile instead of one per value.
- Precision of the two matrix products (``precision``): ``fp32``; ``tf32`` (CUDA TF32
  tensor cores: inputs rounded to a 10-bit mantissa); ``fp16`` (half inputs). In every
  mode the products accumulate in float32, the logits come out float32 and the softmax
  state (running max, sum, accumulators) is float32. On the CPU, tf32 and fp16 are
  emulated by rounding the inputs and multiplying in float32 (what tensor cores compute, up
  to the order of the sums). bf16 is refused: at τ1 = 0.01 its rounding of q·m/τ1 moves
  logits by up to ~0.4 (tests/device/test_precision.py bounds every mode against float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mcrx.device import RETRIEVAL_PRECISIONS, matmul_precision

DEFAULT_QUERY_BLOCK = 2048
DEFAULT_MEMORY_BLOCK = 8192


def _normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def check_precision(precision: str) -> str:
    if precision not in RETRIEVAL_PRECISIONS:
        hint = (" (bf16 logits are not acceptable at τ1 = 0.01: use fp16 or tf32)"
                if precision == "bf16" else "")
        raise ValueError(f"retrieval precision must be one of {', '.join(RETRIEVAL_PRECISIONS)}"
                         f", got {precision!r}{hint}")
    return precision


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 → the nearest TF32 value (10-bit mantissa, round half to even), as float32:
    what a TF32 tensor core reads. Used to emulate tf32 on the CPU."""
    bits = x.float().contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    return ((bits + 0x0FFF + lsb) & ~0x1FFF).view(torch.float32)


def compute_dtype(precision: str) -> torch.dtype:
    """dtype in which memory blocks enter the matrix products."""
    return torch.float16 if precision == "fp16" else torch.float32


def _operand(x: torch.Tensor, precision: str) -> torch.Tensor:
    """A matmul operand in ``precision``'s input format (already rounded on the CPU)."""
    if precision == "fp16":
        x = x.to(torch.float16)
        return x.float() if x.device.type == "cpu" else x
    x = x.float()
    if precision == "tf32" and x.device.type == "cpu":
        return round_to_tf32(x)
    return x


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with float32 accumulation and a float32 result, whatever the operands' dtype
    (half operands on CUDA use cuBLAS with a float32 output, never a half one)."""
    if a.dtype == torch.float16:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a, b)


def _addmm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b (float32 accumulator)."""
    if a.dtype == torch.float16:
        acc.add_(torch.mm(a, b, out_dtype=torch.float32))
    else:
        acc.addmm_(a, b)


def _weights_operand(weights: torch.Tensor, precision: str) -> torch.Tensor:
    """The (b, m) softmax weights as the second product's left operand."""
    if precision == "fp32" or weights.device.type != "cpu":
        return weights.to(torch.float16) if precision == "fp16" else weights
    return _operand(weights, precision)


@torch.no_grad()
def soft_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: Sequence[torch.Tensor] | None = None,
    temperature: float = 0.01,
    query_block: int = DEFAULT_QUERY_BLOCK,
    memory_block: int = DEFAULT_MEMORY_BLOCK,
    top_k: int | None = None,
    precision: str = "fp32",
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """For each query row, the softmax(q·k/τ)-weighted average of each ``values`` tensor.

    queries (Q, d), keys (M, d), values: tensors of shape (M, d_j) row-aligned with keys
    (default: ``[keys]``). Returns one (Q, d_j) float32 tensor per value on ``device``
    (default: the queries' device), each row L2-normalised: every embedding in the papers'
    notation is a normalised row, and retrieved rows are used again as queries (Ex-MCR) or
    as training targets. ``precision``: see the module docstring.
    """
    check_precision(precision)
    if values is None:
        values = [keys]
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-d but keys are {keys.shape[1]}-d")
    for value in values:
        if value.shape[0] != keys.shape[0]:
            raise ValueError(f"values have {value.shape[0]} rows but keys have {keys.shape[0]}")
    device = torch.device(device) if device is not None else queries.device
    if top_k is not None:
        return top_k_retrieve(queries, keys, values, temperature, top_k, query_block,
                              memory_block, precision=precision, device=device)
    widths = [v.shape[1] for v in values]
    values_are_keys = len(values) == 1 and values[0] is keys
    # scale the (Q, d) queries by 1/τ once instead of every (b, m) tile; rounding to the
    # input format after the scaling keeps the same relative error
    queries = _normalize_rows(queries.to(device)) * (1.0 / temperature)
    q_operand = _operand(queries, precision)
    n_query = queries.shape[0]
    # float32 softmax state for every query of this call (Q × (2 + Σd_j) floats)
    running_max = torch.full((n_query, 1), float("-inf"), device=device)  # (Q, 1)
    running_sum = torch.zeros((n_query, 1), device=device)  # (Q, 1)
    accumulated = torch.zeros((n_query, sum(widths)), device=device)  # (Q, Σd_j)
    with matmul_precision(precision, device):
        for m_start in range(0, keys.shape[0], memory_block):
            block = slice(m_start, m_start + memory_block)
            # one copy of this memory block per call (to the device, in the input format)
            k = _operand(keys[block].to(device, non_blocking=True), precision)  # (m, d)
            if values_are_keys:
                v = k
            else:  # the carried memories fused: one product per tile
                v = _operand(torch.cat([value[block].to(device, non_blocking=True)
                                        for value in values], dim=1), precision)  # (m, Σd_j)
            for q_start in range(0, n_query, query_block):
                rows = slice(q_start, q_start + query_block)
                logits = _mm_fp32(q_operand[rows], k.T)  # (b, m) = q·k/τ, float32
                previous_max = running_max[rows]
                new_max = torch.maximum(previous_max, logits.amax(dim=1, keepdim=True))
                rescale = torch.exp(previous_max - new_max)  # 0 on the first block
                weights = logits.sub_(new_max).exp_()  # (b, m), in place: one tile alive
                running_sum[rows].mul_(rescale).add_(weights.sum(dim=1, keepdim=True))
                acc = accumulated[rows]  # a view: updated in place
                acc.mul_(rescale)
                _addmm_fp32_(acc, _weights_operand(weights, precision), v)
                running_max[rows] = new_max
    accumulated.div_(running_sum)
    return [_normalize_rows(part) for part in accumulated.split(widths, dim=1)]


@torch.no_grad()
def top_k_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: Sequence[torch.Tensor],
    temperature: float = 0.01,
    k: int = 256,
    query_block: int = DEFAULT_QUERY_BLOCK,
    memory_block: int = DEFAULT_MEMORY_BLOCK,
    precision: str = "fp32",
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """The approximation: the softmax restricted to each query's k most similar memory rows
    (found exactly, block by block). At τ1 = 0.01 the weights beyond the top few hundred rows
    are tiny; the cosine to the exact result measures what is lost (see
    :func:`deviation_from_exact`). Runs on ``device`` (default: the queries'); the logits
    use ``precision``'s inputs, the softmax and the weighted sum are float32."""
    check_precision(precision)
    device = torch.device(device) if device is not None else queries.device
    k = min(k, keys.shape[0])
    queries = _normalize_rows(queries.to(device)) * (1.0 / temperature)
    q_operand = _operand(queries, precision)
    outputs: list[list[torch.Tensor]] = [[] for _ in values]
    with matmul_precision(precision, device):
        for q_start in range(0, queries.shape[0], query_block):
            q = q_operand[q_start : q_start + query_block]  # (b, d)
            best = torch.full((q.shape[0], 0), float("-inf"), device=device)  # (b, ≤k)
            best_index = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
            for m_start in range(0, keys.shape[0], memory_block):
                block = _operand(keys[m_start : m_start + memory_block].to(device), precision)
                logits = _mm_fp32(q, block.T)  # (b, m)
                top, index = logits.topk(min(k, logits.shape[1]), dim=1)
                merged = torch.cat([best, top], dim=1)
                merged_index = torch.cat([best_index, index + m_start], dim=1)
                best, position = merged.topk(min(k, merged.shape[1]), dim=1)
                best_index = merged_index.gather(1, position)
            weights = torch.softmax(best, dim=1)  # (b, k)
            flat = best_index.reshape(-1)
            for out, value in zip(outputs, values, strict=True):
                picked = value[flat.to(value.device)].to(device, torch.float32)
                picked = picked.reshape(*best_index.shape, value.shape[1])  # (b, k, d_j)
                out.append(_normalize_rows(torch.einsum("bk,bkd->bd", weights, picked)))
    return [
        torch.cat(out) if out else torch.zeros((0, value.shape[1]), device=device)
        for out, value in zip(outputs, values, strict=True)
    ]


def deviation_from_exact(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float, k: int, sample: int = 2048,
    **options: Any,
) -> dict[str, float]:
    """Cosine between exact and top-k retrieved rows on a sample of queries (``options``:
    ``precision``, ``device``, as :func:`soft_retrieve`)."""
    sample_rows = queries[:sample]
    (exact,) = soft_retrieve(sample_rows, keys, None, temperature, **options)
    (approx,) = top_k_retrieve(sample_rows, keys, [keys], temperature, k, **options)
    cosine = (exact * approx).sum(dim=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "k": k, "sample": int(len(sample_rows))}


def retrieve(queries: torch.Tensor, memory: torch.Tensor, temperature: float = 0.01, **blocks):
    """``retrieve(q, M)`` of both papers: each query's softmax-weighted average of the memory."""
    return soft_retrieve(queries, memory, [memory], temperature, **blocks)[0]
