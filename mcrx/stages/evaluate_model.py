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
- for every retrieval set, the modality gap, two measures: the mean cosine of matched
  pairs against that of random pairs, and the distance between the modalities' centroids,
  ``‖mean(a) − mean(b)‖`` of the L2-normalised rows (Liang et al. 2022, "Mind the Gap",
  §4.1), in the unified space and, where both modalities share a source space, in that
  space before any connector;
- zero-shot prompts (class names × templates) encoded through the embedding cache like
  any source, keyed by the texts and the encoder's fingerprint: a second run, and every
  model sharing that text encoder, encodes none;
- degenerate embeddings flagged per set and modality (:func:`degeneracy`): a collapsed
  model scores at chance, and says so;
- a model that lacks a set's modalities is scored on those it covers; what it cannot
  score is listed under ``not_covered`` with the reason.
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
from mcrx.metrics.templates import prompts, read_class_names, resolve_templates
from mcrx.metrics.vocabulary import Vocabulary, class_vocabulary, item_vocabulary
from mcrx.metrics.zeroshot import class_prototypes, zeroshot_metrics
from mcrx.recipe.schema import EvaluationSet
from mcrx.stages.context import Embeddings
from mcrx.ui.console import console

PROMPT_MODALITY = "text"
PCA_ROWS = 400  # points per modality in the 2-D PCA picture
#: degenerate rows: every direction nearly alike, or no spread at all (see degeneracy)
DEGENERATE_COSINE = 0.99
DEGENERATE_STD = 1e-4
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
    degenerate: dict[str, dict] = field(default_factory=dict)  # set → modality → stats


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
        self.out = None  # no run folder: cache entries are noted as used by no run

    def space(self, name: str):
        return self.model.space(name)


def class_names(evaluation: EvaluationSet, where: str) -> list[str] | None:
    """``classes:`` as a list: given, a preset, or a .txt file (one name per line)."""
    return read_class_names(evaluation.classes, where)


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
    rows, key = cached_texts(run, space, texts, f"{where}.prompts")
    return Embeddings(rows, key, np.asarray(labels))


def cached_texts(run, space: str, texts: list[str], what: str) -> tuple[torch.Tensor, str]:
    """``texts`` embedded by ``space``'s text encoder through the embedding cache, as any
    source is (:func:`mcrx.stages.encode.embed_source`): the entry is keyed by the encoder's
    fingerprint and the texts themselves, so the same prompts are encoded once for every
    run and every model that shares the encoder. Rows L2-normalised."""
    from mcrx.stages.encode import checked_memory, encode_shared
    from mcrx.store.cache import note_use
    from mcrx.store.fingerprint import fingerprint_of
    from mcrx.store.locks import cache_entry_lock
    from mcrx.store.paths import cache_root, slug

    encoder = run.space(space).encoder(PROMPT_MODALITY)
    source = fingerprint_of("texts", list(texts))
    key = fingerprint_of(encoder.fingerprint(), source)
    path = cache_root() / "embeddings" / slug(space) / PROMPT_MODALITY / key
    memory = checked_memory(run, path)  # a damaged entry is said, removed and encoded again
    if memory is None or not memory.complete:
        meta = {"key": key, "space": space, "modality": PROMPT_MODALITY, "source": what,
                "encoder_fingerprint": encoder.fingerprint(), "source_fingerprint": source}
        memory, encoded = encode_shared(run, encoder, list(texts), path, meta,
                                        description=f"encode {what} ({space})")
        run.encoded += encoded
    if memory.count != len(texts):
        raise McrxError(f"{path}: cached prompts hold {memory.count} rows, expected "
                        f"{len(texts)}; delete the folder to encode them again")
    with cache_entry_lock(path):
        rows = memory.mapped_tensor(dtype="float32")
        if run.state.is_main_process:
            note_use(path, getattr(run, "out", None))
    return F.normalize(rows.float(), dim=-1), key


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
            origin = (f" in {source.labels}" if source.labels is not None else
                      f" from dataset {source.dataset}" if source.dataset else "")
            raise McrxError(f"{where}.data.{modality} (set {evaluation.name!r}): {len(ids)} "
                            f"labels{origin} for {len(rows.rows)} {modality} rows (one per "
                            "row)")
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


