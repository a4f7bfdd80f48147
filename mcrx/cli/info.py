"""Commands that describe what is installed: schema, list-plugins."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mcrx.cli.app import app, user_errors


@app.command()
@user_errors
def schema(
    plugins: Annotated[bool, typer.Option(help="include every plugin's params schema")] = True,
) -> None:
    """Print the JSON Schema of recipes, with plugin params.

    Each plugin component's params schema is under `x-mcrx-components`."""
    from mcrx.recipe.schema import Recipe

    document = Recipe.model_json_schema()
    if plugins:
        from mcrx.plugin.manager import get_registry

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

    from mcrx.plugin.manager import get_registry

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
