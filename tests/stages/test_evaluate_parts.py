"""Parts of the evaluation of a model, alone: zero-shot prompts through the embedding
cache, degenerate embeddings, the two modality-gap measures, distinct model labels."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcrx.cli.evaluate import model_labels
from mcrx.metrics.templates import prompts, resolve_templates
from mcrx.plugin.interfaces import Encoder
from mcrx.stages.evaluate_model import cached_texts, degeneracy, modality_gap
from mcrx.train.distributed import process_state
from mcrx.ui.plots import slug


class SlowTextEncoder(Encoder):
    """Hashes each text to a vector; ``delay`` seconds per batch, like a real model."""

    modality = "text"
    dim = 16
    batch_size = 64

    def __init__(self, name: str = "a", delay: float = 0.0) -> None:
        self.name, self.delay, self.seen = name, delay, 0

    def encode(self, items):
        time.sleep(self.delay)
        self.seen += len(items)
        rows = torch.stack([torch.from_numpy(np.random.default_rng(
            abs(hash(text)) % 2**32).standard_normal(self.dim).astype("f4")) for text in items])
        return F.normalize(rows, dim=-1)

    def fingerprint(self) -> str:
        return f"slow-text-{self.name}"


def a_run(encoder: Encoder) -> SimpleNamespace:
    space = SimpleNamespace(encoder=lambda modality: encoder)
    return SimpleNamespace(space=lambda name: space, state=process_state(cpu=True), workers=0,
                           show_progress=False, encoded=0, out=None)


def test_prompts_are_encoded_once_for_every_run_and_model(cache_dir):
    """ModelNet40's 40 classes × ULIP's 64 templates: the first run encodes 2,560 texts,
    a second run and another model with the same text encoder none."""
    texts, _ = prompts([f"class {i}" for i in range(40)], resolve_templates("modelnet40_64"))
    assert len(texts) == 2560
    first = SlowTextEncoder(delay=0.01)
    run = a_run(first)
    began = time.perf_counter()
    rows, key = cached_texts(run, "toy/clip", texts, "evaluation.0.prompts")
    cold = time.perf_counter() - began
    assert run.encoded == first.seen == 2560 and rows.shape == (2560, 16)
    assert torch.allclose(rows.norm(dim=-1), torch.ones(2560))
    again = SlowTextEncoder(delay=0.01)  # the same fingerprint: another model, another run
    run = a_run(again)
    began = time.perf_counter()
    cached, same_key = cached_texts(run, "toy/clip", texts, "evaluation.0.prompts")
    warm = time.perf_counter() - began
    assert run.encoded == again.seen == 0 and same_key == key
    assert torch.equal(cached, rows)
    assert warm < cold
    # other texts, or another encoder: encoded
    other = SlowTextEncoder("b")
    run = a_run(other)
    cached_texts(run, "toy/clip", texts[:10], "evaluation.0.prompts")
    assert run.encoded == 10


def test_degenerate_rows_are_flagged():
    g = torch.Generator().manual_seed(0)
    healthy = F.normalize(torch.randn(300, 32, generator=g), dim=-1)
    assert degeneracy(healthy) is None
    collapsed = F.normalize(torch.ones(300, 32) + 1e-3 * torch.randn(300, 32, generator=g),
                            dim=-1)
    flagged = degeneracy(collapsed)
    assert flagged is not None and flagged["mean_cosine"] > 0.99
    assert "mean pairwise cosine" in flagged["reason"]
    same = degeneracy(torch.ones(50, 8))
    assert same is not None and "per-dimension std" in same["reason"] and same["rows"] == 50
    assert degeneracy(torch.ones(1, 8)) is None  # one row: nothing to compare


def test_gap_reports_matched_random_and_centroid_distance():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    shift = torch.zeros(16)
    shift[0] = 3.0
    b = F.normalize(a + shift, dim=-1)  # the same items, a shifted cone (Liang et al. 2022)
    gap = modality_gap({"audio": a, "text": b}, {}, "pairs")["audio~text"]
    assert gap["centroid_distance"] == pytest.approx(
        float((a.mean(0) - b.mean(0)).norm()), rel=1e-5)
    assert gap["centroid_distance"] > 0.5
    assert gap["gap"] == pytest.approx(gap["matched"] - gap["random"])
    same = modality_gap({"audio": a, "text": a}, {}, "pairs")["audio~text"]
    assert same["centroid_distance"] == pytest.approx(0.0, abs=1e-6)


def test_model_labels_are_distinct_in_the_report_and_as_file_names():
    paths = [Path("runs/a/model"), Path("runs/a/model"), Path("x/run"), Path("y/run"),
             Path("m-1"), Path("m 1")]
    labels = model_labels(paths)
    assert labels[:2] == ["a", "a #2"]
    assert labels[2:4] == ["x/run", "y/run"]
    assert labels[4] == "m-1" and labels[5] != "m 1"  # "m 1" would be the file name m-1
    assert len({slug(label) for label in labels}) == len(labels)
