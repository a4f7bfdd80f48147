"""Files as search items: which modality a file holds, its content hash, and what the
encoder is handed for it.

A file's modality comes from its suffix when the suffix says it unambiguously (``.wav`` is
audio, ``.png`` an image, ``.ply`` a point cloud, ``.txt`` a text); ``.npy`` can hold any
modality (raw vectors of the toy world, point clouds of ULIP), so it needs ``--modality``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError
from mcrx.store.fingerprint import file_sha256

#: file suffix → the modality it holds (lower case); suffixes missing here (``.npy``) are
#: ambiguous and need the modality named
SUFFIX_MODALITIES: dict[str, str] = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
                    "image"),
    **dict.fromkeys((".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                     ".aifc", ".au", ".m4a"), "audio"),
    **dict.fromkeys((".ply", ".obj", ".off", ".pcd", ".xyz"), "pointcloud"),
    **dict.fromkeys((".txt", ".md"), "text"),
}

#: suffixes whose content is the text itself (the text encoder is handed the string, not the
#: path: a CLIP text tower would otherwise embed the file name)
TEXT_FILE_SUFFIXES = (".txt", ".md")



def modality_of_suffix(path: str | Path, modalities: Iterable[str]) -> str | None:
    """The modality ``path``'s suffix names, if the model embeds it; else None."""
    modality = SUFFIX_MODALITIES.get(Path(path).suffix.lower())
    return modality if modality in set(modalities) else None


def looks_like_path(value: str) -> bool:
    """Whether a query value that is no existing file was probably meant as one (a typo in
    a file name should be reported, not embedded as a text)."""
    suffix = Path(value).suffix.lower()
    return (
        "/" in value
        or value.startswith("~")
        or suffix in SUFFIX_MODALITIES
        or suffix in (".npy", ".npz")
    ) and " " not in value.strip()


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (hex): what decides whether a changed file is re-embedded."""
    return file_sha256(path)


def encoder_item(path: str | Path, modality: str) -> Any:
    """What the encoder of ``modality`` is handed for the file at ``path``: a text file's
    content for text, the path itself for everything else (encoders read their files)."""
    path = Path(path)
    if modality == "text" and path.suffix.lower() in TEXT_FILE_SUFFIXES:
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise McrxError(f"{path}: cannot read the text ({exc})") from None
    return str(path)


@dataclass(frozen=True)
class FileStat:
    """What a cheap ``stat`` says about a file: when size and mtime match the stored ones,
    the file is taken as unchanged without reading it; ``dev``/``ino`` (POSIX ``st_dev``,
    ``st_ino``) tell the same file from another one put at its path."""

    size: int
    mtime_ns: int
    dev: int | None = None
    ino: int | None = None

    @classmethod
    def of(cls, path: str | Path) -> FileStat:
        return cls.from_stat(os.stat(path))

    @classmethod
    def from_stat(cls, stat: os.stat_result) -> FileStat:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_dev, stat.st_ino)


def is_regular_file(path: str | Path) -> bool:
    """Whether ``path`` itself (not a link's target: ``lstat``) is a regular file; a folder,
    a FIFO, a device or a symbolic link is not (POSIX ``S_ISREG``)."""
    try:
        return stat_module.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_no_follow(path: str) -> int:
    """A read-only descriptor of the absolute ``path``, opened one component at a time with
    ``O_NOFOLLOW`` (POSIX ``openat``): a symbolic link anywhere on the way raises OSError
    (``ELOOP``, or ``ENOTDIR`` for a link to a folder), so a link swapped in after indexing
    cannot redirect the read."""
    if not os.path.isabs(path):
        raise OSError(errno.EINVAL, "not an absolute path", path)
    parts = [part for part in path.split(os.sep) if part]
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    directory = os.open(os.sep, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            if part in (".", ".."):
                raise OSError(errno.EINVAL, "not a normalised path", path)
            following = os.open(part, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=directory)
            os.close(directory)
            directory = following
        # O_NONBLOCK: a FIFO put at the path must not block the open (POSIX open())
        return os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=directory)
    finally:
        os.close(directory)


def fd_sha256(fd: int, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of an open file's bytes from its start; the offset is put back at 0."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, chunk):
        digest.update(block)
    os.lseek(fd, 0, os.SEEK_SET)
    return digest.hexdigest()


_UNPRINTABLE = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7f, 0xa0)]}
_UNPRINTABLE.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def display_path(path: str | os.PathLike) -> str:
    """``path`` made safe for one line of a terminal: control characters (newlines, the ESC
    of ANSI sequences, C1 controls) written as ``\\n``, ``\\x1b``, ...; bytes that are no
    UTF-8 (kept by ``os.fsdecode`` as lone surrogates, PEP 383) as ``\\xff``. A name with
    neither prints as it is."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return text
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_UNPRINTABLE)


