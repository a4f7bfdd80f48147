"""What the server reads, decided when it reads it.

Two rules, both checked at serving time rather than when a file was indexed:

- a collection's file is read only through :func:`open_item`: the file the collection
  indexed, opened and checked by :meth:`Collection.open_indexed_file
  <mcrx.search.collection.Collection.open_indexed_file>` (no symbolic link followed, the
  opened file's identity compared with the item's row). Everything after that reads the
  open file, never the path again (a path checked and then reopened can be swapped for a
  link in between: CWE-367, "time-of-check time-of-use");
- a typed text is embedded as words, never opened as a file: :func:`never_opened` refuses,
  through a Python audit hook (PEP 578, the ``open`` event raised by ``open()`` and
  ``os.open()``), any attempt of an encoder to open the text itself as a path while it
  embeds it (the toy encoders read a string ending in ``.npy`` as a file to load).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from mcrx.errors import McrxError

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.search.collection import Collection


def open_item(collection: Collection, item_id: int) -> BinaryIO:
    """The open file of item ``item_id``, as indexed; McrxError when it cannot be served
    (gone, outside the collection's roots, a link on its path, another or a changed file):
    :meth:`Collection.open_indexed_file <mcrx.search.collection.Collection.open_indexed_file>`."""
    return collection.open_indexed_file(item_id)


def read_bounded(file: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of ``file`` and whether there was more."""
    data = file.read(limit + 1)
    return data[:limit], len(data) > limit


# -- typed texts are never files ------------------------------------------------------------
_guard = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False


class _TextOpened(McrxError):
    pass


def _audit(event: str, args: tuple) -> None:
    forbidden = getattr(_guard, "paths", None)
    if not forbidden or event != "open":
        return
    path = args[0] if args else None
    if isinstance(path, int) or path is None:
        return
    try:
        name = os.fsdecode(path)
    except TypeError:
        return
    if name in forbidden or os.path.abspath(name) in forbidden:
        _guard.tripped = True
        raise _TextOpened("the encoder tried to open the text as a file")


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)  # hooks cannot be removed: it idles outside never_opened
            _hook_installed = True


@contextmanager
def never_opened(text: str) -> Iterator[None]:
    """While the block runs (in this thread), opening ``text`` as a path raises McrxError;
    after it, McrxError if anything tried (even when the encoder swallowed the error)."""
    _install_hook()
    forbidden = {text}
    if "\x00" not in text:
        forbidden |= {os.path.abspath(text), os.path.abspath(os.path.expanduser(text))}
    _guard.paths, _guard.tripped = forbidden, False
    refused = McrxError(f"{text[:80]!r}: the text encoder reads this text as a file path; "
                        "the server embeds typed texts as words and never opens them "
                        "(search with a file of the collection by #id, or drop the file)")
    try:
        yield
    except BaseException:
        if getattr(_guard, "tripped", False):  # whatever the encoder made of our refusal
            raise refused from None
        raise
    else:
        if getattr(_guard, "tripped", False):  # the encoder swallowed it
            raise refused
    finally:
        _guard.paths, _guard.tripped = None, False
