"""``mcrx plan``: FLOP counts match what torch executes and a hand count (within 5%), rows
are counted without encoding, and missing data or weights become warnings."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.methods import cmcr, exmcr
from mcrx.methods.common import LeafMemories
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.recipe.schema import Retrieval
from mcrx.stages.plan import make_plan, pairs_flops, training_step_flops

ROLES = ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")


def small_memories(nx=700, nb=500, ny=600, dl=24, dp=32) -> LeafMemories:
    generator = torch.Generator().manual_seed(0)

    def rows(n, d):
        return F.normalize(torch.randn(n, d, generator=generator), dim=-1)

    bridge = rows(nb, dl)
    return LeafMemories(rows(nx, dl), bridge, rows(nb, dp), rows(ny, dp))


@pytest.mark.parametrize("mode", ["exact", "top-k"])
@pytest.mark.parametrize("method", [exmcr.METHOD, cmcr.METHOD], ids=["ex-mcr", "c-mcr"])
def test_pseudo_pair_flops_are_those_torch_executes(method, mode):
    memories = small_memories()
    retrieval = Retrieval(mode=mode, k=64, query_block=128, memory_block=256)
    blocks = {"query_block": 128, "memory_block": 256}
    if mode == "top-k":
        blocks["top_k"] = 64
    # the running sums are accumulated in place (addmm_), which torch's table lacks
    def addmm_(acc, mat1, mat2, *args, out_shape=None, **kwargs) -> int:  # shapes in
        return 2 * mat1[0] * mat1[1] * mat2[1]

    with FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        method.build(memories, 0.01, **blocks)
    n = {role: len(getattr(memories, role)) for role in ROLES}
    d = memories.widths()
    planned = pairs_flops(f"mcrx/{method.name}", n, d, retrieval)
    assert planned == pytest.approx(counter.get_total_flops(), rel=0.05)


def test_pseudo_pair_flops_match_a_hand_count_at_paper_scale():
    """CLAP → CLIP at the paper's sizes (1.8M audio, 2.31M texts, 1.3M images, 512-d),
    counted by hand: every softmax retrieval is 2·Q·M·d (logits) + 2·Q·M·Σd_v (sums)."""
    nx, nb, ny, d = 1_800_000, 2_310_000, 1_300_000, 512
    text_centric = 2 * nb * ny * (d + d) + 2 * nb * nx * (d + d)
    audio_centric = 2 * nx * nb * (d + 2 * d) + 2 * nx * ny * (d + d)
    image_centric = 2 * ny * nb * (d + 2 * d) + 2 * ny * nx * (d + d)
    n = {"leaf_x": nx, "leaf_bridge": nb, "parent_bridge": nb, "parent_y": ny}
    widths = dict.fromkeys(ROLES, d)
    planned = pairs_flops("mcrx/ex-mcr", n, widths, Retrieval())
    assert planned == pytest.approx(text_centric + audio_centric + image_centric, rel=0.05)
    assert pairs_flops("mcrx/c-mcr", n, widths, Retrieval()) == pytest.approx(text_centric)


def test_training_flops_match_a_hand_count(make_small_recipe, tmp_path):
    """Ex-MCR, one step at batch B (leaf width d_L, parent d_P, f_m of `blocks` blocks
    d → h → d): forward f_l on B rows, f_m on 2B rows (â and t̂), four InfoNCE products
    (B×d)·(d×B); backward twice the forward for every layer whose input needs a gradient,
    once (the weight's) for the first layer on frozen inputs, once for InfoNCE (the targets
    are frozen)."""
    registry = get_registry()
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(make_small_recipe("demo.yaml", tmp_path / "out")))
    recipe = load_recipe(path, registry=registry)
    plan_chain = __import__("mcrx.recipe.chain", fromlist=["resolve_chain"]).resolve_chain(
        recipe, registry)
    link = plan_chain.links[0]
    dims = {name: registry.space(name).dim for name in recipe.space_names()}
    dl, dp = dims[link.space], dims[link.parent]
    params = plan_chain.connector_params
    h, blocks = params.get("hidden_dim", 1024), params.get("blocks", 2)
    alpha, beta = training_step_flops(plan_chain, link, registry, recipe, dims)
    batch = 256

    def linear(rows, i, o):
        return 2 * rows * i * o

    f_l = linear(batch, dl, dl)
    layers = [(dl, h), (h, dp)] + [(dp, h), (h, dp)] * (blocks - 1)
    f_m = sum(linear(2 * batch, i, o) for i, o in layers)
    first = linear(batch, *layers[0])  # t̂'s first layer: its input t̃^A is frozen
    forward = f_l + f_m + 4 * 2 * batch * batch * dp
    backward = f_l + (2 * f_m - first) + 4 * 2 * batch * batch * dp
    assert alpha * batch + beta * batch**2 == pytest.approx(forward + backward, rel=0.05)


def test_plan_counts_rows_without_encoding_and_flags_what_is_missing(make_small_recipe,
                                                                      tmp_path):
    registry = get_registry()
    raw = make_small_recipe("demo.yaml", tmp_path / "out")
    raw["memories"]["audio"] = {"inputs": str(tmp_path / "absent-audio"), "limit": 1234}
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"caption {i}\n" for i in range(77)))
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path, registry=None)
    plan = make_plan(recipe, registry, device_class="h100", rate=1e11)
    rows = {(m["modality"], m["space"]): (m["rows"], m["assumed"]) for m in plan.memories}
    assert rows["audio", "toy/clap"] == (1234, True)
    assert rows["text", "toy/clip"] == (3000, False)  # the toy dataset, counted
    assert any("memories.audio" in w and "1,234" in w for w in plan.warnings)
    pairs = plan.stages[1]
    assert pairs.rows > 0 and pairs.seconds == pytest.approx(pairs.flops / 1e11)
    assert pairs.seconds_on_class == pytest.approx(pairs.flops / 5.0e13)
    assert any("cache" in note for note in pairs.notes)


def test_plan_command_prints_json_and_needs_no_weights(make_small_recipe, tmp_path):
    raw = make_small_recipe("demo.yaml", tmp_path / "out")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["plan", str(path), "--json", "--device", "cpu",
                                      "--device-class", "4090"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [s["name"] for s in plan["stages"]] == ["1 encode", "2 pseudo pairs", "3 train",
                                                   "4 evaluate"]
    assert plan["stages"][1]["flops"] > 0 and plan["class_rate_flops"] == 6.2e13
    bad = CliRunner().invoke(app, ["plan", str(path), "--device-class", "tpu"])
    assert bad.exit_code == 1 and "--device-class" in bad.output


def test_hnsw_search_count_bounds_what_faiss_computes():
    """An HNSW search scores at most 2·hnsw_m neighbours of each of the ef nodes it expands;
    faiss counts the distances it really computes (hnsw_stats.ndis): the plan's count is an
    upper bound, and not a loose one."""
    faiss = pytest.importorskip("faiss")
    from mcrx.methods.ann import AnnSettings, build_index
    from mcrx.stages.plan import retrieval_flops

    keys = F.normalize(torch.randn(20000, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    settings = AnnSettings(index="hnsw", k=32, ef_search=64, hnsw_m=16, ef_construction=40)
    index = build_index(keys, settings)
    faiss.cvar.hnsw_stats.reset()
    index.search(keys[:1000].numpy(), settings.k)
    computed = faiss.cvar.hnsw_stats.ndis
    planned = retrieval_flops(1000, 20000, 32, [], mode="ann", k=32, index="hnsw",
                              ef_search=64, hnsw_m=16, ef_construction=0) / (2 * 32)
    assert computed <= planned <= 3 * computed, (computed, planned)
