"""Recipes: YAML files that declare how spaces are chained into one unified space.

- :mod:`.schema`  the pydantic models (every field, its default, its description);
- :mod:`.load`    YAML and ``--set`` → a validated :class:`~.schema.Recipe`;
- :mod:`.check`   checks against the installed plugins, each problem with its location;
- :mod:`.chain`   the chain resolved once for a run (parents, modalities, components).

Relative paths in a recipe are resolved against the current working directory.
"""

from mcrx.recipe.load import load_recipe, parse_recipe
from mcrx.recipe.schema import Recipe

__all__ = ["Recipe", "load_recipe", "parse_recipe"]
