"""report.md and its pictures from metrics computed by the real metric functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcrx.metrics.retrieval import cross_modal_retrieval
from mcrx.metrics.zeroshot import class_prototypes, zeroshot_metrics
from mcrx.stages.evaluate_model import modality_gap, pca_2d
from mcrx.ui.plots import write_figures
from mcrx.ui.report import comparison_markdown, markdown

PNG = b"\x89PNG\r\n\x1a\n"


def metrics_document(seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (60,), generator=g)
    centres = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    rows = {m: F.normalize(centres[labels] + 0.6 * torch.randn(60, 16, generator=g), dim=-1)
            for m in ("audio", "image", "text")}
    retrieval = cross_modal_retrieval(rows, "pairs")
    zeroshot = zeroshot_metrics(rows["audio"], labels.numpy(),
                                class_prototypes(centres, [0, 1, 2, 3, 4], 5), list("abcde"))
    gap = {pair: {"after": values, "before": None}
           for pair, values in modality_gap(rows, {}, "pairs").items()}
    metrics = {
        "method": "ex-mcr", "recipe": "unit", "retrieval": retrieval,
        "zeroshot": {"set/audio": zeroshot}, "gap": gap,
        "baselines": {"linear": {"retrieval": cross_modal_retrieval(
            {m: r.roll(1, 0) for m, r in rows.items()}, "pairs")}},
        "training": {"leaf/a": {"steps": 30, "seconds": 1.0, "final_loss": 2.0,
                                "resumed_from": 0,
                                "losses": [[10, 3.0], [20, 2.5], [30, 2.0]]}},
        "timings": {"encode": 1.5, "score": 0.2},
    }
    return metrics, pca_2d(rows)


def test_one_run_report_embeds_every_picture(tmp_path):
    metrics, pca = metrics_document(0)
    metrics["figures"] = write_figures([("ex-mcr", metrics)], tmp_path / "figures",
                                       pca={"ex-mcr": pca})
    assert set(metrics["figures"]) == {
        "R@1 per direction", "Training loss", "Modality gap", "PCA of the unified space",
        "Zero-shot confusion, set/audio"}
    for file in metrics["figures"].values():
        assert (tmp_path / file).read_bytes()[:8] == PNG
    text = markdown(metrics)
    for title, file in metrics["figures"].items():
        assert f"![{title}]({file})" in text
    assert "## Zero-shot classification" in text and "| set/audio |" in text
    assert "## Time per stage" in text and "| encode | 1.5 |" in text
    zs = metrics["zeroshot"]["set/audio"]
    assert f"{100 * zs['top1']:.1f}" in text


def test_models_side_by_side(tmp_path):
    (a, pca_a), (b, pca_b) = metrics_document(1), metrics_document(2)
    models = [("mine", a), ("official", b)]
    figures = write_figures(models, tmp_path / "figures", pca={"mine": pca_a, "official": pca_b})
    assert "Zero-shot confusion, set/audio — official" in figures
    assert (tmp_path / figures["Modality gap — mine"]).read_bytes()[:8] == PNG
    text = comparison_markdown(models, figures, title="cmp")
    assert "| query→gallery | mine R@1 | R@5 | R@10 | mAP | official R@1 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| audio->image |"))
    assert f"{100 * a['retrieval']['audio->image']['R@1']:.1f}" in row
    assert f"{100 * b['retrieval']['audio->image']['R@1']:.1f}" in row
