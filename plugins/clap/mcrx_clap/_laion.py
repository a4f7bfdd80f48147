"""laion_clap, imported the one safe way: offline mode first (the package loads three
Hugging Face tokenizers while it is being imported), then the package, which puts its own
folder on ``sys.path``, then the top-level ``clap_module`` that laion_clap's code itself
uses (importing ``laion_clap.clap_module`` would run a second, separate copy)."""

from __future__ import annotations

import importlib

from mcrx.offline import ensure_hub_offline

ensure_hub_offline()

import laion_clap  # noqa: E402, F401
from laion_clap.training.data import (  # noqa: E402
    float32_to_int16,
    get_audio_features,
    int16_to_float32,
)

clap_module = importlib.import_module("clap_module")
clap_model = importlib.import_module("clap_module.model")

__all__ = ["clap_model", "clap_module", "float32_to_int16", "get_audio_features",
           "int16_to_float32"]
