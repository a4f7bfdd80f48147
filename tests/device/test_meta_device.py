"""Device discipline without a GPU (issue 8): every part of the core that touches tensors is
run with its inputs on the ``meta`` device (shapes only, nothing computed). A tensor created
without ``device=`` lands on the CPU and mixing it with meta tensors raises, so an implicit
device anywhere fails these tests. Where a result has to be read (Python floats, numpy), the
inputs are real CPU tensors and the DEFAULT device is meta instead: then a tensor created
without ``device=`` is the one on the wrong device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mcrx
from mcrx.methods import cmcr, exmcr
from mcrx.methods.common import (
    PAIR_ROLES,
    ConnectorSpec,
    LeafMemories,
    LinearConnector,
    info_nce,
)
from mcrx.methods.params import CMcrParams, ExMcrParams
from mcrx.methods.retrieval import soft_retrieve, top_k_retrieve
from mcrx.metrics.retrieval import cross_modal_retrieval, retrieval_metrics
from mcrx.train import distributed
from mcrx.train.aligner import add_noise, noise_generator

META = torch.device("meta")
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-971a757"
SPEC = ConnectorSpec(leaf_dim=24, parent_dim=16, bridge="text", leaf_modality="audio",
                     parent_modality="image", leaf_modalities=["audio", "text"],
                     parent_modalities=["image", "text"])


def meta_rows(n: int, d: int) -> torch.Tensor:
    return torch.empty((n, d), device=META)


def meta_memories(n_x=70, n_b=90, n_y=50) -> LeafMemories:
    return LeafMemories(meta_rows(n_x, 24), meta_rows(n_b, 24), meta_rows(n_b, 16),
                        meta_rows(n_y, 16))


def cpu_rows(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn((n, d), generator=generator), dim=-1)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_retrieval_on_meta_inputs_stays_on_meta(precision):
    queries, keys, other = meta_rows(37, 24), meta_rows(101, 24), meta_rows(101, 8)
    outs = soft_retrieve(queries, keys, [keys, other], 0.01, query_block=16, memory_block=32,
                         precision=precision)
    assert [tuple(o.shape) for o in outs] == [(37, 24), (37, 8)]
    assert all(o.device == META and o.dtype == torch.float32 for o in outs)
    outs = top_k_retrieve(queries, keys, [keys, other], 0.01, 8, 16, 32, precision=precision)
    assert [tuple(o.shape) for o in outs] == [(37, 24), (37, 8)]
    assert all(o.device == META for o in outs)
    (empty,) = soft_retrieve(meta_rows(0, 24), keys)
    assert tuple(empty.shape) == (0, 24) and empty.device == META


def test_retrieval_makes_nothing_on_an_implicit_device():
    queries, keys, other = cpu_rows(37, 24, 0), cpu_rows(101, 24, 1), cpu_rows(101, 8, 2)
    with torch.device("meta"):  # what is made without device= would be meta: a mismatch
        outs = soft_retrieve(queries, keys, [keys, other], 0.01, 16, 32)
        approx = top_k_retrieve(queries, keys, [keys, other], 0.01, 8, 16, 32)
    assert all(o.device.type == "cpu" for o in outs + approx)
    assert torch.allclose(outs[0].norm(dim=1), torch.ones(37))


@pytest.mark.parametrize("method", [exmcr.METHOD, cmcr.METHOD], ids=["ex-mcr", "c-mcr"])
def test_every_pool_runs_on_meta_memories(method):
    memories = meta_memories()
    parts = list(method.chunks(memories, 0.01, chunk=40, query_block=16, memory_block=32))
    assert sum(len(p["leaf_x"]) for _, p in parts) == method.count(memories)
    for _, pairs in parts:
        assert set(pairs) == set(PAIR_ROLES)
        assert all(t.device == META for t in pairs.values())
        assert pairs["leaf_x"].shape[1] == 24 and pairs["parent_y"].shape[1] == 16


def connectors() -> list[torch.nn.Module]:
    return [
        exmcr.ExMcrConnector(SPEC, ExMcrParams(hidden_dim=32, blocks=2)),
        cmcr.CMcrConnector(SPEC, CMcrParams(hidden_dim=32)),
        cmcr.CMcrConnector(SPEC, CMcrParams(layout="half")),
        LinearConnector(SPEC),
    ]


@pytest.mark.parametrize("connector", connectors(), ids=lambda c: type(c).__name__)
def test_every_connector_projects_and_trains_on_meta(connector):
    connector = connector.to(META)
    for side, modality in (("leaf", "audio"), ("leaf", "text"), ("parent", "image")):
        width = 24 if side == "leaf" else 16
        out = connector.project(side, modality, meta_rows(9, width))
        assert out.device == META and out.shape == (9, connector.out_dim)
    batch = {role: meta_rows(12, 24 if role.startswith("leaf") else 16) for role in PAIR_ROLES}
    connector.train()
    outputs = connector(batch)
    assert all(t.device == META for t in outputs.values())
    if isinstance(connector, exmcr.ExMcrConnector):
        loss, parts = exmcr.ExMcrLoss()(outputs, batch)
    elif isinstance(connector, cmcr.CMcrConnector):
        loss, parts = cmcr.CMcrLoss()(outputs, batch)
    else:
        return
    assert loss.device == META and loss.shape == ()
    assert all(p.device == META for p in parts.values())


def test_a_cpu_connector_takes_rows_from_another_device_and_answers_on_its_own():
    connector = exmcr.ExMcrConnector(SPEC, ExMcrParams(hidden_dim=32)).eval()
    rows = cpu_rows(5, 24, 3).double()
    with torch.device("meta"):
        out = connector.project("leaf", "audio", rows)
    assert out.device.type == "cpu" and out.dtype == torch.float32


def test_info_nce_keeps_its_logsumexp_in_float32_under_autocast():
    x, z = cpu_rows(32, 16, 4), cpu_rows(32, 16, 5)
    exact = info_nce(x.double(), z.double(), 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(x, z, 0.05)
    assert loss.dtype == torch.float32
    # bf16 products (8-bit mantissa) with float32 reductions: a few 1e-3 of the loss at most
    assert abs(float(loss) - float(exact)) < 2e-2 * float(exact)


def test_the_unified_model_projects_on_meta():
    model = mcrx.load(LEGACY / "model").to("meta")
    assert model.device == META
    for space, info in model.manifest["spaces"].items():
        for modality in info["modalities"]:
            out = model.project(space, modality, meta_rows(6, info["dim"]))
            assert out.device == META and out.shape == (6, model.dim)


def test_evaluation_makes_nothing_on_an_implicit_device():
    queries, gallery = cpu_rows(50, 16, 6), cpu_rows(50, 16, 7)
    labels = np.arange(50) % 7
    expected = retrieval_metrics(queries, gallery, "pairs", block=16)
    with torch.device("meta"):
        pairs = retrieval_metrics(queries, gallery, "pairs", block=16)
        by_label = retrieval_metrics(queries, gallery, "labels", labels, labels, block=16)
        every = cross_modal_retrieval({"a": queries, "b": gallery}, "pairs")
    assert pairs == expected
    assert 0.0 <= by_label["R@1"] <= 1.0 and set(every) == {"a->b", "b->a"}


def test_noise_is_drawn_where_its_generator_is():
    x = cpu_rows(8, 16, 8)
    with torch.device("meta"):
        noised = add_noise(x, 0.004, noise_generator(0, 3, torch.device("cpu")))
    again = add_noise(x, 0.004, noise_generator(0, 3, torch.device("cpu")))
    assert noised.device.type == "cpu" and torch.equal(noised, again)


def test_batchnorm_across_processes_keeps_its_count_on_the_rows_device(monkeypatch):
    # two processes simulated: the all-reduce of one process's moments is the identity
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_all_reduce_sum", lambda x: x)
    norm = distributed.batchnorm_across_processes(torch.nn.Sequential(
        torch.nn.BatchNorm1d(16))).to(META).train()
    out = norm(meta_rows(10, 16))
    assert out.device == META and out.shape == (10, 16)
    cpu_norm = distributed.batchnorm_across_processes(torch.nn.Sequential(
        torch.nn.BatchNorm1d(16))).train()
    x = cpu_rows(10, 16, 9)
    with torch.device("meta"):
        y = cpu_norm(x)
    reference = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert torch.allclose(y, reference, atol=1e-5)


def test_the_demo_pipeline_runs_with_an_explicit_cpu_device(write_recipe):
    from mcrx.plugin.manager import get_registry
    from mcrx.recipe import load_recipe
    from mcrx.stages.extend import extend

    registry = get_registry()
    path = write_recipe("demo.yaml", device="cpu")
    recipe = load_recipe(path, registry=registry)
    assert recipe.device == "cpu"
    metrics = extend(recipe, registry, show_progress=False)
    for pair in ("audio->pointcloud", "pointcloud->audio"):
        result = metrics["retrieval"]
        figures = next(iter(result.values()))[pair] if pair not in result else result[pair]
        assert figures["R@1"] > 3 * figures["chance_R@1"], pair