def embed_sets(run, model: UnifiedModel, sets: list[EvaluationSet | None]
               ) -> dict[str, dict[str, Embeddings]]:
    """Set name → modality → native rows, in the space the model embeds that modality with
    (a None set, one the model does not cover, is left out)."""
    from mcrx.stages.encode import embed_source

    native = {}
    for j, evaluation in enumerate(sets):
        if evaluation is None:  # not covered by this model
            continue
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
    """Per unordered modality pair, two measures of the gap between the modalities:

    - ``matched`` / ``random`` / ``gap``: the mean cosine of matched pairs, of random pairs
      (the mean over all pairs: mean(a)·mean(b)), and matched − random;
    - ``centroid_distance``: ‖mean(a) − mean(b)‖ of the L2-normalised rows, the "modality
      gap" of Liang et al. 2022 ("Mind the Gap", §4.1), 0 when the two clouds are centred
      alike, up to 2."""
    out = {}
    for m1, m2 in combinations(sorted(rows), 2):
        a, b = rows[m1].float().cpu(), rows[m2].float().cpu()
        matched = _matched_cosine(a, b, labels.get(m1), labels.get(m2), ground_truth)
        if matched is None:
            continue
        random = float(a.mean(0) @ b.mean(0))
        centroid = float(torch.linalg.vector_norm(
            F.normalize(a, dim=-1).mean(0) - F.normalize(b, dim=-1).mean(0)))
        out[f"{m1}~{m2}"] = {"matched": matched, "random": random, "gap": matched - random,
                             "centroid_distance": centroid}
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


def degeneracy(rows: torch.Tensor, sample: int = 4096) -> dict[str, Any] | None:
    """Why ``rows`` are degenerate, or None: a model that collapsed (every output one
    vector, or nearly) ranks at chance, which the figures alone do not tell from a poor
    model. Flagged: a mean pairwise cosine above ``DEGENERATE_COSINE`` (all rows point the
    same way: ``(‖Σx̂‖² − n) / (n(n − 1))`` of the normalised rows), or a per-dimension
    standard deviation below ``DEGENERATE_STD`` in every dimension (no spread at all)."""
    x = rows.float().cpu()
    if len(x) > sample:  # an evenly spaced sample: the statistics of a large set
        x = x[torch.linspace(0, len(x) - 1, sample).long()]
    n = len(x)
    if n < 2:
        return None
    unit = F.normalize(x, dim=-1)
    total = unit.sum(0)
    mean_cosine = float((total @ total - (unit * unit).sum()) / (n * (n - 1)))
    max_std = float(x.std(0).max())
    reasons = []
    if mean_cosine > DEGENERATE_COSINE:
        reasons.append(f"mean pairwise cosine {mean_cosine:.4f} > {DEGENERATE_COSINE}")
    if max_std < DEGENERATE_STD:
        reasons.append(f"per-dimension std ≤ {max_std:.1e} < {DEGENERATE_STD:g}")
    if not reasons:
        return None
    return {"rows": len(rows), "mean_cosine": round(mean_cosine, 6),
            "max_std": float(f"{max_std:.3e}"),
            "reason": "; ".join(reasons) + " (rows nearly identical: figures at chance)"}


def coverage(model: UnifiedModel, evaluation: EvaluationSet) -> tuple[list[str], str | None]:
    """The modalities of ``evaluation`` that ``model`` can score, and why it cannot score
    the set (None when it can): retrieval needs two modalities it embeds, zero-shot the
    items' modality and text (the prompts)."""
    covered = [m for m in evaluation.data if m in model.modalities]
    if evaluation.task == "zeroshot":
        if PROMPT_MODALITY not in model.modalities:
            return [], f"the model embeds no text for the prompts (it embeds {model.modalities})"
        if not covered:
            return [], (f"the model embeds none of {sorted(evaluation.data)} (it embeds "
                        f"{model.modalities})")
        return covered, None
    if len(covered) < 2:
        return covered, (f"retrieval needs two of {sorted(evaluation.data)}; the model embeds "
                         f"{covered or 'none'} of them (it embeds {model.modalities})")
    return covered, None


