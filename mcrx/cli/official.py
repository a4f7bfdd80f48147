"""import-official: the projector weights released with the papers, as unified models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mcrx.cli.app import app, user_errors
from mcrx.errors import McrxError
from mcrx.ui.console import console


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
        str, typer.Option(help="the CLAP space (default: the papers' weight, "
                               "630k-fusion-best.pt with enable_fusion=True)")
    ] = "clap/630k-fusion",
    ulip_space: Annotated[str, typer.Option(help="the ULIP space")] = "ulip/pointbert",
    clip_params: Annotated[str, typer.Option(help="CLIP space params as JSON, e.g. "
                                             '\'{"pretrained": "ViT-B-32.pt"}\'')] = "{}",
    clap_params: Annotated[str, typer.Option(help="CLAP space params as JSON")] = "{}",
    ulip_params: Annotated[str, typer.Option(help="ULIP space params as JSON")] = "{}",
    force: Annotated[bool, typer.Option(
        "--force", help="write into a non-empty --out folder that is not an mcrx model; "
        "its files are kept (mcrx never deletes what it did not write)")] = False,
) -> None:
    """Turn the projector weights released with C-MCR or Ex-MCR into an mcrx unified model.

    The model projects embeddings exactly as the authors' code does (`model.project`); with
    the spaces' weights named in the params, `model.embed` works on raw inputs too.

    --out must be new, empty or an earlier mcrx model (replaced; files of yours in it are
    kept). A non-empty folder of other files needs --force, and keeps its files too."""
    from mcrx.infer.official import OfficialSpaces
    from mcrx.infer.official import import_official as run_import

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
                       ex_ulip=ex_ulip, spaces=spaces, force=force)
    leaves = ", ".join(f"{leaf['space']} → {leaf['parent']}" for leaf in model.leaves)
    console.print(f"[green]wrote[/] {escape(f'{out} ({model.method}: {leaves})')}", highlight=False)
