"""Trained connectors of a run, one safetensors file per leaf with the fingerprint of its
inputs in the metadata: ``OUT/connectors/<leaf>.safetensors``. A file whose fingerprint
matches is reused instead of training again.

Beside each file, ``<leaf>.safetensors.integrity.json`` (:mod:`mcrx.store.integrity`) holds
its size and digests, written after the file: a connector rewritten, truncated or holding
non-finite weights is trained again, never loaded. A file of an earlier mcrx (no record) is
read as before and given its record."""

from __future__ import annotations

from pathlib import Path

from mcrx.store import integrity
from mcrx.store.atomic import atomic_path


def save_connector_state(path: Path, module, fingerprint: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    record = integrity.record_path(path)
    record.unlink(missing_ok=True)  # no record names a file being replaced
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"fingerprint": fingerprint})
    integrity.write_record(path, {path.name: integrity.describe(path)}, "connector",
                           record=record)


def load_connector_state(path: Path, fingerprint: str):
    """The saved state dict when ``path`` was written for ``fingerprint`` and is whole
    (its record matches, every weight finite), else None: trained again, overwritten."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    record, problem = integrity.check_entry(path, refresh=True)
    if problem is not None:
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") != fingerprint:
                return None
        state = load_file(str(path))
    except Exception:  # unreadable (not a file mcrx wrote whole): train again, overwrite it
        return None
    if not all(value.isfinite().all() for value in state.values()
               if value.is_floating_point()):
        return None
    if record is None:  # written by an earlier mcrx: recorded now
        try:
            integrity.write_record(path, {path.name: integrity.describe(path)}, "connector")
        except OSError:
            pass
    return state