def _warn_unmatched_queries(evaluation: EvaluationSet, results: dict[str, dict],
                            where: str) -> None:
    for pair, values in results.items():
        missing = values.get("queries_without_match") or 0
        if missing:
            what = ("left out" if evaluation.unmatched_queries == "skip"
                    else "counted as misses")
            console.print(f"[yellow]warning[/] {where} ({evaluation.name}): {missing:,} "
                          f"{pair} queries have no match in the gallery ({what})",
                          highlight=False)


def score_sets(run, model: UnifiedModel, sets: list[EvaluationSet],
               native: dict[str, dict[str, Embeddings]], with_pictures: bool = True
               ) -> ScoredSets:
    """Every set's figures in the unified space of ``model``."""
    scored = ScoredSets()
    for j, evaluation in enumerate(sets):
        where = f"evaluation.{j}"
        if evaluation.name not in native:  # not covered by this model
            continue
        data = native[evaluation.name]
        unified = {m: model.project(model.space_of(m), m, e.rows) for m, e in data.items()}
        for modality, rows in unified.items():
            flagged = degeneracy(rows)
            if flagged is not None:
                scored.degenerate.setdefault(evaluation.name, {})[modality] = flagged
                console.print(f"[bold yellow]warning[/] {where} ({evaluation.name}): the "
                              f"{modality} embeddings are degenerate: {flagged['reason']}",
                              highlight=False)
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
        _warn_unmatched_queries(evaluation, scored.retrieval[evaluation.name], where)
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
    label = name or model.manifest.get("name", "model")
    # what the model covers: a set restricted to its modalities, or None (with a reason)
    view: list[EvaluationSet | None] = []
    not_covered: dict[str, dict[str, Any]] = {}
    for evaluation in sets:
        covered, reason = coverage(model, evaluation)
        left = [m for m in evaluation.data if m not in covered]
        if reason is not None:
            not_covered[evaluation.name] = {"modalities": sorted(evaluation.data),
                                            "reason": reason}
            view.append(None)
            console.print(f"  [yellow]{label}[/]: set {evaluation.name!r} not scored: "
                          f"{reason}", highlight=False)
            continue
        if left:
            not_covered[evaluation.name] = {
                "modalities": left, "reason": f"the model embeds no {', '.join(left)} "
                f"(it embeds {model.modalities}); scored on {', '.join(covered)}"}
            console.print(f"  [yellow]{label}[/]: set {evaluation.name!r} scored without "
                          f"{', '.join(left)}: the model does not embed it", highlight=False)
            evaluation = evaluation.model_copy(
                update={"data": {m: s for m, s in evaluation.data.items() if m in covered}})
        view.append(evaluation)
    scorable = [s for s in view if s is not None]
    timings: dict[str, float] = {}
    began = time.perf_counter()
    native = embed_sets(run, model, view)
    timings["encode"] = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    scored = score_sets(run, model, [s if s is not None else sets[j]
                                     for j, s in enumerate(view)], native)
    timings["score"] = round(time.perf_counter() - began, 2)
    console.print(f"  {label}: {len(scorable)} of {len(sets)} sets, "
                  f"{run.encoded:,} items encoded (the rest from the cache)")
    several = sum(s.task == "retrieval" for s in sets) > 1
    metrics = {
        "model": label,
        "recipe": model.manifest.get("name", ""),
        "method": model.method,
        "base": model.base,
        # keys prefixed by the set whenever the file has several retrieval sets, whatever
        # this model covers: every model's keys then agree in the side-by-side tables
        "retrieval": flatten(scored.retrieval, always_prefix=several),
        "zeroshot": flatten(scored.zeroshot, always_prefix=True),
        "gap": flatten(scored.gap, always_prefix=several),
        "vocabulary": scored.vocabulary,
        "degenerate": scored.degenerate,
        "not_covered": not_covered,
        "conventions": CONVENTIONS,
        "timings": timings,
        "encoded_items": run.encoded,
    }
    return metrics, scored
