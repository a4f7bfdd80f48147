"""Checks of a recipe against the installed plugins: names exist, bridges are modalities of
both spaces, parents come before their children, the method's rules hold, plugin params
validate against the plugin's own model, files exist. Returns every problem as (location,
message); :func:`mcrx.recipe.load.load_recipe` raises them together."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mcrx.errors import McrxError
from mcrx.plugin.registry import Registry, UnknownComponentError
from mcrx.recipe.chain import needed_memories, resolve_leaf_modalities, resolve_links
from mcrx.recipe.load import pydantic_errors
from mcrx.recipe.schema import EMBEDDING_SUFFIXES, DataSource, Recipe


def _check_params(spec, params, loc: str, errors: list[tuple[str, str]]) -> None:
    try:
        spec.validate_params(params)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, (loc,)))
    except McrxError as exc:
        errors.append((loc, str(exc)))


def _check_source(
    source: DataSource, modality: str, spaces: list[str], loc: str, registry: Registry,
    errors: list[tuple[str, str]], check_files: bool,
) -> None:
    if source.dataset:
        try:
            spec = registry.dataset(source.dataset)
        except UnknownComponentError as exc:
            errors.append((f"{loc}.dataset", str(exc)))
        else:
            if spec.modalities and modality not in spec.modalities:
                errors.append((f"{loc}.dataset", f"dataset {source.dataset} has no {modality!r} "
                               f"items (it has {list(spec.modalities)})"))
            _check_params(spec, source.params, f"{loc}.params", errors)
    for space in source.embeddings:
        if space not in spaces:
            errors.append((f"{loc}.embeddings.{space}",
                           f"{space} does not need {modality!r} embeddings here "
                           f"(spaces that do: {spaces})"))
    if not (source.dataset or source.inputs):
        missing = [s for s in spaces if s not in source.embeddings]
        if missing:
            errors.append((f"{loc}.embeddings", f"no embeddings for {missing} and no "
                           "'dataset' or 'inputs' to encode them from"))
    if check_files:
        for space, path in source.embeddings.items():
            if path.suffix not in EMBEDDING_SUFFIXES:
                errors.append((f"{loc}.embeddings.{space}",
                               f"{path}: expected a .npy or .safetensors file"))
            elif not path.is_file():
                errors.append((f"{loc}.embeddings.{space}", f"file not found: {path}"))
        for field, path in (("inputs", source.inputs), ("labels", source.labels)):
            if path is not None and not path.exists():
                errors.append((f"{loc}.{field}", f"not found: {path}"))


def check_recipe(
    recipe: Recipe, registry: Registry, check_files: bool = True
) -> list[tuple[str, str]]:
    """Every problem of ``recipe`` against the loaded plugins, as (location, message)."""
    errors: list[tuple[str, str]] = []
    known_spaces: dict[str, Any] = {}
    refs = [("base", recipe.base)] + [(f"leaves.{i}", leaf) for i, leaf in enumerate(recipe.leaves)]
    for loc, ref in refs:
        try:
            spec = registry.space(ref.space)
        except UnknownComponentError as exc:
            errors.append((f"{loc}.space", str(exc)))
            continue
        if ref.space in known_spaces:
            errors.append((f"{loc}.space", f"{ref.space} appears twice in the chain"))
        known_spaces[ref.space] = spec
        _check_params(spec, ref.params, f"{loc}.params", errors)

    try:
        rules = registry.method(recipe.method).rules
    except UnknownComponentError as exc:
        errors.append(("method", str(exc)))
        rules = None
    if rules is not None:
        connector = recipe.training.connector
        for name, full in (("connector", connector.name if connector else rules.connector),
                           ("loss", recipe.training.loss or rules.loss)):
            try:
                component = registry.get(name, full)
            except UnknownComponentError as exc:
                errors.append((f"training.{name}", str(exc)))
            else:
                if name == "connector":
                    _check_params(component, connector.params if connector else {},
                                  "training.connector.params", errors)
        if rules.max_leaves is not None and len(recipe.leaves) > rules.max_leaves:
            errors.append(("leaves", f"{recipe.method} connects exactly two spaces: give one "
                           f"leaf, not {len(recipe.leaves)}" if rules.max_leaves == 1 else
                           f"{recipe.method} takes at most {rules.max_leaves} leaves, not "
                           f"{len(recipe.leaves)}"))

    seen = {recipe.base.space}
    chain_ok = True
    for i, leaf in enumerate(recipe.leaves):
        parent = recipe.parent_of(leaf)
        if parent not in seen:
            errors.append((f"leaves.{i}.parent", f"{parent!r} is not the base or an earlier "
                           f"leaf (declared so far: {sorted(seen)})"))
            chain_ok = False
        seen.add(leaf.space)
        if (rules is not None and rules.leaves_attach_to_base and leaf.parent
                and leaf.parent != recipe.base.space):
            errors.append((f"leaves.{i}.parent", f"{recipe.method} leaves attach to the base"))
        if not registry.has("modality", leaf.bridge):
            errors.append((f"leaves.{i}.bridge", f"unknown modality {leaf.bridge!r}; known: "
                           f"{registry.names('modality')}"))
            chain_ok = False
            continue
        for space in (leaf.space, parent):
            spec = known_spaces.get(space)
            if spec is not None and leaf.bridge not in spec.modalities:
                errors.append((f"leaves.{i}.bridge", f"{leaf.bridge!r} is not a modality of "
                               f"space {space} (it has {list(spec.modalities)})"))
                chain_ok = False
        for field, declared, space in (("modality", leaf.modality, leaf.space),
                                       ("parent_modality", leaf.parent_modality, parent)):
            spec = known_spaces.get(space)
            if declared and spec is not None and declared not in spec.modalities:
                errors.append((f"leaves.{i}.{field}", f"{declared!r} is not a modality of "
                               f"space {space} (it has {list(spec.modalities)})"))
                chain_ok = False

    for modality in recipe.memories:
        if not registry.has("modality", modality):
            errors.append((f"memories.{modality}", f"unknown modality {modality!r}; known: "
                           f"{registry.names('modality')}"))

    if chain_ok and len(known_spaces) == len(refs):
        resolved = True
        for i, leaf in enumerate(recipe.leaves):
            try:
                resolve_leaf_modalities(recipe, leaf, registry)
            except McrxError as exc:
                errors.append((f"leaves.{i}", str(exc)))
                resolved = False
        if resolved:
            needs = needed_memories(resolve_links(recipe, registry))
            for modality, spaces in needs.items():
                if modality not in recipe.memories:
                    errors.append(("memories", f"missing a {modality!r} memory (needed by "
                                   f"{', '.join(spaces)})"))
                    continue
                _check_source(recipe.memories[modality], modality, spaces,
                              f"memories.{modality}", registry, errors, check_files)
        for j, evaluation in enumerate(recipe.evaluation):
            for modality, source in evaluation.data.items():
                owners = [s for s, spec in known_spaces.items() if modality in spec.modalities]
                loc = f"evaluation.{j}.data.{modality}"
                if not owners:
                    errors.append((loc, f"no space of the recipe embeds {modality!r}"))
                    continue
                _check_source(source, modality, owners[:1], loc, registry, errors, check_files)
    return errors
