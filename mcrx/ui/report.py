"""The metrics as a rich table on the terminal and as OUT/report.md."""

from __future__ import annotations

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


def rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per retrieval direction with the unified, chance, baseline and native R@1."""
    baseline = metrics.get("baselines", {}).get("linear", {}).get("retrieval", {})
    out = []
    for pair, values in metrics.get("retrieval", {}).items():
        native = _native(metrics, pair)
        out.append({
            "pair": pair,
            **{column: values[column] for column in COLUMNS},
            "chance_R@1": values["chance_R@1"],
            "linear_R@1": baseline.get(pair, {}).get("R@1"),
            "native_R@1": native[1]["R@1"] if native else None,
            "native_space": native[0] if native else None,
            "n": values["n"],
        })
    return out


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


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
    for row in rows(metrics):
        table.add_row(row["pair"], *(_fmt(row[c]) for c in COLUMNS), _fmt(row["chance_R@1"]),
                      _fmt(row["linear_R@1"]), _fmt(row["native_R@1"]))
    table.caption += f" (R@1; n = {rows(metrics)[0]['n'] if rows(metrics) else 0})"
    return table


def markdown(metrics: dict[str, Any]) -> str:
    lines = [
        f"# {metrics.get('recipe', 'mcrx run')} — {metrics['method']}",
        "",
        "Retrieval in the unified space, in percent. *chance*: a random ranking; *linear*: "
        "closed-form map fitted on the bridge alone; *native*: the source space's own figure.",
        "",
        "| query→gallery | R@1 | R@5 | R@10 | mAP | chance R@1 | linear R@1 | native R@1 | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows(metrics):
        cells = [row["pair"], *(_fmt(row[c]) for c in COLUMNS), _fmt(row["chance_R@1"]),
                 _fmt(row["linear_R@1"]), _fmt(row["native_R@1"]), str(row["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    training = metrics.get("training", {})
    if training:
        lines += ["", "## Training", ""]
        for space, report in training.items():
            if not report.get("steps"):
                lines.append(f"- {space}: trained in an earlier run (same inputs)")
                continue
            resumed = (f", resumed from step {report['resumed_from']}"
                       if report.get("resumed_from") else "")
            lines.append(f"- {space}: {report['steps']} steps in {report['seconds']:.1f} s, "
                         f"final loss {report['final_loss']:.4f}{resumed}")
    lines += ["", f"Total time: {metrics.get('seconds', 0):.1f} s; items encoded in this run: "
              f"{metrics.get('encoded_items', 0):,}.", ""]
    return "\n".join(lines)


def write_report(metrics: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, markdown(metrics))
