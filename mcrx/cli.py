"""The ``mcrx`` command line. stdout carries results (``--json`` for machines); progress and
diagnostics go to stderr. User errors print one clear message and exit 1, no traceback."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcrx.console import console
from mcrx.errors import McrxError, RecipeError

app = typer.Typer(
    name="mcrx",
    help=(
        "Join multi-modal contrastive spaces (CLIP, CLAP, ULIP, ...) into one unified space "
        "without paired data, with C-MCR or Ex-MCR.\n\n"
        "Start with:  mcrx extend recipes/demo.yaml   (offline toy world, a few minutes)\n\n"
        "A recipe (YAML) names a base space, leaves attached through a bridge modality, "
        "unpaired memories per modality and evaluation sets; `mcrx schema` documents every "
        "field and `mcrx list-plugins` what can be named."
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
        except RecipeError as exc:
            console.print(f"[bold red]error:[/] {exc.source} is not a valid recipe:",
                          highlight=False)
            for location, message in exc.errors:
                line = f"  [yellow]{location}[/]: {message}" if location else f"  {message}"
                console.print(line, highlight=False, markup=True)
            raise typer.Exit(1) from None
        except McrxError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished stages and checkpoints are kept; "
                          "run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def _load(recipe_path: Path, overrides: list[str] | None, check_files: bool = True):
    from mcrx.plugins import get_registry
    from mcrx.recipe import load_recipe

    registry = get_registry()
    return load_recipe(recipe_path, overrides, registry, check_files=check_files), registry


@app.command()
@user_errors
def extend(
    recipe: RecipeArg,
    set_: SetOption = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes for encoding")] = 0,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="print metrics.json on stdout")
    ] = False,
) -> None:
    """Build the unified space a recipe declares (encode, pair, train, evaluate, write).

    Writes OUT/model (the unified model), OUT/metrics.json and OUT/report.md.

    Every stage is cached by a fingerprint of its inputs: running the same recipe again skips
    what is done, and an interrupted run resumes from its last checkpoint."""
    from mcrx.pipeline import extend as run_extend
    from mcrx.report import metrics_table

    loaded, registry = _load(recipe, set_)
    metrics = run_extend(loaded, registry, show_progress=progress, workers=workers)
    if not metrics:  # another process of a distributed launch: the main one reports
        return
    if json_output:
        print(json.dumps(metrics, indent=2))
    else:
        console.print(metrics_table(metrics))
        console.print(f"unified model: [bold]{loaded.output_dir / 'model'}[/]   "
                      f"report: {loaded.output_dir / 'report.md'}")


@app.command()
@user_errors
def encode(
    recipe: RecipeArg,
    set_: SetOption = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 0,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Encode a recipe's memories and evaluation sets into the embedding cache only.

    A later `mcrx extend` of the same recipe then encodes nothing."""
    from mcrx.pipeline import Run, encode_evaluation, encode_memories

    loaded, registry = _load(recipe, set_)
    run = Run(loaded, registry, show_progress=progress, workers=workers)
    encode_memories(run)
    encode_evaluation(run)
    console.print(f"encoded {run.encoded:,} items (the rest came from the cache)")


@app.command()
@user_errors
def validate(
    recipe: RecipeArg,
    set_: SetOption = None,
    check_files: Annotated[bool, typer.Option(help="check that named files exist")] = True,
) -> None:
    """Check a recipe against the schema and the installed plugins.

    Exits 0 when valid; otherwise prints every problem with its location and exits 1."""
    loaded, _ = _load(recipe, set_, check_files=check_files)
    console.print(f"[green]ok[/]: {recipe} ({loaded.method}, base {loaded.base.space}, "
                  f"leaves {', '.join(leaf.space for leaf in loaded.leaves)})")


