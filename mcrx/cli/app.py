"""The root ``mcrx`` app and what every command group shares: the recipe argument, ``--set``,
and :func:`user_errors` (a user error prints one clear message and exits 1, no traceback).

stdout carries results (``--json`` for machines); progress and diagnostics go to stderr."""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.core
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mcrx.errors import McrxError, RecipeError
from mcrx.ui.console import console

#: the click typer runs on: its own copy since typer 0.2x, the click package before
click: Any = getattr(typer.core, "_click", None) or typer.core.click

# -- help placeholders ------------------------------------------------------------------------
# typer's help writes a flag's type (``--json <bool>``), an argument's type beside its name
# (``recipe <path>``) and a required argument in braces (``{recipe}``): read by a new user as
# values to type. mcrx's help uses click's conventions instead: flags show nothing, an
# argument is its upper-case name (``RECIPE``), a value its click type (``INTEGER``, ``PATH``)
# or the metavar a command gives. Every command's parameters (plugins' too) are retyped to
# these subclasses when the root group hands the command out, so no command file changes.


#: typer's type labels as click names them
_CLICK_NAMES = {"int": "INTEGER", "str": "TEXT", "float": "FLOAT", "path": "PATH",
                "bool": "BOOLEAN"}


class _Option(TyperOption):
    """An option whose help shows no type for a flag and click's name for a value."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        label = self.display_type(ctx).strip("<>")  # typer's own: "int", "list[str]", "a|b"
        element = re.fullmatch(r"list\[(.*)\]", label)  # a repeatable option: one value
        label = element.group(1) if element else label
        label = f"[{label}]" if "|" in label else _CLICK_NAMES.get(label, label.upper())
        return label + ("..." if self.nargs != 1 else "")


class _Argument(TyperArgument):
    """An argument shown as ``RECIPE`` (optional ``[RECIPE]``, several ``MODELS...``)."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None  # the upper-case name is the placeholder; the help says what it is

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _retype(params: list[click.Parameter]) -> list[click.Parameter]:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _retype(super().get_params(ctx))


class McrxGroup(TyperGroup):
    """The root group (and every sub-group): click's help conventions for every command's
    parameters, and "did you mean" for a mistyped command whichever typer is installed
    (typer suggests since 0.20 only; mcrx accepts typer 0.12)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _retype(super().get_params(ctx))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if type(command) is TyperCommand:
            command.__class__ = _Command
        elif type(command) is TyperGroup:
            command.__class__ = McrxGroup
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, ...]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.UsageError as exc:
            if args and "did you mean" not in exc.message.lower():
                matches = suggest_commands(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = (exc.message.rstrip(".") + ". Did you mean "
                                   + " or ".join(repr(m) for m in matches) + "?")
            raise


def suggest_commands(typed: str, names: list[str]) -> list[str]:
    """Registered command names close to ``typed`` (``extned`` → ``extend``, ``eval`` →
    ``evaluate``): difflib's ratio, plus names that start with what was typed."""
    close = difflib.get_close_matches(typed, names, n=3, cutoff=0.6)
    prefixed = [n for n in names if typed and n.startswith(typed) and n not in close]
    return (close + prefixed)[:3]


app = typer.Typer(
    cls=McrxGroup,
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
        "mcrx serve COLLECTION.\n\n"
        "Environment: MCRX_PROGRESS_EVERY (progress lines when stderr is not a terminal: "
        "'30' seconds, '5%', '30,5%', 'off'; default every 30 s or 5 %); "
        "MCRX_SHOW_WARNINGS=1 (show the known third-party deprecation warnings the CLI hides)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# -- third-party warnings ----------------------------------------------------------------------
#: Warnings that libraries mcrx drives print on every run although nothing is wrong for the
#: user (deprecations inside timm, torch, torchaudio and laion_clap, aimed at their
#: developers). The CLI hides exactly these (category, message start); any other warning
#: still shows. ``MCRX_SHOW_WARNINGS=1``, or Python's own ``-W`` / ``PYTHONWARNINGS``, shows
#: them all.
KNOWN_NOISY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # timm: laion_clap imports timm.models.layers
    (FutureWarning, r"Importing from timm\.models\.(layers|registry|helpers)"),
    # torch: laion_clap's HTSAT calls torch.meshgrid without indexing=
    (UserWarning, r"torch\.meshgrid: in an upcoming release"),
    # torch: checkpoints of the papers are pickles; mcrx loads them with its own checks
    (FutureWarning, r"You are using `torch\.load` with `weights_only=False`"),
    (UserWarning, r"TypedStorage is deprecated"),
    # torch 2.9+: OpenAI's CLIP releases are TorchScript archives, read with torch.jit.load
    (FutureWarning, r"`torch\.jit\.(load|script|trace)` is deprecated"),
    # torchaudio 2.8+: its own deprecation plan, printed on each load/save
    (UserWarning, r"In 2\.9, this function's implementation will be changed"),
    (UserWarning, r"torchaudio\._backend"),
    # huggingface_hub / transformers under HF_HUB_OFFLINE
    (FutureWarning, r"`resume_download` is deprecated"),
)


def quiet_known_warnings() -> bool:
    """Hide :data:`KNOWN_NOISY_WARNINGS` for this process (the CLI's entry calls it);
    returns whether it did."""
    if sys.warnoptions or os.environ.get("MCRX_SHOW_WARNINGS", "") not in {"", "0"}:
        return False
    for category, message in KNOWN_NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    return True


def _print_version(value: bool) -> None:
    if value:
        from mcrx import __version__

        print(f"mcrx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="print mcrx's version and exit (plugins' versions: mcrx list-plugins)")] = False,
) -> None:
    quiet_known_warnings()


RecipeArg = Annotated[
    Path, typer.Argument(help="recipe YAML file, e.g. recipes/demo.yaml", show_default=False)
]
SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer needs Optional here)
    typer.Option(
        "--set",
        metavar="FIELD=VALUE",
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
