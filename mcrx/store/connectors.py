"""Trained connectors of a run, one safetensors file per leaf with the fingerprint of its
inputs in the metadata: ``OUT/connectors/<leaf>.safetensors``. A file whose fingerprint
matches is reused instead of training again."""

from __future__ import annotations

from pathlib import Path

from mcrx.store.atomic import atomic_path


def save_connector_state(path: Path, module, fingerprint: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"fingerprint": fingerprint})


def load_connector_state(path: Path, fingerprint: str):
    """The saved state dict when ``path`` was written for ``fingerprint``, else None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") != fingerprint:
                return None
        return load_file(str(path))
    except Exception:  # unreadable (not a file mcrx wrote whole): train again, overwrite it
        return None
