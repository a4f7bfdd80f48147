"""The up-front check of evaluation sets shared by ``mcrx validate`` and ``mcrx evaluate``:
an evaluation file alone validates, and every mistake that would otherwise surface after
encoding (rows against labels, pairs of unequal length, a table given as text inputs,
labels naming no class) is found first, its message naming set, modality and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.plugin.manager import get_registry
from mcrx.recipe.check import evaluation_problems
from mcrx.recipe.schema import EvaluationSet


def write(tmp_path: Path, sets: list[dict], name: str = "eval.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"evaluation": sets}, sort_keys=False))
    return path


def problems(sets: list[dict]) -> dict[str, str]:
    parsed = [EvaluationSet.model_validate(s) for s in sets]
    found: dict[str, str] = {}
    for where, message in evaluation_problems(parsed, get_registry()):
        found[where] = f"{found[where]} | {message}" if where in found else message
    return found


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_a_standalone_evaluation_file_validates(tmp_path):
    np.save(tmp_path / "audio.npy", np.ones((4, 48), "f4"))
    (tmp_path / "audio.txt").write_text("dog\ncat\ndog\ncat\n")
    sets = [{"name": "toy", "dataset": "toy/world", "params": {"split": "eval", "count": 20},
             "modalities": ["audio", "image"], "ground_truth": "labels"},
            {"name": "files", "task": "zeroshot", "classes": ["dog", "cat"],
             "data": {"audio": {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")},
                                "labels": str(tmp_path / "audio.txt")}}}]
    code, output = validate(write(tmp_path, sets))
    assert code == 0, output
    assert "ok" in output and "evaluation file, 2 sets: toy, files" in output


def test_pairs_of_unequal_length_are_refused_before_encoding(tmp_path):
    """6 images against 1 text: named with both counts, both files and the set."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        (images / f"{i}.png").write_bytes(b"x")
    (tmp_path / "captions.txt").write_text("a dog\n")
    sets = [{"name": "mine", "data": {"image": {"inputs": str(images)},
                                      "text": {"inputs": str(tmp_path / "captions.txt")}}}]
    found = problems(sets)
    message = found["evaluation.0.data"]
    assert message.startswith("set 'mine': ") and "image 6, text 1" in message
    assert str(images) in message and "captions.txt" in message
    code, output = validate(write(tmp_path, sets))
    assert code == 1 and "image 6, text 1" in output and "Traceback" not in output


def test_labels_against_items_name_set_modality_and_file(tmp_path):
    (tmp_path / "captions.txt").write_text("".join(f"caption {i}\n" for i in range(15)))
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in range(16)))
    np.save(tmp_path / "audio.npy", np.ones((15, 48), "f4"))
    sets = [{"name": "clips", "ground_truth": "items", "data": {
        "audio": {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")}},
        "text": {"inputs": str(tmp_path / "captions.txt"),
                 "labels": str(tmp_path / "ids.txt")}}}]
    message = problems(sets)["evaluation.0.data.text.labels"]
    assert message.startswith("set 'clips': ") and "ids.txt holds 16 labels for 15 items" in (
        message) and "of text" in message and "captions.txt" in message


def test_a_dataset_is_counted_without_encoding(tmp_path):
    (tmp_path / "labels.txt").write_text("".join(f"{i % 3}\n" for i in range(12)))
    sets = [{"name": "toy", "ground_truth": "labels", "data": {
        "audio": {"dataset": "toy/world", "params": {"split": "eval", "count": 10},
                  "labels": str(tmp_path / "labels.txt")},
        "image": {"dataset": "toy/world", "params": {"split": "eval", "count": 10}}}}]
    message = problems(sets)["evaluation.0.data.audio.labels"]
    assert "holds 12 labels for 10 items of audio (dataset toy/world" in message


def test_a_table_as_text_inputs_points_to_its_dataset(tmp_path):
    (tmp_path / "test.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,a,0,x\n")
    (tmp_path / "karpathy.json").write_text("{}")
    np.save(tmp_path / "audio.npy", np.ones((1, 48), "f4"))
    for table, dataset in (("test.csv", "mcrx/audiocaps"), ("karpathy.json", "mcrx/coco")):
        sets = [{"name": "caps", "data": {
            "audio": {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")}},
            "text": {"inputs": str(tmp_path / table)}}}]
        message = problems(sets)["evaluation.0.data.text.inputs"]
        assert message.startswith("set 'caps': ") and table in message
        assert "single text item" in message and dataset in message and ".txt" in message
        code, output = validate(write(tmp_path, sets))
        assert code == 1 and dataset in output


def test_labels_must_name_the_classes(tmp_path):
    np.save(tmp_path / "audio.npy", np.ones((3, 48), "f4"))
    (tmp_path / "labels.txt").write_text("dog\ncat\nhorse\n")
    sets = [{"name": "zs", "task": "zeroshot", "classes": ["dog", "cat"], "data": {
        "audio": {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")},
                  "labels": str(tmp_path / "labels.txt")}}}]
    message = problems(sets)["evaluation.0.data.audio.labels"]
    assert "labels.txt" in message and "horse" in message and "set 'zs'" in message
    (tmp_path / "labels.txt").write_text("0\n1\n7\n")
    assert "outside 0..1" in problems(sets)["evaluation.0.data.audio.labels"]
    del sets[0]["data"]["audio"]["labels"]
    assert "a class label per item of audio" in problems(sets)["evaluation.0.data.audio.labels"]


def test_embeddings_of_an_unknown_or_wrong_space(tmp_path):
    np.save(tmp_path / "audio.npy", np.ones((3, 48), "f4"))
    np.save(tmp_path / "image.npy", np.ones((3, 64), "f4"))
    sets = [{"name": "s", "data": {
        "audio": {"embeddings": {"toy/nope": str(tmp_path / "audio.npy")}},
        "image": {"embeddings": {"toy/clap": str(tmp_path / "image.npy")}}}}]
    found = problems(sets)
    assert "unknown space 'toy/nope'" in found["evaluation.0.data.audio.embeddings.toy/nope"]
    assert "does not embed 'image'" in found["evaluation.0.data.image.embeddings.toy/clap"]
