"""The evaluation-set fields behind the vocabulary and conventions: a zero-shot set may take
its classes from its dataset, ``unmatched_queries`` is skip or miss, labels are read raw."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mcrx.plugin.interfaces import Dataset
from mcrx.recipe.schema import EvaluationSet
from mcrx.store.inputs import read_labels


def test_a_zeroshot_set_with_a_dataset_needs_no_classes():
    EvaluationSet(name="z", task="zeroshot", dataset="toy/world", modalities=["audio"])
    with pytest.raises(ValidationError, match="'classes'"):
        EvaluationSet(name="z", task="zeroshot", data={"audio": {"inputs": "a/"}})


def test_unmatched_queries_is_skip_or_miss():
    data = {"audio": {"inputs": "a/"}, "text": {"inputs": "t.txt"}}
    assert EvaluationSet(name="r", data=data).unmatched_queries == "skip"
    assert EvaluationSet(name="r", data=data, unmatched_queries="miss").unmatched_queries == "miss"
    with pytest.raises(ValidationError):
        EvaluationSet(name="r", data=data, unmatched_queries="ignore")


def test_labels_are_read_as_written(tmp_path):
    (tmp_path / "ids.txt").write_text("10\n2\n\n Yab \n")
    assert read_labels(tmp_path / "ids.txt").tolist() == ["10", "2", "Yab"]
    np.save(tmp_path / "ids.npy", np.array([3, 1]))
    assert read_labels(tmp_path / "ids.npy").tolist() == [3, 1]


def test_dataset_classes_and_item_ids_default_to_none():
    class Plain(Dataset):
        modalities = ("audio",)

        def items(self, modality):
            return [1, 2]

        def fingerprint(self):
            return "plain"

    assert Plain().classes() is None and Plain().item_ids("audio") is None
