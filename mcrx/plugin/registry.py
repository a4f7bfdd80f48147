"""The registry: every component plugins registered, namespaced by plugin (``toy/clip``).

Built by :func:`mcrx.plugin.manager.get_registry`; recipes resolve names through it only (never
through dotted import paths)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcrx.errors import McrxError

KINDS = ("modality", "space", "method", "connector", "loss", "dataset")
PLURALS = {"modality": "modalities", "space": "spaces", "method": "methods",
           "connector": "connectors", "loss": "losses", "dataset": "datasets"}


class UnknownComponentError(McrxError):
    """A recipe or call named a component no loaded plugin registered."""


class DuplicateComponentError(McrxError):
    """Two registrations used the same full name."""


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component. ``factory`` builds it (None for modalities)."""

    kind: str
    name: str  # full name: "toy/clip", or a bare modality name such as "audio"
    plugin: str
    factory: Callable[..., Any] | None = None
    modalities: tuple[str, ...] = ()
    dim: int | None = None
    params: type | None = None  # a pydantic model validating the component's `params:`
    description: str = ""
    rules: Any = None  # methods: their torch-free MethodRules (defaults, recipe rules)

    def validate_params(self, params: dict[str, Any] | None) -> Any:
        """Validate ``params`` against the component's pydantic model (raises
        pydantic.ValidationError). Components without a model accept no params."""
        params = params or {}
        if self.params is None:
            if params:
                raise McrxError(f"{self.kind} {self.name} takes no params (got {sorted(params)})")
            return None
        return self.params.model_validate(params)

    def build(self, *args: Any, params: dict[str, Any] | None = None) -> Any:
        """Call the factory with ``args`` then the validated params: spaces get
        ``(full_name, params)``, connectors ``(ConnectorSpec, params)``, losses
        ``(Training, params)``, datasets and methods ``(params)``."""
        if self.factory is None:
            raise McrxError(f"{self.kind} {self.name} has no factory")
        return self.factory(*args, self.validate_params(params))


@dataclass
class PluginInfo:
    """What ``mcrx list-plugins`` shows for one plugin."""

    name: str
    version: str = ""
    module: str = ""
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "error": self.error,
            **{PLURALS[kind]: self.registered.get(kind, []) for kind in KINDS},
        }


class Registry:
    """Components by kind and full name, plus per-plugin provenance."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}

    # -- registration ---------------------------------------------------------------------
    def add(self, spec: ComponentSpec) -> None:
        table = self._components[spec.kind]
        if spec.name in table:
            other = table[spec.name].plugin
            raise DuplicateComponentError(
                f"{spec.kind} {spec.name!r} is registered twice (by {other!r} and {spec.plugin!r})"
            )
        table[spec.name] = spec
        info = self.plugins.setdefault(spec.plugin, PluginInfo(name=spec.plugin))
        info.registered.setdefault(spec.kind, []).append(spec.name)

    def bind(self, spec: ComponentSpec) -> None:
        """Register one member of a family exactly (``features/clip-l14`` with the dim and
        modalities its params declare), replacing an earlier binding of that name."""
        self._components[spec.kind][spec.name] = spec

    def register_callback(self, kind: str, plugin: str) -> Callable[..., None]:
        """The ``register`` function handed to one plugin's ``register_<kind>s`` hook."""

        def register(name: str, factory: Callable[..., Any] | None = None, **details: Any) -> None:
            if not name or name.startswith("/") or name.endswith("/"):
                raise McrxError(f"plugin {plugin!r} registered a {kind} with an empty name")
            full = name if kind == "modality" else f"{plugin}/{name}"
            if "modalities" in details:
                details["modalities"] = tuple(details["modalities"])
            self.add(ComponentSpec(kind=kind, name=full, plugin=plugin, factory=factory, **details))

        return register

    # -- look-up --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def all(self, kind: str) -> list[ComponentSpec]:
        return [self._components[kind][name] for name in self.names(kind)]

    def registered_exactly(self, kind: str, name: str) -> bool:
        return name in self._components[kind]

    def has(self, kind: str, name: str) -> bool:
        try:
            self.get(kind, name)
        except UnknownComponentError:
            return False
        return True

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec registered under ``name``; a name ending in ``*`` is a family that
        matches any suffix (``clip/*`` matches ``clip/ViT-B-32``)."""
        table = self._components[kind]
        if name in table:
            return table[name]
        for pattern, spec in table.items():
            if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
                return spec
        known = ", ".join(self.names(kind)) or "none"
        raise UnknownComponentError(f"unknown {kind} {name!r}; known {kind}s: {known}")

    def modality(self, name: str) -> ComponentSpec:
        return self.get("modality", name)

    def space(self, name: str) -> ComponentSpec:
        return self.get("space", name)

    def method(self, name: str) -> ComponentSpec:
        """A method by its full name, or by the bare name of a core method (``ex-mcr`` is
        ``mcrx/ex-mcr``: recipes name the papers' methods without a namespace)."""
        if "/" not in name and self.registered_exactly("method", f"mcrx/{name}"):
            name = f"mcrx/{name}"
        return self.get("method", name)

    def connector(self, name: str) -> ComponentSpec:
        return self.get("connector", name)

    def loss(self, name: str) -> ComponentSpec:
        return self.get("loss", name)

    def dataset(self, name: str) -> ComponentSpec:
        return self.get("dataset", name)
