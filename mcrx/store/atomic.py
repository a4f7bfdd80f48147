"""The one write-then-rename of mcrx: a file or folder at its final path is always whole.

Everything mcrx writes (memory shards and manifests, pseudo pairs, checkpoints, connectors,
the unified model, metrics and reports) is first written beside its final path under a
hidden temporary name, then renamed into place with :func:`os.replace` (atomic on POSIX for
a file, and for a folder that replaces no folder). A crash leaves the old version or the new
one, never half of either; leftovers are hidden ``.name.tmp-<pid>`` / ``.name.old-<pid>``
entries of a process that is gone, tidied up on the next write of the same path: a
``tmp`` is removed (it never holds the only copy of anything), an ``old`` is renamed back
when a kill came between the two renames of :func:`commit` (it then IS the last version).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temporary_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name beside ``path`` owned by this process: ``.name.tmp-<pid>``."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_siblings(path: Path) -> None:
    """Tidy what a killed writer of ``path`` left beside it (see the module docstring)."""
    parent = path.parent
    if not parent.is_dir():
        return
    for tag in ("old", "tmp"):  # "old" first: it may have to become ``path`` again
        for sibling in parent.glob(f".{glob.escape(path.name)}.{tag}-*"):
            pid_text = sibling.name.rsplit("-", 1)[1]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if tag == "old" and not path.exists() and not path.is_symlink():
                os.replace(sibling, path)  # killed between the two renames: restore
            else:
                _remove(sibling)


def commit(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` (file or folder) to ``path``, replacing what was there.

    A folder cannot be renamed over a non-empty folder, so the old one is first renamed
    aside (one rename), the new one renamed in (the second), then the old one removed: at
    every instant ``path`` is either the complete old or the complete new folder (or, after
    a kill between the renames, the old one waits aside and the next write restores it)."""
    if tmp.is_dir() and path.is_dir() and not path.is_symlink():
        old = temporary_sibling(path, "old")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """``with atomic_path(final) as tmp:`` write ``tmp`` (a file, or a folder made for you
    with ``directory=True``); on success it replaces ``final``, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(path)
    tmp = temporary_sibling(path)
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    commit(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))
