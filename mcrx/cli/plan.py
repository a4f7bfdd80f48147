"""``mcrx plan``: a recipe's cost per stage, before anything is encoded."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcrx.cli.app import RecipeArg, SetOption, app, user_errors
from mcrx.errors import McrxError, RecipeError

#: problems a plan does not care about: the spaces' own params (weights files); the plan
#: needs dimensions and row counts, not weights
SPACE_PARAMS = re.compile(r"^(base|leaves\.\d+)\.params(\.|$)")


@app.command()
@user_errors
def plan(
    recipe: RecipeArg,
    set_: SetOption = None,
    device_class: Annotated[
        Optional[str],  # noqa: UP045  (typer needs Optional here)
        typer.Option(help="also estimate the time on this device class: h100, 4090 or cpu "
                     "(a 32-core server)"),
    ] = None,
    device: Annotated[str, typer.Option(help="where to measure the matrix-product rate: "
                                        "auto, cpu, cuda:N")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Estimate what a recipe costs, without encoding anything.

    Per stage (encode, pseudo pairs, train, evaluate): rows, pseudo pairs, FLOPs, bytes on
    disk and in RAM, and the time on this machine (from a short measured torch.mm rate) and
    on --device-class; warns when RAM or disk will not suffice. Sources not on this machine
    yet count as their `limit`, so the paper's setting can be planned before its data:

        mcrx plan recipes/audio_3d.yaml --device-class 4090 --set retrieval.mode=ann"""
    from mcrx.device import resolve_device
    from mcrx.stages.plan import DEVICE_CLASSES, make_plan, print_plan

    if device_class is not None and device_class not in DEVICE_CLASSES:
        raise McrxError(f"--device-class: expected one of {', '.join(DEVICE_CLASSES)}, got "
                        f"{device_class!r}")
    loaded, registry, skipped = load_recipe_for_plan(recipe, set_)
    result = make_plan(loaded, registry, device_class=device_class,
                       device=str(resolve_device(device)))
    result.warnings[:0] = skipped
    if json_output:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_plan(result)


def load_recipe_for_plan(path: Path, overrides: list[str] | None):
    """The recipe checked like ``mcrx validate`` does, except that missing weights and data
    files are not errors (a plan is made before they are there): they come back as
    warnings."""
    from mcrx.plugin.manager import get_registry
    from mcrx.recipe import load_recipe
    from mcrx.recipe.check import check_recipe

    registry = get_registry()
    loaded = load_recipe(path, overrides)  # the schema only
    errors = check_recipe(loaded, registry, check_files=False)
    fatal = [(loc, message) for loc, message in errors if not SPACE_PARAMS.match(loc)]
    if fatal:
        raise RecipeError(str(path), fatal)
    skipped = [f"{loc}: {message.split(';')[0]} (not needed for the plan)"
               for loc, message in errors if SPACE_PARAMS.match(loc)]
    return loaded, registry, skipped
