"""Collections under hostile or concurrent use: files swapped, renamed or replaced after
indexing, damaged databases and meta rows, names no terminal should print raw, and two
processes creating one collection at once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.errors import McrxError
from mcrx.search import Collection
from mcrx.search.files import display_path


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


# -- two processes creating one collection -------------------------------------------------
_INDEXER = """
import json, sys
from mcrx.search import Collection
with Collection(sys.argv[1], model=sys.argv[2]) as c:
    report = c.index([sys.argv[3]], modality="pointcloud")
    print(json.dumps({"added": report.added, "reused": report.reused,
                      "unchanged": report.unchanged, "failed": report.failed}))
"""


def test_two_processes_creating_one_collection_report_what_is_stored(
        tmp_path, search_model, demo_files, cache_dir):
    """Both start before the collection exists; the lock taken before the database is
    created makes the second wait, then find every file indexed."""
    files = _files(demo_files, tmp_path / "files", count=40)
    path = tmp_path / "race.mcrx"
    env = {**os.environ, "MCRX_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", _INDEXER, str(path), str(search_model),
                              str(tmp_path / "files")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    with Collection(path) as collection:
        stored = len(collection)
    assert stored == len(files)
    assert sum(r["added"] for r in reports) == stored, reports  # each file added once
    assert all(not r["failed"] for r in reports)
    assert sorted(r["added"] + r["unchanged"] + r["reused"] for r in reports) == [40, 40]


# -- damaged databases and meta rows -------------------------------------------------------
def _scribble(database: Path) -> None:
    with open(database, "r+b") as handle:
        handle.write(b"\xde\xad\xbe\xef" * 32)


def _truncate(database: Path) -> None:
    with open(database, "r+b") as handle:
        handle.truncate(1000)


def _replace_with_text(database: Path) -> None:
    database.unlink()
    database.write_text("not a database at all\n")


@pytest.mark.parametrize("damage", [_scribble, _truncate, _replace_with_text])
def test_a_damaged_database_is_one_error_and_rebuild_recovers(small, search_model, damage):
    path, files = small
    damage(path / "items.sqlite")
    with pytest.raises(McrxError, match=r"items\.sqlite: the collection's database is "
                                        r"damaged.*mcrx index --rebuild") as caught:
        with Collection(path) as collection:
            collection.search_vector(np.ones(collection.dim), n=1)
    assert "\n" not in str(caught.value)
    result = CliRunner().invoke(app, ["search", str(path), "x"])
    assert result.exit_code == 1 and "damaged" in result.output
    assert not isinstance(result.exception, sqlite3.Error)
    result = CliRunner().invoke(app, ["index", str(search_model), str(path), "--rebuild",
                                      "-m", "pointcloud", "--no-progress",
                                      str(files[0].parent)])
    assert result.exit_code == 0, result.output
    assert (path / "items.sqlite.damaged").exists()
    with Collection(path) as collection:
        assert len(collection) == len(files)


def _meta(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path / "items.sqlite")
    db.execute(sql, args)
    db.commit()
    db.close()


@pytest.mark.parametrize("key,value", [
    ("model_path", None), ("model_path", ""),
    ("model_fingerprint", None), ("model_fingerprint", "not hex!"),
    ("dim", None), ("dim", "abc"), ("dim", "-3"), ("dim", str(1 << 40)),
    ("format_version", None), ("format_version", "x"),
    ("modalities", None), ("modalities", "{not json"), ("modalities", '{"a": 1}'),
    ("modalities", "[]"), ("ivf_threshold", "0"),
])
def test_a_missing_or_malformed_meta_row_is_one_error_naming_it(small, key, value):
    path, _ = small
    if value is None:
        _meta(path, "DELETE FROM meta WHERE key = ?", key)
    else:
        _meta(path, "UPDATE meta SET value = ? WHERE key = ?", value, key)
    with pytest.raises(McrxError, match=rf"items\.sqlite: .*meta row '{key}'") as caught:
        Collection(path)
    assert "\n" not in str(caught.value)


def test_a_newer_format_is_refused_by_name(small):
    path, _ = small
    _meta(path, "UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(McrxError, match="newer mcrx"):
        Collection(path)


def test_a_row_whose_vector_is_not_dim_floats_is_reported(small):
    path, files = small
    _meta(path, "UPDATE items SET vector = x'0102'")
    shutil.rmtree(path / "index")
    with Collection(path) as collection, pytest.raises(McrxError, match="damaged"):
        collection.search_vector(np.ones(collection.dim), n=1)


# -- file names ----------------------------------------------------------------------------
NAMES = {
    "non-UTF-8": os.fsdecode(b"caf\xe9-\xff.npy"),
    "newline": "two\nlines.npy",
    "ANSI": "\x1b[31mred\x1b[0m.npy",
}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_any_file_name_is_stored_losslessly_and_printed_escaped(
        tmp_path, search_model, demo_files, kind):
    name = NAMES[kind]
    files = _files(demo_files, tmp_path / "files", count=2)
    odd = tmp_path / "files" / name
    files[0].rename(odd)
    path = tmp_path / "names.mcrx"
    with Collection(path, model=search_model) as collection:
        report = collection.index([tmp_path / "files"], modality="pointcloud")
        assert report.added == 2 and not report.failed
        item = collection.item_by_path(odd.resolve())
        assert item is not None and item.path == str(odd.resolve())
        # a query term is one line (mcrx.search.query splits on whitespace): #id names it
        term = f"#{item.id}" if "\n" in name else f"pointcloud:{odd}"
        assert [hit.path for hit in collection.search(term, n=1)] == [item.path]
        with collection.open_indexed_file(item.id) as handle:
            assert handle.read() == odd.read_bytes()
        again = collection.index([tmp_path / "files"], modality="pointcloud")
        assert again.unchanged == 2 and again.added == again.dropped == 0
    result = CliRunner().invoke(app, ["search", str(path), f"#{item.id}", "-n", "2",
                                      "--paths"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "\x1b" not in result.stdout
    assert display_path(item.path) in lines
    table = CliRunner().invoke(app, ["search", str(path), f"#{item.id}", "-n", "2"])
    assert table.exit_code == 0 and "\x1b" not in table.stdout
    ndjson = CliRunner().invoke(app, ["search", str(path), f"#{item.id}", "--json"])
    assert item.path in [json.loads(line)["path"] for line in ndjson.stdout.splitlines()]


# -- what a path holds changes -------------------------------------------------------------
def test_a_file_replaced_by_a_folder_or_a_fifo_drops_its_row(small):
    path, files = small
    files[0].unlink()
    files[0].mkdir()
    files[1].unlink()
    os.mkfifo(files[1])  # must not block the walk or the hash
    with Collection(path) as collection:
        report = collection.index([files[2]], modality="pointcloud")
        assert report.dropped == 2
        assert collection.item_by_path(files[0].resolve()) is None
        assert collection.item_by_path(files[1].resolve()) is None
        assert len(collection) == len(files) - 2


def test_links_out_of_the_roots_are_skipped_unless_followed(tmp_path, search_model,
                                                             demo_files):
    files = _files(demo_files, tmp_path / "files", count=2)
    outside = _files(demo_files, tmp_path / "elsewhere", count=3)[2]
    (tmp_path / "files" / "link.npy").symlink_to(outside)
    path = tmp_path / "links.mcrx"
    with Collection(path, model=search_model) as collection:
        report = collection.index([tmp_path / "files"], modality="pointcloud")
        assert report.added == len(files)
        assert [p for p, _ in report.skipped] == [str(tmp_path / "files" / "link.npy")]
        assert collection.roots == [str((tmp_path / "files").resolve())]
        report = collection.index([tmp_path / "files"], modality="pointcloud",
                                  follow_links=True)
        assert report.added + report.reused == 1 and not report.skipped
        item = collection.item_by_path(outside.resolve())
        assert item is not None
        assert str(outside.resolve()) in collection.roots
        with collection.open_indexed_file(item.id) as handle:
            assert handle.read() == outside.read_bytes()


def test_open_indexed_file_refuses_a_row_outside_the_recorded_roots(small, tmp_path):
    path, files = small
    stray = tmp_path / "stray.npy"
    shutil.copyfile(files[0], stray)
    _meta(path, "UPDATE items SET path = ? WHERE path = ?", str(stray.resolve()),
          str(files[0].resolve()))
    with Collection(path) as collection:
        item = collection.item_by_path(stray.resolve())
        with pytest.raises(McrxError, match="outside the collection"):
            collection.open_indexed_file(item.id)


# -- queries -------------------------------------------------------------------------------
def test_search_with_a_vector(small):
    path, files = small
    with Collection(path) as collection:
        item = collection.item_by_path(files[1].resolve())
        vector = collection.vectors([item.id])[0]
        assert collection.search(vector * 3, n=1)[0].id == item.id  # normalised
        assert collection.search(vector[None], n=1)[0].id == item.id
        with pytest.raises(McrxError, match=rf"is {collection.dim} numbers"):
            collection.search(np.ones(collection.dim + 1))
        with pytest.raises(McrxError, match="NaN"):
            collection.search(np.full(collection.dim, np.nan))


def test_a_forged_npy_query_is_refused_before_allocating(small, tmp_path):
    path, _ = small
    forged = tmp_path / "forged.npy"
    with open(forged, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    with Collection(path) as collection, pytest.raises(McrxError, match="declares shape"):
        collection.search(f"pointcloud:{forged}")
    result = CliRunner().invoke(app, ["search", str(path), f"pointcloud:{forged}"])
    assert result.exit_code == 1 and "declares shape" in result.output


# -- model folders named to `mcrx index` ---------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]", "no-dim",
                                      f'{{"a": {_nested(100_000)}}}'])
def test_mcrx_index_validates_the_model_manifest(tmp_path, search_model, demo_files, manifest):
    model = tmp_path / "model"
    shutil.copytree(search_model, model)
    if manifest == "no-dim":
        data = json.loads((model / "manifest.json").read_text())
        del data["dim"]
        manifest = json.dumps(data)
    (model / "manifest.json").write_text(manifest)
    _files(demo_files, tmp_path / "files", count=1)
    result = CliRunner().invoke(app, ["index", str(model), str(tmp_path / "c.mcrx"), "-m",
                                      "pointcloud", "--no-progress", str(tmp_path / "files")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "manifest.json" in result.output.replace("\n", "")  # the console wraps lines


def test_rows_of_an_older_format_without_dev_and_inode_are_tolerated_then_filled(small):
    path, files = small
    db = sqlite3.connect(path / "items.sqlite")  # the table as written before dev/ino
    db.executescript("""
        CREATE TABLE old (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE,
            modality TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL, indexed_at REAL NOT NULL, vector BLOB NOT NULL);
        INSERT INTO old SELECT id, path, modality, size, mtime_ns, sha256, indexed_at, vector
            FROM items;
        DROP TABLE items;
        ALTER TABLE old RENAME TO items;
    """)
    db.close()
    with Collection(path) as collection:  # migrated on open: the columns are back, NULL
        item_id = _id_of(collection, files[0])
        with collection.open_indexed_file(item_id) as handle:  # size + mtime compared
            assert handle.read() == files[0].read_bytes()
        report = collection.index([files[0].parent], modality="pointcloud")
        assert report.unchanged == len(files) and report.touched == 0
    db = sqlite3.connect(path / "items.sqlite")
    assert db.execute("SELECT COUNT(*) FROM items WHERE dev IS NULL OR ino IS NULL"
                      ).fetchone() == (0,)
    db.close()


def test_a_scribbled_index_file_is_rebuilt_from_the_database(small):
    path, files = small
    for file in (path / "index").iterdir():
        file.write_bytes(b"garbage")
    with Collection(path) as collection:
        item = collection.item_by_path(files[3].resolve())
        assert collection.search(f"#{item.id}", n=1)[0].id == item.id


def test_mcrx_embed_refuses_a_forged_npy_and_prints_its_name_escaped(tmp_path, search_model):
    forged = tmp_path / "\x1b[31mforged.npy"
    with open(forged, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    result = CliRunner().invoke(app, ["embed", str(search_model), "pointcloud", str(forged),
                                      "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "declares shape" in result.output and "\x1b" not in result.output


def test_a_file_that_embeds_to_nan_is_failed_not_indexed(tmp_path, search_model, demo_files):
    files = _files(demo_files, tmp_path / "files", count=3)
    array = np.load(files[0])
    np.save(files[0], np.full_like(array, np.nan))
    with Collection(tmp_path / "nan.mcrx", model=search_model) as collection:
        report = collection.index([tmp_path / "files"], modality="pointcloud")
        assert report.added == 2 == len(collection)
        assert [(path, "NaN" in why) for path, why in report.failed] == [(str(files[0]), True)]


def test_mcrx_index_with_a_nan_model_is_one_error_naming_the_weights(
        tmp_path, search_model, demo_files):
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(search_model, model)
    weights_file = sorted((model / "connectors").glob("*.safetensors"))[0]
    weights = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
               for k, v in load_file(weights_file).items()}
    save_file(weights, weights_file)
    _files(demo_files, tmp_path / "files", count=1)
    result = CliRunner().invoke(app, ["index", str(model), str(tmp_path / "c.mcrx"), "-m",
                                      "pointcloud", "--no-progress", str(tmp_path / "files")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"{weights_file.name}: the weight" in result.output.replace("\n", "")
