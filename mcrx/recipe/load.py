"""Reading recipes: YAML, ``--set`` overrides, then the schema; with a registry, the checks
of :mod:`.check` too. Every problem is reported with its location.

Recipes come from users and from other people's repositories, so reading is defensive: the
YAML loader builds plain data only (no ``!!python/`` objects, no timestamps or binary), a key
given twice is an error instead of "last one wins", files must be UTF-8, and a document nested
deeper than any recipe needs, or expanding (through aliases) to more values than any recipe
has, is refused before the schema walks it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.registry import Registry
from mcrx.recipe.schema import Recipe

#: deepest nesting a recipe may have (the schema needs 5; plugin params a few more)
MAX_DEPTH = 32
#: most values a recipe may expand to, aliases counted each time they are used
MAX_VALUES = 100_000
#: largest recipe file read (the shipped ones are a few KiB; /dev/zero never ends)
MAX_BYTES = 4 * 2**20


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


# -- YAML ---------------------------------------------------------------------------------
class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` restricted to JSON's data model (what a recipe and a manifest can
    hold): mappings with unique keys, lists, strings, numbers, booleans, null. Dates stay
    strings; ``!!binary``, ``!!set``, ``!!omap``, ``!!pairs`` and any ``!!python/`` tag are
    errors."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # merge keys (<<: *base) first, as SafeLoader does
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found the key {key!r} twice (first on line "
                        f"{seen[key].line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def _refuse(self, node):
        raise yaml.constructor.ConstructorError(
            None, None, f"the tag {_short_tag(node.tag)!r} is not allowed in a recipe (plain "
            "mappings, lists, strings, numbers, booleans and null only)", node.start_mark)


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


RecipeLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
for _tag in ("binary", "set", "omap", "pairs"):
    RecipeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", RecipeLoader._refuse)
RecipeLoader.add_constructor(None, RecipeLoader._refuse)  # any unknown tag, !!python/ too


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"not valid YAML{where}: {problem}"


def _check_size(value: Any) -> str | None:
    """Why ``value`` is too deep or too large for a recipe, or None. Iterative (a deep value
    must not exhaust the stack here either) and memoised by identity, so an alias used a
    million times is walked once but counted a million times."""
    sizes: dict[int, int] = {}  # id → values it expands to
    stack: list[tuple[Any, int, bool]] = [(value, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (a recipe needs a few)"
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(node)] > MAX_VALUES:
                return (f"expands to more than {MAX_VALUES:,} values (aliases count each time "
                        "they are used)")
            continue
        if id(node) in sizes:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, (dict, list)))
    return None


def parse_yaml(text: str) -> Any:
    """Plain data from YAML text (see :class:`RecipeLoader`); raises ``ValueError`` with a
    message that says where and why."""
    try:
        value = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_problem(exc)) from None
    except RecursionError:  # the parser is recursive: brackets nested thousands deep
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep (a recipe needs a "
                         "few)") from None
    except ValueError as exc:  # int(): Python refuses numbers of more than 4300 digits
        raise ValueError(f"a number too long to read ({str(exc).split(';')[0]})") from None
    problem = _check_size(value)
    if problem:
        raise ValueError(problem)
    return value


# -- --set --------------------------------------------------------------------------------
def _override_value(override: str, key: str, value: str) -> Any:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise McrxError(f"--set {_printable(key)}: the value is not valid UTF-8 text") from None
    try:
        return parse_yaml(value)
    except ValueError as exc:
        raise McrxError(f"--set {_printable(key)}: the value {_printable(value, 60)}: {exc} "
                        "(values are YAML: quote a string that is not)") from None


def _printable(text: str, limit: int = 200) -> str:
    """``text`` as it can be shown: undecodable bytes as escapes, long values cut."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(text if len(text) <= limit else text[:limit] + "…")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set training.epochs=2 leaves.0.bridge=text``: values are parsed as YAML."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise McrxError(f"--set expects key=value, got {_printable(override)}")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise McrxError(f"--set {_printable(key)}: the key is not valid UTF-8 "
                            "text") from None
        parsed = _override_value(override, key, value)
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not (part.isascii() and part.isdecimal()) or int(part) >= len(node):
                    raise McrxError(f"--set {key}: {_loc(parts[:i])} has no item {part} "
                                    f"(it has {len(node)}, from 0)")
                part = int(part)
            elif not isinstance(node, dict):
                raise McrxError(f"--set {key}: {_loc(parts[:i])} is not a mapping")
            if last:
                node[part] = parsed
            else:
                if isinstance(node, dict) and part not in node:
                    node[part] = {}
                node = node[part]
    problem = _check_size(raw)
    if problem:
        raise McrxError(f"--set: the recipe {problem}")
    return raw


# -- files ----------------------------------------------------------------------------------
def read_recipe_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise McrxError(f"{path} is a folder; give a recipe's YAML file")
    if not path.is_file():
        kind = " (it is not a regular file)" if path.exists() else ""
        raise McrxError(f"recipe not found: {path}{kind}")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise McrxError(f"{path}: {path.stat().st_size:,} bytes; a recipe is at most "
                            f"{MAX_BYTES:,} (is this the recipe?)")
        data = path.read_bytes()
    except OSError as exc:
        raise McrxError(f"cannot read the recipe {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = (" (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff")
                or b"\x00" in data[:200] else "")
        raise RecipeError(str(path), [("", f"not UTF-8 text{hint}: byte {exc.start} (line "
                                       f"{line}) cannot be decoded; save the file as UTF-8")]
                          ) from None
    try:
        raw = parse_yaml(text)
    except ValueError as exc:
        raise RecipeError(str(path), [("", str(exc))]) from None
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
