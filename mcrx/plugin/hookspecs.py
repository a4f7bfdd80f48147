"""The hooks a plugin implements to add modalities, spaces, methods, connectors, losses,
datasets and CLI commands to mcrx.

Every ``register_*`` hook follows the "register callback" style: mcrx passes a ``register``
function and the plugin calls it once per component. mcrx binds the callback to the plugin's
name, so every component is namespaced (``toy/clip``) and the registry knows who added what.

Hook modules must import without torch (or open_clip, laion_clap, ...): import heavy
libraries inside the factories you register, so ``mcrx list-plugins`` stays instant.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("mcrx")
hookimpl = pluggy.HookimplMarker("mcrx")


@hookspec
def register_modalities(register: Any) -> None:
    """Add input kinds: ``register(name, description="")``. Modality names are global
    (``image``, ``text``, ``audio`` and ``pointcloud`` come with mcrx)."""


@hookspec
def register_spaces(register: Any) -> None:
    """Add contrastive spaces: ``register(name, factory, *, modalities, dim=None,
    params=None, description="")``. ``name`` may end in ``*`` for a family of spaces
    (``clip/*`` accepts ``clip/ViT-B-32``). ``factory(full_name, params) -> mcrx.Space``;
    ``params`` is an instance of the pydantic model given as ``params``."""


@hookspec
def register_methods(register: Any) -> None:
    """Add ways of making pseudo pairs: ``register(name, factory, *, rules, params=None,
    description="")``. ``factory(params) -> mcrx.methods.common.Method`` (its pools);
    ``rules`` is an ``mcrx.MethodRules``: the method's default connector and loss, and what
    recipes using it must respect (how many leaves, where they attach)."""


@hookspec
def register_connectors(register: Any) -> None:
    """Add trainable projections: ``register(name, factory, *, params=None, description="")``.
    ``factory(spec: ConnectorSpec, params) -> Connector`` (both in :mod:`mcrx.methods.common`)."""


@hookspec
def register_losses(register: Any) -> None:
    """Add training objectives: ``register(name, factory, *, params=None, description="")``.
    ``factory(training: mcrx.recipe.schema.Training, params) -> callable(outputs, batch) ->
    (loss, parts)``."""


@hookspec
def register_datasets(register: Any) -> None:
    """Add sources of raw inputs: ``register(name, factory, *, modalities, params=None,
    description="")``. ``factory(params) -> mcrx.Dataset``."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``mcrx`` command line: ``cli`` is the root ``typer.Typer``."""
