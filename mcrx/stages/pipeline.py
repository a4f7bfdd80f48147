"""``mcrx extend``: validate → encode memories → pseudo pairs → train → evaluate → write.

Each stage reads files and writes files named by a fingerprint of its inputs, so running the
same recipe again skips finished stages, and a crash resumes where it stopped:

    $MCRX_CACHE_DIR/embeddings/<space>/<modality>/<key>/   encoded memories (shared cache)
    OUT/pseudo_pairs/<leaf>.safetensors                    pseudo pairs per leaf
    OUT/checkpoints/<leaf>/step-*/                         resumable training state
    OUT/connectors/<leaf>.safetensors                      trained connector per leaf
    OUT/model/                                             the unified model (written, renamed)
    OUT/metrics.json, OUT/report.md                        evaluation
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcrx.errors import McrxError
from mcrx.methods.connectors import ConnectorSpec, LinearConnector, LinearParams
from mcrx.plugin.interfaces import fingerprint_of
from mcrx.plugin.registry import Registry
from mcrx.recipe.schema import DataSource, Leaf, Recipe, needed_memories, resolve_leaf_modalities
from mcrx.store.atomic import write_json_atomic
from mcrx.store.inputs import read_embeddings, read_labels
from mcrx.store.memory import Memory, encode_to_memory
from mcrx.store.paths import cache_root, slug
from mcrx.ui.console import console


@dataclass
class Embeddings:
    """One modality of one source in one space: rows, their fingerprint, optional labels."""

    rows: torch.Tensor  # (N, d), L2-normalised
    fingerprint: str
    labels: np.ndarray | None = None


@dataclass
class Run:
    """Everything one ``mcrx extend`` shares between stages."""

    recipe: Recipe
    registry: Registry
    show_progress: bool = True
    workers: int = 0
    spaces: dict[str, Any] = field(default_factory=dict)
    encoded: int = 0  # items encoded in this run (0 when every memory came from the cache)
    state: Any = None  # accelerate.PartialState: this process among those launched

    def __post_init__(self) -> None:
        if self.state is None:
            from mcrx.train.distributed import process_state

            self.state = process_state()
        if not self.state.is_main_process:  # one process speaks for all
            console.quiet = True
            self.show_progress = False

    @property
    def out(self) -> Path:
        return self.recipe.output_dir

    def space(self, name: str):
        if name not in self.spaces:
            ref = next(r for r in self.recipe.space_refs() if r.space == name)
            self.spaces[name] = self.registry.space(name).build(name, params=ref.params)
        return self.spaces[name]

    def space_modalities(self, name: str) -> tuple[str, ...]:
        return self.registry.space(name).modalities


# ---------------------------------------------------------------------------------------
# Stage 1: encode
# ---------------------------------------------------------------------------------------
def _source_items(run: Run, source: DataSource, modality: str, encoder) -> tuple[Any, str, Any]:
    """(items, fingerprint, labels) of a raw-input source."""
    if source.dataset:
        dataset = run.registry.dataset(source.dataset).build(params=source.params)
        items = dataset.items(modality)
        fingerprint = fingerprint_of(source.dataset, source.params, dataset.fingerprint())
        labels = dataset.labels(modality)
    else:
        from mcrx.store.fingerprint import files_fingerprint

        items = encoder.read_inputs(source.inputs)
        # a folder: every file's size and time; a file (.txt, .npy): the file itself
        listed = items if Path(source.inputs).is_dir() else [source.inputs]
        fingerprint = fingerprint_of(str(source.inputs), files_fingerprint(listed))
        labels = None
    if source.labels is not None:
        labels = read_labels(source.labels)
    if source.limit:
        items = items[: source.limit]
        labels = labels[: source.limit] if labels is not None else None
    return items, fingerprint_of(fingerprint, source.limit), labels


def embed_source(run: Run, source: DataSource, modality: str, space_name: str, what: str):
    """Embeddings of ``source`` in ``space_name``: from the precomputed file named in the
    recipe, from the embedding cache, or encoded now (and cached)."""
    if space_name in source.embeddings:
        path = source.embeddings[space_name]
        array = read_embeddings(path, run.registry.space(space_name).dim)
        if source.limit:
            array = array[: source.limit]
        stat = os.stat(path)
        labels = read_labels(source.labels) if source.labels else None
        if labels is not None and source.limit:
            labels = labels[: source.limit]
        rows = torch.nn.functional.normalize(torch.from_numpy(np.array(array)), dim=-1)
        fingerprint = fingerprint_of(str(path), stat.st_size, stat.st_mtime_ns, source.limit)
        return Embeddings(rows, fingerprint, labels)

    encoder = run.space(space_name).encoder(modality)
    items, source_fingerprint, labels = _source_items(run, source, modality, encoder)
    dtype = run.recipe.memory_dtype
    key = fingerprint_of(encoder.fingerprint(), source_fingerprint,
                         *([dtype] if dtype != "float32" else []))
    path = cache_root() / "embeddings" / slug(space_name) / modality / key
    memory = Memory(path) if (path / "manifest.json").is_file() else None
    if memory is None or not memory.complete:
        meta = {"key": key, "space": space_name, "modality": modality, "source": what,
                "encoder_fingerprint": encoder.fingerprint(),
                "source_fingerprint": source_fingerprint}
        memory, encoded = encode_to_memory(
            encoder, items, path, meta, workers=run.workers, dtype=dtype,
            description=f"encode {what} ({space_name})", show_progress=run.show_progress,
        )
        run.encoded += encoded
    if memory.count != len(items):
        raise McrxError(f"{path}: cached memory holds {memory.count} rows, expected "
                        f"{len(items)}; delete it to re-encode")
    rows = torch.nn.functional.normalize(memory.tensor(), dim=-1)
    return Embeddings(rows, key, labels)


def encode_memories(run: Run) -> dict[tuple[str, str], Embeddings]:
    """(modality, space) → embeddings of every memory the pseudo pairs need."""
    console.rule("[bold]1 · memories")
    memories = {}
    for modality, spaces in needed_memories(run.recipe, run.registry).items():
        source = run.recipe.memories[modality]
        for space_name in spaces:
            memories[modality, space_name] = embed_source(
                run, source, modality, space_name, f"memories.{modality}"
            )
            console.print(f"  {modality:<11} in {space_name:<16} "
                          f"{len(memories[modality, space_name].rows):>9,} rows")
    # the bridge memory must hold the same items in both spaces
    for leaf in run.recipe.leaves:
        parent = run.recipe.parent_of(leaf)
        a, b = memories[leaf.bridge, leaf.space].rows, memories[leaf.bridge, parent].rows
        if len(a) != len(b):
            raise McrxError(f"memories.{leaf.bridge}: {len(a)} rows in {leaf.space} but "
                            f"{len(b)} in {parent}; the bridge memory must be row aligned")
    return memories


def evaluation_space(run: Run, modality: str) -> str:
    """The space that embeds ``modality`` in the unified model (nearest the base)."""
    for name in run.recipe.space_names():
        if modality in run.space_modalities(name):
            return name
    raise McrxError(f"no space of the recipe embeds {modality!r}")


def encode_evaluation(run: Run) -> dict[str, dict[str, Embeddings]]:
    """Evaluation set → modality → native embeddings (in the space that embeds it)."""
    sets = {}
    for j, evaluation in enumerate(run.recipe.evaluation):
        sets[evaluation.name] = {
            modality: embed_source(run, source, modality, evaluation_space(run, modality),
                                   f"evaluation.{j}.{modality}")
            for modality, source in evaluation.data.items()
        }
    return sets


# ---------------------------------------------------------------------------------------
# Stage 2: pseudo pairs
# ---------------------------------------------------------------------------------------
def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _load_if_fingerprint(path: Path, fingerprint: str) -> dict[str, torch.Tensor] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != fingerprint:
            return None
    return load_file(str(path))


def leaf_memories(run: Run, leaf: Leaf, memories) -> tuple[Any, list[str]]:
    from mcrx.methods.pseudo_pairs import LeafMemories

    x, y = resolve_leaf_modalities(run.recipe, leaf, run.registry)
    parent = run.recipe.parent_of(leaf)
    parts = [(x, leaf.space), (leaf.bridge, leaf.space), (leaf.bridge, parent), (y, parent)]
    tensors = [memories[part].rows for part in parts]
    return LeafMemories(*tensors), [memories[part].fingerprint for part in parts]


def build_pairs(run: Run, memories) -> dict[str, tuple[dict[str, Any], str]]:
    """Leaf space → (pseudo pairs as memory-mapped arrays, fingerprint)."""
    from mcrx.methods.pseudo_pairs import count_pseudo_pairs, read_pseudo_pairs, write_pseudo_pairs
    from mcrx.ui.console import progress, rate_text

    console.rule("[bold]2 · pseudo pairs")
    recipe = run.recipe
    result = {}
    for leaf in recipe.leaves:
        mems, fingerprints = leaf_memories(run, leaf, memories)
        fingerprint = fingerprint_of("pairs", recipe.method, fingerprints,
                                     recipe.retrieval.model_dump())
        path = run.out / "pseudo_pairs" / slug(leaf.space)
        manifest = path / "manifest.json"
        if manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == (
            fingerprint
        ):
            pairs = read_pseudo_pairs(path)
            console.print(f"  {leaf.space}: {len(pairs['leaf_x']):,} pseudo pairs (done before)")
        else:
            began = time.perf_counter()
            total = count_pseudo_pairs(recipe.method, mems)
            with progress(disable=not run.show_progress) as bar:
                task = bar.add_task(f"pairs {leaf.space}", total=total, rate="")

                done = [0]

                def advance(count: int, task=task, bar=bar, done=done, began=began) -> None:
                    done[0] += count
                    bar.update(task, advance=count, rate=rate_text(
                        done[0], time.perf_counter() - began, "rows"))

                metadata = {"fingerprint": fingerprint, "leaf": leaf.space,
                            "retrieval": recipe.retrieval.model_dump()}
                top_k = recipe.retrieval.k if recipe.retrieval.mode == "top-k" else None
                if top_k is not None:
                    from mcrx.methods.retrieval import deviation_from_exact

                    deviation = deviation_from_exact(mems.leaf_bridge, mems.leaf_x,
                                                     recipe.retrieval.temperature, top_k)
                    metadata["top_k_deviation"] = deviation
                    console.print(f"  top-{top_k} retrieval vs exact: mean cosine "
                                  f"{deviation['mean_cosine']:.5f}, min "
                                  f"{deviation['min_cosine']:.5f} "
                                  f"({deviation['sample']} queries)")
                pairs = write_pseudo_pairs(
                    path, recipe.method, mems, recipe.retrieval.temperature,
                    metadata=metadata, top_k=top_k,
                    query_block=recipe.retrieval.query_block,
                    memory_block=recipe.retrieval.memory_block, on_chunk=advance,
                    rank=run.state.process_index, world=run.state.num_processes,
                    barrier=run.state.wait_for_everyone,
                )
            console.print(f"  {leaf.space} → {recipe.parent_of(leaf)}: {total:,} pseudo pairs "
                          f"in {time.perf_counter() - began:.1f} s")
        result[leaf.space] = (pairs, fingerprint)
    return result


# ---------------------------------------------------------------------------------------
# Stage 3: train connectors (and fit the linear baseline)
# ---------------------------------------------------------------------------------------
def connector_spec(run: Run, leaf: Leaf) -> ConnectorSpec:
    x, y = resolve_leaf_modalities(run.recipe, leaf, run.registry)
    parent = run.recipe.parent_of(leaf)
    return ConnectorSpec(
        leaf_dim=run.space(leaf.space).dim,
        parent_dim=run.space(parent).dim,
        bridge=leaf.bridge,
        leaf_modality=x,
        parent_modality=y,
        leaf_modalities=list(run.space_modalities(leaf.space)),
        parent_modalities=list(run.space_modalities(parent)),
    )


def train_connectors(run: Run, pairs, stop_after_steps: int | None = None):
    """Leaf space → trained connector (resuming from checkpoints)."""

    from mcrx.train.aligner import align

    console.rule("[bold]3 · aligner")
    recipe = run.recipe
    connectors, reports = {}, {}
    for index, leaf in enumerate(recipe.leaves):
        leaf_pairs, pairs_fingerprint = pairs[leaf.space]
        spec = connector_spec(run, leaf)
        fingerprint = fingerprint_of("train", pairs_fingerprint, recipe.connector_name,
                                     recipe.connector_params, spec.as_dict(),
                                     recipe.training.model_dump(), recipe.seed + index)
        torch.manual_seed(recipe.seed + index)  # connector initialisation
        connector = run.registry.connector(recipe.connector_name).build(
            spec, params=recipe.connector_params
        )
        loss = run.registry.loss(recipe.loss_name).build(recipe.training)
        path = run.out / "connectors" / f"{slug(leaf.space)}.safetensors"
        done = _load_if_fingerprint(path, fingerprint)
        if done is not None:
            connector.load_state_dict(done)
            connector.eval()
            console.print(f"  {leaf.space}: trained before")
            reports[leaf.space] = {"resumed_from": None, "seconds": 0.0}
        else:
            result = align(
                connector, loss, leaf_pairs, recipe.training,
                checkpoint_dir=run.out / "checkpoints" / slug(leaf.space),
                fingerprint=fingerprint, seed=recipe.seed + index,
                description=f"train {leaf.space} → {recipe.parent_of(leaf)}",
                show_progress=run.show_progress, stop_after_steps=stop_after_steps,
            )
            if stop_after_steps is not None and result.steps > stop_after_steps:
                raise McrxError(f"stopped after {stop_after_steps} steps as asked")
            if run.state.is_main_process:
                _save_tensors(path, connector.state_dict(), {"fingerprint": fingerprint})
            run.state.wait_for_everyone()
            reports[leaf.space] = {"resumed_from": result.resumed_from,
                                   "seconds": round(result.seconds, 2),
                                   "steps": result.steps, "final_loss": result.final_loss}
            console.print(f"  {leaf.space}: {result.steps} steps in {result.seconds:.1f} s, "
                          f"final loss {result.final_loss:.4f}")
        connectors[leaf.space] = connector
    return connectors, reports


def fit_baselines(run: Run, memories) -> dict[str, LinearConnector]:
    """Closed-form linear maps leaf → parent fitted on the bridge memory alone."""
    connectors = {}
    for leaf in run.recipe.leaves:
        parent = run.recipe.parent_of(leaf)
        connector = LinearConnector(connector_spec(run, leaf),
                                    LinearParams(solver=run.recipe.baseline))
        connector.fit(memories[leaf.bridge, leaf.space].rows, memories[leaf.bridge, parent].rows)
        connectors[leaf.space] = connector
    return connectors


# ---------------------------------------------------------------------------------------
# Stage 4: the unified model and its evaluation
# ---------------------------------------------------------------------------------------
def make_model(run: Run, connectors, connector_name: str, connector_params, target: str,
               metrics: dict | None = None):
    from mcrx.infer.unified import UnifiedModel, build_manifest

    recipe = run.recipe
    spaces = {}
    for ref in recipe.space_refs():
        spec = run.registry.space(ref.space)
        spaces[ref.space] = {"plugin": spec.plugin, "params": ref.params,
                             "dim": run.space(ref.space).dim,
                             "modalities": list(spec.modalities)}
    leaves = []
    for leaf in recipe.leaves:
        spec = connector_spec(run, leaf)
        leaves.append({"space": leaf.space, "parent": recipe.parent_of(leaf),
                       "bridge": leaf.bridge, "modality": spec.leaf_modality,
                       "parent_modality": spec.parent_modality,
                       "connector": {"name": connector_name, "params": connector_params,
                                     "spec": spec.as_dict()}})
    if target == "new":
        dim = next(iter(connectors.values())).out_dim
    else:
        dim = spaces[recipe.base.space]["dim"]
    manifest = build_manifest(
        name=recipe.name, method=recipe.method, base=recipe.base.space, target=target, dim=dim,
        spaces=spaces, leaves=leaves, recipe=recipe.model_dump(mode="json"),
        registry=run.registry, metrics=metrics,
    )
    return UnifiedModel(manifest, connectors, run.registry)


def evaluate_model(model, sets: dict[str, dict[str, Embeddings]], run: Run) -> dict:
    """Set name → "modality->modality" → metrics, in the unified space."""
    from mcrx.metrics.retrieval import cross_modal_retrieval

    results = {}
    for evaluation in run.recipe.evaluation:
        data = sets[evaluation.name]
        unified = {m: model.project(evaluation_space(run, m), m, e.rows) for m, e in data.items()}
        results[evaluation.name] = cross_modal_retrieval(
            unified, evaluation.ground_truth, {m: e.labels for m, e in data.items()}
        )
    return results


def evaluate_native(sets: dict[str, dict[str, Embeddings]], run: Run) -> dict:
    """Each space's own retrieval between its own modalities (the reference figures)."""
    from mcrx.metrics.retrieval import cross_modal_retrieval

    results = {}
    for evaluation in run.recipe.evaluation:
        data = sets[evaluation.name]
        for space_name in run.recipe.space_names():
            mine = {m: e for m, e in data.items() if evaluation_space(run, m) == space_name}
            if len(mine) >= 2:
                results.setdefault(evaluation.name, {})[space_name] = cross_modal_retrieval(
                    {m: e.rows for m, e in mine.items()}, evaluation.ground_truth,
                    {m: e.labels for m, e in mine.items()},
                )
    return results


