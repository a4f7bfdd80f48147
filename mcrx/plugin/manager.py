"""Loading plugins and building the registry.

Built-in components of the core are registered by the module :mod:`mcrx.plugin.builtin` under the
plugin name ``mcrx``. Everything else, the built-in plugins under ``plugins/`` included,
arrives through the ``mcrx`` entry-point group exactly as a third-party plugin would.

Entry points are loaded one at a time: a plugin that fails to import, or whose hook raises,
is recorded with its error (``mcrx list-plugins`` shows it) and never stops the others.

Environment knobs:
- ``MCRX_DISABLE_PLUGINS=a,b``: skip these entry points by name;
- ``MCRX_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points at all (only the core and
  plugins registered in code with :func:`register_plugin`).
"""

from __future__ import annotations

import os
import textwrap
import traceback
from importlib import metadata
from typing import Any

import pluggy

from mcrx.plugin import hookspecs
from mcrx.plugin.registry import KINDS, PLURALS, PluginInfo, Registry

ENTRY_POINT_GROUP = "mcrx"
#: every hook a plugin may implement (the functions of :mod:`mcrx.plugin.hookspecs`)
_HOOK_NAMES = frozenset(name for name in dir(hookspecs) if name.startswith("register_"))

_manager: pluggy.PluginManager | None = None
_load_errors: dict[str, PluginInfo] = {}
_registry: Registry | None = None


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get("MCRX_DISABLE_PLUGINS", "").split(",") if n.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("MCRX_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0", "false")


def duplicate_hooks(plugin: Any) -> list[str]:
    """Hook functions defined twice in one plugin module (or class). Python keeps only the
    last definition of a name and pluggy never sees the first, so a second
    ``def register_spaces`` silently drops everything the first one registers: mcrx refuses
    the plugin instead, naming both lines. Plugins without readable source are not checked."""
    import ast
    import inspect

    target = plugin if inspect.ismodule(plugin) or inspect.isclass(plugin) else type(plugin)
    try:
        source = inspect.getsource(target)
        where = inspect.getsourcefile(target) or "?"
    except (OSError, TypeError):
        return []
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body
    if inspect.isclass(target) and body and isinstance(body[0], ast.ClassDef):
        body = body[0].body
    lines: dict[str, list[int]] = {}
    first_line = 1 if inspect.ismodule(target) else inspect.getsourcelines(target)[1]
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.name in _HOOK_NAMES
        ):
            lines.setdefault(node.name, []).append(node.lineno + first_line - 1)
    return [
        f"{name} is defined {len(found)} times in {where} (lines "
        f"{', '.join(map(str, found))}): Python keeps only the last, so the others never "
        "run; merge them into one function"
        for name, found in lines.items()
        if len(found) > 1
    ]


