"""repoint: a unified model's spaces pointed at weight files that moved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mcrx.cli.app import app, user_errors
from mcrx.errors import McrxError
from mcrx.ui.console import console


def parse_assignment(text: str, spaces: list[str]) -> tuple[str, str, str]:
    """``clap/630k-fusion.checkpoint=/data/x.pt`` → (space, param, value)."""
    target, sep, value = text.partition("=")
    space, dot, param = target.rpartition(".")
    if not sep or not dot or not space or not param:
        raise McrxError(f"{text!r}: expected SPACE.PARAM=VALUE, e.g. "
                        "clap/630k-fusion.checkpoint=/data/630k-fusion-best.pt")
    if space not in spaces:
        raise McrxError(f"{text!r}: the model has no space {space!r} (it has {spaces})")
    return space, param, value


@app.command()
@user_errors
def repoint(
    model: Annotated[Path, typer.Argument(help="a unified-model folder", show_default=False)],
    assignments: Annotated[list[str], typer.Argument(
        help="SPACE.PARAM=VALUE, e.g. clap/630k-fusion.checkpoint=/data/630k-fusion-best.pt",
        show_default=False)],
) -> None:
    """Point a model's spaces at weights that moved (rewrites its manifest.json).

    A model remembers the params its spaces were built with; relative paths are read from
    the folder you are in and from the one the run started in, so a model loads from
    anywhere while its weights stay put. When they move, repoint it once:

        mcrx repoint runs/audio_3d/model clap/630k-fusion.checkpoint=/data/630k.pt

    or, in Python, mcrx.load(model, params={"clap/630k-fusion": {"checkpoint": ...}}).
    Existing paths are stored absolute; every new value is checked against the space's
    params before the manifest is replaced (atomically)."""
    from pydantic import ValidationError

    from mcrx.plugin.manager import get_registry
    from mcrx.recipe.load import pydantic_errors
    from mcrx.store.artifact import MANIFEST, read_manifest
    from mcrx.store.atomic import write_json_atomic

    manifest = read_manifest(model)
    registry = get_registry()
    spaces = sorted(manifest["spaces"])
    changed: dict[str, dict] = {}
    for text in assignments:
        space, param, value = parse_assignment(text, spaces)
        path = Path(value).expanduser()
        params = changed.setdefault(space, dict(manifest["spaces"][space].get("params") or {}))
        params[param] = str(path.absolute()) if path.exists() else value
    for space, params in changed.items():
        try:
            registry.space(space).validate_params(params)
        except ValidationError as exc:
            problems = "; ".join(f"{where}: {what}" for where, what in pydantic_errors(exc))
            raise McrxError(f"{space}: {problems}") from None
        manifest["spaces"][space]["params"] = params
    write_json_atomic(Path(model) / MANIFEST, manifest)
    for space, params in changed.items():
        console.print(f"{escape(space)}: {escape(str(params))}")
