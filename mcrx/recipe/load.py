"""Reading recipes: YAML, ``--set`` overrides, then the schema; with a registry, the checks
of :mod:`.check` too. Every problem is reported with its location."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.registry import Registry
from mcrx.recipe.schema import Recipe


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


def pydantic_errors(exc: ValidationError, prefix: tuple = ()) -> list[tuple[str, str]]:
    out = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "field required"
        out.append((_loc(prefix + tuple(error["loc"])), message))
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set training.epochs=2 leaves.0.bridge=text``: values are parsed as YAML."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise McrxError(f"--set expects key=value, got {override!r}")
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise McrxError(f"--set {key}: {_loc(parts[:i])} has no item {part}")
                part = int(part)
            elif not isinstance(node, dict):
                raise McrxError(f"--set {key}: {_loc(parts[:i])} is not a mapping")
            if last:
                node[part] = yaml.safe_load(value)
            else:
                if isinstance(node, dict) and part not in node:
                    node[part] = {}
                node = node[part]
    return raw


def read_recipe_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise McrxError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RecipeError(str(path), [("", f"not valid YAML{where}: {exc}")]) from None
    if not isinstance(raw, dict):
        raise RecipeError(str(path), [("", "a recipe is a YAML mapping")])
    return raw


def parse_recipe(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Schema validation only (no registry): raises RecipeError with every problem."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(source, pydantic_errors(exc)) from None


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    registry: Registry | None = None,
    check_files: bool = True,
) -> Recipe:
    """Read, override, validate against the schema and, with a registry, against plugins."""
    raw = apply_overrides(read_recipe_yaml(path), overrides or [])
    recipe = parse_recipe(raw, str(path))
    if registry is not None:
        from mcrx.recipe.check import check_recipe

        errors = check_recipe(recipe, registry, check_files=check_files)
        if errors:
            raise RecipeError(str(path), errors)
    return recipe

