"""Helpers every plugin that wraps a real model needs: staying offline, choosing a device.
Imports nothing heavy (torch is imported inside :func:`torch_device`)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from mcrx.errors import McrxError

DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")


def ensure_hub_offline() -> None:
    """Put huggingface_hub and transformers in offline mode unless the user chose a mode.

    Without network a download attempt does not fail: it retries for minutes (importing
    laion_clap alone fetches three tokenizers: ~12 min of retries). In offline mode every
    look-up answers from the local cache at once (found, or a clear "not cached" error).
    Call it before importing the library. A user who wants downloads sets
    ``HF_HUB_OFFLINE=0`` explicitly, and that choice is left alone."""
    if "HF_HUB_OFFLINE" in os.environ:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # huggingface_hub reads the variable once, when it is imported; the core (accelerate)
    # or another plugin may have imported it already, so update the value it keeps too.
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def check_device_name(value: str) -> str:
    """A pydantic-validator body for ``device`` params: cpu, cuda, cuda:N, mps, xpu."""
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"unknown device {value!r} (cpu, cuda, cuda:N, mps)")
    return value


def torch_device(name: str) -> Any:
    """``torch.device(name)``, refusing a device this machine does not have."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise McrxError(f"device {name!r}: CUDA is not available here (use device: cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise McrxError(f"device {name!r}: MPS is not available here (use device: cpu)")
    return device
