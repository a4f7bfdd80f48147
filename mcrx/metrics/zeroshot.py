"""Zero-shot classification: items of any modality against one text prototype per class.

A class's prototype is built from its prompts (class name × templates, or any labelled text
items): every prompt embedding normalised, averaged over the class, renormalised (CLIP's
prompt ensembling, as ULIP's ModelNet40 and LAION-CLAP's ESC-50 evaluations do). Logits are
cosine similarities; an item is correct at k when its class is among its k best prototypes,
prototypes of equal logit ranked by class index (the earlier class first: the tie rule of
:mod:`mcrx.metrics.retrieval`, ``torch.argmax``'s). Top-k for k above the number of classes
is left out (CLIP_benchmark reports NaN there: LAION-AI/CLIP_benchmark
``clip_benchmark/metrics/zeroshot_classification.py`` at b4b6a33, ``acc5 = float("nan")``).
Per-class accuracy is the recall of each class present among the items, and its mean over
those classes is CLIP_benchmark's ``mean_per_class_recall`` (sklearn's balanced accuracy).
Chance levels are exact for a uniformly random ranking of the C prototypes: top-k k/C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mcrx.errors import McrxError

KS = (1, 3, 5)


def class_prototypes(prompts: torch.Tensor, prompt_labels: Sequence[int] | np.ndarray,
                     classes: int) -> torch.Tensor:
    """(C, d): per class, the renormalised mean of its normalised prompt embeddings."""
    prompts = F.normalize(torch.as_tensor(prompts).float(), dim=-1)  # (P, d)
    labels = torch.as_tensor(np.asarray(prompt_labels), dtype=torch.long, device=prompts.device)
    if labels.shape != (len(prompts),):
        raise McrxError(f"{len(prompts)} prompt embeddings but {labels.numel()} prompt labels")
    counts = torch.bincount(labels, minlength=classes)
    if len(counts) > classes or bool((counts == 0).any()):
        missing = [int(c) for c in torch.nonzero(counts[:classes] == 0).flatten()]
        raise McrxError(f"zero-shot prompts: classes {missing[:10]} have no prompt "
                        f"(expected labels 0..{classes - 1})")
    sums = torch.zeros(classes, prompts.shape[1], device=prompts.device).index_add_(
        0, labels, prompts)
    return F.normalize(sums / counts[:, None], dim=-1)


@torch.no_grad()
def zeroshot_metrics(
    items: torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    prototypes: torch.Tensor,
    class_names: Sequence[str] | None = None,
    ks: tuple[int, ...] = KS,
    block: int = 4096,
) -> dict:
    """Top-k accuracy, per-class accuracy (and its mean) and the confusion matrix
    (rows: true class, columns: top-1 prediction) of classifying ``items`` (N, d)."""
    items = F.normalize(torch.as_tensor(items).float(), dim=-1)
    prototypes = F.normalize(torch.as_tensor(prototypes).float(), dim=-1).to(items.device)
    classes = len(prototypes)
    truth = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if truth.shape != (len(items),):
        raise McrxError(f"{len(items)} items but {truth.numel()} labels")
    if len(truth) == 0:
        raise McrxError("zero-shot: no items to classify")
    if int(truth.min()) < 0 or int(truth.max()) >= classes:
        raise McrxError(f"zero-shot: labels must lie in 0..{classes - 1} (one per class), "
                        f"got {int(truth.min())}..{int(truth.max())}")
    ks = tuple(k for k in ks if k <= classes)
    top = max(ks)
    predictions = []  # (N, top) class indices, best first
    for start in range(0, len(items), block):
        logits = items[start : start + block] @ prototypes.T  # (b, C): cosines
        order = torch.argsort(logits, dim=1, descending=True, stable=True)  # ties: class order
        predictions.append(order[:, :top].cpu())
    ranked = torch.cat(predictions)
    correct = ranked == truth[:, None]  # (N, top)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((truth, ranked[:, 0]), torch.ones(len(truth), dtype=torch.long),
                         accumulate=True)
    support = confusion.sum(1)
    present = support > 0
    per_class = (confusion.diagonal().float() / support.clamp(min=1).float())
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    metrics: dict = {f"top{k}": float(correct[:, :k].any(1).float().mean()) for k in ks}
    metrics.update({
        "mean_per_class": float(per_class[present].mean()),
        **{f"chance_top{k}": k / classes for k in ks},
        "chance_mean_per_class": 1 / classes,
        "per_class": {names[c]: float(per_class[c]) for c in range(classes) if present[c]},
        "confusion": confusion.tolist(),
        "classes": names,
        "n": len(truth),
    })
    return metrics
