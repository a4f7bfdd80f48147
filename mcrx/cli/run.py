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
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="train every connector afresh, ignoring connectors (and "
        "checkpoints) trained before for the same inputs: for connector or loss code "
        "changed without a new plugin version")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="print metrics.json on stdout")
    ] = False,
) -> None:
    """Build the unified space a recipe declares (encode, pair, train, evaluate, write).

    Writes OUT/model (the unified model), OUT/metrics.json and OUT/report.md.

    Every stage is cached by a fingerprint of its inputs: running the same recipe again skips
    what is done, and an interrupted run resumes from its last checkpoint. A trained
    connector's key includes mcrx's version and those of the plugins that registered the
    connector and the loss: a new plugin version retrains; --retrain retrains regardless."""
    from mcrx.stages.extend import extend as run_extend
    from mcrx.stages.train import retraining
    from mcrx.ui.report import attention_lines, metrics_table, zeroshot_table

    loaded, registry = load_recipe_for_cli(recipe, set_)
    with retraining(retrain):
        metrics = run_extend(loaded, registry, show_progress=progress, workers=workers,
                             drop_bad_rows=drop_bad_rows, force=force)
    if not metrics:  # another process of a distributed launch: the main one reports
        return
    if json_output:
        print(json.dumps(metrics, indent=2))
    else:
        if metrics.get("retrieval"):
            console.print(metrics_table(metrics))
        if metrics.get("zeroshot"):
            console.print(zeroshot_table([(metrics["method"], metrics)]))
        for line in attention_lines([(metrics["method"], metrics)]):
            console.print(f"[yellow]warning[/] {escape(line)}", highlight=False)
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
    """Check a recipe, or an evaluation file, against the schema and the installed
    plugins, before any work.

    - values `extend` can run: finite, bounded seeds, epochs, sizes
    - plugin names and params; each leaf's bridge in it and its parent
    - named files exist; weight files named in params open as weights
      (nothing in them runs); evaluation sets agree: the same rows in every
      modality under `ground_truth: pairs`, one valid label per item
    - the output folder and $MCRX_CACHE_DIR can be written

    An evaluation file (`evaluation:` sets alone, as `mcrx evaluate` reads) gets the
    checks `mcrx evaluate` runs before encoding: files, row and label counts per set and
    modality, text inputs that are a table (.csv/.json), classes and templates.

    Exits 0 when valid; otherwise prints every problem with its location and exits 1."""
    from mcrx.cli.evaluate import is_evaluation_file

    if is_evaluation_file(recipe, set_):
        from mcrx.cli.evaluate import read_evaluation_sets
        from mcrx.plugin.manager import get_registry
        from mcrx.recipe.check import raise_evaluation_problems

        sets = read_evaluation_sets(recipe, set_)
        raise_evaluation_problems(str(recipe), sets, get_registry(), check_files=check_files)
        console.print(f"[green]ok[/]: {escape(str(recipe))} (evaluation file, "
                      f"{len(sets)} set{'s' if len(sets) != 1 else ''}: "
                      f"{', '.join(s.name for s in sets)})", highlight=False)
        return
    loaded, _ = load_recipe_for_cli(recipe, set_, check_files=check_files)
    leaves = ", ".join(leaf.space for leaf in loaded.leaves)
    console.print(f"[green]ok[/]: {escape(str(recipe))} ({loaded.method}, base "
                  f"{loaded.base.space}, leaves {leaves})", highlight=False)
