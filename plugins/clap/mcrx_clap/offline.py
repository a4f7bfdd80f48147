"""Keep the Hugging Face libraries that laion_clap uses from reaching for the network.

Imports nothing heavy: it must run before laion_clap (and through it transformers and
huggingface_hub) is imported to be fully effective."""

from __future__ import annotations

import os
import sys


def ensure_hub_offline() -> None:
    """Put huggingface_hub and transformers in offline mode unless the user chose a mode.

    Without network, a download attempt does not fail: it retries for minutes (importing
    laion_clap alone fetches three tokenizers: ~12 min of retries). In offline mode every
    look-up answers from the local cache at once (found, or a clear "not cached" error).
    A user who wants downloads sets ``HF_HUB_OFFLINE=0`` explicitly, and we leave that
    choice alone."""
    if "HF_HUB_OFFLINE" in os.environ:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # huggingface_hub reads the variable once, when it is imported; the core (accelerate)
    # or another plugin may have imported it already, so update the value it keeps too.
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
