"""The commands: mcrx embed, index, search (serve is tested through a real process in
test_search_api.py and test_serve_page.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from search_helpers import ITEMS, class_of
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def test_embed_writes_npy_and_ids(run, tmp_path, search_model, demo_files):
    folder = demo_files["files"] / "pointcloud" / "class-03"
    out = tmp_path / "clouds.npy"
    result = run("embed", search_model, "pointcloud", folder, "-o", out, "--no-progress")
    assert result.exit_code == 0, result.output
    ids = json.loads((tmp_path / "clouds.ids.json").read_text())
    vectors = np.load(out)
    assert ids == [str(p.resolve()) for p in sorted(folder.glob("*.npy"))]
    expected = mcrx.load(search_model).embed("pointcloud", ids).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert "wrote" in result.output


def test_embed_prints_ndjson(run, search_model, demo_files):
    file = sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0]
    result = run("embed", search_model, "audio", file, "--no-progress")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert line["id"] == str(file.resolve()) and line["modality"] == "audio"
    assert len(line["vector"]) == mcrx.load(search_model).dim
    assert np.linalg.norm(line["vector"]) == pytest.approx(1, abs=1e-5)


def test_embed_errors_are_one_clear_line(run, search_model):
    result = run("embed", search_model, "smell", "rose.npy", "--no-progress")
    assert result.exit_code == 1
    assert "has no 'smell'" in result.output and "Traceback" not in result.output
    result = run("embed", search_model, "audio", "missing.wav", "--no-progress")
    assert result.exit_code == 1 and "not found: missing.wav" in " ".join(result.output.split())


def test_index_then_search_table_json_and_paths(run, tmp_path, search_model, demo_files):
    collection = tmp_path / "c.mcrx"
    for modality in ("audio", "pointcloud"):
        result = run("index", search_model, collection, "--modality", modality,
                     demo_files["files"] / modality, "--no-progress")
        assert result.exit_code == 0, result.output
        assert f"{ITEMS} new" in result.output
    result = run("index", search_model, collection, "-m", "audio",
                 demo_files["files"] / "audio", "--json", "--no-progress")
    report = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert report["report"]["unchanged"] == ITEMS and report["report"]["embedded"] == 0
    assert report["collection"]["counts"] == {"audio": ITEMS, "pointcloud": ITEMS}

    query = sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0]
    result = run("search", collection, f"audio:{query}", "--in", "pointcloud", "-n", "5",
                 "--json")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 5 and {h["modality"] for h in hits} == {"pointcloud"}
    assert set(hits[0]) == {"id", "path", "modality", "score"}

    result = run("search", collection, "-m", "audio", query, "--paths", "-n", "3")
    paths = result.stdout.splitlines()
    assert len(paths) == 3 and all(p.endswith(".npy") for p in paths)

    result = run("search", collection, f"#{hits[0]['id']}", "-n", "2")
    assert result.exit_code == 0 and "score" in result.stdout and class_of(hits[0]["path"])

    # weighted arithmetic in shell words; a leading "-" after --
    result = run("search", collection, "--json", "-n", "1", "--", "-", f"#{hits[0]['id']}",
                 "+", f"2:#{hits[1]['id']}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] != hits[0]["id"]


def test_search_without_a_query_describes_the_collection(run, demo_collection):
    result = run("search", demo_collection)
    info = json.loads(result.stdout)
    assert info["items"] == 4 * ITEMS and info["indexes"]["audio"] == "flat"
    assert info["model"]["fingerprint"]


def test_index_refuses_another_model_and_names_both(run, tmp_path, search_model, demo_files):
    collection = tmp_path / "c.mcrx"
    folder = demo_files["files"] / "audio" / "class-01"
    assert run("index", search_model, collection, "-m", "audio", folder,
               "--no-progress").exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(search_model, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["name"] = "another"
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = run("index", other, collection, "-m", "audio", folder, "--no-progress")
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "is not the model collection" in said and "Traceback" not in said


@pytest.mark.parametrize("args, message", [
    (["search", "{tmp}/nothing", "x"], "is not a collection"),
    (["search", "{collection}", "{query}"], "cannot tell the modality"),
    (["search", "{collection}", "#1", "--in", "smell"], "no smell"),
    (["search", "{collection}", "a + + b"], "must stand between two terms"),
    (["index", "{model}", "{tmp}/new.mcrx", "{files}"], "name the modality with --modality"),
    (["index", "{model}", "{tmp}/new.mcrx", "-m", "smell", "{files}"], "not 'smell'"),
])
def test_user_errors_exit_1_with_a_message(run, tmp_path, demo_collection, search_model,
                                           demo_files, args, message):
    values = {"tmp": tmp_path, "collection": demo_collection, "model": search_model,
              "query": sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0],
              "files": demo_files["files"] / "audio"}
    result = run(*[a.format(**values) for a in args])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_help_teaches_with_examples(run):
    for command in ("embed", "index", "search", "serve"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Examples" in result.output
        assert f"mcrx {command} " in result.output