@dataclass
class Walk:
    """What :func:`walk_inputs` found: the files to index, the real paths of the roots
    they lie in, and the links it did not follow (path, why)."""

    files: list[tuple[Path, str]]
    roots: list[str]
    skipped: list[tuple[str, str]]


def walk_inputs(
    inputs: Sequence[str | Path], modality: str | None, modalities: Sequence[str],
    encoder_for, follow_links: bool = False,
) -> Walk:
    """``(real path, modality)`` of every regular file named by ``inputs`` (files, or
    folders searched recursively). With ``modality`` every file is of it, and a folder is
    listed by that modality's encoder (a CLIP image encoder keeps image files only);
    without it each file's suffix must name one of ``modalities`` (in a folder, other files
    are skipped). ``encoder_for(modality)`` returns the encoder whose ``read_inputs`` lists
    a folder.

    Links: an input named on the command line is resolved (the user named it); a file
    found in a folder whose real path leaves that folder's real path (a symbolic link out)
    is skipped unless ``follow_links``, and then its real path becomes a root too. Folders
    reached through links are not descended (``Path.rglob`` does not follow them). Only
    regular files are indexed (no FIFOs, devices or sockets: reading one could block)."""
    found: dict[Path, str] = {}
    roots: list[str] = []
    skipped: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise McrxError(f"not found: {display_path(raw)}")
        root = path.resolve()
        if str(root) not in roots:
            roots.append(str(root))
        if path.is_dir():
            if modality is not None:
                listed = encoder_for(modality).read_inputs(path)
                files = [Path(p) for p in listed if isinstance(p, str | os.PathLike)]
                pairs = [(p, modality) for p in files]
            else:
                pairs = []
                for p in sorted(path.rglob("*")):
                    hidden = any(part.startswith(".") for part in p.relative_to(path).parts)
                    if p.is_file() and not hidden:
                        guessed = modality_of_suffix(p, modalities)
                        if guessed is not None:
                            pairs.append((p, guessed))
            if not pairs:
                what = f"{modality} files" if modality else (
                    f"files whose suffix names a modality of the model ({', '.join(modalities)}"
                    "; name the modality with --modality for .npy and other files)")
                raise McrxError(f"{display_path(raw)}: the folder holds no {what}")
        else:
            guessed = modality or modality_of_suffix(path, modalities)
            if guessed is None:
                raise McrxError(
                    f"{display_path(raw)}: cannot tell the modality of a "
                    f"{path.suffix or 'suffix-less'} file; name it with --modality "
                    f"({', '.join(modalities)})"
                )
            pairs = [(path, guessed)]
        for p, m in pairs:
            real = p.resolve()
            if not is_regular_file(real):
                skipped.append((str(p), "not a regular file"))
                continue
            if not (real == root or real.is_relative_to(root)):
                if not follow_links:
                    skipped.append((str(p), f"a link out of {display_path(root)} (index "
                                    "with --follow-links to follow it)"))
                    continue
                if str(real) not in roots:
                    roots.append(str(real))
            found[real] = m
    return Walk(sorted(found.items()), roots, skipped)


def expand_inputs(
    inputs: Sequence[str | Path], modality: str | None, modalities: Sequence[str], encoder_for
) -> list[tuple[Path, str]]:
    """``(real path, modality)`` of every file named by ``inputs``, links followed (see
    :func:`walk_inputs`)."""
    return walk_inputs(inputs, modality, modalities, encoder_for, follow_links=True).files
