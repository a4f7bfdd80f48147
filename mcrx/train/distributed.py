"""What several processes (``torchrun`` / ``accelerate launch``) need so that N processes give
the result of one: batch-wide InfoNCE and BatchNorm over the WHOLE batch.

With Accelerate's ``split_batches`` each process holds a contiguous slice of every batch. A
loss computed on the local slice only would see B/N negatives, and BatchNorm would normalise
with B/N rows: a different objective. Instead, every process gathers the projected rows of
all processes (gradients flow back to their owners) and computes the same full-batch loss,
and BatchNorm reduces its statistics over all processes.

Gradient bookkeeping: every process computes the identical loss L; the backward of
all-gather / all-reduce sums the N identical contributions (N·∂L/∂local), and DDP then
averages over the N processes, which leaves exactly ∂L/∂θ. No rescaling is needed.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import torch
from torch import nn

from mcrx.errors import McrxError

#: How long a collective may wait before the process group gives up. NCCL's default is 10
#: minutes, but while the main process encodes a paper-scale memory (hours) the others wait
#: in a barrier: the watchdog would kill the run. ``MCRX_DIST_TIMEOUT_MINUTES`` overrides.
DEFAULT_TIMEOUT_MINUTES = 12 * 60


def process_group_timeout() -> timedelta:
    """The process-group timeout (``MCRX_DIST_TIMEOUT_MINUTES``, default 12 hours)."""
    raw = os.environ.get("MCRX_DIST_TIMEOUT_MINUTES", str(DEFAULT_TIMEOUT_MINUTES))
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if minutes <= 0:
        raise McrxError(f"MCRX_DIST_TIMEOUT_MINUTES={raw!r}: expected a positive number of "
                        "minutes")
    return timedelta(minutes=minutes)


def process_state(cpu: bool | None = None):
    """Accelerate's view of this process among those launched (``torchrun``, ``accelerate
    launch``, or a plain single process). Without a GPU, several processes talk over gloo:
    Accelerate needs ``cpu=True`` to choose that backend under a bare ``torchrun``. The
    process group is created here, first, with :func:`process_group_timeout`. ``cpu=True``
    keeps this process on the CPU on a GPU machine too (recipe ``device: cpu``)."""
    from accelerate import PartialState

    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    return PartialState(cpu=cpu, timeout=process_group_timeout())


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows in rank order; differentiable."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of an API without autograd on CPU
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(x)


class BatchNormAcrossProcesses(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics cover the rows of every process (works on
    CPU with gloo, unlike ``SyncBatchNorm``). Same parameters, buffers and state-dict keys
    as ``BatchNorm1d``; identical to it in a single process and in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        # statistics in float32 even under bf16/fp16 autocast (a no-op in float32); the row
        # count travels with the sums on the same device (NCCL refuses a CPU tensor beside
        # CUDA ones)
        x = x.float()
        count = torch.full((1,), float(x.shape[0]), device=x.device, dtype=x.dtype)
        moments = torch.cat([x.sum(0), (x * x).sum(0), count])  # one all-reduce for all
        moments = _all_reduce_sum(moments)
        d = x.shape[1]
        total = moments[-1]
        mean = moments[:d] / total
        var = moments[d : 2 * d] / total - mean * mean  # biased, as BatchNorm normalises
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else (
                1.0 / float(self.num_batches_tracked))
            unbiased = var * total / (total - 1)
            self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight + self.bias if self.affine else x_hat


def batchnorm_across_processes(module: nn.Module) -> nn.Module:
    """Swap every ``BatchNorm1d`` of ``module`` for :class:`BatchNormAcrossProcesses`,
    in place (the same parameter and buffer tensors are kept)."""
    for child in module.children():
        if type(child) is nn.BatchNorm1d:
            child.__class__ = BatchNormAcrossProcesses
        else:
            batchnorm_across_processes(child)
    return module


def local_rows(full: torch.Tensor, local_count: int) -> torch.Tensor:
    """This process's slice of a tensor drawn for the whole batch (noise), in rank order."""
    start = rank() * local_count
    return full[start : start + local_count]
