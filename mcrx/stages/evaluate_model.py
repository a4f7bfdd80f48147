"""The evaluation of any unified model (trained by ``mcrx extend`` or imported with
``mcrx import-official``) on evaluation sets in the recipe's format.

Per set, each modality's rows come from precomputed embeddings in a space
(``embeddings: {space: file}``, then ``model.project``) or from raw inputs encoded by the
model's own encoder for that modality (through the shared embedding cache, exactly as
``extend`` encodes, so a model evaluated on its own recipe's sets encodes nothing), then
projected into the unified space and scored:

- ``task: retrieval``: every ordered pair of modalities (ground truth by pairs, labels, or
  item ids for several captions per item);
- ``task: zeroshot``: every item modality classified against one text prototype per class
  (class names × templates, or labelled text prompts);
- labels: every source's item ids or class labels coded together, one vocabulary per set
  (:mod:`mcrx.metrics.vocabulary`); ids or classes one modality has and another lacks are
  counted in metrics.json (``vocabulary``) and named in a console warning;
- for every retrieval set, the modality gap: the mean cosine of matched pairs against that
  of random pairs, in the unified space and, where both modalities share a source space,
  in that space before any connector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError
from mcrx.infer.unified import UnifiedModel
from mcrx.metrics.captions import cross_modal_items
from mcrx.metrics.retrieval import cross_modal_retrieval
from mcrx.metrics.templates import CLASS_PRESETS, prompts, resolve_templates
from mcrx.metrics.vocabulary import Vocabulary, class_vocabulary, item_vocabulary
from mcrx.metrics.zeroshot import class_prototypes, zeroshot_metrics
from mcrx.recipe.schema import EvaluationSet
from mcrx.stages.context import Embeddings
from mcrx.ui.console import console

PROMPT_MODALITY = "text"
PCA_ROWS = 400  # points per modality in the 2-D PCA picture
#: what every figure assumes, written into metrics.json (see mcrx.metrics.retrieval)
CONVENTIONS = {
    "ties": "equal similarity: the earlier gallery row (zero-shot: the earlier class) ranks "
            "first, as torch.argmax / CLIP_benchmark's top-1 prediction",
    "queries_without_match": "per set 'unmatched_queries': skip (left out, counted as "
                             "queries_without_match) or miss (a failure, CLIP_benchmark)",
    "chance": "exact expectations under a uniformly random ranking given each query's "
              "relevant count: R@k hypergeometric, AP Bestgen 2015, top-k k/C",
    "items": "rows of one modality sharing an id with equal embeddings are one item (the "
             "first row, WavCaps's layout); labels of all files coded in one vocabulary",
}


@dataclass
class ScoredSets:
    """What evaluating one model on its sets gives: the metrics and what the pictures need."""

    retrieval: dict[str, dict] = field(default_factory=dict)  # set → pair → metrics
    zeroshot: dict[str, dict] = field(default_factory=dict)  # set → modality → metrics
    gap: dict[str, dict] = field(default_factory=dict)  # set → "a~b" → before/after
    vocabulary: dict[str, dict] = field(default_factory=dict)  # set → Vocabulary.report()
    pca: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (n, 2)


# ---------------------------------------------------------------------------------------
# Embedding a model's sets
# ---------------------------------------------------------------------------------------
class ModelSource:
    """What :func:`mcrx.stages.encode.embed_source` needs from a run (:class:`Run`), for a
    lone model: its spaces (built from the manifest's params), the registry, this process,
    and the cache settings of a recipe's defaults."""

    def __init__(self, model: UnifiedModel, registry, show_progress: bool = True,
                 workers: int = 0, drop_bad_rows: bool = False) -> None:
        from mcrx.train.distributed import process_state

        self.model, self.registry = model, registry
        self.show_progress, self.workers = show_progress, workers
        self.drop_bad_rows = drop_bad_rows
        self.recipe = SimpleNamespace(memory_dtype="float32")  # the cache's default rows
        self.state = process_state(cpu=model.device.type == "cpu" or None)
        self.encoded = 0

    def space(self, name: str):
        return self.model.space(name)


def class_names(evaluation: EvaluationSet, where: str) -> list[str] | None:
    """``classes:`` as a list: given, a preset, or a .txt file (one name per line)."""
    classes = evaluation.classes
    if classes is None or isinstance(classes, list):
        return classes
    if classes in CLASS_PRESETS:
        return list(CLASS_PRESETS[classes])
    path = Path(classes)
    if not path.is_file():
        raise McrxError(f"{where}.classes: {classes!r} is neither a class preset "
                        f"({', '.join(CLASS_PRESETS)}) nor a file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _dataset(run, source):
    """The dataset a source names (built once per name and params in this run)."""
    built = run.__dict__.setdefault("_datasets", {})
    key = (source.dataset, repr(sorted(source.params.items())))
    if key not in built:
        built[key] = run.registry.dataset(source.dataset).build(params=source.params)
    return built[key]


def set_class_names(run, evaluation: EvaluationSet, where: str) -> list[str] | None:
    """The set's class names: ``classes:``, else those of the dataset(s) its sources name
    (:meth:`~mcrx.plugin.interfaces.Dataset.classes`), which must agree; else None."""
    names = class_names(evaluation, where)
    if names is not None:
        return names
    sources = [*evaluation.data.values(), *([evaluation.prompts] if evaluation.prompts else [])]
    found = {}
    for source in sources:
        if source.dataset:
            classes = getattr(_dataset(run, source), "classes", lambda: None)()
            if classes is not None:
                found[source.dataset] = [str(c) for c in classes]
    if len({tuple(v) for v in found.values()}) > 1:
        raise McrxError(f"{where}.classes: the datasets {sorted(found)} name different "
                        "classes; give 'classes:'")
    return next(iter(found.values()), None)


def labels_by_name(path: Path, names: list[str], limit: int | None, where: str) -> np.ndarray:
    """Class indices of a .txt labels file in the order of ``classes`` (a line is a class
    name, or an integer index), not in the sorted order of the names."""
    from mcrx.store.inputs import read_labels

    labels = read_labels(path)
    labels = labels[:limit] if limit else labels
    return class_vocabulary({"labels": labels}, names, where, report_one_sided=False
                            ).codes["labels"]


def prompt_embeddings(run, space: str, evaluation: EvaluationSet, names: list[str] | None,
                      where: str) -> Embeddings:
    """The zero-shot prompts as text rows of ``space`` with their raw class labels
    (class indices for classes × templates; as the prompts' source gives them otherwise)."""
    from mcrx.stages.encode import embed_source

    if evaluation.prompts is not None:  # labelled text items (the toy world's texts)
        rows = embed_source(run, evaluation.prompts, PROMPT_MODALITY, space, f"{where}.prompts")
        if rows.labels is None:
            raise McrxError(f"{where}.prompts: the prompts need class labels (a dataset with "
                            "labels, or 'labels:')")
        return rows
    if names is None:
        raise McrxError(f"{where}.classes: a zeroshot set needs 'classes' (with "
                        "'templates'), labelled 'prompts', or a dataset that names its "
                        "classes (Dataset.classes())")
    texts, labels = prompts(names, resolve_templates(evaluation.templates))
    encoder = run.space(space).encoder(PROMPT_MODALITY)
    size = encoder.batch_size or 64
    parts = [torch.as_tensor(encoder.encode(texts[i : i + size])).float()
             for i in range(0, len(texts), size)]
    return Embeddings(F.normalize(torch.cat(parts), dim=-1), "", np.asarray(labels))


def set_vocabulary(run, evaluation: EvaluationSet, data: dict[str, Embeddings],
                   where: str, names: list[str] | None = None,
                   prompt_labels: np.ndarray | None = None) -> Vocabulary | None:
    """The one vocabulary of a set (None for ``ground_truth: pairs``): item ids for
    ``items`` (a source's ``labels:`` file, else its dataset's ``item_ids``, else one item
    per row), class labels against ``names`` for ``labels`` and zero-shot (with the
    prompts' labels, under the key ``prompts``)."""
    if evaluation.task == "retrieval" and evaluation.ground_truth == "pairs":
        return None
    raw: dict[str, Any] = {}
    for modality, rows in data.items():
        source = evaluation.data[modality]
        if evaluation.task == "retrieval" and evaluation.ground_truth == "items":
            ids = rows.labels if source.labels is not None else (
                getattr(_dataset(run, source), "item_ids", lambda m: None)(modality)
                if source.dataset else None)
            if ids is not None and source.labels is None and source.limit:
                ids = np.asarray(ids)[: source.limit]
            ids = np.arange(len(rows.rows)) if ids is None else np.asarray(ids)
        else:
            ids = rows.labels
            if ids is None:
                task = "zero-shot items" if evaluation.task == "zeroshot" else (
                    "ground_truth: labels")
                raise McrxError(f"{where}.data.{modality}: {task} need class labels (a "
                                "dataset with labels, or 'labels:')")
        if len(ids) != len(rows.rows):
            raise McrxError(f"{where}.data.{modality}: {len(ids)} labels for "
                            f"{len(rows.rows)} rows (one per row)")
        raw[modality] = ids
    if evaluation.task == "retrieval" and evaluation.ground_truth == "items":
        return item_vocabulary(raw, f"{where}.data")
    if prompt_labels is not None:
        raw["prompts"] = prompt_labels
    return class_vocabulary(raw, names, f"{where}.data",
                            report_one_sided=evaluation.task == "retrieval")


def _warn(evaluation: EvaluationSet, vocabulary: Vocabulary | None, where: str) -> None:
    for line in vocabulary.warnings() if vocabulary else []:
        console.print(f"[yellow]warning[/] {where} ({evaluation.name}): {line}",
                      highlight=False)


def embed_sets(run, model: UnifiedModel, sets: list[EvaluationSet]
               ) -> dict[str, dict[str, Embeddings]]:
    """Set name → modality → native rows, in the space the model embeds that modality with."""
    from mcrx.stages.encode import embed_source

    native = {}
    for j, evaluation in enumerate(sets):
        native[evaluation.name] = {
            modality: embed_source(run, source, modality, model.space_of(modality),
                                   f"evaluation.{j}.{modality}")
            for modality, source in evaluation.data.items()
        }
    return native


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------
def _matched_cosine(a: torch.Tensor, b: torch.Tensor, labels_a, labels_b,
                    ground_truth: str) -> float | None:
    """Mean cosine of matched pairs: row i with row i ('pairs'), else every pair of the
    same label or item id (through per-label sums, never the full matrix)."""
    if ground_truth == "pairs":
        return float((a * b).sum(1).mean()) if len(a) == len(b) else None
    # item ids: a source without them is one item per row
    labels_a = np.arange(len(a)) if labels_a is None else labels_a
    labels_b = np.arange(len(b)) if labels_b is None else labels_b
    la, lb = np.asarray(labels_a).astype(str), np.asarray(labels_b).astype(str)
    _, codes = np.unique(np.concatenate([la, lb]), return_inverse=True)
    ca, cb = (torch.from_numpy(c.astype(np.int64)) for c in (codes[: len(la)], codes[len(la):]))
    groups = int(codes.max()) + 1
    sum_a = torch.zeros(groups, a.shape[1]).index_add_(0, ca, a.float().cpu())
    sum_b = torch.zeros(groups, b.shape[1]).index_add_(0, cb, b.float().cpu())
    pairs = torch.bincount(ca, minlength=groups) * torch.bincount(cb, minlength=groups)
    if int(pairs.sum()) == 0:
        return None
    return float((sum_a * sum_b).sum() / pairs.sum())


def modality_gap(rows: dict[str, torch.Tensor], labels: dict[str, Any],
                 ground_truth: str) -> dict[str, dict[str, float]]:
    """Per unordered modality pair: mean cosine of matched and of random pairs (the mean of
    all pairs: mean(a)·mean(b)), and their difference."""
    out = {}
    for m1, m2 in combinations(sorted(rows), 2):
        a, b = rows[m1].float().cpu(), rows[m2].float().cpu()
        matched = _matched_cosine(a, b, labels.get(m1), labels.get(m2), ground_truth)
        if matched is None:
            continue
        random = float(a.mean(0) @ b.mean(0))
        out[f"{m1}~{m2}"] = {"matched": matched, "random": random, "gap": matched - random}
    return out


def pca_2d(rows: dict[str, torch.Tensor], per_modality: int = PCA_ROWS,
           seed: int = 0) -> dict[str, np.ndarray]:
    """The unified space's first two principal components, a sample of rows per modality."""
    generator = torch.Generator().manual_seed(seed)
    picked = {}
    for modality, x in sorted(rows.items()):
        x = x.float().cpu()
        index = torch.randperm(len(x), generator=generator)[:per_modality]
        picked[modality] = x[index]
    stacked = torch.cat(list(picked.values()))
    centred = stacked - stacked.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    coords = (centred @ v[:2].T).numpy()  # (n, 2)
    out, start = {}, 0
    for modality, x in picked.items():
        out[modality] = coords[start : start + len(x)]
        start += len(x)
    return out


def source_space_gaps(run, model: UnifiedModel, evaluation: EvaluationSet,
                      data: dict[str, Embeddings], labels: dict[str, Any],
                      where: str) -> dict[str, dict]:
    """The gap of every modality pair inside each source space that embeds both (CLAP's
    audio–text, before any connector), the space nearest the base first. A modality the
    unified model embeds with another space is encoded (and cached) in this one too."""
    from mcrx.stages.encode import embed_source

    before: dict[str, dict] = {}
    for space, info in model.manifest["spaces"].items():  # the base first
        covered = [m for m in data if m in info["modalities"] and (
            model.space_of(m) == space or space in evaluation.data[m].embeddings
            or evaluation.data[m].dataset or evaluation.data[m].inputs)]  # embeddable here
        if len(covered) < 2:
            continue
        rows = {m: data[m].rows if model.space_of(m) == space else
                embed_source(run, evaluation.data[m], m, space, f"{where}.{m}").rows
                for m in covered}
        for pair, values in modality_gap(rows, labels, evaluation.ground_truth).items():
            before.setdefault(pair, {**values, "space": space})
    return before


def score_zeroshot(run, model: UnifiedModel, evaluation: EvaluationSet,
                   data: dict[str, Embeddings], unified: dict[str, torch.Tensor],
                   where: str) -> tuple[dict[str, dict], Vocabulary]:
    """Modality → zero-shot metrics in the unified space, each with ``native``: the same
    classification inside the item's own source space when that space has text too (CLAP's
    own ESC-50 figure beside the unified one). Items and prompts share the set's classes."""
    space = model.space_of(PROMPT_MODALITY)
    names = set_class_names(run, evaluation, where)
    prompt_rows = prompt_embeddings(run, space, evaluation, names, where)
    vocabulary = set_vocabulary(run, evaluation, data, where, names, prompt_rows.labels)
    names = [str(v) for v in vocabulary.values]
    prompt_codes = vocabulary.codes["prompts"]
    prototypes = class_prototypes(model.project(space, PROMPT_MODALITY, prompt_rows.rows),
                                  prompt_codes, len(names))
    results = {}
    for modality, rows in unified.items():
        labels = vocabulary.codes[modality]
        results[modality] = zeroshot_metrics(rows, labels, prototypes, names)
        own = model.space_of(modality)
        prompts = evaluation.prompts
        embeddable = prompts is None or bool(prompts.dataset or prompts.inputs
                                             or own in prompts.embeddings)
        if (own != space and embeddable
                and PROMPT_MODALITY in model.manifest["spaces"][own]["modalities"]):
            own_prompts = prompt_embeddings(run, own, evaluation, names, where)
            native = zeroshot_metrics(
                data[modality].rows, labels,
                class_prototypes(own_prompts.rows, prompt_codes, len(names)), names)
            results[modality]["native"] = {"space": own, **{
                k: v for k, v in native.items() if k.startswith(("top", "mean_per"))}}
    return results, vocabulary


def score_sets(run, model: UnifiedModel, sets: list[EvaluationSet],
               native: dict[str, dict[str, Embeddings]], with_pictures: bool = True
               ) -> ScoredSets:
    """Every set's figures in the unified space of ``model``."""
    scored = ScoredSets()
    for j, evaluation in enumerate(sets):
        where = f"evaluation.{j}"
        data = native[evaluation.name]
        unified = {m: model.project(model.space_of(m), m, e.rows) for m, e in data.items()}
        if evaluation.task == "zeroshot":
            scored.zeroshot[evaluation.name], vocabulary = score_zeroshot(
                run, model, evaluation, data, unified, where)
            scored.vocabulary[evaluation.name] = vocabulary.report()
            continue
        names = (set_class_names(run, evaluation, where)
                 if evaluation.ground_truth == "labels" else None)
        vocabulary = set_vocabulary(run, evaluation, data, where, names)
        _warn(evaluation, vocabulary, where)
        labels = dict(vocabulary.codes) if vocabulary else {m: None for m in data}
        if vocabulary:
            scored.vocabulary[evaluation.name] = vocabulary.report()
        if evaluation.ground_truth == "items":
            scored.retrieval[evaluation.name] = cross_modal_items(
                unified, labels, evaluation.unmatched_queries)
        else:
            scored.retrieval[evaluation.name] = cross_modal_retrieval(
                unified, evaluation.ground_truth, labels, evaluation.unmatched_queries)
        if with_pictures:
            after = modality_gap(unified, labels, evaluation.ground_truth)
            before = source_space_gaps(run, model, evaluation, data, labels, where)
            scored.gap[evaluation.name] = {
                pair: {"after": values, "before": before.get(pair)}
                for pair, values in after.items()
            }
            if not scored.pca:
                scored.pca = pca_2d(unified)
    return scored


def flatten(per_set: dict[str, dict], always_prefix: bool = False) -> dict:
    """One set: its entries as they are; several (or ``always_prefix``): prefixed
    "set/audio->image"."""
    if len(per_set) == 1 and not always_prefix:
        return next(iter(per_set.values()))
    return {f"{name}/{key}": m for name, entries in per_set.items() for key, m in entries.items()}


# ---------------------------------------------------------------------------------------
# One model, end to end
# ---------------------------------------------------------------------------------------
def evaluate_unified_model(model: UnifiedModel, sets: list[EvaluationSet], registry,
                           show_progress: bool = True, workers: int = 0,
                           name: str | None = None) -> tuple[dict[str, Any], ScoredSets]:
    """The metrics document of ``model`` on ``sets`` (and what the pictures need)."""
    run = ModelSource(model, registry, show_progress=show_progress, workers=workers)
    missing = sorted({m for s in sets for m in s.data if m not in model.modalities})
    if missing:
        raise McrxError(f"the model {name or ''} has no encoder for {missing}; it embeds "
                        f"{model.modalities}")
    timings: dict[str, float] = {}
    began = time.perf_counter()
    native = embed_sets(run, model, sets)
    timings["encode"] = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    scored = score_sets(run, model, sets, native)
    timings["score"] = round(time.perf_counter() - began, 2)
    console.print(f"  {name or model.manifest.get('name', 'model')}: {len(sets)} sets, "
                  f"{run.encoded:,} items encoded (the rest from the cache)")
    metrics = {
        "model": name or model.manifest.get("name", "model"),
        "recipe": model.manifest.get("name", ""),
        "method": model.method,
        "base": model.base,
        "retrieval": flatten(scored.retrieval),
        "zeroshot": flatten(scored.zeroshot, always_prefix=True),
        "gap": flatten(scored.gap),
        "vocabulary": scored.vocabulary,
        "conventions": CONVENTIONS,
        "timings": timings,
        "encoded_items": run.encoded,
    }
    return metrics, scored
