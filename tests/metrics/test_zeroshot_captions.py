"""Zero-shot classification, multi-caption retrieval and template presets against small cases
computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mcrx.errors import McrxError
from mcrx.metrics.captions import cross_modal_items, item_retrieval_metrics
from mcrx.metrics.templates import (
    CLAP_ESC50,
    CLIP_IMAGENET_80,
    MODELNET40_64,
    MODELNET40_CLASSES,
    TEMPLATE_PRESETS,
    prompts,
    resolve_templates,
)
from mcrx.metrics.zeroshot import class_prototypes, zeroshot_metrics

# -- multi-caption retrieval ----------------------------------------------------------------
# two audios a0 = (1, 0), a1 = (0, 1); captions c0, c1 belong to a0, c2, c3 to a1; c1 and c3
# lie nearer the wrong audio.
AUDIO = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
CAPTIONS = torch.tensor([[1.0, 0.1], [0.2, 1.0], [0.1, 1.0], [1.0, 0.3]])
CAPTION_IDS = ["a0", "a0", "a1", "a1"]


def test_text_to_audio_by_hand():
    m = item_retrieval_metrics(CAPTIONS, AUDIO, CAPTION_IDS, ["a0", "a1"])
    # 0-based ranks of the paired audio: c0 0, c1 1, c2 0, c3 1
    assert m["R@1"] == 0.5 and m["R@5"] == 1.0
    assert m["median_rank"] == 1.0  # floor(median(0, 1, 0, 1)) + 1
    assert m["mean_rank"] == 1.5
    assert m["mAP@10"] == pytest.approx((1 + 1 / 2 + 1 + 1 / 2) / 4)
    assert m["chance_R@1"] == pytest.approx(1 / 2)
    assert m["n"] == 4 and m["queries_without_match"] == 0


def test_audio_to_text_takes_the_best_caption_by_hand():
    m = item_retrieval_metrics(AUDIO, CAPTIONS, ["a0", "a1"], CAPTION_IDS)
    # a0 ranks c0, c3, c1, c2 (its captions at 1 and 3); a1 ranks c2, c1, c3, c0 (1 and 3)
    assert m["R@1"] == 1.0 and m["median_rank"] == 1.0 and m["mean_rank"] == 1.0
    assert m["mAP@10"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # two relevant among four: chance R@1 = 2/4
    assert m["chance_R@1"] == pytest.approx(0.5)


def test_map_at_10_ignores_ranks_past_10():
    gallery = torch.eye(12)
    query = torch.tensor([[1.0] * 11 + [0.5]])  # item 11 is ranked last (12th)
    m = item_retrieval_metrics(query, gallery, [11], list(range(12)))
    assert m["mAP@10"] == 0.0 and m["R@10"] == 0.0
    assert m["median_rank"] == 12.0 and m["mean_rank"] == 12.0


def test_integer_and_string_ids_name_the_same_items():
    m = item_retrieval_metrics(CAPTIONS, AUDIO, [0, 0, 1, 1], ["0", "1"])
    assert m["R@1"] == 0.5


def test_unmatched_queries_are_counted_and_ids_checked():
    m = item_retrieval_metrics(CAPTIONS, AUDIO, ["a0", "a0", "a1", "zz"], ["a0", "a1"])
    assert m["n"] == 3 and m["queries_without_match"] == 1
    with pytest.raises(McrxError, match="one id per row"):
        item_retrieval_metrics(CAPTIONS, AUDIO, ["a0"], ["a0", "a1"])


def test_cross_modal_items_defaults_to_one_item_per_row():
    results = cross_modal_items({"audio": AUDIO, "text": CAPTIONS},
                                {"audio": None, "text": [0, 0, 1, 1]})
    assert set(results) == {"audio->text", "text->audio"}
    assert results["text->audio"]["R@1"] == 0.5
    assert results["audio->text"]["R@1"] == 1.0


# -- zero-shot classification -----------------------------------------------------------------
def test_prototypes_average_normalised_prompts_then_renormalise():
    prompt_rows = torch.tensor([[2.0, 0.0], [0.8, 0.6], [0.0, 5.0]])
    protos = class_prototypes(prompt_rows, [0, 0, 1], classes=2)
    expected = torch.tensor([0.9, 0.3]) / math.hypot(0.9, 0.3)  # mean of (1,0) and (.8,.6)
    assert torch.allclose(protos[0], expected)
    assert torch.allclose(protos[1], torch.tensor([0.0, 1.0]))
    with pytest.raises(McrxError, match="no prompt"):
        class_prototypes(prompt_rows, [0, 0, 0], classes=2)


def test_zeroshot_by_hand():
    protos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    items = torch.tensor([
        [0.9, 0.1, 0.0],   # class 0, predicted 0
        [0.1, 0.9, 0.3],   # class 1, predicted 1
        [0.6, 0.0, 0.5],   # class 2, predicted 0 (2 second)
        [0.2, 0.5, 0.1],   # class 2, predicted 1, then 0, then 2 (third)
    ])
    m = zeroshot_metrics(items, [0, 1, 2, 2], protos, ["cat", "dog", "owl"], ks=(1, 2, 3))
    assert m["top1"] == 0.5 and m["top2"] == 0.75 and m["top3"] == 1.0
    assert m["per_class"] == {"cat": 1.0, "dog": 1.0, "owl": 0.0}
    assert m["mean_per_class"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert m["chance_top1"] == pytest.approx(1 / 3) and m["n"] == 4
    with pytest.raises(McrxError, match="labels must lie"):
        zeroshot_metrics(items, [0, 1, 2, 3], protos)


# -- template presets ---------------------------------------------------------------------------
def test_presets_have_the_published_counts():
    assert len(MODELNET40_64) == 64 and len(set(MODELNET40_64)) == 64
    assert MODELNET40_64[:2] == ("a point cloud model of {}.", "There is a {} in the scene.")
    assert len(CLIP_IMAGENET_80) == 80 and CLIP_IMAGENET_80[0] == "a bad photo of a {}."
    assert CLAP_ESC50 == ("This is a sound of {}.",)
    assert len(MODELNET40_CLASSES) == 40 and MODELNET40_CLASSES[-1] == "xbox"
    for name, templates in TEMPLATE_PRESETS.items():
        assert all(t.count("{}") == 1 for t in templates), name


def test_templates_resolve_and_fill_class_major():
    assert resolve_templates("clap_esc50") == ["This is a sound of {}."]
    texts, labels = prompts(["dog", "rain"], resolve_templates(["a {}.", "the {}!"]))
    assert texts == ["a dog.", "the dog!", "a rain.", "the rain!"] and labels == [0, 0, 1, 1]
    with pytest.raises(McrxError, match="unknown template preset"):
        resolve_templates("imagenet")
    with pytest.raises(McrxError, match="exactly one"):
        resolve_templates(["no slot"])


def test_validate_reports_zeroshot_presets_and_class_files():
    from mcrx.metrics.templates import zeroshot_problems
    from mcrx.recipe.schema import EvaluationSet

    def problems(**fields):
        evaluation = EvaluationSet(name="z", task="zeroshot",
                                   data={"audio": {"dataset": "toy/world"}}, **fields)
        return zeroshot_problems(evaluation, "evaluation.0")

    assert problems(classes="modelnet40", templates="modelnet40_64") == []
    assert problems(classes=["a", "b"], templates=["a {}"]) == []
    ((where, message),) = problems(classes="modelnet40", templates="modelnet_64")
    assert where == "evaluation.0.templates" and "unknown template preset" in message
    ((where, message),) = problems(classes="no/such/classes.txt")
    assert where == "evaluation.0.classes" and "not found" in message
    assert problems(classes=["a", "a"])[0][1] == "class names must be distinct"
