"""Recipes: YAML files that declare how spaces are chained into one unified space.

Validation happens in two layers, and every problem is reported with its location:

1. the pydantic schema below (``extra="forbid"``: a misspelt key is an error);
2. :func:`check_recipe` against the plugin registry: names exist, bridges are modalities of
   both spaces, parents come before their children, plugin params validate against the
   plugin's own model, files exist.

Relative paths in a recipe are resolved against the current working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.registry import Registry, UnknownComponentError

EMBEDDING_SUFFIXES = (".npy", ".safetensors")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpaceRef(StrictModel):
    space: str = Field(description="registered space name, e.g. 'toy/clip' or 'clip/ViT-B-32'")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the space plugin's own parameters (validated by it)"
    )


class Leaf(SpaceRef):
    bridge: str = Field(description="the modality this space shares with its parent")
    parent: str | None = Field(
        None, description="the space this leaf attaches to: the base (default) or an earlier leaf"
    )
    modality: str | None = Field(
        None,
        description="the leaf modality to bring across (default: the only non-bridge "
        "modality of the space that has a memory)",
    )
    parent_modality: str | None = Field(
        None,
        description="the parent's non-bridge modality used for pseudo pairs (default: the "
        "only one with a memory)",
    )


class DataSource(StrictModel):
    """Where the items of one modality come from: raw inputs encoded by each space that
    needs them (``dataset`` or ``inputs``), or embeddings computed beforehand per space."""

    dataset: str | None = Field(None, description="a registered dataset, e.g. 'toy/world'")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset's parameters")
    inputs: Path | None = Field(
        None, description="a folder of files, a .txt file (one item per line) or a .npy array"
    )
    embeddings: dict[str, Path] = Field(
        default_factory=dict,
        description="space name → precomputed N×d embeddings (.npy or .safetensors), row "
        "aligned across spaces",
    )
    labels: Path | None = Field(None, description="class label per item (.npy or .txt)")
    limit: int | None = Field(None, gt=0, description="use only the first N items")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if self.dataset and self.inputs:
            raise ValueError("give either 'dataset' or 'inputs', not both")
        if not (self.dataset or self.inputs or self.embeddings):
            raise ValueError("give 'dataset', 'inputs' or 'embeddings'")
        return self


class EvaluationSet(StrictModel):
    """A held-out set with ground truth. Either ``data`` per modality, or the shorthand
    ``dataset`` + ``params`` + ``modalities`` when one dataset renders every modality."""

    name: str = Field(description="name shown in reports")
    ground_truth: Literal["pairs", "labels"] = Field(
        "pairs",
        description="'pairs': row i of every modality is one item; 'labels': items of the "
        "same class match",
    )
    data: dict[str, DataSource] = Field(default_factory=dict, description="modality → source")
    dataset: str | None = Field(None, description="shorthand: one dataset for every modality")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset's parameters")
    modalities: list[str] = Field(default_factory=list, description="shorthand: modalities")

    @model_validator(mode="after")
    def _expand_shorthand(self) -> EvaluationSet:
        if self.dataset:
            if not self.modalities:
                raise ValueError("'dataset' needs 'modalities'")
            for modality in self.modalities:
                self.data.setdefault(
                    modality, DataSource(dataset=self.dataset, params=dict(self.params))
                )
        if len(self.data) < 2:
            raise ValueError("an evaluation set needs at least two modalities")
        return self


class ComponentRef(StrictModel):
    name: str = Field(description="registered name, e.g. 'mcrx/ex-mcr'")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's params")


class Training(StrictModel):
    """Defaults are the papers' settings."""

    temperature: float = Field(0.05, gt=0, description="τ2, InfoNCE temperature")
    cmcr_temperature: float | None = Field(
        None, gt=0, description="C-MCR InfoNCE temperature (unstated in the paper; default τ2)"
    )
    noise_variance: float = Field(0.004, ge=0, description="σ² of the per-step Gaussian noise")
    intra_weight: float = Field(0.1, ge=0, description="λ, weight of the intra-space loss")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (torch default)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate decay")
    batch_size: int = Field(4096, gt=1, description="pseudo pairs per step")
    epochs: int = Field(36, gt=0, description="passes over the pseudo pairs")
    connector: ComponentRef | None = Field(
        None, description="connector (default: mcrx/ex-mcr or mcrx/c-mcr, after 'method')"
    )
    loss: str | None = Field(None, description="loss (default: after 'method')")
    checkpoint_every: int = Field(
        200, gt=0, description="save a resumable checkpoint every N steps"
    )


class Retrieval(StrictModel):
    temperature: float = Field(0.01, gt=0, description="τ1, softmax temperature of retrieval")
    mode: Literal["exact", "top-k"] = Field(
        "exact",
        description="'exact': softmax over the whole memory (the papers); 'top-k': over each "
        "query's k nearest rows only (faster for very large memories; the cosine to the exact "
        "result is measured on a sample and reported)",
    )
    k: int = Field(256, gt=0, description="rows kept per query in 'top-k' mode")
    query_block: int = Field(2048, gt=0, description="queries per block (bounds memory use)")
    # 2048 × 8192 tiles were the fastest measured here (benchmarks/bench_retrieval.py):
    # 0.89 of torch.mm's FLOP/s against 0.76 for 4096 × 16384
    memory_block: int = Field(8192, gt=0, description="memory rows per block")


