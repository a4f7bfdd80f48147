"""evaluate: any unified models (trained or imported) on evaluation sets, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from mcrx.cli.app import SetOption, app, user_errors
from mcrx.errors import McrxError, RecipeError
from mcrx.ui.console import console

RECIPE_KEYS = ("method", "base", "leaves", "memories")  # a whole recipe: use its evaluation


def read_evaluation_sets(path: Path, overrides: list[str] | None = None) -> list[Any]:
    """The evaluation sets of a YAML file: ``evaluation:`` (a list of sets in the recipe's
    format), alone or inside a whole recipe; every problem reported with its location."""
    from pydantic import TypeAdapter, ValidationError

    from mcrx.recipe.load import apply_overrides, pydantic_errors, read_recipe_yaml
    from mcrx.recipe.schema import EvaluationSet

    raw = apply_overrides(read_recipe_yaml(path), overrides or [])
    if "evaluation" not in raw:
        raise RecipeError(str(path), [("evaluation", "field required: a list of evaluation "
                                       "sets (the recipe's format)")])
    is_recipe = any(key in raw for key in RECIPE_KEYS)  # the rest is `mcrx validate`'s
    unknown = [] if is_recipe else sorted(set(raw) - {"evaluation", "name", "description"})
    if unknown:
        raise RecipeError(str(path), [(key, "unknown field") for key in unknown])
    try:
        sets = TypeAdapter(list[EvaluationSet]).validate_python(raw["evaluation"])
    except ValidationError as exc:
        raise RecipeError(str(path), pydantic_errors(exc, ("evaluation",))) from None
    if not sets:
        raise RecipeError(str(path), [("evaluation", "the list is empty")])
    names = [s.name for s in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RecipeError(str(path), [("evaluation", f"set names must be unique: {duplicates}")])
    return sets


def is_evaluation_file(path: Path, overrides: list[str] | None = None) -> bool:
    """Whether ``path`` holds evaluation sets alone (``evaluation:`` without a recipe's
    ``method``/``base``/``leaves``/``memories``); False for a recipe or a file not read."""
    from mcrx.recipe.load import apply_overrides, read_recipe_yaml

    try:
        raw = apply_overrides(read_recipe_yaml(path), overrides or [])
    except McrxError:
        return False  # the recipe loader reports it
    return isinstance(raw, dict) and "evaluation" in raw and not any(k in raw
                                                                     for k in RECIPE_KEYS)


def model_labels(paths: list[Path]) -> list[str]:
    """Short, distinct names for the report and the figures' files: folder names (the run
    folder when it is ``.../model``), the whole path where two would collide, and ``#2``,
    ``#3`` after a name given again (the same folder twice) or whose file-name form
    (:func:`mcrx.ui.plots.slug`) another already has."""
    from mcrx.ui.plots import slug

    short = [p.parent.name if p.name == "model" and p.parent.name else p.name for p in paths]
    owners: dict[str, set[Path]] = {}
    for path, label in zip(paths, short, strict=True):
        owners.setdefault(label, set()).add(path)
    labels = [str(p) if len(owners[label]) > 1 else label
              for p, label in zip(paths, short, strict=True)]
    out: list[str] = []
    for label in labels:
        unique, n = label, 1
        while unique in out or slug(unique) in {slug(o) for o in out}:
            n += 1
            unique = f"{label} #{n}"
        out.append(unique)
    return out


def check_before_encoding(evaluation_path: Path, sets: list[Any], models: list[tuple[str, Any]],
                          registry) -> None:
    """Everything ``mcrx validate`` checks of the sets (files, row and label counts per set
    and modality, pairs of equal length, classes, table files given as text inputs), for the
    spaces these models read each modality with, and that every set is scored by at least
    one model; all problems raised together before anything is encoded."""
    from mcrx.recipe.check import evaluation_problems
    from mcrx.stages.evaluate_model import coverage

    spaces_of: dict[str, list[str]] = {}
    for _, model in models:
        for modality in model.modalities:
            space = model.space_of(modality)
            if space not in spaces_of.setdefault(modality, []):
                spaces_of[modality].append(space)
    errors = evaluation_problems(sets, registry, spaces_of, spaces_of.get("text", []),
                                 check_files=True, extra_embeddings=True)
    for j, evaluation in enumerate(sets):
        reasons = [f"{label}: {coverage(model, evaluation)[1]}" for label, model in models
                   if coverage(model, evaluation)[1] is not None]
        if len(reasons) == len(models):
            errors.append((f"evaluation.{j}", f"set {evaluation.name!r}: no model given can "
                           f"score it ({'; '.join(reasons)})"))
    if errors:
        raise RecipeError(str(evaluation_path), errors)


@app.command()
@user_errors
def evaluate(
    arguments: Annotated[list[Path], typer.Argument(
        help="one or more unified-model folders (from `mcrx extend`: OUT/model, or from "
        "`mcrx import-official`), then the evaluation YAML", show_default=False)],
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--out", help="folder for metrics.json, report.md and figures/ "
        "(default: runs/evaluate-<evaluation file name>)")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes for encoding")] = 0,
    device: Annotated[str, typer.Option(
        help="where the connectors run: auto, cpu, cuda, cuda:N")] = "cpu",
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="print metrics.json on stdout")
    ] = False,
) -> None:
    """Evaluate unified models on evaluation sets, side by side in one report.

    The evaluation file holds `evaluation:` sets in the recipe's format (a
    whole recipe works too: its `evaluation:` is used). Per modality, a set
    gives raw inputs (`dataset:` or `inputs:`, encoded by each model's own
    encoder through the embedding cache) or precomputed embeddings per space
    (`embeddings: {clip/ViT-B-32: x.npy}`).

    task: retrieval - every ordered pair of modalities; ground_truth: pairs,
    labels, or items (item ids in each source's `labels:`, several captions
    per item: R@1/5/10, median and mean rank, mAP@10 as WavCaps computes them).

    task: zeroshot - items against text prompts: `classes:` (a list, the
    preset modelnet40 or a .txt file) x `templates:` (a list or a preset:
    modelnet40_64, clap_esc50, clip_imagenet_80, name), or labelled
    `prompts:`; top-1/3/5, per-class accuracy, confusion matrix.

    Labels: every modality's `labels:` file of a set (and the prompts')
    is coded in one vocabulary: ids all integers compare as integers,
    others as strings; `classes:` (else the dataset's own names) fixes
    class k; an id or class one modality lacks is named and counted
    (metrics.json `vocabulary`), never shifted. Rows of one modality with
    the same id and the same embedding (WavCaps's repeated audio rows) are
    one item.

    Conventions (metrics.json `conventions`): a query with no relevant
    item is skipped and counted (`queries_without_match`), or a miss with
    `unmatched_queries: miss` (CLIP_benchmark); ties go to the earlier row
    or class (torch.argmax's rule); chance levels are exact expectations of
    a random ranking (R@k hypergeometric, AP Bestgen 2015, top-k k/C).

    Checked before anything is encoded (as `mcrx validate EVAL.yaml`): files,
    item and label counts per set and modality, pairs sets of equal length,
    classes, a .csv/.json given as `inputs:` (read it with its dataset).
    Models covering different modalities are each scored on what they embed
    (the rest "—" in the report, `not_covered` in metrics.json); degenerate
    embeddings (all rows nearly one vector) are flagged (`degenerate`).

    Example, the authors' heads beside your own run on the same sets:

      mcrx evaluate models/exmcr runs/audio_3d/model eval.yaml --out runs/cmp

    Writes OUT/metrics.json (per model), OUT/report.md and OUT/figures/*.png."""
    from mcrx.device import resolve_device
    from mcrx.infer.unified import UnifiedModel
    from mcrx.plugin.manager import get_registry
    from mcrx.stages.evaluate_model import evaluate_unified_model
    from mcrx.store.atomic import write_json_atomic, write_text_atomic
    from mcrx.ui.plots import write_figures
    from mcrx.ui.report import (
        attention_lines,
        comparison_markdown,
        comparison_table,
        metrics_table,
        zeroshot_table,
    )

    if len(arguments) < 2:
        raise McrxError("give at least one model folder and then the evaluation YAML "
                        "(mcrx evaluate MODEL [MODEL ...] EVALUATION.yaml)")
    *model_paths, evaluation_path = arguments
    if evaluation_path.is_dir() or evaluation_path.suffix not in (".yaml", ".yml"):
        raise McrxError(f"{evaluation_path}: the last argument must be the evaluation YAML "
                        "file (.yaml or .yml)")
    sets = read_evaluation_sets(evaluation_path, set_)
    registry = get_registry()
    resolve_device(device)  # a bad name fails before any work
    out = out or Path("runs") / f"evaluate-{evaluation_path.stem}"
    loaded = [(label, UnifiedModel.load(path, registry, device=device))
              for path, label in zip(model_paths, model_labels(model_paths), strict=True)]
    check_before_encoding(evaluation_path, sets, loaded, registry)  # before any encoding

    models, pca = [], {}
    for path, (label, model) in zip(model_paths, loaded, strict=True):
        console.rule(f"[bold]evaluate {label}")
        metrics, scored = evaluate_unified_model(model, sets, registry, show_progress=progress,
                                                 workers=workers, name=label)
        metrics["source"] = str(path)
        models.append((label, metrics))
        pca[label] = scored.pca

    figures = write_figures(models, out / "figures", pca=pca)
    document = {"evaluation": str(evaluation_path), "models": dict(models), "figures": figures}
    write_json_atomic(out / "metrics.json", document)
    write_text_atomic(out / "report.md",
                      comparison_markdown(models, figures, title=evaluation_path.stem))
    if json_output:
        print(json.dumps(document, indent=2))
        return
    if len(models) == 1 and models[0][1]["retrieval"]:
        console.print(metrics_table(models[0][1]))
    elif any(m["retrieval"] for _, m in models):
        console.print(comparison_table(models))
    table = zeroshot_table(models)
    if table is not None:
        console.print(table)
    for line in attention_lines(models):
        console.print(f"[yellow]warning[/] {escape(line)}", highlight=False)
    console.print(f"report: [bold]{escape(str(out / 'report.md'))}[/]   "
                  f"metrics: {escape(str(out / 'metrics.json'))}", highlight=False)
