"""Stage 4, evaluate: the unified model assembled from the trained connectors, its retrieval
figures on every evaluation set, each space's own (native) figures, the linear baseline's,
and the metrics document written to ``OUT/metrics.json``."""

from __future__ import annotations

from typing import Any

from mcrx.infer.unified import UnifiedModel
from mcrx.metrics.retrieval import cross_modal_retrieval
from mcrx.stages.context import Embeddings, Run
from mcrx.stages.evaluate_model import (
    CONVENTIONS,
    ScoredSets,
    flatten,
    score_sets,
    set_class_names,
    set_vocabulary,
)
from mcrx.store.artifact import build_manifest

EvaluationSets = dict[str, dict[str, Embeddings]]  # set name → modality → native rows


def make_model(run: Run, connectors, connector_name: str, connector_params,
               target: str) -> UnifiedModel:
    """The unified model of ``connectors`` (leaf space → connector) along the run's chain."""
    recipe = run.recipe
    spaces = {}
    for ref in recipe.space_refs():
        spec = run.registry.space(ref.space)
        spaces[ref.space] = {"plugin": spec.plugin, "params": ref.params,
                             "dim": run.space(ref.space).dim,
                             "modalities": list(spec.modalities)}
    leaves = []
    for link in run.chain.links:
        spec = run.connector_spec(link)
        leaves.append({"space": link.space, "parent": link.parent,
                       "bridge": link.bridge, "modality": spec.leaf_modality,
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
        registry=run.registry,
    )
    return UnifiedModel(manifest, connectors, run.registry)


def evaluate_model(model: UnifiedModel, sets: EvaluationSets, run: Run,
                   with_pictures: bool = False) -> ScoredSets:
    """Retrieval (set → "modality->modality" → metrics) and zero-shot figures in the unified
    space (the scoring of :mod:`mcrx.stages.evaluate_model`, shared with ``mcrx evaluate``)."""
    return score_sets(run, model, run.recipe.evaluation, sets, with_pictures=with_pictures)


def evaluate_native(sets: EvaluationSets, run: Run) -> dict:
    """Each space's own retrieval between its own modalities (the reference figures). Labels
    are coded as the unified figures' are: one vocabulary per set, ``classes:`` (else the
    dataset's class names) authoritative (:mod:`mcrx.metrics.vocabulary`), so a class means
    the same in both figures."""
    results = {}
    for j, evaluation in enumerate(run.recipe.evaluation):
        data = sets[evaluation.name]
        if evaluation.task != "retrieval" or evaluation.ground_truth == "items":
            continue  # native figures: retrieval by pairs or labels within one space
        owned = {space_name: {m: e for m, e in data.items() if run.space_of(m) == space_name}
                 for space_name in run.recipe.space_names()}
        if not any(len(mine) >= 2 for mine in owned.values()):
            continue
        where = f"evaluation.{j}"
        names = (set_class_names(run, evaluation, where)
                 if evaluation.ground_truth == "labels" else None)
        vocabulary = set_vocabulary(run, evaluation, data, where, names)
        for space_name, mine in owned.items():
            if len(mine) >= 2:
                results.setdefault(evaluation.name, {})[space_name] = cross_modal_retrieval(
                    {m: e.rows for m, e in mine.items()}, evaluation.ground_truth,
                    {m: vocabulary.codes[m] if vocabulary else None for m in mine},
                    evaluation.unmatched_queries,
                )
    return results


def evaluate_run(run: Run, model: UnifiedModel, sets: EvaluationSets, memories,
                 training_report: dict) -> dict[str, Any]:
    """The metrics document: unified, native and baseline retrieval, and training."""
    from mcrx.stages.train import fit_baselines

    recipe = run.recipe
    scored = evaluate_model(model, sets, run, with_pictures=True)
    metrics: dict[str, Any] = {
        "method": recipe.method,
        "recipe": recipe.name,
        "retrieval": flatten(scored.retrieval),
        "zeroshot": flatten(scored.zeroshot, always_prefix=True),
        "gap": flatten(scored.gap),
        "vocabulary": scored.vocabulary,
        "degenerate": scored.degenerate,
        "conventions": CONVENTIONS,
        "spaces": {},
        "baselines": {},
        "training": training_report,
    }
    native = evaluate_native(sets, run)
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
        baseline_scored = evaluate_model(baseline, sets, run)
        metrics["baselines"]["linear"] = {
            "solver": recipe.baseline,
            "retrieval": flatten(baseline_scored.retrieval),
            "zeroshot": flatten(baseline_scored.zeroshot, always_prefix=True),
        }
    from mcrx.ui.plots import write_figures

    metrics["figures"] = write_figures([(recipe.method, metrics)], run.out / "figures",
                                       pca={recipe.method: scored.pca})
    return metrics