class Recipe(StrictModel):
    """A unified space: a base space, leaves chained to it, memories, evaluation sets."""

    name: str = Field(description="name of the unified space")
    description: str = Field("", description="free text")
    method: Literal["ex-mcr", "c-mcr"] = Field(
        description="'ex-mcr': extend leaves into the frozen base; 'c-mcr': project two "
        "spaces into a new one"
    )
    base: SpaceRef = Field(description="the base space")
    leaves: list[Leaf] = Field(min_length=1, description="spaces attached through a bridge")
    memories: dict[str, DataSource] = Field(
        description="modality → unpaired unimodal collection used to build pseudo pairs"
    )
    evaluation: list[EvaluationSet] = Field(default_factory=list, description="held-out sets")
    training: Training = Field(default_factory=Training, description="aligner settings")
    retrieval: Retrieval = Field(default_factory=Retrieval, description="pseudo-pair settings")
    baseline: Literal["lstsq", "procrustes", "none"] = Field(
        "lstsq", description="closed-form linear baseline fitted on the bridge alone"
    )
    memory_dtype: Literal["float32", "float16"] = Field(
        "float32", description="how encoded memories are stored in the cache (float16 halves "
        "the disk and page-cache footprint of paper-scale memories; rows are read as float32)"
    )
    output: Path | None = Field(None, description="output folder (default: runs/<name>)")
    seed: int = Field(0, description="seed of every random draw")

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name

    # -- the chain ------------------------------------------------------------------------
    def space_refs(self) -> list[SpaceRef]:
        return [self.base, *self.leaves]

    def space_names(self) -> list[str]:
        return [ref.space for ref in self.space_refs()]

    def parent_of(self, leaf: Leaf) -> str:
        return leaf.parent or self.base.space

    def leaf(self, space: str) -> Leaf | None:
        return next((leaf for leaf in self.leaves if leaf.space == space), None)

    def path_to_base(self, space: str) -> list[Leaf]:
        """Leaves crossed from ``space`` to the base, nearest first."""
        path: list[Leaf] = []
        leaf = self.leaf(space)
        while leaf is not None:
            path.append(leaf)
            leaf = self.leaf(self.parent_of(leaf))
        return path

    @property
    def connector_name(self) -> str:
        return self.training.connector.name if self.training.connector else f"mcrx/{self.method}"

    @property
    def connector_params(self) -> dict[str, Any]:
        return self.training.connector.params if self.training.connector else {}

    @property
    def loss_name(self) -> str:
        return self.training.loss or f"mcrx/{self.method}"


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


def _pydantic_errors(exc: ValidationError, prefix: tuple = ()) -> list[tuple[str, str]]:
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
        raise RecipeError(source, _pydantic_errors(exc)) from None


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
        errors = check_recipe(recipe, registry, check_files=check_files)
        if errors:
            raise RecipeError(str(path), errors)
    return recipe


# ---------------------------------------------------------------------------------------
# Checks against the registry
# ---------------------------------------------------------------------------------------
def _check_params(spec, params, loc: str, errors: list[tuple[str, str]]) -> None:
    try:
        spec.validate_params(params)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, (loc,)))
    except McrxError as exc:
        errors.append((loc, str(exc)))


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


def needed_memories(recipe: Recipe, registry: Registry) -> dict[str, list[str]]:
    """modality → spaces whose embeddings of that memory the pseudo pairs need."""
    needs: dict[str, list[str]] = {}
    for leaf in recipe.leaves:
        x, y = resolve_leaf_modalities(recipe, leaf, registry)
        parent = recipe.parent_of(leaf)
        for modality, space in (
            (leaf.bridge, leaf.space), (leaf.bridge, parent), (x, leaf.space), (y, parent)
        ):
            spaces = needs.setdefault(modality, [])
            if space not in spaces:
                spaces.append(space)
    return needs


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

    for name in ("connector", "loss"):
        full = recipe.connector_name if name == "connector" else recipe.loss_name
        try:
            component = registry.get(name, full)
        except UnknownComponentError as exc:
            errors.append((f"training.{name}", str(exc)))
        else:
            if name == "connector":
                _check_params(component, recipe.connector_params, "training.connector.params",
                              errors)

    if recipe.method == "c-mcr" and len(recipe.leaves) != 1:
        errors.append(("leaves", f"c-mcr connects exactly two spaces: give one leaf, "
                       f"not {len(recipe.leaves)}"))

    seen = {recipe.base.space}
    chain_ok = True
    for i, leaf in enumerate(recipe.leaves):
        parent = recipe.parent_of(leaf)
        if parent not in seen:
            errors.append((f"leaves.{i}.parent", f"{parent!r} is not the base or an earlier "
                           f"leaf (declared so far: {sorted(seen)})"))
            chain_ok = False
        seen.add(leaf.space)
        if recipe.method == "c-mcr" and leaf.parent and leaf.parent != recipe.base.space:
            errors.append((f"leaves.{i}.parent", "c-mcr leaves attach to the base"))
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
            needs = needed_memories(recipe, registry)
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
