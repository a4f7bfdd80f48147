"""Collections under hostile or concurrent use: files swapped, renamed or replaced after
indexing, damaged databases and meta rows, names no terminal should print raw, and two
processes creating one collection at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mcrx.errors import McrxError
from mcrx.search import Collection


def _files(demo_files: dict[str, Path], target: Path, count: int = 4) -> list[Path]:
    """``count`` point-cloud files of the toy world copied into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted((demo_files["files"] / "pointcloud").rglob("*.npy"))[:count]
    copies = []
    for number, source in enumerate(sources):
        copy = target / f"item-{number}.npy"
        shutil.copyfile(source, copy)
        copies.append(copy)
    return copies


@pytest.fixture
def small(tmp_path, search_model, demo_files) -> tuple[Path, list[Path]]:
    """A new collection of four point clouds copied under ``tmp_path/files``."""
    files = _files(demo_files, tmp_path / "files")
    path = tmp_path / "small.mcrx"
    with Collection(path, model=search_model) as collection:
        report = collection.index([tmp_path / "files"], modality="pointcloud")
        assert report.added == len(files) and not report.failed
    return path, files


def _id_of(collection: Collection, path: Path) -> int:
    item = collection.item_by_path(path.resolve())
    assert item is not None
    return item.id


def test_open_indexed_file_returns_the_indexed_bytes(small):
    path, files = small
    with Collection(path) as collection:
        with collection.open_indexed_file(_id_of(collection, files[0])) as handle:
            assert handle.read() == files[0].read_bytes()
        with pytest.raises(McrxError, match="not found"):
            collection.open_indexed_file(10_000)


def test_open_indexed_file_refuses_a_symlink_swapped_in_after_indexing(small, tmp_path):
    path, files = small
    secret = tmp_path / "secret.npy"
    secret.write_bytes(files[1].read_bytes())  # even the same bytes: a link is refused
    with Collection(path) as collection:
        item_id = _id_of(collection, files[0])
        files[0].unlink()
        files[0].symlink_to(secret)
        with pytest.raises(McrxError, match="changed since it was indexed"):
            collection.open_indexed_file(item_id)
        # a folder on the way swapped for a link to another folder
        files[0].unlink()
        shutil.copyfile(files[1], files[0])
        other = tmp_path / "other"
        shutil.copytree(tmp_path / "files", other)
        shutil.rmtree(tmp_path / "files")
        (tmp_path / "files").symlink_to(other)
        with pytest.raises(McrxError, match="changed since it was indexed"):
            collection.open_indexed_file(item_id)


def test_open_indexed_file_refuses_changed_content_and_accepts_a_touch(small):
    path, files = small
    with Collection(path) as collection:
        item_id = _id_of(collection, files[2])
        stat = files[2].stat()
        os.utime(files[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        with collection.open_indexed_file(item_id) as handle:  # same bytes: the hash says so
            assert handle.read() == files[2].read_bytes()
        data = bytearray(files[2].read_bytes())
        data[-1] ^= 0xFF
        files[2].write_bytes(bytes(data))
        with pytest.raises(McrxError, match="changed since it was indexed"):
            collection.open_indexed_file(item_id)
        files[2].unlink()
        with pytest.raises(McrxError, match="not found"):
            collection.open_indexed_file(item_id)
