"""The chain a recipe declares, resolved against the registry once: per leaf its parent, its
bridge, the leaf modality x and the parent modality y that its pseudo pairs bring across;
which memories each space must encode; the method, connector and loss to use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcrx.errors import McrxError
from mcrx.plugin.registry import ComponentSpec, Registry
from mcrx.recipe.schema import Leaf, Recipe


def resolve_leaf_modalities(recipe: Recipe, leaf: Leaf, registry: Registry) -> tuple[str, str]:
    """(leaf modality x, parent modality y) for a leaf; raises McrxError when ambiguous."""
    with_memory = set(recipe.memories)

    def pick(space: str, declared: str | None, field: str) -> str:
        if declared:
            return declared
        modalities = registry.space(space).modalities
        candidates = [m for m in modalities if m != leaf.bridge and m in with_memory]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise McrxError(
                f"space {space} has no modality besides the bridge {leaf.bridge!r} with a "
                f"memory; add one of {[m for m in modalities if m != leaf.bridge]} under "
                "'memories'"
            )
        raise McrxError(f"space {space} has several candidates {candidates}; set '{field}'")

    return (
        pick(leaf.space, leaf.modality, "modality"),
        pick(recipe.parent_of(leaf), leaf.parent_modality, "parent_modality"),
    )


@dataclass(frozen=True)
class Link:
    """One leaf of the chain, resolved: where it attaches and which modalities cross."""

    index: int  # position in recipe.leaves (its seed offset, its location in errors)
    leaf: Leaf
    parent: str  # the space it attaches to: the base or an earlier leaf
    leaf_modality: str  # x: the leaf's modality brought across (audio for CLAP → CLIP)
    parent_modality: str  # y: the parent's modality its pseudo pairs retrieve (image)

    @property
    def space(self) -> str:
        return self.leaf.space

    @property
    def bridge(self) -> str:
        return self.leaf.bridge

    def memory_keys(self) -> list[tuple[str, str]]:
        """(modality, space) of the four memories, in pseudo-pair role order: X^L, B^L, B^P,
        Y^P (see :mod:`mcrx.methods.common`)."""
        return [(self.leaf_modality, self.space), (self.bridge, self.space),
                (self.bridge, self.parent), (self.parent_modality, self.parent)]


@dataclass(frozen=True)
class Chain:
    """Everything a run needs to know about a recipe's structure, resolved once."""

    recipe: Recipe
    method: ComponentSpec  # the registered method (its rules: defaults, target)
    links: tuple[Link, ...]
    connector_name: str
    connector_params: dict[str, Any]
    loss_name: str

    @property
    def target(self) -> str:
        """"parent" (the base's own space: Ex-MCR) or "new" (C-MCR)."""
        return self.method.rules.target

    def link(self, space: str) -> Link | None:
        return next((link for link in self.links if link.space == space), None)

    def needed_memories(self) -> dict[str, list[str]]:
        """modality → spaces whose embeddings of that memory the pseudo pairs need."""
        return needed_memories(self.links)

    def space_of(self, modality: str, registry: Registry) -> str:
        """The space that embeds ``modality`` in the unified model (the one nearest the base)."""
        for name in self.recipe.space_names():
            if modality in registry.space(name).modalities:
                return name
        raise McrxError(f"no space of the recipe embeds {modality!r}")


def resolve_links(recipe: Recipe, registry: Registry) -> tuple[Link, ...]:
    """Every leaf resolved (raises McrxError where a modality is ambiguous or missing)."""
    links = []
    for index, leaf in enumerate(recipe.leaves):
        x, y = resolve_leaf_modalities(recipe, leaf, registry)
        links.append(Link(index, leaf, recipe.parent_of(leaf), x, y))
    return tuple(links)


def needed_memories(links: tuple[Link, ...]) -> dict[str, list[str]]:
    """modality → spaces whose embeddings of that memory the pseudo pairs need."""
    needs: dict[str, list[str]] = {}
    for link in links:
        for modality, space in link.memory_keys():
            spaces = needs.setdefault(modality, [])
            if space not in spaces:
                spaces.append(space)
    return needs


def resolve_chain(recipe: Recipe, registry: Registry) -> Chain:
    """The resolved chain of a recipe that passed :func:`mcrx.recipe.check.check_recipe`."""
    method = registry.method(recipe.method)
    connector = recipe.training.connector
    return Chain(
        recipe=recipe,
        method=method,
        links=resolve_links(recipe, registry),
        connector_name=connector.name if connector and connector.name else
        method.rules.connector,
        connector_params=connector.params if connector else {},
        loss_name=recipe.training.loss or method.rules.loss,
    )
