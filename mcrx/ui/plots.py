"""The pictures of report.md (matplotlib, Agg backend: no display needed), written as PNGs.

- ``recall.png``: R@1 per retrieval direction, each model (and the linear baseline) beside
  the chance level;
- ``losses.png``: the aligner's training loss per leaf;
- ``gap.png``: the modality gap, the mean cosine of matched against random pairs, per
  modality pair, in the source space (before) and in the unified space (after), each
  pair's centroid distance ‖mean(a) − mean(b)‖ (Liang et al. 2022) in its label;
- ``pca.png``: the unified space's first two principal components, coloured by modality;
- ``confusion-<set>-<modality>.png``: zero-shot confusion matrices (rows: true class).

Every writer takes plain dicts (the metrics document) and a path, and writes atomically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.store.atomic import atomic_path

DPI = 110
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    plt.close(figure)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "set"


def recall_chart(series: Sequence[tuple[str, dict[str, dict]]], path: Path,
                 metric: str = "R@1") -> Path:
    """Horizontal bars of ``metric`` per direction: one bar per series, chance as a tick."""
    plt = _pyplot()
    pairs = list(dict.fromkeys(p for _, retrieval in series for p in retrieval))
    height = 0.8 / max(1, len(series))
    figure, axis = plt.subplots(figsize=(7.5, 1.2 + 0.28 * len(pairs) * max(1, len(series))))
    y = np.arange(len(pairs))[::-1]  # first pair on top
    for i, (label, retrieval) in enumerate(series):
        values = [100 * retrieval.get(p, {}).get(metric, np.nan) for p in pairs]
        offset = (len(series) - 1) / 2 - i
        bars = axis.barh(y + offset * height, values, height * 0.95, label=label,
                         color=COLOURS[i % len(COLOURS)])
        axis.bar_label(bars, fmt="%.1f", padding=2, fontsize=7)
    chance = [100 * next((r[p][f"chance_{metric}"] for _, r in series
                          if p in r and f"chance_{metric}" in r[p]), np.nan) for p in pairs]
    axis.scatter(chance, y, marker="|", s=400, color="black", zorder=3, label="chance")
    axis.set_yticks(y, pairs, fontsize=8)
    axis.set_xlabel(f"{metric} (%)")
    axis.set_xlim(0, 108)
    axis.set_title(f"Retrieval in the unified space: {metric}")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / figure.get_figheight()),
                ncol=min(4, len(series) + 1), fontsize=8, frameon=False)
    axis.margins(y=0.01)
    axis.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def loss_chart(training: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """The aligner's loss curve per leaf (``losses``: [(step, loss), ...])."""
    curves = {leaf: report["losses"] for leaf, report in training.items() if report.get("losses")}
    if not curves:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.6))
    for i, (leaf, losses) in enumerate(curves.items()):
        steps, values = zip(*losses, strict=True)
        axis.plot(steps, values, label=leaf, color=COLOURS[i % len(COLOURS)], linewidth=1.5)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("Aligner loss per leaf")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def gap_chart(gap: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Matched vs random mean cosine per modality pair, before (source space) and after."""
    if not gap:
        return None
    plt = _pyplot()
    pairs = list(gap)
    figure, axis = plt.subplots(figsize=(7.5, 1.6 + 0.55 * len(pairs)))
    y = np.arange(len(pairs))[::-1]
    rows = [("after", "matched", 0.3, COLOURS[0]), ("after", "random", 0.1, "#9ecae1"),
            ("before", "matched", -0.1, COLOURS[1]), ("before", "random", -0.3, "#fdd0a2")]
    for when, kind, offset, colour in rows:
        values = [(gap[p].get(when) or {}).get(kind, np.nan) for p in pairs]
        label = f"{kind} pairs, {'unified space' if when == 'after' else 'source space'}"
        bars = axis.barh(y + offset, values, 0.19, color=colour, label=label)
        if kind == "matched":
            axis.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
    axis.axvline(0, color="black", linewidth=0.8)
    def centroids(pair: str) -> str:
        found = [f"{(gap[pair].get(when) or {}).get('centroid_distance'):.2f}"
                 for when in ("before", "after")
                 if (gap[pair].get(when) or {}).get("centroid_distance") is not None]
        return f"\ncentroid distance {' → '.join(found)}" if found else ""

    axis.set_yticks(y, [p.replace("~", " – ") + centroids(p) for p in pairs], fontsize=8)
    axis.set_xlabel("mean cosine similarity")
    axis.set_title(title or "Modality gap: matched vs random pairs")
    axis.legend(fontsize=7, loc="upper center", ncol=2, frameon=False,
                bbox_to_anchor=(0.5, -0.9 / figure.get_figheight()))
    axis.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def pca_chart(points: dict[str, np.ndarray], path: Path, title: str = "") -> Path | None:
    """2-D PCA scatter of unified-space rows, coloured by modality."""
    if not points:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for i, (modality, xy) in enumerate(points.items()):
        xy = np.asarray(xy)
        axis.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.55, label=modality,
                     color=COLOURS[i % len(COLOURS)])
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title(title or "Unified space, first two principal components")
    axis.legend(fontsize=8, markerscale=2)
    return _save(figure, path)


def confusion_chart(metrics: dict[str, Any], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: top-1 prediction)."""
    plt = _pyplot()
    confusion = np.asarray(metrics["confusion"], dtype=np.float64)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    classes = metrics.get("classes") or [str(c) for c in range(len(confusion))]
    size = min(9.0, 3.0 + 0.15 * len(classes))
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    fontsize = 8 if len(classes) <= 20 else 5
    axis.set_xticks(ticks, classes, rotation=90, fontsize=fontsize)
    axis.set_yticks(ticks, classes, fontsize=fontsize)
    axis.set_xlabel("predicted (top-1)")
    axis.set_ylabel("true class")
    axis.set_title(f"{title}: top-1 {100 * metrics['top1']:.1f} %")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the class")
    return _save(figure, path)


def write_figures(models: Sequence[tuple[str, dict[str, Any]]], folder: Path,
                  pca: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, str]:
    """Every picture of ``models`` (label, metrics document) into ``folder``; returns
    picture title → file name relative to the folder's parent (where report.md lies)."""
    written: dict[str, Path | None] = {}
    series = []
    for label, metrics in models:
        if metrics.get("retrieval"):
            series.append((label, metrics["retrieval"]))
        baseline = metrics.get("baselines", {}).get("linear", {}).get("retrieval")
        if baseline:
            series.append((f"linear baseline ({label})" if len(models) > 1 else
                           "linear baseline", baseline))
    if series:
        written["R@1 per direction"] = recall_chart(series, folder / "recall.png")
    several = len(models) > 1
    for label, metrics in models:
        tag = f" — {label}" if several else ""
        prefix = f"{slug(label)}-" if several else ""
        written[f"Training loss{tag}"] = loss_chart(metrics.get("training", {}),
                                                    folder / f"{prefix}losses.png")
        written[f"Modality gap{tag}"] = gap_chart(
            metrics.get("gap", {}), folder / f"{prefix}gap.png",
            title=f"Modality gap{tag}: matched vs random pairs\n(orange: inside the source "
            "space that holds both, where one does)")
        if pca and pca.get(label):
            written[f"PCA of the unified space{tag}"] = pca_chart(
                pca[label], folder / f"{prefix}pca.png",
                title=f"Unified space{tag}, first two principal components")
        for key, zs in metrics.get("zeroshot", {}).items():
            written[f"Zero-shot confusion, {key}{tag}"] = confusion_chart(
                zs, folder / f"{prefix}confusion-{slug(key)}.png", f"Zero-shot {key}{tag}")
    return {title: f"{folder.name}/{path.name}" for title, path in written.items() if path}
