"""report.md and the console tables say what needs attention: degenerate embeddings (a
marked row), one-sided ids or classes, queries without a match, what a model did not
cover ("—"); a table with no items is not printed as ``n = 0``; the gap names its
measures."""

from __future__ import annotations

from rich.console import Console

from mcrx.ui.report import (
    attention_lines,
    comparison_markdown,
    comparison_table,
    markdown,
    metrics_table,
)


def values(r1: float, n: int = 100, no_match: int = 0) -> dict:
    return {"R@1": r1, "R@5": r1, "R@10": r1, "mAP": r1, "chance_R@1": 0.01, "n": n,
            "queries_without_match": no_match}


def model(retrieval: dict, **extra) -> dict:
    return {"method": "ex-mcr", "base": "toy/clip", "retrieval": retrieval, "zeroshot": {},
            "gap": {}, "vocabulary": {}, "degenerate": {}, "not_covered": {}, **extra}


def render(table) -> str:
    console = Console(width=240, record=True)
    console.print(table)
    return " ".join(console.export_text().split())  # captions wrap


def test_side_by_side_marks_degenerate_rows_and_what_a_model_does_not_cover():
    full = model({"s/audio->pointcloud": values(0.5), "s/audio->image": values(0.4, 80, 3)},
                 vocabulary={"s": {"kind": "items", "size": 9, "unmatched": {"audio": 2},
                                   "unmatched_examples": {"audio": ["Y1", "Y2"]}}})
    collapsed = model({"s/audio->image": values(0.01, 80, 3)},
                      degenerate={"s": {"audio": {"rows": 80, "mean_cosine": 0.999,
                                                  "max_std": 1e-5, "reason": "all alike"}}},
                      not_covered={"s": {"modalities": ["pointcloud"],
                                         "reason": "the model embeds no pointcloud"}})
    models = [("run", full), ("cmcr", collapsed)]
    report = comparison_markdown(models, {}, "eval")
    pointcloud = next(line for line in report.splitlines() if "audio->pointcloud" in line)
    assert "50.0" in pointcloud and pointcloud.count("—") >= 4  # cmcr's four cells
    flagged = next(line for line in report.splitlines() if line.startswith("| s/audio->image"))
    assert "⚠ degenerate cmcr: audio" in flagged and "| 3 |" in flagged  # no match
    assert "## Needs attention" in report
    assert "cmcr: set 's', audio: degenerate embeddings (all alike)" in report
    assert "run: set 's': 2 ids of audio appear in no other modality ('Y1', 'Y2')" in report
    assert "cmcr: set 's': not scored for pointcloud: the model embeds no pointcloud" in report
    lines = attention_lines(models)
    assert any("3 queries without a relevant item" in line for line in lines)
    assert "⚠ degenerate" in render(comparison_table(models))


def test_an_empty_table_says_no_items_and_n_lists_every_size():
    empty = model({})
    text = render(metrics_table(empty))
    assert "n = 0" not in text and "no items" in text
    assert "No retrieval set: no items scored." in markdown(empty)
    two = model({"a->b": values(0.5, 100), "b->a": values(0.5, 40, 2)})
    text = render(metrics_table(two))
    assert "n = 40/100" in text and "2 queries without a match" in text


def test_the_gap_section_names_both_measures():
    gap = {"audio~text": {"after": {"matched": 0.6, "random": 0.1, "gap": 0.5,
                                    "centroid_distance": 0.25},
                          "before": {"matched": 0.4, "random": 0.2, "gap": 0.2,
                                     "centroid_distance": 0.8, "space": "toy/clap"}}}
    report = markdown(model({"audio->text": values(0.5)}, gap=gap))
    assert "matched / random cosine" in report and "centroid distance" in report
    assert "Mind the Gap" in report
    row = next(line for line in report.splitlines() if line.startswith("| audio – text"))
    assert "0.800" in row and "0.250" in row
