"""Where tensors live: ONE rule for every stage and every plugin.

``resolve_device(name)`` turns a recipe's or a plugin's ``device`` value into a
``torch.device``: ``"auto"`` is this process's device — its local rank's GPU under
``torchrun`` / ``accelerate launch`` (``LOCAL_RANK``), GPU 0 in a single process, the CPU
when there is no CUDA — and ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu:N`` are taken as
given, refused when this machine does not have them. Imports nothing heavy at module level
(plugin hook modules import this module; torch is imported on the first call).
"""

from __future__ import annotations

import os
import re
from typing import Any

from mcrx.errors import McrxError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?|meta)$")


def check_device_name(value: str) -> str:
    """A pydantic-validator body for ``device`` params: auto, cpu, cuda, cuda:N, mps, xpu."""
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"unknown device {value!r} (auto, cpu, cuda, cuda:N, mps)")
    return value


def local_rank() -> int:
    """This process's index on its node (0 without a launcher)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def resolve_device(name: str | Any = "auto") -> Any:
    """``torch.device`` for ``name`` (see the module docstring). A ``torch.device`` passes
    through unchanged."""
    import torch

    if isinstance(name, torch.device):
        return name
    check_device_name(str(name))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise McrxError(f"device {name!r}: CUDA is not available here (use device: cpu)")
    if device.type == "cuda" and device.index is not None and (
        device.index >= torch.cuda.device_count()
    ):
        raise McrxError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise McrxError(f"device {name!r}: MPS is not available here (use device: cpu)")
    return device



# ---------------------------------------------------------------------------------------
# Precision of matrix products, and what fits on a device
# ---------------------------------------------------------------------------------------
#: Matmul input precisions of the pair builder (accumulation is always float32). bf16 is
#: not among them: its 8-bit mantissa makes q·m/τ1 at τ1 = 0.01 wrong by ~0.4 in a logit
#: (tests/device/test_precision.py measures the deviation).
RETRIEVAL_PRECISIONS = ("fp32", "tf32", "fp16")
#: Aligner precisions: fp32; TF32 matmuls; bf16 / fp16 autocast (loss reductions in fp32).
TRAINING_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


class matmul_precision:  # noqa: N801 - used like torch's own context managers
    """``with matmul_precision("tf32", device):`` lets float32 matrix products on a CUDA
    device use TF32 tensor cores (10-bit mantissa inputs, float32 accumulation) and restores
    the previous setting on exit. Any other precision or device: no change (float32 on the
    CPU stays bit-for-bit what it was)."""

    def __init__(self, precision: str, device: Any) -> None:
        self.enabled = precision == "tf32" and getattr(device, "type", str(device)) == "cuda"

    def __enter__(self) -> matmul_precision:
        if self.enabled:
            import torch

            self._before = (torch.backends.cuda.matmul.allow_tf32,
                            torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            import torch

            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
                self._before)


def free_bytes(device: Any) -> int | None:
    """Free memory on a CUDA device in bytes (``None`` for the CPU and other devices: the
    host's RAM is not budgeted here)."""
    import torch

    device = resolve_device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits_on_device(n_bytes: int, device: Any, fraction: float = 0.5) -> bool:
    """Whether ``n_bytes`` may be placed on ``device`` leaving room for the work itself:
    at most ``fraction`` of its free memory (always true on the CPU and the meta device)."""
    free = free_bytes(device)
    return True if free is None else n_bytes <= fraction * free


def synchronize(device: Any) -> None:
    """Wait for queued kernels on ``device`` (timings and benchmarks); no-op on the CPU."""
    import torch

    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# Encoders (plugins): autocast, batch sizes, host-to-device copies
# ---------------------------------------------------------------------------------------
#: An encoder's ``autocast`` param: "none" (float32, the default) or a half type. The value
#: changes the embeddings, so encoders put it in their fingerprint (and the cache key).
ENCODER_AUTOCASTS = ("none", "fp16", "bf16")


def encoder_autocast(autocast: str, device: Any):
    """The context an encoder's forward pass runs in: nothing for "none", else torch's
    autocast to fp16 / bf16 on ``device`` (matmuls and convolutions in half precision,
    reductions and normalisations in float32)."""
    import contextlib

    import torch

    if autocast == "none":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[autocast]
    return torch.autocast(device_type=resolve_device(device).type, dtype=dtype)


def default_batch_size(device: Any, cpu: int, gpu: int) -> int:
    """An encoder's default batch: ``gpu`` items on a GPU (enough to keep it busy, small
    enough for its memory at the papers' model sizes), ``cpu`` elsewhere."""
    return gpu if resolve_device(device).type == "cuda" else cpu


def to_device(x: Any, device: Any) -> Any:
    """``x`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory with a
    non-blocking copy (the next batch's preparation overlaps the copy)."""
    device = resolve_device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
