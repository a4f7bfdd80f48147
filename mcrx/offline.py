"""Staying offline: model hubs are often unreachable, and a library that tries to download
retries for minutes instead of failing. Imports nothing heavy."""

from __future__ import annotations

import os
import sys


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
