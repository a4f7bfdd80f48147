"""Resumable training state: ``<dir>/step-000000200/`` folders written by Accelerate's
``save_state`` plus ``trainer_state.json`` (step, fingerprint of the inputs). A checkpoint is
written under a hidden name and renamed into place: it is whole or absent. Only checkpoints
of the same inputs (fingerprint) are ever resumed; the newest ``keep`` are kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mcrx.store.atomic import commit

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


def latest_checkpoint(directory: Path, fingerprint: str) -> tuple[Path, dict] | None:
    """The newest complete checkpoint written for the same inputs, if any."""
    if not directory.is_dir():
        return None
    for candidate in sorted(directory.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True):
        state_file = candidate / STATE_FILE
        if candidate.is_dir() and state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
            except (OSError, UnicodeDecodeError, ValueError):
                continue  # not one mcrx wrote whole (it writes then renames): not resumable
            if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
                return candidate, state
    return None


def save_checkpoint(accelerator, directory: Path, step: int, fingerprint: str, keep: int = 2,
                    losses: list[tuple[int, float]] | None = None):
    """``save_state`` into a hidden folder that every process writes its part of, then (main
    process) the state file and the rename; older checkpoints beyond ``keep`` are removed.
    ``losses`` (the (step, loss) samples so far) travel with the state, so a resumed run —
    even one with no step left to do — reports the whole curve and a real final loss."""
    final = directory / f"{CHECKPOINT_PREFIX}{step:09d}"
    if accelerator.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
    # one name shared by every process (not per pid): they all write into it
    tmp = directory / f".tmp-{CHECKPOINT_PREFIX}{step:09d}"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process has written its part
    if accelerator.is_main_process:
        state = {"step": step, "fingerprint": fingerprint, "losses": list(losses or [])}
        (tmp / STATE_FILE).write_text(json.dumps(state))
        commit(tmp, final)
        for old in sorted(directory.glob(f"{CHECKPOINT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
