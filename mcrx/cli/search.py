"""Commands that use a unified model: embed, index, search, serve."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mcrx.cli.app import app, user_errors
from mcrx.errors import McrxError
from mcrx.search.files import display_path
from mcrx.ui.console import console

ModelArg = Annotated[Path, typer.Argument(
    help="unified model folder written by `mcrx extend` (OUT/model)", show_default=False)]
CollectionArg = Annotated[Path, typer.Argument(
    help="collection folder (created by the first `mcrx index`)", show_default=False)]
ProgressOption = Annotated[bool, typer.Option(help="show progress bars")]


def _split_list(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


# -- embed ----------------------------------------------------------------------------------
def embed_items(model, modality: str, inputs: list[str]) -> tuple[list[str], list]:
    """(ids, encoder items) for ``inputs``: files and folders of ``modality``; for text also
    literal strings, a ``.txt`` file giving one text per non-empty line."""
    from mcrx.search.files import encoder_item, expand_inputs
    from mcrx.store.inputs import npy_header

    def encoder_for(name: str):
        return model.space(model.space_of(name)).encoder(name)

    ids: list[str] = []
    items: list = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if modality == "text" and not path.exists():
            ids.append(raw)
            items.append(raw)
        elif modality == "text" and path.is_file() and path.suffix.lower() == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                if line.strip():
                    ids.append(f"{raw}:{number}")
                    items.append(line.strip())
        else:
            for file, _ in expand_inputs([raw], modality, model.modalities, encoder_for):
                if file.suffix.lower() == ".npy":  # bounds before the encoder reads it
                    npy_header(file, f"{modality} item")
                ids.append(str(file))
                items.append(encoder_item(file, modality))
    if not items:
        raise McrxError("nothing to embed")
    return ids, items


@app.command()
@user_errors
def embed(
    model: ModelArg,
    modality: Annotated[str, typer.Argument(help="image, text, audio, pointcloud, ...",
                                            show_default=False)],
    inputs: Annotated[list[str], typer.Argument(
        help="files, folders, or (for text) the texts themselves", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--output", "-o", help="write FILE.npy (N×d float32) and FILE.ids.json; "
        "without it, NDJSON on stdout")] = None,
    progress: ProgressOption = True,
) -> None:
    """Unified-space vectors of files or texts.

    Every file is one item; a folder gives its files of MODALITY
    (recursively, as the modality's encoder lists them). For text, an
    argument that is no file is the text itself, and a .txt file gives
    one text per non-empty line.

    Examples:

        mcrx embed runs/demo/model audio sounds/ -o sounds.npy

        mcrx embed runs/demo/model text "a dog barking" "rain on a roof"
    """
    import numpy as np

    import mcrx
    from mcrx.store.atomic import atomic_path, write_json_atomic
    from mcrx.ui.console import progress as progress_bar
    from mcrx.ui.console import rate_text

    unified = mcrx.load(model)
    unified.space_of(modality)  # an unknown modality fails here, before reading inputs
    ids, items = embed_items(unified, modality, inputs)
    encoder = unified.space(unified.space_of(modality)).encoder(modality)
    batch = max(1, min(encoder.batch_size, 1024))
    parts = []
    started = time.perf_counter()
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(f"embedding {modality}", total=len(items), rate="")
        for start in range(0, len(items), batch):
            parts.append(unified.embed(modality, items[start : start + batch]).numpy())
            done = min(start + batch, len(items))
            bar.update(task, completed=done,
                       rate=rate_text(done, time.perf_counter() - started, "items"))
    vectors = np.concatenate(parts).astype(np.float32)  # (N, dim)
    if output is None:
        for item_id, vector in zip(ids, vectors, strict=True):
            print(json.dumps({"id": item_id, "modality": modality,
                              "vector": [round(float(x), 7) for x in vector]}))
        return
    output = output if output.suffix == ".npy" else output.with_suffix(".npy")
    with atomic_path(output) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)
    ids_path = output.with_suffix(".ids.json")
    write_json_atomic(ids_path, ids)
    console.print(f"wrote {len(ids):,} × {vectors.shape[1]} vectors to "
                  f"[bold]{escape(display_path(output))}[/] and their ids to "
                  f"{escape(display_path(ids_path))}", highlight=False)


# -- index ----------------------------------------------------------------------------------
@app.command()
@user_errors
def index(
    model: ModelArg,
    collection: CollectionArg,
    inputs: Annotated[list[Path], typer.Argument(help="files and folders to index",
                                                 show_default=False)],
    modality: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--modality", "-m", help="modality of every file (default: from each suffix; "
        ".npy needs it)")] = None,
    ivf_threshold: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="items of one modality above which its index is IVF instead of exact "
        "(default 200000; stored in the collection)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="set a damaged database aside (items.sqlite.damaged) and index "
        "the files again into a new one")] = False,
    follow_links: Annotated[bool, typer.Option(
        "--follow-links", help="also index files that symbolic links in the folders lead "
        "to outside them (default: skipped)")] = False,
    progress: ProgressOption = True,
) -> None:
    """Embed files into a collection (faiss + SQLite), creating it if needed.

    A collection pins its model: indexing with another model is refused.
    Run it again to update: only new and changed files are embedded (by
    content hash), files that are gone are dropped. One collection holds
    any modalities of the model.

    Examples:

        mcrx index runs/demo/model sounds.mcrx --modality audio recordings/

        mcrx index runs/demo/model sounds.mcrx --modality pointcloud shapes/ chair.npy
    """
    from mcrx.search.collection import Collection

    with Collection(collection, model=model, ivf_threshold=ivf_threshold,
                    rebuild=rebuild) as opened:
        report = opened.index([str(p) for p in inputs], modality, show_progress=progress,
                              follow_links=follow_links)
        info = opened.info()
    if json_output:
        print(json.dumps({"report": report.as_dict(), "collection": info}, indent=2))
    for label, entries in (("failed", report.failed), ("skipped", report.skipped)):
        for path, error in entries[:20]:
            console.print(f"[yellow]{label}[/] {escape(display_path(path))}: "
                          f"{escape(display_path(error))}", highlight=False)
        if len(entries) > 20:
            console.print(f"[yellow]{label}[/] {len(entries) - 20} more files")
    parts = [f"{report.added:,} new", f"{report.changed:,} changed"]
    parts += [f"{n:,} {what}" for n, what in [
        (report.reused, "copies (vector reused)"),
        (report.touched, "touched (same content, not re-embedded)"),
        (report.unchanged, "unchanged"), (report.dropped, "dropped (files gone)"),
        (len(report.failed), "failed"), (len(report.skipped), "skipped")] if n]
    console.print(f"[green]indexed[/] {', '.join(parts)} in {report.seconds:.1f} s",
                  highlight=False)
    counts = ", ".join(f"{m} {n:,} ({info['indexes'][m]})" for m, n in info["counts"].items())
    console.print(f"{escape(display_path(collection))}: {info['items']:,} items: "
                  f"{counts or 'none'}",
                  highlight=False)
    if report.failed and not (report.embedded or report.reused or info["items"]):
        raise typer.Exit(1)


# -- search ---------------------------------------------------------------------------------
@app.command(context_settings={"allow_interspersed_args": True})
@user_errors
def search(
    collection: CollectionArg,
    query: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP045
        help='a text, a file, #ID, or a weighted sum: "2:dog barking" + cat.png - indoors',
        show_default=False)] = None,
    n: Annotated[int, typer.Option("-n", "--top", help="number of results")] = 10,
    in_: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--in", help="only results of these modalities: --in audio,pointcloud")] = None,
    modality: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--modality", "-m", help="modality of query files that name none (.npy)")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="NDJSON on stdout: {id, path, modality, score} per line")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="only the paths, one per line")] = False,
    each: Annotated[bool, typer.Option(
        "--each", help="the top N of every modality instead of N overall")] = False,
    model: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="the collection's model folder, if it moved")] = None,
    nprobe: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="IVF lists to visit (more: slower, closer to exact)")] = None,
) -> None:
    """Search a collection (without a query: describe it).

    A query is a sum of terms separated by + and - standing alone. A term
    is a text, a file (its modality from the collection, --modality, or
    its suffix), or #ID (an item of the collection). "2:" weighs a term,
    "audio:" names its modality, and text:x.png is the text "x.png".
    Put -- before a query that starts with "-".

    Examples:

        mcrx search sounds.mcrx "dog barking" --in audio -n 5

        mcrx search sounds.mcrx '"2:dog barking" + cat.png - indoors'

        mcrx search shapes.mcrx pointcloud:chair.npy --in audio --paths | head -3
    """
    from mcrx.search.collection import Collection

    with Collection(collection) as opened:
        if model is not None:
            opened.use_model(model)
        if not query:
            print(json.dumps(opened.info(), indent=2))
            return
        hits = opened.search(query, n=n, modalities=_split_list(in_), default_modality=modality,
                             nprobe=nprobe, each=each)
    if json_output:
        for hit in hits:
            print(json.dumps(hit.as_dict()))
    elif paths:  # one line per hit, whatever the name holds (see display_path)
        for hit in hits:
            print(display_path(hit.path))
    else:
        table = Table(title=escape(display_path(' '.join(query))), title_justify="left",
                      show_edge=False)
        for column, justify in [("#", "right"), ("score", "right"), ("modality", "left"),
                                ("id", "right"), ("path", "left")]:
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for rank, hit in enumerate(hits, 1):
            table.add_row(str(rank), f"{hit.score:.3f}", hit.modality, str(hit.id),
                          escape(display_path(hit.path)))
        Console(file=sys.stdout).print(table)
        if not hits:
            console.print("no results (is the collection empty for these modalities?)")


# -- serve ----------------------------------------------------------------------------------
@app.command()
@user_errors
def serve(
    collections: Annotated[list[Path], typer.Argument(help="collection folders",
                                                      show_default=False)],
    host: Annotated[str, typer.Option(
        help="address to bind; 127.0.0.1 keeps it on this machine")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="largest upload accepted")] = 16,
) -> None:
    """A web page and a JSON API to search collections.

    Type a query or drop a file on the page. Queries may name only the
    collections' files; other files are uploaded (kept in a temporary
    folder until embedded). The API: GET /api/search?q=...&in=audio&n=10,
    POST /api/search (multipart, with `file`), GET /api/collections;
    its docs are at /api/docs.

    Examples:

        mcrx serve sounds.mcrx shapes.mcrx --port 8000

        curl 'http://127.0.0.1:8000/api/search?q=%2312&in=audio'
    """
    from mcrx.search.collection import Collection
    from mcrx.search.server import serve as run_server

    opened = [Collection(path) for path in collections]
    for c in opened:
        c.model  # noqa: B018 - load now: the first query should not wait, and a missing model fails here
        c.refresh_indexes()
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning[/]: serving on {host}: anyone who can reach this "
                      "address can search these collections and read their files")
    # the server says "serving ... on http://..." once it has bound the port
    run_server(opened, host=host, port=port, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