def _short_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _manager
    if _manager is not None:
        return _manager
    from mcrx.plugin import builtin

    manager = pluggy.PluginManager("mcrx")
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, name="mcrx")
    manager.register(builtin.PrecomputedFeatures(), name=builtin.FEATURES_PLUGIN)
    if not _autoload_disabled():
        disabled = _disabled()
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in disabled or manager.has_plugin(entry_point.name):
                continue
            version = entry_point.dist.version if entry_point.dist else ""
            try:
                module = entry_point.load()
                manager.register(module, name=entry_point.name)
            except Exception as exc:  # a broken plugin must never stop the others
                _load_errors[entry_point.name] = PluginInfo(
                    name=entry_point.name,
                    version=version,
                    module=entry_point.value,
                    error=_short_error(exc),
                )
    manager.check_pending()
    _manager = manager
    return manager


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object (module or instance with ``@hookimpl`` methods) in code.
    Used by tests and notebooks; call :func:`unregister_plugin` to undo."""
    get_plugin_manager().register(plugin, name=name)
    reset_registry()


def unregister_plugin(name: str) -> None:
    manager = get_plugin_manager()
    if manager.has_plugin(name):
        manager.unregister(name=name)
    reset_registry()


def reset_registry() -> None:
    global _registry
    _registry = None


def reset() -> None:
    """Forget everything loaded (tests use this after changing the environment knobs)."""
    global _manager, _registry
    _manager = None
    _registry = None
    _load_errors.clear()


def _plugin_version(name: str, plugin: Any) -> tuple[str, str]:
    module = getattr(plugin, "__name__", type(plugin).__module__)
    if name in ("mcrx", "features"):  # the core's own plugins
        from mcrx import __version__

        return __version__, module
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name and entry_point.dist is not None:
            return entry_point.dist.version, module
    return getattr(plugin, "__version__", ""), module


def get_registry() -> Registry:
    """Every component of every loaded plugin, built once per process.

    Each plugin's hooks are called with a ``register`` bound to that plugin's name. A hook
    that raises marks its plugin as broken; what it registered before raising is dropped."""
    global _registry
    if _registry is not None:
        return _registry
    manager = get_plugin_manager()
    registry = Registry()
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        version, module = _plugin_version(name, plugin)
        staging = Registry()  # register into a scratch registry first: all or nothing
        staging.plugins[name] = PluginInfo(name=name, version=version, module=module)
        error = "; ".join(duplicate_hooks(plugin)) or None
        for kind in KINDS if error is None else ():
            hook = getattr(manager.hook, f"register_{PLURALS[kind]}")
            for impl in hook.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(register=staging.register_callback(kind, name))
                except Exception as exc:
                    error = _short_error(exc)
                    break
            if error:
                break
        if error is None:  # refuse the whole plugin if any of its names is taken
            clashes = [
                f"{kind} {spec_name!r} is already registered by "
                f"{registry.get(kind, spec_name).plugin!r}"
                for kind in KINDS
                for spec_name in staging.names(kind)
                if registry.registered_exactly(kind, spec_name)
            ]
            error = "; ".join(clashes) or None
        info = PluginInfo(name=name, version=version, module=module, error=error)
        if error is None:
            for kind in KINDS:
                for spec in staging.all(kind):
                    registry.add(spec)
            info.registered = registry.plugins[name].registered if name in registry.plugins else {}
        registry.plugins[name] = info
    for name, info in _load_errors.items():
        registry.plugins[name] = info
    _registry = registry
    return registry


def distribution_of(plugin: str) -> str:
    """The distribution (what ``pip install`` takes) that provides ``plugin``: the one
    whose ``mcrx`` entry point has that name when it is installed, else the convention of
    mcrx's own plugins, ``mcrx-<plugin>`` (a model's manifest records plugin names and
    versions, not distributions)."""
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == plugin and entry_point.dist is not None:
            return entry_point.dist.metadata["Name"] or f"mcrx-{plugin}"
    return f"mcrx-{plugin}"


def missing_plugin_message(plugin: str, version: str | None, needed_for: str,
                           registry: Registry | None = None) -> str:
    """Why ``needed_for`` (e.g. "the model's space clap/630k") cannot be built and what to
    install: the plugin's distribution and the version the model was made with. A plugin
    that is installed but failed to load, or is disabled, is said to be so instead: pip
    would not help there."""
    recorded = (f"version {version} recorded in the manifest" if version
                else "the manifest records no version")
    info = registry.plugins.get(plugin) if registry is not None else None
    if info is not None and info.error:
        return (f"{needed_for} needs the plugin {plugin!r}, which is installed but failed to "
                f"load: {info.error} (`mcrx list-plugins` shows every plugin; {recorded})")
    if _autoload_disabled() and plugin not in (registry.plugins if registry else {}):
        return (f"{needed_for} needs the plugin {plugin!r}: plugins are not loaded "
                f"(MCRX_DISABLE_PLUGIN_AUTOLOAD is set; {recorded})")
    if plugin in _disabled():
        return (f"{needed_for} needs the plugin {plugin!r}, disabled by MCRX_DISABLE_PLUGINS "
                f"({recorded})")
    return (f"{needed_for} needs the plugin {plugin!r}, which is not installed: install the "
            f"`{distribution_of(plugin)}` distribution (plugin {plugin}, {recorded})")


def register_commands(cli: Any) -> None:
    """Let every plugin add sub-commands to the root typer app; broken ones are skipped."""
    manager = get_plugin_manager()
    for impl in manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            _load_errors.setdefault(
                impl.plugin_name, PluginInfo(name=impl.plugin_name, error=_short_error(exc))
            )
