"""The root ``mcrx`` app and what every command group shares: the recipe argument, ``--set``,
and :func:`user_errors` (a user error prints one clear message and exits 1, no traceback).

stdout carries results (``--json`` for machines); progress and diagnostics go to stderr."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mcrx.errors import McrxError, RecipeError
from mcrx.ui.console import console

app = typer.Typer(
    name="mcrx",
    help=(
        "Join multi-modal contrastive spaces (CLIP, CLAP, ULIP, ...) into one unified space "
        "without paired data, with C-MCR or Ex-MCR.\n\n"
        "Start with:  mcrx extend recipes/demo.yaml   (offline toy world, a few minutes)\n\n"
        "A recipe (YAML) names a base space, leaves attached through a bridge modality, "
        "unpaired memories per modality and evaluation sets; `mcrx schema` documents every "
        "field and `mcrx list-plugins` what can be named.\n\n"
        "Before a big run:  mcrx validate RECIPE; mcrx plan RECIPE (rows, FLOPs, RAM, time).\n\n"
        "With a trained model (OUT/model):  mcrx evaluate MODEL EVAL.yaml; "
        "mcrx index MODEL COLLECTION -m audio FILES...; mcrx search COLLECTION QUERY; "
        "mcrx serve COLLECTION."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

RecipeArg = Annotated[
    Path, typer.Argument(help="recipe YAML file, e.g. recipes/demo.yaml", show_default=False)
]
SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer needs Optional here)
    typer.Option(
        "--set",
        help="override a recipe field: --set training.epochs=2 --set leaves.0.bridge=text "
        "(values are YAML)",
    ),
]


def user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn user errors into one clear message on stderr and exit code 1 (no traceback);
    an interrupt keeps what finished stages and checkpoints wrote."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RecipeError as exc:  # user text is escaped: a "[/x]" in a path is not markup
            console.print(f"[bold red]error:[/] {escape(exc.source)} is not a valid recipe:",
                          highlight=False)
            for location, message in exc.errors:
                line = (f"  [yellow]{escape(location)}[/]: {escape(message)}" if location
                        else f"  {escape(message)}")
                console.print(line, highlight=False)
            raise typer.Exit(1) from None
        except McrxError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished stages and checkpoints are kept; "
                          "run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def load_recipe_for_cli(recipe_path: Path, overrides: list[str] | None, check_files: bool = True):
    from mcrx.plugin.manager import get_registry
    from mcrx.recipe import load_recipe

    registry = get_registry()
    return load_recipe(recipe_path, overrides, registry, check_files=check_files), registry
