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


def model_labels(paths: list[Path]) -> list[str]:
    """Short names for the report: folder names (the run folder when it is ``.../model``),
    the whole path where two would collide."""
    labels = [p.parent.name if p.name == "model" and p.parent.name else p.name for p in paths]
    return [str(p) if labels.count(label) > 1 else label for p, label in zip(paths, labels,
                                                                             strict=True)]


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

    Example, the authors' heads beside your own run on the same sets:

      mcrx evaluate models/exmcr runs/audio_3d/model eval.yaml --out runs/cmp

    Writes OUT/metrics.json (per model), OUT/report.md and OUT/figures/*.png."""
    from mcrx.device import resolve_device
    from mcrx.infer.unified import UnifiedModel
    from mcrx.plugin.manager import get_registry
    from mcrx.stages.evaluate_model import evaluate_unified_model
    from mcrx.store.atomic import write_json_atomic, write_text_atomic
    from mcrx.ui.plots import write_figures
    from mcrx.ui.report import comparison_markdown, comparison_table, metrics_table, zeroshot_table

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

    models, pca = [], {}
    for path, label in zip(model_paths, model_labels(model_paths), strict=True):
        console.rule(f"[bold]evaluate {label}")
        model = UnifiedModel.load(path, registry, device=device)
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
    console.print(f"report: [bold]{escape(str(out / 'report.md'))}[/]   "
                  f"metrics: {escape(str(out / 'metrics.json'))}", highlight=False)
