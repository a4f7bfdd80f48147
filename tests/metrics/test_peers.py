"""mcrx's figures against compact re-implementations of the definitions its peers publish,
on adversarial inputs: ties, uneven caption counts, ids as strings and as integers, classes
missing on one side, a class with one item, fewer classes than k.

Each reference below is written from the peer's code (read, not copied) and ranks with the
one tie rule mcrx documents (:func:`order`: equal scores keep row order), since the peers'
own sorts leave exact ties to the algorithm (``torch.topk``, ``np.argsort(d)[::-1]``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mcrx.errors import McrxError
from mcrx.metrics.captions import cross_modal_items, first_copies, item_retrieval_metrics
from mcrx.metrics.retrieval import (
    chance_ap,
    chance_mean_rank,
    chance_recall,
    cross_modal_retrieval,
    retrieval_metrics,
)
from mcrx.metrics.vocabulary import class_vocabulary, item_vocabulary
from mcrx.metrics.zeroshot import zeroshot_metrics


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def order(scores: np.ndarray) -> np.ndarray:
    """Indices best first; equal scores: the earlier index first (mcrx's documented rule)."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores)))


# -- WavCaps ---------------------------------------------------------------------------------
def wavcaps_t2a(audio_embs: np.ndarray, cap_embs: np.ndarray, per: int = 5) -> dict:
    """Caption→audio as XinhaoMei/WavCaps ``retrieval/tools/utils.py`` ``t2a`` defines it
    (commit 59694bd): audio rows repeated ``per`` times, the first copy of each is the
    gallery; rank of the paired audio; mAP@10 = Σ_{rank<10} 1/(rank+1) / #captions."""
    audios = audio_embs[::per]
    ranks = np.array([np.where(order(audios @ cap_embs[i]) == i // per)[0][0]
                      for i in range(len(cap_embs))], dtype=float)
    return _wavcaps_figures(ranks, np.sum(1 / (ranks[ranks < 10] + 1)) / len(ranks))


def wavcaps_a2t(audio_embs: np.ndarray, cap_embs: np.ndarray, per: int = 5) -> dict:
    """Audio→caption as WavCaps's ``a2t`` (same file and commit): the first copy of each
    audio queries all captions; best rank of its ``per`` captions; AP@10 = Σ over its
    captions in the top 10 of (hits so far / rank), divided by ``per``."""
    ranks, ap10 = [], []
    for index in range(len(audio_embs) // per):
        inds = order(cap_embs @ audio_embs[per * index])
        positions = [np.where(inds == i)[0][0] for i in range(per * index, per * index + per)]
        ranks.append(min(positions))
        top = np.sort([p + 1 for p in positions if p < 10])
        ap10.append(np.sum(np.arange(1, len(top) + 1) / top) / per if len(top) else 0.0)
    return _wavcaps_figures(np.array(ranks, dtype=float), np.mean(ap10))


def _wavcaps_figures(ranks: np.ndarray, map10: float) -> dict:
    return {"R@1": np.mean(ranks < 1), "R@5": np.mean(ranks < 5), "R@10": np.mean(ranks < 10),
            "mAP@10": map10, "median_rank": np.floor(np.median(ranks)) + 1,
            "mean_rank": ranks.mean() + 1}


def general_items(queries, gallery, q_ids, g_ids, miss: bool = False) -> dict:
    """WavCaps's definitions for any number of relevant rows (best rank; AP@10 divided by
    the query's relevant count), brute force; ``miss``: a query without one counts 0."""
    ranks, ap10 = [], []
    for q, qid in zip(queries, q_ids, strict=True):
        inds = order(gallery @ q)
        positions = [p for p, j in enumerate(inds) if g_ids[j] == qid]
        if not positions:
            if miss:
                ranks.append(len(gallery))
                ap10.append(0.0)
            continue
        ranks.append(positions[0])
        top = [p + 1 for p in positions if p < 10]
        ap10.append(sum((h + 1) / p for h, p in enumerate(top)) / len(positions))
    ranks = np.array(ranks, dtype=float)
    return _wavcaps_figures(ranks, float(np.mean(ap10))) | {"n": len(ranks)}


def wavcaps_layout(items: int = 12, per: int = 5, d: int = 6, seed: int = 0):
    """Audio rows repeated once per caption, ``per`` captions per audio, as WavCaps lays
    its test sets out; noisy enough that the figures lie between 0 and 1."""
    rng = np.random.default_rng(seed)
    audio = unit(rng.standard_normal((items, d)))
    captions = unit(np.repeat(audio, per, axis=0) + 0.9 * rng.standard_normal((items * per, d)))
    return np.repeat(audio, per, axis=0), captions, np.repeat(np.arange(items), per)


FIGURES = ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")


def test_wavcaps_layout_gives_wavcaps_figures():
    audio, captions, ids = wavcaps_layout()
    results = cross_modal_items({"audio": torch.tensor(audio), "text": torch.tensor(captions)},
                                {"audio": ids, "text": ids})
    t2a, a2t = results["text->audio"], results["audio->text"]
    reference_t2a, reference_a2t = wavcaps_t2a(audio, captions), wavcaps_a2t(audio, captions)
    for key in FIGURES:
        assert t2a[key] == pytest.approx(reference_t2a[key]), key
        assert a2t[key] == pytest.approx(reference_a2t[key]), key
    assert t2a["gallery"] == 12 and t2a["n"] == 60 and a2t["n"] == 12
    assert t2a["copies"] == {"query": 0, "gallery": 48}
    assert 0 < t2a["R@1"] < 1 and 0 < a2t["R@1"] < 1


def test_distinct_rows_sharing_an_id_are_not_merged():
    audio, captions, ids = wavcaps_layout(items=4, per=3)
    assert first_copies(torch.tensor(captions), ids).tolist() == list(range(12))
    assert first_copies(torch.tensor(audio), ids).tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uneven_caption_counts_match_the_general_definition(seed):
    rng = np.random.default_rng(seed)
    audio = unit(rng.standard_normal((9, 5)))
    counts = rng.integers(1, 5, 9)  # 1 to 4 captions per audio
    caption_ids = np.repeat(np.arange(9), counts)
    captions = unit(audio[caption_ids] + 0.8 * rng.standard_normal((len(caption_ids), 5)))
    for queries, gallery, q_ids, g_ids in ((captions, audio, caption_ids, np.arange(9)),
                                           (audio, captions, np.arange(9), caption_ids)):
        mine = item_retrieval_metrics(torch.tensor(queries), torch.tensor(gallery), q_ids, g_ids)
        reference = general_items(queries, gallery, q_ids, g_ids)
        for key in FIGURES:
            assert mine[key] == pytest.approx(reference[key]), key


def test_ties_rank_the_earlier_row_first_everywhere():
    # four gallery rows, rows 0 and 2 identical, rows 1 and 3 identical: every query ties
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q_ids, g_ids = ["b", "a", "d"], ["a", "x", "b", "d"]
    mine = item_retrieval_metrics(queries, gallery, q_ids, g_ids)
    reference = general_items(queries.numpy(), gallery.numpy(), q_ids, g_ids)
    for key in FIGURES:
        assert mine[key] == pytest.approx(reference[key]), key
    # "b" sits behind its identical twin "a" (earlier row): rank 2; "a" first; "d" behind "x"
    assert mine["R@1"] == pytest.approx(1 / 3) and mine["mean_rank"] == pytest.approx(5 / 3)
    labels = retrieval_metrics(queries, gallery, "labels", q_ids, g_ids)
    assert labels["R@1"] == pytest.approx(1 / 3)
    # zero-shot: two equal prototypes, the earlier class is the prediction
    zs = zeroshot_metrics(torch.tensor([[1.0, 0.0]] * 2), [0, 1],
                          torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), ks=(1, 2))
    assert zs["confusion"][1] == [1, 0, 0] and zs["top1"] == 0.5 and zs["top2"] == 1.0


# -- CLIP_benchmark ----------------------------------------------------------------------------
def clip_benchmark_recall(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """LAION-AI/CLIP_benchmark ``clip_benchmark/metrics/zeroshot_retrieval.py`` (commit
    082089f): ``recall_at_k`` = true positives in the top k / positives, then
    ``(recall > 0).mean()``; a query without positives gives 0/0 = NaN, and NaN > 0 is
    False: a miss."""
    hits = np.array([positive[i, order(row)[:k]].sum() for i, row in enumerate(scores)])
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits / positive.sum(1)
    return float(np.mean(recall > 0))


def test_clip_benchmark_recall_with_a_class_missing_from_the_gallery():
    rng = np.random.default_rng(3)
    queries, gallery = unit(rng.standard_normal((30, 4))), unit(rng.standard_normal((25, 4)))
    q_labels = rng.choice(["cat", "dog", "owl", "yak"], 30)  # "yak": never in the gallery
    g_labels = rng.choice(["cat", "dog", "owl"], 25)
    positive = q_labels[:, None] == g_labels[None, :]
    scores = queries @ gallery.T
    miss = retrieval_metrics(torch.tensor(queries), torch.tensor(gallery), "labels",
                             q_labels, g_labels, unmatched_queries="miss")
    skip = retrieval_metrics(torch.tensor(queries), torch.tensor(gallery), "labels",
                             q_labels, g_labels)
    without = int((q_labels == "yak").sum())
    assert without > 0
    for k in (1, 5, 10):
        assert miss[f"R@{k}"] == pytest.approx(clip_benchmark_recall(scores, positive, k))
        keep = positive.any(1)
        assert skip[f"R@{k}"] == pytest.approx(
            clip_benchmark_recall(scores[keep], positive[keep], k))
    assert miss["queries_without_match"] == skip["queries_without_match"] == without
    assert miss["n"] == 30 and skip["n"] == 30 - without
    assert miss["unmatched_queries"] == "miss"


def clip_benchmark_zeroshot(logits: np.ndarray, target: np.ndarray) -> dict:
    """CLIP_benchmark ``clip_benchmark/metrics/zeroshot_classification.py`` (commit
    b4b6a33): ``accuracy`` (target among the top k; acc5 NaN under 5 classes) and
    ``mean_per_class_recall`` = balanced accuracy of ``logits.argmax`` (recall averaged over
    the classes present among the targets)."""
    ranked = np.array([order(row) for row in logits])
    out = {"top1": float(np.mean(ranked[:, 0] == target))}
    out["top5"] = (float(np.mean((ranked[:, :5] == target[:, None]).any(1)))
                   if logits.shape[1] >= 5 else float("nan"))
    pred = logits.argmax(1)  # first maximal value on ties
    out["mean_per_class"] = float(np.mean([np.mean(pred[target == c] == c)
                                           for c in np.unique(target)]))
    return out


def ulip_topk(logits: np.ndarray, target_names: list[str], names: list[str], ks) -> dict:
    """salesforce/ULIP ``main.py`` ``test_zeroshot_3d_core`` and ``accuracy`` (commit
    a559aa8): ``output.topk(maxk)``, correct when the target is among the first k; per-class
    top-1 over the class names seen in the test set."""
    index = {n: i for i, n in enumerate(names)}
    target = np.array([index[n] for n in target_names])
    ranked = np.array([order(row) for row in logits])
    out = {f"top{k}": float(np.mean((ranked[:, :k] == target[:, None]).any(1))) for k in ks}
    out["per_class"] = {n: float(np.mean(ranked[target == index[n], 0] == index[n]))
                        for n in dict.fromkeys(target_names)}
    return out


def zeroshot_case(seed: int = 4):
    """Six classes, one with a single item, one with none; prototypes in random order."""
    rng = np.random.default_rng(seed)
    prototypes = unit(rng.standard_normal((6, 5)))
    target = np.array([0] * 7 + [1] * 6 + [2] * 1 + [3] * 8 + [5] * 5)  # class 4: no item
    items = unit(prototypes[target] + 0.9 * rng.standard_normal((len(target), 5)))
    return items, target, prototypes


def test_zeroshot_matches_clip_benchmark_and_ulip():
    items, target, prototypes = zeroshot_case()
    names = ["rain", "dog", "owl", "sea", "cat", "bell"]
    mine = zeroshot_metrics(torch.tensor(items), target, torch.tensor(prototypes), names)
    logits = items @ prototypes.T
    clip_benchmark = clip_benchmark_zeroshot(logits, target)
    ulip = ulip_topk(logits, [names[t] for t in target], names, (1, 3, 5))
    for k in (1, 3, 5):
        assert mine[f"top{k}"] == pytest.approx(ulip[f"top{k}"])
    assert mine["top1"] == pytest.approx(clip_benchmark["top1"])
    assert mine["top5"] == pytest.approx(clip_benchmark["top5"])
    assert mine["mean_per_class"] == pytest.approx(clip_benchmark["mean_per_class"])
    assert mine["per_class"] == pytest.approx(ulip["per_class"])
    assert "cat" not in mine["per_class"]  # no item: no recall, as in both peers
    assert mine["chance_top1"] == pytest.approx(1 / 6) and mine["chance_top5"] == 5 / 6


def test_fewer_classes_than_k():
    items, target, prototypes = zeroshot_case()
    keep = target < 3
    mine = zeroshot_metrics(torch.tensor(items[keep]), target[keep],
                            torch.tensor(prototypes[:3]))
    assert "top5" not in mine and "chance_top5" not in mine  # CLIP_benchmark: NaN
    assert np.isnan(clip_benchmark_zeroshot(items[keep] @ prototypes[:3].T, target[keep])["top5"])
    assert mine["top3"] == 1.0 and mine["chance_top3"] == 1.0


# -- exact chance levels -------------------------------------------------------------------------
def enumerate_expectations(gallery: int, relevant: int, k: int, depth: int) -> dict:
    """Every ranking of a gallery with ``relevant`` relevant rows, equally likely."""
    totals = {"R@k": 0.0, "AP": 0.0, "AP@D": 0.0, "rank": 0.0}
    rankings = list(itertools.permutations(range(gallery)))
    for ranking in rankings:
        rel = [j < relevant for j in ranking]
        hits = np.cumsum(rel)
        positions = [p for p in range(gallery) if rel[p]]
        totals["R@k"] += any(rel[:k])
        totals["AP"] += sum(hits[p] / (p + 1) for p in positions) / relevant
        totals["AP@D"] += sum(hits[p] / (p + 1) for p in positions if p < depth) / relevant
        totals["rank"] += positions[0] + 1
    return {key: value / len(rankings) for key, value in totals.items()}


@pytest.mark.parametrize(("gallery", "relevant"), [(6, 1), (6, 2), (7, 3), (5, 5)])
def test_chance_levels_are_exact_expectations(gallery, relevant):
    expected = enumerate_expectations(gallery, relevant, k=2, depth=3)
    r = np.array([relevant])
    assert chance_recall(gallery, r, 2) == pytest.approx(expected["R@k"])
    assert chance_ap(gallery, r) == pytest.approx(expected["AP"])
    assert chance_ap(gallery, r, depth=3) == pytest.approx(expected["AP@D"])
    assert chance_mean_rank(gallery, r) == pytest.approx(expected["rank"])


def test_chance_map_on_a_small_gallery_is_not_r_over_g():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 70)  # six classes in 70 rows
    rows = torch.tensor(unit(rng.standard_normal((70, 4))))
    metrics = retrieval_metrics(rows, rows, "labels", labels, labels)
    counts = np.bincount(labels)[labels]
    harmonic = sum(1 / i for i in range(1, 71))
    exact = np.mean(harmonic / 70 + (counts - 1) * (70 - harmonic) / (70 * 69))
    assert metrics["chance_mAP"] == pytest.approx(exact)
    assert metrics["chance_mAP"] > 1.1 * np.mean(counts / 70)  # the old r/G approximation
    # and a miss has chance 0
    assert chance_recall(10, np.array([0, 2]), 1) == pytest.approx(0.1)
    assert math.isclose(chance_ap(10, np.array([0])), 0.0)


# -- one vocabulary per set ---------------------------------------------------------------------
def test_integer_ids_compare_as_integers_and_strings_as_written():
    vocabulary = item_vocabulary({"audio": np.array(["10", "2", "7"]),
                                  "text": np.array([2, 10, 10, 7])}, "x")
    audio, text = vocabulary.codes["audio"], vocabulary.codes["text"]
    assert [vocabulary.values[c] for c in audio] == [10, 2, 7]
    assert text.tolist() == [audio[1], audio[0], audio[0], audio[2]]
    assert vocabulary.report()["unmatched"] == {"audio": 0, "text": 0}
    vocabulary = item_vocabulary({"audio": np.array(["a1", "b2", "c3"]),
                                  "text": np.array(["b2", "c3", "c3"])}, "x")
    assert vocabulary.unmatched == {"audio": ["a1"], "text": []}
    assert vocabulary.codes["text"].tolist() == vocabulary.codes["audio"][[1, 2, 2]].tolist()
    assert "1 ids of audio appear in no other modality ('a1')" in vocabulary.warnings()[0]


def test_classes_order_is_authoritative():
    names = ["rain", "dog", "owl"]
    vocabulary = class_vocabulary({"audio": np.array(["owl", "rain"]),
                                   "image": np.array(["2", "1"]),
                                   "prompts": np.array([0, 1, 2])}, names, "x")
    assert vocabulary.codes["audio"].tolist() == [2, 0]
    assert vocabulary.codes["image"].tolist() == [2, 1]
    assert vocabulary.unmatched["audio"] == ["rain"] and vocabulary.unmatched["image"] == ["dog"]
    with pytest.raises(McrxError, match="not in 'classes'"):
        class_vocabulary({"audio": np.array(["cat"])}, names, "evaluation.0.data")
    with pytest.raises(McrxError, match="outside 0..2"):
        class_vocabulary({"audio": np.array([3])}, names, "evaluation.0.data")


def test_one_sided_class_never_shifts_the_others():
    rng = np.random.default_rng(6)
    audio, image = unit(rng.standard_normal((12, 4))), unit(rng.standard_normal((10, 4)))
    a_labels = np.array(["bell", "cat", "dog"] * 4)  # "bell": audio only
    i_labels = np.array(["cat", "dog"] * 5)
    vocabulary = class_vocabulary({"audio": a_labels, "image": i_labels}, None, "x")
    coded = cross_modal_retrieval({"audio": torch.tensor(audio), "image": torch.tensor(image)},
                                  "labels", vocabulary.codes)
    raw = cross_modal_retrieval({"audio": torch.tensor(audio), "image": torch.tensor(image)},
                                "labels", {"audio": a_labels, "image": i_labels})
    scores, positive = audio @ image.T, a_labels[:, None] == i_labels[None, :]
    keep = positive.any(1)
    for k in (1, 5):
        expected = clip_benchmark_recall(scores[keep], positive[keep], k)
        assert coded["audio->image"][f"R@{k}"] == pytest.approx(expected)
        assert raw["audio->image"][f"R@{k}"] == pytest.approx(expected)
    assert coded["audio->image"]["queries_without_match"] == 4
    assert vocabulary.unmatched == {"audio": ["bell"], "image": []}
