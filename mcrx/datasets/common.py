"""What the benchmark readers share: paths under ``root`` with located errors, CSV files
read by header, an audio folder indexed by file stem, the warning for skipped items, and a
safe reader for the pickled files some benchmarks ship (numpy arrays only, nothing called)."""

from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.errors import McrxError
from mcrx.plugin.interfaces import Dataset
from mcrx.store.fingerprint import files_fingerprint, fingerprint_of

#: audio files a clip may be stored as, the preferred first when two share a stem
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")
FORMAT_VERSION = 1  # of what a benchmark dataset's items are; bump when that changes
_WARNED: set[tuple[str, int]] = set()


def under(root: Path, relative: str | Path) -> Path:
    """``relative`` under ``root`` (an absolute path is kept as it is)."""
    path = Path(relative).expanduser()
    return path if path.is_absolute() else Path(root).expanduser() / path


def require_root(root: Path, name: str, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise McrxError(f"{name}: root {root} is not a folder; expected the benchmark as "
                        f"downloaded:\n{layout}")
    return root


def require_file(path: Path, name: str, what: str, layout: str) -> Path:
    if not path.is_file():
        raise McrxError(f"{name}: {what} not found: {path}; expected layout:\n{layout}")
    return path


def require_folder(path: Path, name: str, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise McrxError(f"{name}: {what} not found: {path}; expected layout:\n{layout}")
    return path


def read_csv_rows(path: Path, columns: Iterable[str], name: str,
                  layout: str) -> list[dict[str, str]]:
    """Rows of a CSV file with a header (RFC 4180 quoting), checked to have ``columns``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            absent = [c for c in columns if c not in header]
            if absent:
                raise McrxError(f"{name}: {path} has no column {absent} (its header: {header});"
                                f" expected layout:\n{layout}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise McrxError(f"{name}: {path} is not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise McrxError(f"{name}: {path} is not a readable CSV file ({exc})") from None
    if not rows:
        raise McrxError(f"{name}: {path} has a header but no rows")
    return rows


def index_audio(folder: Path) -> dict[str, Path]:
    """File stem → audio file, for every audio file under ``folder`` (recursively, hidden
    files skipped); of two files with one stem the first suffix of AUDIO_SUFFIXES wins."""
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(AUDIO_SUFFIXES)}
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in rank or path.name.startswith(".") or not path.is_file():
            continue
        other = found.get(path.stem)
        if other is None or rank[suffix] < rank[other.suffix.lower()]:
            found[path.stem] = path
    return found


def warn_skipped(name: str, root: Path, skipped: Sequence[str], total: int, what: str) -> None:
    """Say once per process how many items were skipped (a dataset is built several times
    per evaluation)."""
    key = (f"{name}:{root}", len(skipped))
    if not skipped or key in _WARNED:
        return
    _WARNED.add(key)
    from mcrx.ui.console import console

    shown = ", ".join(skipped[:3]) + (" …" if len(skipped) > 3 else "")
    console.print(f"[yellow]{name}: {len(skipped)} of {total} {what} not found, skipped "
                  f"({shown})[/]", highlight=False)


def stat_fingerprint(name: str, params: Any, files: Sequence[Any]) -> str:
    """A benchmark's fingerprint: its name, params, and every file's path, size and time."""
    dumped = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    return fingerprint_of("mcrx-benchmark", name, FORMAT_VERSION, dumped,
                          files_fingerprint([str(f) for f in files]))


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes and scalars plus the containers pickle builds by itself
    (list, tuple, dict, str, bytes, numbers); refuses every other global, so a crafted
    file cannot make loading call anything."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {
        (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")
    } | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays "
                                     "are read from this file)")


def safe_unpickle(path: Path, name: str) -> Any:
    """The content of a pickle file of numpy arrays in plain containers."""
    try:
        with open(path, "rb") as handle:
            return NumpyOnlyUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError) as exc:
        raise McrxError(f"{name}: {path} is not a pickle of numpy arrays ({exc})") from None


def read_npy(path: Path, name: str) -> Any:
    """The content of a ``.npy`` file: an array, or, for a pickled object array (a dict
    saved with ``np.save``), the object, unpickled by :class:`NumpyOnlyUnpickler` (never
    ``np.load(allow_pickle=True)``)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = header(handle)
            if not dtype.hasobject:
                handle.seek(0)
                return np.lib.format.read_array(handle, allow_pickle=False)
            content = NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, OSError) as exc:
        raise McrxError(f"{name}: cannot read {path} ({exc})") from None
    if isinstance(content, np.ndarray) and content.shape == () and content.dtype.hasobject:
        return content.item()
    return content


class BenchmarkDataset(Dataset):
    """A benchmark read from its downloaded layout: ``name`` (the registered name) and
    ``LAYOUT`` (shown in every error about a missing file)."""

    name: str = ""
    LAYOUT: str = ""

    def _check(self, modality: str) -> None:
        if modality not in self.modalities:
            raise McrxError(f"{self.name} has no modality {modality!r}; it has "
                            f"{self.modalities}")

    def item_ids(self, modality: str) -> np.ndarray:
        """Every item is its own (benchmarks of one modality); caption sets override it."""
        self._check(modality)
        return np.arange(len(self.items(modality)), dtype=np.int64)
