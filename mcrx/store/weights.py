"""Reading PyTorch weight files that users hand to mcrx, without ever running their code.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only. When a file
holds anything else, torch's own message advises re-running with ``weights_only=False``:
advice that, for a file from the internet, means letting it run arbitrary code. mcrx never
does that and never passes that advice on; :func:`load_weights` says what to do instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError

ADVICE = ("mcrx reads weight files with weights_only=True and never unpickles other Python "
          "objects (that could run code from the file). Re-save the weights as a plain "
          "state dict (torch.save(model.state_dict(), path)) or as .safetensors")


def unpickling_refused(path: str | Path, exc: BaseException) -> McrxError:
    """mcrx's message for a file torch refused under ``weights_only=True``."""
    text = str(exc)
    marker = "Unsupported global: GLOBAL "  # torch names the refused class after this
    if marker not in text:  # not a refusal: the bytes are not a pickle at all
        after = text.split("Unpickler error:", 1)[-1] if "Unpickler error:" in text else ""
        cause = next((line.strip() for line in after.splitlines() if line.strip()),
                     "not a pickle torch can read")
        return McrxError(f"{path}: not a readable PyTorch weights file ({cause})")
    found = text[text.index(marker) + len(marker):].split()[0]
    return McrxError(f"{path}: holds Python objects other than tensors ({found}). {ADVICE}")


def load_weights(path: str | Path, *, mmap: bool = False,
                 allowed: Iterable[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure an McrxError naming
    the file; ``allowed`` lists extra classes a known release pickles (e.g. argparse's
    Namespace in ULIP's checkpoints)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise McrxError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise McrxError(f"{path}: the file is empty")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise unpickling_refused(path, exc) from None
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise McrxError(f"{path}: not a readable PyTorch weights file ({first})") from None