def _flatten(per_set: dict[str, dict]) -> dict:
    """One set: its pairs as they are; several: prefixed "set/audio->image"."""
    if len(per_set) == 1:
        return next(iter(per_set.values()))
    return {f"{name}/{pair}": m for name, pairs in per_set.items() for pair, m in pairs.items()}


def extend(
    recipe: Recipe,
    registry: Registry,
    show_progress: bool = True,
    workers: int = 0,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Run every stage of ``recipe``; returns the metrics written to OUT/metrics.json."""
    began = time.perf_counter()
    run = Run(recipe, registry, show_progress=show_progress, workers=workers)
    run.out.mkdir(parents=True, exist_ok=True)
    if run.state.is_main_process:
        write_json_atomic(run.out / "recipe.json", recipe.model_dump(mode="json"))

    # Encoding: the main process fills the embedding cache, the others then read it.
    with run.state.main_process_first():
        memories = encode_memories(run)
        evaluation_sets = encode_evaluation(run)
    pairs = build_pairs(run, memories)  # queries shared among processes
    connectors, training_report = train_connectors(run, pairs, stop_after_steps)  # DDP
    if not run.state.is_main_process:  # evaluation and writing: the main process only
        run.state.wait_for_everyone()
        return {}
    target = next(iter(connectors.values())).target

    console.rule("[bold]4 · evaluation")
    model = make_model(run, connectors, recipe.connector_name, recipe.connector_params, target)
    metrics: dict[str, Any] = {
        "method": recipe.method,
        "recipe": recipe.name,
        "retrieval": _flatten(evaluate_model(model, evaluation_sets, run)),
        "spaces": {},
        "baselines": {},
        "training": training_report,
    }
    native = evaluate_native(evaluation_sets, run)
    for set_name, per_space in native.items():
        for space_name, pairs_metrics in per_space.items():
            metrics["spaces"].setdefault(space_name, {"retrieval": {}})
            key_prefix = "" if len(native) == 1 else f"{set_name}/"
            metrics["spaces"][space_name]["retrieval"].update(
                {f"{key_prefix}{pair}": m for pair, m in pairs_metrics.items()}
            )
    if recipe.baseline != "none":
        baseline = make_model(run, fit_baselines(run, memories), "mcrx/linear",
                              {"solver": recipe.baseline}, "parent")
        metrics["baselines"]["linear"] = {
            "solver": recipe.baseline,
            "retrieval": _flatten(evaluate_model(baseline, evaluation_sets, run)),
        }
    metrics["seconds"] = round(time.perf_counter() - began, 2)
    metrics["encoded_items"] = run.encoded

    model.manifest["metrics"] = metrics
    model.save(run.out / "model")
    write_json_atomic(run.out / "metrics.json", metrics)
    from mcrx.ui.report import write_report

    write_report(metrics, run.out / "report.md")
    run.state.wait_for_everyone()
    return metrics
