"""Commands that run a recipe: extend, encode, validate."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from mcrx.cli.app import RecipeArg, SetOption, app, load_recipe_for_cli, user_errors
from mcrx.ui.console import console


@app.command()
@user_errors
def extend(
    recipe: RecipeArg,
    set_: SetOption = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes for encoding")] = 0,
    drop_bad_rows: Annotated[bool, typer.Option(
        "--drop-bad-rows", help="leave memory rows with NaN/Inf values or all zeros out "
        "(in every space of that memory; printed how many) instead of refusing the file; "
        "bad evaluation rows are always refused")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="write OUT/model into a non-empty folder that is not an mcrx model "
        "(its files are kept: mcrx never deletes what it did not write)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="print metrics.json on stdout")
    ] = False,
) -> None:
    """Build the unified space a recipe declares (encode, pair, train, evaluate, write).

    Writes OUT/model (the unified model), OUT/metrics.json and OUT/report.md.

    Every stage is cached by a fingerprint of its inputs: running the same recipe again skips
    what is done, and an interrupted run resumes from its last checkpoint."""
    from mcrx.stages.extend import extend as run_extend
    from mcrx.ui.report import metrics_table, zeroshot_table

    loaded, registry = load_recipe_for_cli(recipe, set_)
    metrics = run_extend(loaded, registry, show_progress=progress, workers=workers,
                         drop_bad_rows=drop_bad_rows, force=force)
    if not metrics:  # another process of a distributed launch: the main one reports
        return
    if json_output:
        print(json.dumps(metrics, indent=2))
    else:
        console.print(metrics_table(metrics))
        if metrics.get("zeroshot"):
            console.print(zeroshot_table([(metrics["method"], metrics)]))
        # paths are user text: escaped, so "[x]" in a folder name is shown, not parsed
        console.print(f"unified model: [bold]{escape(str(loaded.output_dir / 'model'))}[/]   "
                      f"report: {escape(str(loaded.output_dir / 'report.md'))}")


@app.command()
@user_errors
def encode(
    recipe: RecipeArg,
    set_: SetOption = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    drop_bad_rows: Annotated[bool, typer.Option(
        "--drop-bad-rows", help="leave NaN/Inf/all-zero memory rows out (counted)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Encode a recipe's memories and evaluation sets into the embedding cache only.

    A later `mcrx extend` of the same recipe then encodes nothing."""
    from mcrx.stages.context import Run
    from mcrx.stages.encode import encode_evaluation, encode_memories

    loaded, registry = load_recipe_for_cli(recipe, set_)
    run = Run(loaded, registry, show_progress=progress, workers=workers,
              drop_bad_rows=drop_bad_rows)
    encode_memories(run)
    encode_evaluation(run)
    console.print(f"encoded {run.encoded:,} items (the rest came from the cache)")


@app.command()
@user_errors
def validate(
    recipe: RecipeArg,
    set_: SetOption = None,
    check_files: Annotated[bool, typer.Option(
        help="check the files and folders the recipe names (existence, evaluation rows and "
        "labels, a writable output folder and cache); --no-check-files checks the recipe "
        "alone")] = True,
) -> None:
    """Check a recipe against the schema and the installed plugins, before any work.

    - values `extend` can run: finite, bounded seeds, epochs, sizes
    - plugin names and params; each leaf's bridge in it and its parent
    - named files exist; weight files named in params open as weights
      (nothing in them runs); evaluation sets agree: the same rows in every
      modality under `ground_truth: pairs`, one valid label per item
    - the output folder and $MCRX_CACHE_DIR can be written

    Exits 0 when valid; otherwise prints every problem with its location and exits 1."""
    loaded, _ = load_recipe_for_cli(recipe, set_, check_files=check_files)
    leaves = ", ".join(leaf.space for leaf in loaded.leaves)
    console.print(f"[green]ok[/]: {escape(str(recipe))} ({loaded.method}, base "
                  f"{loaded.base.space}, leaves {leaves})", highlight=False)
