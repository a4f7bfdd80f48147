"""``mcrx extend`` end to end on small versions of the demo recipes (the real toy world)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mcrx
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.extend import extend

PAIRS = {f"{a}->{b}" for a in ("audio", "image", "pointcloud", "text")
         for b in ("audio", "image", "pointcloud", "text") if a != b}


@pytest.fixture(scope="module")
def exmcr_run(tmp_path_factory, cache_dir, make_small_recipe):
    import os

    import yaml

    os.environ["MCRX_CACHE_DIR"] = str(cache_dir)  # module scope: before the autouse fixture
    out = tmp_path_factory.mktemp("exmcr")
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(make_small_recipe("demo.yaml", out / "run")))
    recipe = load_recipe(path, registry=get_registry())
    metrics = extend(recipe, get_registry(), show_progress=False)
    return recipe, metrics


def test_metrics_have_every_direction_and_the_chance_level(exmcr_run):
    recipe, metrics = exmcr_run
    assert metrics["method"] == "ex-mcr"
    assert set(metrics["retrieval"]) == PAIRS
    for values in metrics["retrieval"].values():
        assert {"R@1", "R@5", "R@10", "mAP", "chance_R@1", "n"} <= set(values)
    assert set(metrics["baselines"]["linear"]["retrieval"]) == PAIRS
    on_disk = json.loads((recipe.output_dir / "metrics.json").read_text())
    assert on_disk["retrieval"] == metrics["retrieval"]
    assert "| audio->pointcloud |" in (recipe.output_dir / "report.md").read_text()


def test_leaves_that_never_met_are_aligned(exmcr_run):
    _, metrics = exmcr_run
    for pair in ("audio->pointcloud", "pointcloud->audio"):
        values = metrics["retrieval"][pair]
        assert values["R@1"] > 3 * values["chance_R@1"], (pair, values)


def test_exmcr_keeps_the_base_space_intact(exmcr_run):
    _, metrics = exmcr_run
    native = metrics["spaces"]["toy/clip"]["retrieval"]["image->text"]
    assert metrics["retrieval"]["image->text"] == native


def test_the_unified_model_loads_and_embeds_every_modality(exmcr_run):
    recipe, _ = exmcr_run
    model = mcrx.load(recipe.output_dir / "model")
    assert model.modalities == ["audio", "image", "pointcloud", "text"]
    dataset = get_registry().dataset("toy/world").build(params={"split": "eval", "count": 5})
    for modality in model.modalities:
        vectors = model.embed(modality, dataset.items(modality))
        assert vectors.shape == (5, model.dim)
        torch.testing.assert_close(vectors.norm(dim=1), torch.ones(5))
    # project() of pre-extracted features equals embed() of the raw inputs
    space = model.space("toy/clap")
    native = space.encoder("audio").encode(dataset.items("audio"))
    torch.testing.assert_close(model.project("toy/clap", "audio", native),
                               model.embed("audio", dataset.items("audio")))
    # base modalities pass through untouched
    image = model.space("toy/clip").encoder("image").encode(dataset.items("image"))
    torch.testing.assert_close(model.embed("image", dataset.items("image")), image)
    with pytest.raises(mcrx.McrxError, match="no 'smell'"):
        model.embed("smell", [])
    assert not list(recipe.output_dir.glob(".model*")), "temporary model folders left behind"


def test_a_second_run_encodes_nothing_and_retrains_nothing(exmcr_run):
    recipe, first = exmcr_run
    again = extend(recipe, get_registry(), show_progress=False)
    assert again["encoded_items"] == 0
    assert all(report["seconds"] == 0.0 for report in again["training"].values())
    assert again["retrieval"] == first["retrieval"]


def test_retrain_and_a_plugin_version_change_train_again(exmcr_run, monkeypatch):
    """A trained connector is found by its inputs and the versions of the code that trains
    it: ``--retrain`` trains afresh anyway; a new version of the plugin that registered
    the connector (or the loss) retrains without being asked."""
    from typer.testing import CliRunner

    from mcrx.cli import app
    from mcrx.stages.context import Run
    from mcrx.stages.train import code_versions, connector_fingerprint

    recipe, first = exmcr_run
    registry = get_registry()
    result = CliRunner().invoke(app, ["extend", str(recipe.output_dir.parent / "recipe.yaml"),
                                      "--retrain", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    retrained = json.loads(result.stdout[result.stdout.index("{"):])
    assert all(report["steps"] > 0 and report["resumed_from"] == 0
               for report in retrained["training"].values())
    for pair in PAIRS:  # the same inputs and seed: the same connectors
        assert retrained["retrieval"][pair]["R@1"] == pytest.approx(
            first["retrieval"][pair]["R@1"], abs=0.01)
    run = Run(recipe, registry, show_progress=False)
    link = run.chain.links[0]
    plugin = registry.get("connector", run.chain.connector_name).plugin
    assert f"connector:{plugin}" in code_versions(registry, run.chain.connector_name,
                                                  run.chain.loss_name)
    before = connector_fingerprint(run, link, "pairs", 0)
    monkeypatch.setattr(registry.plugins[plugin], "version", "999.0")
    assert connector_fingerprint(run, link, "pairs", 0) != before
    again = extend(recipe, registry, show_progress=False)
    assert all(report.get("steps", 0) > 0 for report in again["training"].values())
    assert "vocabulary" in again and again["vocabulary"]["heldout"]["kind"] == "classes"
    assert again["degenerate"] == {} and "ties" in again["conventions"]


def test_precomputed_embeddings_give_the_same_result(exmcr_run, tmp_path):
    """Memories given as .npy files per space instead of raw inputs."""
    import yaml

    recipe, first = exmcr_run
    raw = recipe.model_dump(mode="json")
    registry = get_registry()
    for modality, source in raw["memories"].items():
        dataset = registry.dataset("toy/world").build(params=source["params"])
        embeddings = {}
        for space in ("toy/clip", "toy/clap", "toy/ulip"):
            spec = registry.space(space)
            if modality in spec.modalities:
                params = next(r for r in recipe.space_refs() if r.space == space).params
                rows = spec.build(space, params=params).encoder(modality).encode(
                    dataset.items(modality))
                file = tmp_path / f"{modality}-{space.replace('/', '_')}.npy"
                np.save(file, rows.numpy())
                embeddings[space] = str(file)
        raw["memories"][modality] = {"embeddings": embeddings}
    raw["output"] = str(tmp_path / "run")
    path = tmp_path / "precomputed.yaml"
    path.write_text(yaml.safe_dump(raw))
    metrics = extend(load_recipe(path, registry=registry), registry, show_progress=False)
    for pair in PAIRS:
        assert metrics["retrieval"][pair]["R@1"] == pytest.approx(
            first["retrieval"][pair]["R@1"], abs=0.01)


def test_cmcr_end_to_end(write_recipe):
    registry = get_registry()
    recipe = load_recipe(write_recipe("demo_cmcr.yaml"), registry=registry)
    metrics = extend(recipe, registry, show_progress=False)
    assert metrics["method"] == "c-mcr"
    assert set(metrics["retrieval"]) == {"audio->image", "audio->text", "image->audio",
                                         "image->text", "text->audio", "text->image"}
    values = metrics["retrieval"]["audio->image"]
    assert values["R@1"] > 3 * values["chance_R@1"]
    model = mcrx.load(recipe.output_dir / "model")
    assert model.target == "new"
    dataset = registry.dataset("toy/world").build(params={"split": "eval", "count": 3})
    assert model.embed("image", dataset.items("image")).shape == (3, model.dim)


def test_file_inputs_are_encoded_once_and_again_when_the_file_changes(exmcr_run, tmp_path):
    """``inputs: file.npy`` (raw vectors): cached by the file's size and time."""
    import os

    from mcrx.recipe.schema import DataSource
    from mcrx.stages.context import Run
    from mcrx.stages.encode import embed_source

    recipe, _ = exmcr_run
    registry = get_registry()
    dataset = registry.dataset("toy/world").build(params={"split": "memory", "count": 50})
    np.save(tmp_path / "audio.npy", dataset.items("audio"))
    run = Run(recipe, registry, show_progress=False)
    source = DataSource(inputs=tmp_path / "audio.npy")
    first = embed_source(run, source, "audio", "toy/clap", "audio")
    assert run.encoded == 50
    again = embed_source(run, source, "audio", "toy/clap", "audio")
    assert run.encoded == 50 and torch.equal(first.rows, again.rows)
    expected = run.space("toy/clap").encoder("audio").encode(dataset.items("audio"))
    torch.testing.assert_close(first.rows, expected)
    os.utime(tmp_path / "audio.npy", ns=(1, 1))  # the file changed: encode again
    embed_source(run, source, "audio", "toy/clap", "audio")
    assert run.encoded == 100
