"""The ``mcrx`` command line: one module per command group, each adding its commands to the
root app of :mod:`mcrx.cli.app`. The core's groups are imported here in the order ``--help``
lists them; plugins' commands are added by :func:`main` (the console script) through the
``register_commands`` hook, in one place."""

from importlib import import_module

from mcrx.cli.app import app

#: the core's command groups, in the order --help shows them
COMMAND_GROUPS = ("run", "plan", "evaluate", "info", "official", "model", "search", "cache")

for _group in COMMAND_GROUPS:
    import_module(f"mcrx.cli.{_group}")


def main() -> None:
    """Console-script entry point: the core's commands, then every plugin's."""
    from mcrx.plugin.manager import register_commands

    register_commands(app)
    app()


__all__ = ["COMMAND_GROUPS", "app", "main"]
