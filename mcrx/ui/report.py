"""The metrics as rich tables on the terminal and as report.md (with the PNGs of
:mod:`mcrx.ui.plots` embedded), for one run or several models side by side.

What needs attention is said in both places (:func:`attention_lines`): degenerate
embeddings (a ⚠ on their rows), ids or classes one modality has and another lacks
(``vocabulary``), queries without a relevant item (a *no match* column), sets or
modalities a model does not cover ("—", and why). A table with no items is left out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from mcrx.store.atomic import write_text_atomic

COLUMNS = ("R@1", "R@5", "R@10", "mAP")


def _native(metrics: dict[str, Any], pair: str) -> tuple[str, dict] | None:
    for space, block in metrics.get("spaces", {}).items():
        if pair in block.get("retrieval", {}):
            return space, block["retrieval"][pair]
    return None


def _map(values: dict[str, Any]) -> float | None:
    """mAP, or mAP@10 for item-id ground truth (WavCaps's figure)."""
    return values.get("mAP", values.get("mAP@10"))


def rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per retrieval direction with the unified, chance, baseline and native R@1."""
    baseline = metrics.get("baselines", {}).get("linear", {}).get("retrieval", {})
    out = []
    for pair, values in metrics.get("retrieval", {}).items():
        native = _native(metrics, pair)
        out.append({
            "pair": pair,
            **{column: values.get(column) for column in COLUMNS[:3]},
            "mAP": _map(values),
            "chance_R@1": values["chance_R@1"],
            "linear_R@1": baseline.get(pair, {}).get("R@1"),
            "native_R@1": native[1]["R@1"] if native else None,
            "native_space": native[0] if native else None,
            "median_rank": values.get("median_rank"),
            "n": values["n"],
            "no_match": values.get("queries_without_match"),
            "degenerate": degenerate_in(metrics, pair),
        })
    return out


def _pair_set(metrics: dict[str, Any], key: str) -> tuple[list[str], str]:
    """The sets a retrieval key can belong to, and the "a->b" part: "set/a->b" names its
    set; a bare "a->b" belongs to the one retrieval set (any set not zero-shot)."""
    if "/" in key:
        name, pair = key.split("/", 1)
        return [name], pair
    zeroshot = {k.split("/", 1)[0] for k in metrics.get("zeroshot", {})}
    return [n for n in metrics.get("degenerate", {}) if n not in zeroshot], key


def degenerate_in(metrics: dict[str, Any], key: str) -> list[str]:
    """The modalities of a retrieval (or zero-shot "set/modality") key whose embeddings
    were flagged degenerate in ``metrics["degenerate"]``."""
    flagged = metrics.get("degenerate", {})
    names, pair = _pair_set(metrics, key)
    modalities = pair.split("->") if "->" in pair else [pair]
    return [m for n in names for m in modalities if m in flagged.get(n, {})]


def attention_lines(models: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """What a reader must not miss, one line each: degenerate embeddings, one-sided ids or
    classes, queries without a match, sets or modalities a model did not cover."""
    lines = []
    several = len(models) > 1
    for label, metrics in models:
        who = f"{label}: " if several else ""
        for name, per_modality in metrics.get("degenerate", {}).items():
            for modality, values in per_modality.items():
                lines.append(f"{who}set {name!r}, {modality}: degenerate embeddings "
                             f"({values['reason']})")
        for name, report in metrics.get("vocabulary", {}).items():
            noun = "ids" if report.get("kind") == "items" else "classes"
            for modality, count in report.get("unmatched", {}).items():
                if count:
                    examples = ", ".join(repr(x) for x in
                                         report.get("unmatched_examples", {}).get(modality, []))
                    lines.append(f"{who}set {name!r}: {count:,} {noun} of {modality} appear in "
                                 f"no other modality ({examples}{', …' if count > 5 else ''})")
        for key, values in metrics.get("retrieval", {}).items():
            if values.get("queries_without_match"):
                lines.append(f"{who}{key}: {values['queries_without_match']:,} queries "
                             "without a relevant item in the gallery")
        for name, values in metrics.get("not_covered", {}).items():
            lines.append(f"{who}set {name!r}: not scored for {', '.join(values['modalities'])}"
                         f": {values['reason']}")
    return lines


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _mark(pair: str, degenerate: list[str]) -> str:
    return f"{pair} ⚠ degenerate {', '.join(degenerate)}" if degenerate else pair


def metrics_table(metrics: dict[str, Any]) -> Table:
    table = Table(
        title=f"{metrics.get('recipe', '')} · {metrics['method']} · retrieval in the unified "
        "space (%)",
        caption="chance: random ranking · linear: closed-form map fitted on the bridge · "
        "native: the source space's own figure",
    )
    table.add_column("query→gallery", no_wrap=True)
    for column in COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("chance", justify="right", style="dim", no_wrap=True)
    table.add_column("linear", justify="right", style="yellow", no_wrap=True)
    table.add_column("native", justify="right", style="cyan", no_wrap=True)
    body = rows(metrics)
    for row in body:
        table.add_row(_mark(row["pair"], row["degenerate"]), *(_fmt(row[c]) for c in COLUMNS),
                      _fmt(row["chance_R@1"]), _fmt(row["linear_R@1"]),
                      _fmt(row["native_R@1"]))
    if body:
        sizes = sorted({row["n"] for row in body})
        table.caption += " (R@1; n = " + "/".join(f"{n:,}" for n in sizes) + ")"
        without = sum(row["no_match"] or 0 for row in body)
        if without:
            table.caption += f" · {without:,} queries without a match"
    else:
        table.caption = "no items: no retrieval set was scored"
    return table


def _side_by_side(models: Sequence[tuple[str, dict[str, Any]]], block: str, title: str,
                  first: str, keys: tuple[str, ...], names: tuple[str, ...],
                  chance_key: str) -> Table | None:
    """One row per entry of ``metrics[block]``, the ``keys`` columns of every model."""
    entries = list(dict.fromkeys(k for _, m in models for k in m.get(block, {})))
    if not entries:
        return None
    table = Table(title=title)
    table.add_column(first, no_wrap=True)
    for label, _ in models:
        for i, name in enumerate(names):
            table.add_column(f"{label} {name}" if i == 0 else name, justify="right",
                             no_wrap=True)
    table.add_column("chance", justify="right", style="dim", no_wrap=True)
    for entry in entries:
        cells, chance, flagged = [], None, []
        for label, metrics in models:
            values = metrics.get(block, {}).get(entry) or {}
            cells += [_fmt(values.get(k)) for k in keys] if values else ["—"] * len(keys)
            chance = chance or values.get(chance_key)
            flagged += [f"{label}: {m}" for m in degenerate_in(metrics, entry)]
        table.add_row(_mark(entry, flagged), *cells, _fmt(chance))
    return table


def zeroshot_table(models: Sequence[tuple[str, dict[str, Any]]]) -> Table | None:
    """Zero-shot top-1/top-5 per set and modality, one column pair per model."""
    return _side_by_side(models, "zeroshot", "zero-shot classification against text "
                         "prompts (%)", "set/items", ("top1", "top5"), ("top-1", "top-5"),
                         "chance_top1")


def comparison_table(models: Sequence[tuple[str, dict[str, Any]]]) -> Table | None:
    """R@1 and R@5 per retrieval direction, one column pair per model, chance R@1 beside."""
    return _side_by_side(models, "retrieval", "retrieval in each unified space (%): models "
                         "side by side", "query→gallery", ("R@1", "R@5"), ("R@1", "R@5"),
                         "chance_R@1")


# ---------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------
def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _section(title: str, intro: str, table: list[str]) -> list[str]:
    return ["", f"## {title}", "", *([intro, ""] if intro else []), *table]


def _zeroshot_md(models: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    keys = list(dict.fromkeys(k for _, m in models for k in m.get("zeroshot", {})))
    if not keys:
        return []
    header = ["set/items"]
    for label, _ in models:
        header += [f"{label} top-1", "top-3", "top-5", "mean per class", "native top-1"]
    body = []
    for key in keys:
        row, chance, flagged = [key], None, []
        for label, metrics in models:
            zs = metrics.get("zeroshot", {}).get(key) or {}
            row += [_fmt(zs.get(k)) for k in ("top1", "top3", "top5", "mean_per_class")]
            native = zs.get("native")
            row.append(f"{_fmt(native['top1'])} ({native['space']})" if native else "—")
            chance = chance or zs.get("chance_top1")
            flagged += [label if len(models) > 1 else "" for _ in degenerate_in(metrics, key)]
        if flagged:
            row[0] = f"{key} ⚠ degenerate" + (f" ({', '.join(f for f in flagged if f)})"
                                              if any(flagged) else "")
        n = next((m["zeroshot"][key].get("n") for _, m in models
                  if key in m.get("zeroshot", {})), None)
        body.append(row + [_fmt(chance), _count(n)])
    return _section("Zero-shot classification",
                    "Items classified against one text prototype per class (every prompt "
                    "normalised, averaged per class, renormalised; cosine), in percent. "
                    "*native*: the same inside the items' own source space, against its own "
                    "text encoder.",
                    _md_table(header + ["chance top-1", "n"], body))


def _gap_md(metrics: dict[str, Any], title: str = "Modality gap") -> list[str]:
    gap = metrics.get("gap", {})
    if not gap:
        return []
    body = []

    def centroid(values: dict[str, Any] | None) -> str:
        distance = (values or {}).get("centroid_distance")
        return "—" if distance is None else f"{distance:.3f}"

    for pair, values in gap.items():
        before, after = values.get("before"), values["after"]
        body.append([pair.replace("~", " – "),
                     f"{before['matched']:.3f} / {before['random']:.3f}" if before else "—",
                     f"{after['matched']:.3f} / {after['random']:.3f}",
                     centroid(before), centroid(after)])
    return _section(title, "Two measures. *matched / random cosine*: the mean cosine of "
                    "matched pairs against that of random pairs (their difference is how "
                    "far matched items stand out); *centroid distance*: ‖mean(a) − mean(b)‖ "
                    "of the normalised embeddings, the modality gap of Liang et al. 2022 "
                    "(\"Mind the Gap\"). *before*: in the source space both modalities share "
                    "(— when they share none), *after*: in the unified space.",
                    _md_table(["pair", "matched / random cosine, before",
                               "matched / random cosine, after", "centroid distance, before",
                               "centroid distance, after"], body))


def _attention_md(models: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = attention_lines(models)
    if not lines:
        return []
    return ["", "## Needs attention", "", *(f"- {line}" for line in lines)]


def _training_md(metrics: dict[str, Any]) -> list[str]:
    training = metrics.get("training", {})
    if not training:
        return []
    lines = ["", "## Training", ""]
    for space, report in training.items():
        if not report.get("steps"):
            lines.append(f"- {space}: trained in an earlier run (same inputs)")
            continue
        resumed = (f", resumed from step {report['resumed_from']}"
                   if report.get("resumed_from") else "")
        final = report.get("final_loss")
        loss = f", final loss {final:.4f}" if final is not None else ""
        lines.append(f"- {space}: {report['steps']} steps in {report['seconds']:.1f} s"
                     f"{loss}{resumed}")
    return lines


def _timings_md(metrics: dict[str, Any]) -> list[str]:
    timings = metrics.get("timings", {})
    if not timings:
        return []
    return _section("Time per stage", "",
                    _md_table(["stage", "seconds"], [[s, f"{t:.1f}"] for s, t in timings.items()]))


def _figures_md(figures: dict[str, str]) -> list[str]:
    lines = []
    if figures:
        lines += ["", "## Pictures"]
        for title, file in figures.items():
            lines += ["", f"### {title}", "", f"![{title}]({file})"]
    return lines


def markdown(metrics: dict[str, Any]) -> str:
    lines = [
        f"# {metrics.get('recipe', 'mcrx run')} — {metrics['method']}",
        "",
        "Retrieval in the unified space, in percent. *chance*: a random ranking; *linear*: "
        "closed-form map fitted on the bridge alone; *native*: the source space's own figure "
        "(mAP@10 and the median rank for sets with item ids, as WavCaps computes them).",
        "",
    ]
    body = []
    for row in rows(metrics):
        median = "—" if row["median_rank"] is None else f"{row['median_rank']:.0f}"
        body.append([_mark(row["pair"], row["degenerate"]), *(_fmt(row[c]) for c in COLUMNS),
                     median, _fmt(row["chance_R@1"]), _fmt(row["linear_R@1"]),
                     _fmt(row["native_R@1"]), _count(row["n"]), _count(row["no_match"])])
    if body:
        lines += _md_table(["query→gallery", "R@1", "R@5", "R@10", "mAP", "median rank",
                            "chance R@1", "linear R@1", "native R@1", "n", "no match"], body)
    else:
        lines += ["No retrieval set: no items scored."]
    lines += _attention_md([(metrics["method"], metrics)])
    lines += _zeroshot_md([(metrics["method"], metrics)])
    lines += _gap_md(metrics) + _training_md(metrics) + _timings_md(metrics)
    lines += ["", f"Total time: {metrics.get('seconds', 0):.1f} s; items encoded in this run: "
              f"{metrics.get('encoded_items', 0):,}."]
    lines += _figures_md(metrics.get("figures", {}))
    return "\n".join(lines + [""])


def comparison_markdown(models: Sequence[tuple[str, dict[str, Any]]],
                        figures: dict[str, str], title: str = "evaluation") -> str:
    """Several models on the same sets: one column group per model."""
    lines = [f"# {title} — {len(models)} model{'s' if len(models) > 1 else ''} side by side",
             "", *(f"- **{label}**: {m['method']} on base {m.get('base', '?')}"
                   f"{' (' + m['source'] + ')' if m.get('source') else ''}"
                   for label, m in models), ""]
    header = ["query→gallery"]
    for label, _ in models:
        header += [f"{label} R@1", "R@5", "R@10", "mAP"]
    body = []
    for pair in dict.fromkeys(p for _, m in models for p in m.get("retrieval", {})):
        row, chance, flagged, n, no_match = [pair], None, [], None, None
        for label, metrics in models:
            values = metrics.get("retrieval", {}).get(pair) or {}
            row += [_fmt(values.get(k)) for k in COLUMNS[:3]] + [
                _fmt(_map(values)) if values else "—"]
            chance = chance or values.get("chance_R@1")
            n = n if n is not None else values.get("n")
            no_match = no_match if no_match is not None else values.get(
                "queries_without_match")
            flagged += [f"{label}: {m}" for m in degenerate_in(metrics, pair)]
        body.append([_mark(pair, flagged), *row[1:], _fmt(chance), _count(n),
                     _count(no_match)])
    if body:
        lines += ["## Retrieval (%)", "", "— : the model does not embed one of the two "
                  "modalities (see *Needs attention*).", "",
                  *_md_table(header + ["chance R@1", "n", "no match"], body)]
    lines += _attention_md(models)
    lines += _zeroshot_md(models)
    for label, metrics in models:
        lines += _gap_md(metrics, f"Modality gap — {label}")
    timing_rows = [[label, *(f"{m.get('timings', {}).get(s, 0):.1f}" for s in ("encode", "score"))]
                   for label, m in models]
    lines += _section("Time per stage (s)", "", _md_table(["model", "encode", "score"],
                                                          timing_rows))
    lines += _figures_md(figures)
    return "\n".join(lines + [""])


def write_report(metrics: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, markdown(metrics))
