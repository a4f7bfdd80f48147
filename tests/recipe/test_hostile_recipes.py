"""Hostile and careless recipes (issue 7): each is refused by ``validate`` with its location
and a message that says what was expected, never a traceback and never accepted silently."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe, parse_recipe
from mcrx.recipe.check import check_recipe, writable_folder_problem
from mcrx.recipe.load import MAX_BYTES, MAX_DEPTH, apply_overrides, read_recipe_yaml

DEMO = Path(__file__).parents[2] / "recipes" / "demo.yaml"


def demo_raw(tmp_path: Path | None = None) -> dict:
    raw = yaml.safe_load(DEMO.read_text())
    if tmp_path is not None:
        raw["output"] = str(tmp_path / "out")
    return raw


def errors_of(raw: dict) -> dict[str, str]:
    try:
        recipe = parse_recipe(raw)
    except RecipeError as exc:
        return dict(exc.errors)
    return dict(check_recipe(recipe, get_registry(), check_files=True))


def recipe_error(path: Path) -> str:
    with pytest.raises(RecipeError) as caught:
        read_recipe_yaml(path)
    ((location, message),) = caught.value.errors
    assert location == ""
    return message


# -- --set ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("training.epochs=[", "--set 'training.epochs': the value '[': not valid YAML (line 1"),
    ("seed=*a", "found undefined alias 'a'"),
    ("seed=!!python/object/apply:os.system ['true']",
     "the tag '!!python/object/apply:os.system' is not allowed in a recipe"),
    ("seed=!!binary aGk=", "the tag '!!binary' is not allowed"),
    ("seed=" + "[" * 50_000, f"nested more than {MAX_DEPTH} levels deep"),
    ("seed=" + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested more than"),
    ("seed=\udcff", "--set 'seed': the value is not valid UTF-8 text"),
    ("se\udcffed=1", "the key is not valid UTF-8 text"),
    ("=1", "--set expects key=value"),
    ("seed=1" + "0" * 5000, "a number too long to read"),
    ("leaves.²=1", "leaves has no item ²"),
    ("name.x=1", "name is not a mapping"),
    ("method=ex-mcr\u001b[31m", "special characters are not allowed"),
])
def test_bad_set_values_name_the_option(override, expected):
    with pytest.raises(McrxError) as caught:
        apply_overrides(demo_raw(), [override])
    assert expected in str(caught.value)


def test_set_dates_stay_strings():
    raw = apply_overrides(demo_raw(), ["description=2024-01-01"])
    assert parse_recipe(raw).description == "2024-01-01"


# -- recipe files --------------------------------------------------------------------------
def test_files_that_are_not_utf8(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: café\n".encode("latin-1"))
    assert recipe_error(latin).startswith("not UTF-8 text: byte 9 (line 1)")
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("name: x\n", encoding="utf-16")
    assert "it looks like UTF-16" in recipe_error(utf16)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + DEMO.read_bytes())
    assert read_recipe_yaml(bom)["name"] == "demo"


def test_deep_and_exploding_documents(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "\n")
    assert "nested more than" in recipe_error(deep)
    block = tmp_path / "block.yaml"  # block style, deep but within the parser's stack
    block.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(60)) + "  " * 60 + "v\n")
    assert "nested more than" in recipe_error(block)
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(laughs) + "\n")
    assert "expands to more than" in recipe_error(bomb)


def test_duplicate_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(DEMO.read_text() + "\ntraining: {epochs: 2}\n")
    message = recipe_error(path)
    assert "found the key 'training' twice (first on line" in message
    assert "(line" in message  # where the second one is
    merged = tmp_path / "merge.yaml"  # merge keys are not duplicates
    merged.write_text("base: &b {space: toy/clip}\nother: {<<: *b, params: {}}\n")
    assert read_recipe_yaml(merged)["other"]["space"] == "toy/clip"


def test_what_is_not_a_recipe_file(tmp_path):
    with pytest.raises(McrxError, match="is a folder"):
        load_recipe(tmp_path)
    with pytest.raises(McrxError, match="not a regular file"):
        load_recipe("/dev/zero")  # would never end
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(McrxError, match="a recipe is at most"):
        load_recipe(huge)


# -- schema bounds -------------------------------------------------------------------------
@pytest.mark.parametrize("override, location, expected", [
    ("seed=1180591620717411303424", "seed", "less than or equal to 4294967295"),
    ("seed=-1", "seed", "greater than or equal to 0"),
    ("training.epochs=1" + "0" * 400, "training.epochs", "less than or equal to 100000"),
    ("training.lr=.inf", "training.lr", "finite number"),
    ("training.lr=.nan", "training.lr", "finite number"),
    ("training.noise_variance=.inf", "training.noise_variance", "finite number"),
    ("training.noise_variance=3", "training.noise_variance", "less than or equal to 1"),
    ("training.temperature=1e-300", "training.temperature", "greater than or equal to 0.0001"),
    ("training.cmcr_temperature=1e300", "training.cmcr_temperature", "less than or equal"),
    ("retrieval.temperature=-.inf", "retrieval.temperature", "finite number"),
    ("training.batch_size=1000000000", "training.batch_size", "less than or equal to 131072"),
    ("retrieval.k=1000000000000", "retrieval.k", "less than or equal to 1048576"),
    ("retrieval.query_block=1048576", "retrieval", "similarities per tile"),
    ("memories.text.limit=1" + "0" * 30, "memories.text.limit", "less than or equal"),
    ("name=../../escaped", "name", "no '/' or '..'"),
    ("name=.hidden", "name", "starting with a letter or digit"),
    ("output=''", "output", "an empty output folder"),
    ("leaves.0.space=toy/[/x]", "leaves.0.space", "is not a component name"),
    ('method="ex-mcr\\e[31m"', "method", "is not a component name"),
])
def test_values_extend_cannot_run_are_refused(override, location, expected):
    errors = errors_of(apply_overrides(demo_raw(), [override]))
    assert location in errors, errors
    assert expected in errors[location]


def test_papers_values_are_within_the_bounds():
    recipe = parse_recipe(demo_raw())
    assert recipe.training.temperature == 0.05 and recipe.retrieval.temperature == 0.01


def test_toy_dataset_counts_are_bounded():
    raw = apply_overrides(demo_raw(), ["memories.text.params.count=1000000000000"])
    assert "less than or equal" in errors_of(raw)["memories.text.params.count"]


# -- where a run writes --------------------------------------------------------------------
def test_output_locations_are_checked_up_front(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("mine")
    cases = {str(tmp_path / "a-file"): "is a file, not a folder",
             str(tmp_path / "a-file" / "sub"): "cannot be created: ",
             "/proc/mcrx-out": "kernel's /proc filesystem",
             "/sys/kernel/x": "kernel's /sys filesystem"}
    for output, expected in cases.items():
        errors = errors_of({**demo_raw(), "output": output})
        assert expected in errors["output"], errors
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "symbolic link to nothing" in writable_folder_problem(tmp_path / "dangling" / "x")
    assert writable_folder_problem(tmp_path / "new" / "deeper") is None
    monkeypatch.setenv("MCRX_CACHE_DIR", str(tmp_path / "a-file"))
    assert "is a file" in errors_of(demo_raw(tmp_path))["MCRX_CACHE_DIR"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "not writable" in errors_of({**demo_raw(), "output": str(locked / "out")})["output"]


def test_default_output_is_checked_under_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    raw = demo_raw()
    del raw["output"]
    assert "runs is a file" in errors_of(raw)["name"]


# -- evaluation sets -----------------------------------------------------------------------
def embeddings_set(tmp_path: Path, rows: dict[str, int], **extra) -> dict:
    """An evaluation set of precomputed audio (toy/clap) and pointcloud (toy/ulip) rows."""
    dims = {"audio": ("toy/clap", 48), "pointcloud": ("toy/ulip", 56)}
    data = {}
    for modality, count in rows.items():
        space, dim = dims[modality]
        path = tmp_path / f"{modality}.npy"
        np.save(path, np.random.default_rng(0).standard_normal((count, dim)).astype("f4"))
        data[modality] = {"embeddings": {space: str(path)}}
    return {"name": "files", "data": data, **extra}


def eval_errors(tmp_path: Path, evaluation: dict) -> dict[str, str]:
    return errors_of({**demo_raw(tmp_path), "evaluation": [evaluation]})


def test_a_consistent_file_set_passes(tmp_path):
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5}, ground_truth="labels")
    np.save(tmp_path / "labels.npy", np.arange(5) % 2)
    (tmp_path / "labels.txt").write_text("dog\ncat\ndog\ncat\nbird\n")
    evaluation["data"]["audio"]["labels"] = str(tmp_path / "labels.npy")
    evaluation["data"]["pointcloud"]["labels"] = str(tmp_path / "labels.txt")
    assert eval_errors(tmp_path, evaluation) == {}


def test_pairs_need_the_same_rows_everywhere(tmp_path):
    errors = eval_errors(tmp_path, embeddings_set(tmp_path, {"audio": 5, "pointcloud": 4}))
    assert "differ in length: audio 5, pointcloud 4 (audio: " in errors["evaluation.0.data"]
    limited = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 4})
    limited["data"]["audio"]["limit"] = 4  # the first 4 rows of each: consistent
    assert eval_errors(tmp_path, limited) == {}


@pytest.mark.parametrize("labels, expected", [
    (np.arange(4), "holds 4 labels for 5 items"),
    (np.zeros((5, 2), dtype=int), "expected one label per item, shape (N,), got shape (5, 2)"),
    (np.array([0, 1, np.nan, 1, 0]), "row 2 is nan"),
    (np.array([0, 1, 0.5, 1, 0]), "row 2 is 0.5"),
    (np.array([{"a": 1}] * 5, dtype=object), "not a plain numeric .npy array"),
])
def test_labels_are_checked(tmp_path, labels, expected):
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5}, ground_truth="labels")
    np.save(tmp_path / "labels.npy", labels, allow_pickle=True)
    evaluation["data"]["audio"]["labels"] = str(tmp_path / "labels.npy")
    errors = eval_errors(tmp_path, evaluation)
    assert expected in errors["evaluation.0.data.audio.labels"], errors


def test_missing_labels_and_wrong_kinds_of_file(tmp_path):
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5}, ground_truth="labels")
    (tmp_path / "labels-dir.npy").mkdir()
    evaluation["data"]["audio"]["labels"] = str(tmp_path / "labels-dir.npy")
    errors = eval_errors(tmp_path, evaluation)
    assert "is a folder; expected a .npy or .txt file" in errors["evaluation.0.data.audio.labels"]
    assert "ground_truth: labels needs a class label per item" in (
        errors["evaluation.0.data.pointcloud.labels"])
    evaluation["data"]["audio"]["labels"] = str(tmp_path / "audio.npy")
    evaluation["data"]["audio"]["embeddings"]["toy/clap"] = str(tmp_path / "labels-dir.npy")
    errors = eval_errors(tmp_path, evaluation)
    assert "is a folder" in errors["evaluation.0.data.audio.embeddings.toy/clap"]
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5})
    evaluation["data"]["audio"]["labels"] = str(tmp_path / "bad.txt")
    assert "not UTF-8 text" in eval_errors(tmp_path, evaluation)[
        "evaluation.0.data.audio.labels"]


def test_empty_sets_and_bad_embedding_files(tmp_path):
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5})
    (tmp_path / "empty.txt").write_text("\n  \n")
    evaluation["data"]["audio"] = {"inputs": str(tmp_path / "empty.txt")}
    errors = eval_errors(tmp_path, evaluation)  # the reader or the check refuses it
    ((location, message),) = errors.items()
    assert location.startswith("evaluation.0.data.audio") and "empty" in message, errors
    evaluation = embeddings_set(tmp_path, {"audio": 5, "pointcloud": 5})
    np.save(tmp_path / "audio.npy", np.zeros((5, 7), dtype="f4"))
    errors = eval_errors(tmp_path, evaluation)
    assert "rows are 7-d but the space is 48-d" in (
        errors["evaluation.0.data.audio.embeddings.toy/clap"])


def test_two_sets_with_one_name(tmp_path):
    raw = demo_raw(tmp_path)
    raw["evaluation"] = [raw["evaluation"][0], dict(raw["evaluation"][0])]
    assert "given twice: ['heldout']" in errors_of(raw)["evaluation"]
