"""The papers' algorithms against hand-computed small cases and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcrx.methods import cmcr, exmcr
from mcrx.methods.cmcr import CMcrConnector, CMcrLoss
from mcrx.methods.common import (
    ConnectorSpec,
    LeafMemories,
    LinearConnector,
    info_nce,
    mean_distance,
)
from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
from mcrx.methods.params import CMcrParams, ExMcrParams, LinearParams
from mcrx.methods.retrieval import retrieve, soft_retrieve
from mcrx.store.pairs import read_pseudo_pairs, write_pseudo_pairs
from mcrx.train.aligner import add_noise


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def dense_retrieve(queries, keys, values, tau):
    """Reference: materialise the whole softmax."""
    weights = torch.softmax(F.normalize(queries, dim=-1) @ keys.T / tau, dim=1)
    return F.normalize(weights @ values, dim=-1)


# -- retrieval -----------------------------------------------------------------------------
@pytest.mark.parametrize("query_block,memory_block", [(7, 5), (1000, 1000), (3, 64)])
def test_streamed_retrieval_equals_dense_softmax(query_block, memory_block):
    queries, memory = unit(50, 16, seed=1), unit(203, 16, seed=2)
    streamed = retrieve(queries, memory, 0.01, query_block=query_block, memory_block=memory_block)
    torch.testing.assert_close(streamed, dense_retrieve(queries, memory, memory, 0.01),
                               atol=1e-5, rtol=1e-5)


def test_retrieval_by_hand_two_memory_rows():
    # q·m1 = 1, q·m2 = 0 at τ = 1: weights e/(e+1), 1/(e+1)
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    w1 = math.e / (math.e + 1)
    expected = F.normalize(torch.tensor([[w1, 1 - w1]]), dim=-1)
    torch.testing.assert_close(retrieve(query, memory, 1.0), expected)


def test_carried_weights_apply_the_same_softmax_to_other_values():
    queries, keys = unit(20, 8, seed=3), unit(40, 8, seed=4)
    other = unit(40, 12, seed=5)  # the same 40 items in another space
    same, carried = soft_retrieve(queries, keys, [keys, other], 0.05, memory_block=16)
    torch.testing.assert_close(carried, dense_retrieve(queries, keys, other, 0.05),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(same, dense_retrieve(queries, keys, keys, 0.05),
                               atol=1e-5, rtol=1e-5)


def test_retrieval_is_stable_at_small_temperature():
    queries, memory = unit(10, 4, seed=6), unit(30, 4, seed=7)
    out = retrieve(queries, memory, 1e-4, memory_block=7)
    assert torch.isfinite(out).all()
    # at τ → 0 the softmax becomes the arg-max row
    torch.testing.assert_close(out, memory[(queries @ memory.T).argmax(1)], atol=1e-4, rtol=0)


# -- pseudo pairs --------------------------------------------------------------------------
def memories() -> LeafMemories:
    return LeafMemories(leaf_x=unit(30, 6, seed=10), leaf_bridge=unit(25, 6, seed=11),
                        parent_bridge=unit(25, 9, seed=12), parent_y=unit(35, 9, seed=13))


def test_cmcr_pairs_are_bridge_centric():
    mem = memories()
    pairs = cmcr.METHOD.build(mem, 0.01)
    assert all(len(rows) == 25 for rows in pairs.values())
    torch.testing.assert_close(pairs["leaf_bridge"], mem.leaf_bridge)
    torch.testing.assert_close(pairs["leaf_x"],
                               dense_retrieve(mem.leaf_bridge, mem.leaf_x, mem.leaf_x, 0.01))
    torch.testing.assert_close(pairs["parent_y"],
                               dense_retrieve(mem.parent_bridge, mem.parent_y, mem.parent_y, 0.01))


def test_exmcr_pairs_hold_three_pools_built_as_the_paper_says():
    mem, tau = memories(), 0.01
    pairs = exmcr.METHOD.build(mem, tau, memory_block=16)
    assert all(len(rows) == 25 + 30 + 35 for rows in pairs.values())
    # pools in order: bridge-centric (25), x-centric (30), y-centric (35)
    unshuffled = pairs
    bridge_pool = {role: rows[:25] for role, rows in unshuffled.items()}
    x_pool = {role: rows[25:55] for role, rows in unshuffled.items()}
    y_pool = {role: rows[55:] for role, rows in unshuffled.items()}

    def close(a, b):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)  # τ1 = 0.01 amplifies rounding

    close(bridge_pool["leaf_x"], dense_retrieve(mem.leaf_bridge, mem.leaf_x, mem.leaf_x, tau))
    # x-centric: x itself; softmax weights over the leaf bridge memory carried to the parent
    close(x_pool["leaf_x"], mem.leaf_x)
    close(x_pool["leaf_bridge"], dense_retrieve(mem.leaf_x, mem.leaf_bridge, mem.leaf_bridge, tau))
    carried = dense_retrieve(mem.leaf_x, mem.leaf_bridge, mem.parent_bridge, tau)
    close(x_pool["parent_bridge"], carried)
    close(x_pool["parent_y"], dense_retrieve(carried, mem.parent_y, mem.parent_y, tau))
    # y-centric: the symmetric construction from the parent side
    close(y_pool["parent_y"], mem.parent_y)
    carried = dense_retrieve(mem.parent_y, mem.parent_bridge, mem.leaf_bridge, tau)
    close(y_pool["leaf_bridge"], carried)
    close(y_pool["leaf_x"], dense_retrieve(carried, mem.leaf_x, mem.leaf_x, tau))


def test_pairs_written_to_disk_in_chunks_equal_the_in_memory_ones(tmp_path):
    mem = memories()
    in_memory = exmcr.METHOD.build(mem, 0.01)
    on_disk = write_pseudo_pairs(tmp_path / "pairs", exmcr.METHOD, mem, 0.01,
                                 metadata={"fingerprint": "f"}, chunk=7)
    for role, rows in in_memory.items():
        torch.testing.assert_close(torch.from_numpy(np.array(on_disk[role])), rows)
    assert isinstance(read_pseudo_pairs(tmp_path / "pairs")["leaf_x"], np.memmap)
    assert not list(tmp_path.glob(".pairs*"))


def test_two_writers_fill_one_set_of_pair_files(tmp_path):
    """Under two processes each writes every other chunk into the same files (positioned
    writes of disjoint rows); the result is the one-process result, in float16 too."""
    import threading

    mem = memories()
    alone = write_pseudo_pairs(tmp_path / "one", exmcr.METHOD, mem, 0.01, chunk=7,
                               dtype="float16")
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=write_pseudo_pairs, args=(
        tmp_path / "two", exmcr.METHOD, mem, 0.01), kwargs={
        "chunk": 7, "dtype": "float16", "rank": rank, "world": 2, "barrier": barrier.wait})
        for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    together = read_pseudo_pairs(tmp_path / "two")
    for role, rows in alone.items():
        assert together[role].dtype == np.float16
        np.testing.assert_array_equal(together[role], rows)


def test_bridge_memories_must_be_row_aligned():
    with pytest.raises(ValueError, match="same items"):
        LeafMemories(unit(3, 4), unit(5, 4), unit(6, 4), unit(3, 4))


# -- losses --------------------------------------------------------------------------------
def test_info_nce_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I/τ; each row: -log(e^{1/τ} / (e^{1/τ} + 1)), same both ways
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert info_nce(x, z, tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_symmetric_mean_of_both_directions():
    x, z = unit(6, 4, seed=20), unit(6, 4, seed=21)
    logits = x @ z.T / 0.05
    manual = 0.0
    for i in range(6):
        manual += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert info_nce(x, z, 0.05).item() == pytest.approx(manual.item() / 12, rel=1e-5)


def test_exmcr_loss_is_the_four_term_formula():
    b = 5
    out = {"x_hat": unit(b, 3, seed=1), "bridge_hat": unit(b, 3, seed=2),
           "x_mid": unit(b, 4, seed=3)}
    batch = {"parent_y": unit(b, 3, seed=4), "parent_bridge": unit(b, 3, seed=5),
             "leaf_bridge": unit(b, 4, seed=6)}
    loss, parts = ExMcrLoss(0.05, 0.1)(out, batch)
    inter = sum(info_nce(out[a], batch[t], 0.05) for a in ("x_hat", "bridge_hat")
                for t in ("parent_y", "parent_bridge")) / 4
    intra = 0.5 * torch.stack([(out["x_mid"][i] - batch["leaf_bridge"][i]).norm()
                               for i in range(b)]).mean()
    assert loss.item() == pytest.approx((0.1 * intra + inter).item(), rel=1e-6)
    assert parts["intra"].item() == pytest.approx(intra.item(), rel=1e-6)


def test_cmcr_loss_is_inter_plus_weighted_intra():
    b = 4
    out = {k: unit(b, 3, seed=i) for i, k in enumerate(
        ("parent_bridge_hat", "parent_y_hat", "leaf_bridge_hat", "leaf_x_hat"))}
    loss, _ = CMcrLoss(0.07, 0.1)(out, {})
    inter = info_nce(out["parent_bridge_hat"], out["leaf_bridge_hat"], 0.07) + info_nce(
        out["parent_y_hat"], out["leaf_x_hat"], 0.07)
    intra = mean_distance(out["parent_bridge_hat"], out["parent_y_hat"]) + mean_distance(
        out["leaf_bridge_hat"], out["leaf_x_hat"])
    assert loss.item() == pytest.approx((inter + 0.1 * intra).item(), rel=1e-6)


# -- connectors ----------------------------------------------------------------------------
SPEC = ConnectorSpec(leaf_dim=6, parent_dim=9, bridge="text", leaf_modality="audio",
                     parent_modality="image")


def test_exmcr_connector_layout_and_identity_f_l():
    connector = ExMcrConnector(SPEC, ExMcrParams(hidden_dim=16)).eval()
    x = unit(4, 6)
    torch.testing.assert_close(connector.f_l["audio"](x), x)  # identity-initialised
    assert [type(m).__name__ for m in connector.f_m] == ["MlpBlock", "MlpBlock"]
    assert connector.f_m[0].expand[0].weight.shape == (16, 6)
    assert connector.f_m[1].contract[0].weight.shape == (9, 16)
    out = connector({"leaf_x": x, "leaf_bridge": unit(4, 6, seed=1)})
    assert out["x_hat"].shape == (4, 9)
    torch.testing.assert_close(out["x_hat"].norm(dim=1), torch.ones(4))
    # the audio path goes through f_l then f_m; the bridge only through f_m
    torch.testing.assert_close(connector.project("leaf", "audio", x), out["x_hat"])
    y = unit(4, 9, seed=2)
    torch.testing.assert_close(connector.project("parent", "image", y), y)  # frozen base


def test_cmcr_connector_projects_both_sides_into_a_new_space():
    connector = CMcrConnector(SPEC, CMcrParams(hidden_dim=8, out_dim=5)).eval()
    batch = {"leaf_x": unit(3, 6), "leaf_bridge": unit(3, 6, seed=1),
             "parent_bridge": unit(3, 9, seed=2), "parent_y": unit(3, 9, seed=3)}
    out = connector(batch)
    assert {tuple(v.shape) for v in out.values()} == {(3, 5)}
    half = CMcrConnector(SPEC, CMcrParams(layout="half"))
    assert half.parent_projector.expand[0].weight.shape == (9, 9)


@pytest.mark.parametrize("solver", ["lstsq", "procrustes"])
def test_linear_baseline_recovers_a_rotation(solver):
    spec = ConnectorSpec(leaf_dim=6, parent_dim=6, bridge="text", leaf_modality="audio",
                         parent_modality="image")
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3)))
    leaf = unit(200, 6, seed=9)
    connector = LinearConnector(spec, LinearParams(solver=solver)).fit(leaf, leaf @ rotation)
    torch.testing.assert_close(connector.weight, rotation, atol=1e-4, rtol=1e-4)


def test_noise_has_the_stated_variance_and_renormalises():
    x = F.normalize(torch.ones(20000, 64), dim=-1)
    generator = torch.Generator().manual_seed(0)
    noised = add_noise(x, 0.004, generator)
    torch.testing.assert_close(noised.norm(dim=1), torch.ones(20000))
    # before normalisation the perturbation has variance σ² per coordinate
    raw = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * math.sqrt(0.004)
    assert raw.var().item() == pytest.approx(0.004, rel=0.02)
    torch.testing.assert_close(noised, F.normalize(x + raw, dim=-1))


def test_top_k_retrieval_is_exact_when_k_covers_the_memory_and_close_otherwise():
    from mcrx.methods.retrieval import deviation_from_exact, top_k_retrieve

    queries, memory = unit(40, 16, seed=30), unit(300, 16, seed=31)
    (full,) = top_k_retrieve(queries, memory, [memory], 0.05, k=300, memory_block=64)
    torch.testing.assert_close(full, dense_retrieve(queries, memory, memory, 0.05),
                               atol=1e-5, rtol=1e-5)
    (few,) = soft_retrieve(queries, memory, None, 0.01, memory_block=64, top_k=32)
    exact = dense_retrieve(queries, memory, memory, 0.01)
    assert (few * exact).sum(1).min() > 0.98
    deviation = deviation_from_exact(queries, memory, 0.01, k=32)
    assert deviation["mean_cosine"] == pytest.approx(float((few * exact).sum(1).mean()),
                                                     abs=1e-5)


def test_top_k_pseudo_pairs_stay_close_to_exact():
    mem = memories()
    pairs = exmcr.METHOD.build(mem, 0.01, top_k=8)
    exact = exmcr.METHOD.build(mem, 0.01)
    assert (pairs["parent_y"] * exact["parent_y"]).sum(1).mean() > 0.95
