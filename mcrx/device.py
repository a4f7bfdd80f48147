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

