"""mcrx: one embedding space across many modalities, joined from existing contrastive
spaces without paired data (C-MCR and Ex-MCR).

    import mcrx
    model = mcrx.load("runs/demo/model")
    vectors = model.embed("audio", inputs)       # (N, d) in the unified space
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.hookspecs import hookimpl
from mcrx.plugin.interfaces import Dataset, Encoder, MethodRules, Space
from mcrx.store.fingerprint import fingerprint_of

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.infer.unified import UnifiedModel
    from mcrx.search.collection import Collection

__all__ = [
    "Collection",
    "Dataset",
    "Encoder",
    "McrxError",
    "MethodRules",
    "RecipeError",
    "Space",
    "UnifiedModel",
    "__version__",
    "fingerprint_of",
    "hookimpl",
    "load",
]


def load(path: Any, device: Any = "cpu",
         params: dict[str, dict[str, Any]] | None = None) -> UnifiedModel:
    """Load a unified model written by ``mcrx extend`` (the OUT/model folder), its connectors
    on ``device`` ("cpu" by default; "auto" for this process's GPU when there is one).
    Relative weight paths are found from any folder; ``params`` points spaces at files that
    moved: ``{"clap/630k-fusion": {"checkpoint": "/new/630k-fusion-best.pt"}}``."""
    from mcrx.infer.unified import UnifiedModel

    return UnifiedModel.load(path, device=device, params=params)


def __getattr__(name: str) -> Any:
    if name == "UnifiedModel":
        from mcrx.infer.unified import UnifiedModel

        return UnifiedModel
    if name == "Collection":  # mcrx.search: faiss and SQLite only when asked for
        from mcrx.search.collection import Collection

        return Collection
    raise AttributeError(name)
