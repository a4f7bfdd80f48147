"""``mcrx cache``: list, size, verify and prune the shared cache ($MCRX_CACHE_DIR).

The cache holds what is slow to make (memories, pseudo pairs, ann indexes): at paper scale
it weighs about a hundred GiB, so it needs to be seen and trimmed like a database, not
guessed at with ``du`` and ``rm -r`` (which may remove an entry a run is reading)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mcrx.cli.app import app, user_errors
from mcrx.errors import McrxError

cache_app = typer.Typer(
    name="cache",
    help="See and trim the shared cache ($MCRX_CACHE_DIR): list, size, verify, prune.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

KindOption = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer needs Optional here)
    typer.Option("--kind", help="only entries of this kind: memories, pairs, ann, connectors "
                 "(repeatable)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _kinds(kind: list[str] | None) -> tuple[str, ...]:
    from mcrx.store.cache import KINDS

    if not kind:
        return KINDS
    unknown = [k for k in kind if k not in KINDS]
    if unknown:
        raise McrxError(f"--kind: expected one of {', '.join(KINDS)}, got {unknown[0]!r}")
    return tuple(kind)


def _size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _root():
    from mcrx.store.paths import cache_root

    return cache_root()


@cache_app.command("list")
@user_errors
def list_(kind: KindOption = None, json_output: JsonOption = False) -> None:
    """Every cache entry by kind: space, modality, rows, dtype, size, when it was last used
    and by which runs (their output folders)."""
    from mcrx.store.cache import entries

    found = entries(_root(), _kinds(kind))
    if json_output:
        print(json.dumps([entry.as_dict() for entry in found], indent=2))
        return
    if not found:
        print(f"the cache at {_root()} holds no entries")
        return
    table = Table(title=f"mcrx cache: {escape(str(_root()))}", title_justify="left",
                  box=None, header_style="bold")
    for column in ("kind", "space", "modality", "rows", "dtype", "size", "last used",
                   "used by", "entry"):
        table.add_column(column, justify="right" if column in ("rows", "size") else "left")
    for entry in found:
        table.add_row(entry.kind, escape(entry.space), escape(entry.modality),
                      "" if entry.rows is None else f"{entry.rows:,}", entry.dtype,
                      _size_text(entry.size),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)),
                      escape(", ".join(entry.runs[-2:])) or "-",
                      escape(entry.path.relative_to(_root()).as_posix())
                      + ("" if entry.complete else " (incomplete)"))
    from rich.console import Console

    # stdout, wide enough for whole paths whatever the terminal (a pipe is 80 columns)
    wide = Console()
    Console(width=max(wide.width, 200)).print(table)


@cache_app.command()
@user_errors
def size(kind: KindOption = None, json_output: JsonOption = False) -> None:
    """What the cache weighs on disk, per kind and in all."""
    from mcrx.store.cache import entries

    found = entries(_root(), _kinds(kind))
    per_kind: dict[str, dict[str, int]] = {}
    for entry in found:
        line = per_kind.setdefault(entry.kind, {"entries": 0, "bytes": 0})
        line["entries"] += 1
        line["bytes"] += entry.size
    total = sum(line["bytes"] for line in per_kind.values())
    if json_output:
        print(json.dumps({"root": str(_root()), "kinds": per_kind, "bytes": total}, indent=2))
        return
    for name, line in per_kind.items():
        print(f"{name:<11} {line['entries']:>5} entries  {_size_text(line['bytes']):>10}")
    print(f"{'total':<11} {len(found):>5} entries  {_size_text(total):>10}  ({_root()})")


@cache_app.command()
@user_errors
def verify(
    full: Annotated[bool, typer.Option("--full", help="hash every byte (default: sizes and "
                                       "sampled blocks, as every read does)")] = False,
    kind: KindOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check every entry against its record: missing, truncated or rewritten files, NaN rows
    in entries of an earlier mcrx. Exits 1 when any entry is bad (a run would rebuild it;
    `mcrx cache prune` removes it now)."""
    from mcrx.store.cache import entries, entry_problem, has_record

    found = entries(_root(), _kinds(kind))
    report = []
    for entry in found:
        if not entry.complete:
            status, problem = "incomplete", "being written, or interrupted (resumable)"
        else:
            problem = entry_problem(entry, full=full)
            status = "bad" if problem else ("ok" if has_record(entry)
                                            else "ok (no digests: an earlier mcrx's)")
        report.append({"kind": entry.kind, "entry": str(entry.path), "status": status,
                       "problem": problem})
    bad = [line for line in report if line["status"] == "bad"]
    if json_output:
        print(json.dumps({"entries": report, "bad": len(bad)}, indent=2))
    else:
        for line in report:
            if line["status"] != "ok":
                print(f"{line['status']:<10} {line['kind']:<10} {line['entry']}"
                      + (f": {line['problem']}" if line["problem"] else ""))
        print(f"{len(report) - len(bad)} of {len(report)} entries whole"
              + (f", {len(bad)} bad: `mcrx cache prune` with their --kind removes them, or a "
                 "run rebuilds them" if bad else "")
              + (" (every byte hashed)" if full else " (sizes and sampled digests)"))
    if bad:
        raise typer.Exit(1)


@cache_app.command()
@user_errors
def prune(
    older_than: Annotated[
        Optional[str],  # noqa: UP045  (typer needs Optional here)
        typer.Option("--older-than", help="only entries not used for this long: 30d, 12h, "
                     "90m"),
    ] = None,
    kind: KindOption = None,
    bad: Annotated[bool, typer.Option("--bad", help="only entries that fail `verify`")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be removed, "
                                          "remove nothing")] = False,
    json_output: JsonOption = False,
) -> None:
    """Remove cache entries (all of them, or those matching --older-than / --kind / --bad).
    An entry whose lock is held — a run is writing or reading it — is kept. Says what it
    freed."""
    from mcrx.store.cache import entries, entry_problem, parse_age
    from mcrx.store.cache import prune as prune_entries

    age = parse_age(older_than) if older_than is not None else None
    found = entries(_root(), _kinds(kind))
    if bad:
        found = [entry for entry in found if entry.complete and entry_problem(entry)]
    done = prune_entries(found, age, dry_run=dry_run)
    freed = sum(entry.size for entry, action in done if action != "in use, kept")
    if json_output:
        print(json.dumps({"entries": [{**entry.as_dict(), "action": action}
                                      for entry, action in done],
                          "freed_bytes": 0 if dry_run else freed,
                          "would_free_bytes": freed if dry_run else 0}, indent=2))
        return
    for entry, action in done:
        print(f"{action:<13} {entry.kind:<10} {_size_text(entry.size):>10}  {entry.path}")
    kept = sum(1 for _, action in done if action == "in use, kept")
    verb = "would free" if dry_run else "freed"
    print(f"{verb} {_size_text(freed)} ({len(done) - kept} entries)"
          + (f"; {kept} in use, kept" if kept else ""))
