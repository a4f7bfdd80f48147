"""Locks that keep two mcrx processes from writing the same place at once.

Two ``mcrx extend`` runs on one output folder would interleave their pseudo pairs,
checkpoints and model; two runs encoding the same cache entry would append to the same
shards. Each writer therefore holds an exclusive ``fcntl.flock`` on a lock file beside what
it writes: a second ``extend`` on the same OUT stops at once with a message naming the
holder, and a second writer of one cache entry waits for the first, then reuses its rows.

The kernel releases a flock when its holder exits, killed or not, so a crash never leaves
a stale lock (the file itself stays; it is never deleted, which would race with a waiter).
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mcrx.errors import McrxError

OUTPUT_LOCK = ".mcrx.lock"

F = TypeVar("F", bound=Callable[..., Any])


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextmanager
def file_lock(path: str | Path, what: str, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` body. When
    another process holds it: wait for it (``wait``) or raise an McrxError about ``what``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise McrxError(f"{what}: cannot create the lock file {path} "
                        f"({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise McrxError(f"{what} is in use by another mcrx run{holder}; wait for it "
                                "to finish, or give this run another output folder") from None
            from mcrx.ui.console import console

            console.print(f"  waiting for another mcrx run{holder} writing {what} ...",
                          markup=False)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holding_output_lock(func: F) -> F:
    """Decorate ``extend(recipe, ...)``: the main process holds ``OUT/.mcrx.lock`` for the
    whole run (the other processes of a distributed launch belong to the same run)."""

    @functools.wraps(func)
    def wrapper(recipe: Any, *args: Any, **kwargs: Any) -> Any:
        from mcrx.train.distributed import process_state

        if not process_state().is_main_process:
            return func(recipe, *args, **kwargs)
        out = Path(recipe.output_dir)
        with file_lock(out / OUTPUT_LOCK, f"the output folder {out}", wait=False):
            return func(recipe, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def cache_entry_lock(path: Path) -> Any:
    """The lock of one cache entry (a memory folder): ``.<name>.lock`` beside it; waits."""
    return file_lock(path.with_name(f".{path.name}.lock"), f"the cache entry {path}", wait=True)