@app.command()
@user_errors
def schema(
    plugins: Annotated[bool, typer.Option(help="include every plugin's params schema")] = True,
) -> None:
    """Print the JSON Schema of recipes, with plugin params.

    Each plugin component's params schema is under `x-mcrx-components`."""
    from mcrx.recipe import Recipe

    document = Recipe.model_json_schema()
    if plugins:
        from mcrx.plugins import get_registry

        registry = get_registry()
        components = {}
        for kind in ("space", "dataset", "connector"):
            for spec in registry.all(kind):
                if spec.params is not None:
                    components[f"{kind}:{spec.name}"] = spec.params.model_json_schema()
        document["x-mcrx-components"] = components
    print(json.dumps(document, indent=2))


@app.command("list-plugins")
@user_errors
def list_plugins(
    json_output: Annotated[bool, typer.Option("--json", help="print a JSON array")] = False,
) -> None:
    """Show every plugin, its version and what it registers.

    Broken plugins are listed with their error; they never stop the others."""
    from rich.table import Table

    from mcrx.plugins import get_registry

    registry = get_registry()
    infos = sorted(registry.plugins.values(), key=lambda info: (info.name != "mcrx", info.name))
    if json_output:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    table = Table(title="mcrx plugins")
    for column in ("plugin", "version", "registers", "status"):
        table.add_column(column)
    for info in infos:
        registered = "\n".join(
            f"{kind}: {', '.join(names)}" for kind, names in info.registered.items()
        )
        status = f"[red]broken: {info.error}[/]" if info.error else "[green]ok[/]"
        table.add_row(info.name, info.version, registered or "—", status)
    from rich.console import Console

    Console().print(table)


@app.command("import-official")
@user_errors
def import_official(
    out: Annotated[Path, typer.Option("--out", help="folder to write the unified model to")],
    clap_clip: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="C-MCR clap_clip.pt (CLIP–CLAP heads)")] = None,
    ulip_clip: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="C-MCR ulip_clip.pt (CLIP–ULIP heads)")] = None,
    ex_clap: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Ex-MCR ex_clap.pt (CLAP → CLIP)")] = None,
    ex_ulip: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Ex-MCR ex_ulip.pt (ULIP → CLIP)")] = None,
    clip_space: Annotated[str, typer.Option(help="the CLIP space")] = "clip/ViT-B-32",
    clap_space: Annotated[
        str, typer.Option(help="the CLAP space")
    ] = "clap/630k-audioset-fusion",
    ulip_space: Annotated[str, typer.Option(help="the ULIP space")] = "ulip/pointbert",
    clip_params: Annotated[str, typer.Option(help="CLIP space params as JSON, e.g. "
                                             '\'{"pretrained": "ViT-B-32.pt"}\'')] = "{}",
    clap_params: Annotated[str, typer.Option(help="CLAP space params as JSON")] = "{}",
    ulip_params: Annotated[str, typer.Option(help="ULIP space params as JSON")] = "{}",
) -> None:
    """Turn the projector weights released with C-MCR or Ex-MCR into an mcrx unified model.

    The model projects embeddings exactly as the authors' code does (`model.project`); with
    the spaces' weights named in the params, `model.embed` works on raw inputs too."""
    from mcrx.official import OfficialSpaces
    from mcrx.official import import_official as run_import

    def params(text: str, option: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise McrxError(f"{option}: not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise McrxError(f"{option}: expected a JSON object")
        return value

    spaces = OfficialSpaces(
        clip=clip_space, clap=clap_space, ulip=ulip_space,
        clip_params=params(clip_params, "--clip-params"),
        clap_params=params(clap_params, "--clap-params"),
        ulip_params=params(ulip_params, "--ulip-params"),
    )
    model = run_import(out, clap_clip=clap_clip, ulip_clip=ulip_clip, ex_clap=ex_clap,
                       ex_ulip=ex_ulip, spaces=spaces)
    leaves = ", ".join(f"{leaf['space']} → {leaf['parent']}" for leaf in model.leaves)
    console.print(f"[green]wrote[/] {out} ({model.method}: {leaves})")


def _register_plugin_commands() -> None:
    from mcrx.plugins import register_commands

    register_commands(app)


def main() -> None:
    """Console-script entry point."""
    _register_plugin_commands()
    app()
