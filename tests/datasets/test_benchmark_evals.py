"""The shipped evaluation files (evals/*.yaml): each parses as `mcrx evaluate` reads it, names
registered datasets with valid params, and, pointed at a stand-in layout with the documented
`--set evaluation.0.params.root=...`, builds datasets whose items and ids line up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcrx.cli.evaluate import read_evaluation_sets
from mcrx.errors import RecipeError

EVALS = Path(__file__).resolve().parents[2] / "evals"
SHIPPED = {  # file → (stand-in layout, task, ground truth)
    "esc50.yaml": ("esc50", "zeroshot", None),
    "audiocaps.yaml": ("audiocaps", "retrieval", "items"),
    "clotho.yaml": ("clotho", "retrieval", "items"),
    "coco.yaml": ("coco", "retrieval", "items"),
    "flickr30k.yaml": ("flickr30k", "retrieval", "items"),
    "modelnet40.yaml": ("modelnet40", "zeroshot", None),
    "objaverse_lvis.yaml": ("objaverse_lvis", "zeroshot", None),
}


def read_sets(path: Path, overrides: list[str] | None = None):
    """The sets, or an xfail while zero-shot sets may not yet leave ``classes:`` to the
    dataset (its ``classes()``): the schema change lands with the evaluate wiring."""
    try:
        return read_evaluation_sets(path, overrides)
    except RecipeError as exc:
        if "needs 'classes'" in str(exc):
            pytest.xfail(f"{path.name}: zero-shot classes from the dataset not wired yet")
        raise


def test_every_shipped_file_is_listed():
    assert sorted(p.name for p in EVALS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_file_parses_and_resolves(name, registry):
    path = EVALS / name
    header = path.read_text().split("evaluation:")[0]
    assert "mcrx evaluate" in header and "params.root=" in header  # says how to run it
    _, task, ground_truth = SHIPPED[name]
    sets = read_sets(path)
    assert len(sets) == 1
    evaluation = sets[0]
    assert evaluation.task == task
    if ground_truth:
        assert evaluation.ground_truth == ground_truth
    for modality, source in evaluation.data.items():
        spec = registry.dataset(source.dataset)
        assert modality in spec.modalities
        params = spec.validate_params(source.params)
        assert str(params.root).startswith("data/eval/")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_file_on_a_stand_in_layout(name, registry, layout):
    stand_in, task, _ = SHIPPED[name]
    root = layout(stand_in)
    sets = read_sets(EVALS / name, [f"evaluation.0.params.root={root}"])
    evaluation = sets[0]
    built = {m: registry.dataset(s.dataset).build(params=s.params)
             for m, s in evaluation.data.items()}
    for modality, dataset in built.items():
        items = dataset.items(modality)
        assert len(items) > 0
        assert len(dataset.item_ids(modality)) == len(items)
        if task == "zeroshot":
            labels = dataset.labels(modality)
            assert len(labels) == len(items)
            assert int(labels.max()) < len(dataset.classes())
    if task == "retrieval":
        (a, da), (b, db) = built.items()
        clips = len(da.items(a)) if a != "text" else len(db.items(b))
        text = db if b == "text" else da
        assert set(text.item_ids("text").tolist()) == set(range(clips))


def test_templates_and_classes_are_the_papers(registry):
    esc50 = read_sets(EVALS / "esc50.yaml")[0]
    assert esc50.templates == "clap_esc50"
    modelnet = read_sets(EVALS / "modelnet40.yaml")[0]
    assert (modelnet.templates, modelnet.classes) == ("modelnet40_64", "modelnet40")
