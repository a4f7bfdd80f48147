"""Recipes: the schema, checks against the registry, overrides, every shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcrx.errors import McrxError, RecipeError
from mcrx.plugin.manager import get_registry
from mcrx.recipe import Recipe, load_recipe, parse_recipe
from mcrx.recipe.check import check_recipe
from mcrx.recipe.load import apply_overrides

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))
DEMO = Path(__file__).parents[2] / "recipes" / "demo.yaml"


def demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def errors_of(raw: dict, check_files: bool = True) -> dict[str, str]:
    try:
        recipe = parse_recipe(raw)
    except RecipeError as exc:
        return dict(exc.errors)
    return dict(check_recipe(recipe, get_registry(), check_files=check_files))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_is_valid(path):
    """Toy recipes validate completely. Recipes for real spaces name weights and data the
    user brings: their ONLY errors must be those missing files, each named."""
    raw = yaml.safe_load(path.read_text())
    recipe = parse_recipe(raw, str(path))
    assert recipe.leaves and path.read_text().startswith("#"), "recipes open with a comment"
    errors = check_recipe(recipe, get_registry(), check_files=True)
    if recipe.base.space.startswith("toy/"):
        assert errors == []
    else:
        assert errors, "real recipes refer to files that are not in the repository"
        for location, message in errors:
            assert location.endswith((".checkpoint", ".pretrained", ".tokenizer", ".inputs",
                                      ".labels", ".classes", ".root")), location
            assert "not found" in message, message


def test_papers_defaults():
    training = Recipe.model_validate({**demo_raw(), "training": {}}).training
    assert (training.temperature, training.noise_variance, training.intra_weight) == (
        0.05, 0.004, 0.1)
    assert (training.lr, training.schedule, training.batch_size, training.epochs) == (
        1e-3, "cosine", 4096, 36)
    assert Recipe.model_validate(demo_raw()).retrieval.temperature == 0.01


def test_errors_are_located():
    raw = demo_raw()
    raw["leaves"][0]["bridge"] = "audio"
    raw["training"]["epochs"] = 0
    raw["training"]["epochz"] = 3
    errors = errors_of(raw)
    assert errors == {"training.epochs": "Input should be greater than 0",
                      "training.epochz": "unknown field"}
    raw = demo_raw()
    raw["leaves"][0]["bridge"] = "audio"
    assert errors_of(raw)["leaves.0.bridge"].startswith(
        "'audio' is not a modality of space toy/clip")


def test_unknown_plugin_names_list_the_known_ones():
    raw = demo_raw()
    raw["leaves"][1]["space"] = "ulip/nonexistent"
    message = errors_of(raw)["leaves.1.space"]
    assert "unknown space 'ulip/nonexistent'" in message and "toy/clip" in message
    raw = demo_raw()
    raw["memories"]["text"]["dataset"] = "toy/nope"
    assert "known datasets: mcrx/audiocaps" in errors_of(raw)["memories.text.dataset"]
    assert "toy/world" in errors_of(raw)["memories.text.dataset"]


def test_missing_files_are_named(tmp_path):
    raw = demo_raw()
    raw["memories"]["audio"] = {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")}}
    assert errors_of(raw)["memories.audio.embeddings.toy/clap"] == (
        f"file not found: {tmp_path / 'audio.npy'}")
    raw["memories"]["image"] = {"inputs": str(tmp_path / "images")}
    assert "not found" in errors_of(raw)["memories.image.inputs"]


def test_plugin_params_are_validated_with_their_location():
    raw = demo_raw()
    raw["base"]["params"] = {"epochs": -3, "colour": "red"}
    errors = errors_of(raw)
    assert "base.params.epochs" in errors and errors["base.params.colour"] == "unknown field"


def test_chain_rules():
    raw = demo_raw()
    raw["leaves"][0]["parent"] = "toy/ulip"  # declared after this leaf
    assert "not the base or an earlier leaf" in errors_of(raw)["leaves.0.parent"]
    raw = demo_raw()
    raw["method"] = "c-mcr"
    assert "exactly two spaces" in errors_of(raw)["leaves"]
    raw = demo_raw()
    del raw["memories"]["pointcloud"]
    assert "toy/ulip has no modality besides the bridge" in errors_of(raw)["leaves.1"]


def test_a_source_needs_something_to_read():
    raw = demo_raw()
    raw["memories"]["text"] = {"params": {}}
    assert "give 'dataset', 'inputs' or 'embeddings'" in errors_of(raw)["memories.text"]


def test_overrides():
    raw = apply_overrides(demo_raw(), ["training.epochs=2", "leaves.1.bridge=text",
                                       "retrieval.temperature=0.02", "seed=7"])
    recipe = parse_recipe(raw)
    assert recipe.training.epochs == 2 and recipe.leaves[1].bridge == "text"
    assert recipe.retrieval.temperature == 0.02 and recipe.seed == 7
    with pytest.raises(McrxError, match="key=value"):
        apply_overrides(demo_raw(), ["training.epochs"])
    with pytest.raises(McrxError, match="no item 5"):
        apply_overrides(demo_raw(), ["leaves.5.bridge=text"])


def test_yaml_errors_say_where(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nleaves: [\n")
    with pytest.raises(RecipeError, match="line"):
        load_recipe(path)
    with pytest.raises(McrxError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_evaluation_shorthand_expands_per_modality():
    recipe = parse_recipe(demo_raw())
    evaluation = recipe.evaluation[0]
    assert set(evaluation.data) == {"image", "text", "audio", "pointcloud"}
    assert evaluation.data["audio"].params == {"split": "eval", "count": 1000}


PAPER_RECIPES = ("audio_3d.yaml", "ulip_3d.yaml", "audio_visual_cmcr.yaml")


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_paper_recipes_use_the_papers_spaces_and_settings(name):
    """The authors' CLAP weight (630k-fusion-best.pt, fusion on: "the weight we use"), CLIP
    ViT-B/32 with OpenAI weights, ULIP-2; Ex-MCR's hyper-parameters written out, so a change
    of mcrx's defaults never changes what these recipes train."""
    raw = yaml.safe_load((DEMO.parent / name).read_text())
    recipe = parse_recipe(raw)
    assert recipe.base.space == "clip/ViT-B-32"
    for leaf in recipe.leaves:
        if leaf.space.startswith("clap/"):
            assert leaf.space == "clap/630k-fusion"
            assert Path(leaf.params["checkpoint"]).name == "630k-fusion-best.pt"
        else:
            assert leaf.space == "ulip/pointbert"
            assert Path(leaf.params["checkpoint"]).name == "pointbert_ULIP-2.pt"
    if recipe.method != "ex-mcr":
        return
    written = raw["training"]
    assert {key: written[key] for key in ("temperature", "intra_weight", "noise_variance", "lr",
                                          "schedule", "batch_size", "epochs")} == {
        "temperature": 0.05, "intra_weight": 0.1, "noise_variance": 0.004, "lr": 1e-3,
        "schedule": "cosine", "batch_size": 4096, "epochs": 36}
    assert written["connector"] == {"name": "mcrx/ex-mcr",
                                    "params": {"hidden_dim": 1024, "blocks": 2}}
    assert raw["retrieval"] == {"temperature": 0.01, "mode": "exact"}
    # ModelNet40 zero-shot as ULIP evaluates it: its 40 classes, the 64 templates
    (modelnet,) = [e for e in recipe.evaluation if e.name == "modelnet40"]
    assert (modelnet.task, modelnet.classes, modelnet.templates) == (
        "zeroshot", "modelnet40", "modelnet40_64")
    # the paper's memory sizes: 2.31M texts, 1.3M images, 1.8M audio, 0.8M point clouds
    sizes = {"text": 2_310_000, "image": 1_300_000, "audio": 1_800_000, "pointcloud": 800_000}
    assert {m: source.limit for m, source in recipe.memories.items()} == {
        m: sizes[m] for m in recipe.memories}


def test_demo_chain_attaches_tactile_two_hops_from_the_base():
    recipe = load_recipe(DEMO.parent / "demo_chain.yaml", registry=get_registry())
    haptic = next(leaf for leaf in recipe.leaves if leaf.space == "toy/haptic")
    assert (haptic.bridge, haptic.parent) == ("audio", "toy/clap")
    assert recipe.parent_of(next(leaf for leaf in recipe.leaves
                                 if leaf.space == "toy/clap")) == recipe.base.space
    assert "tactile" in recipe.evaluation[0].modalities


def test_one_connector_param_is_set_and_the_method_default_kept():
    """README: ``--set training.connector.params.hidden_dim=128`` on a recipe that names no
    connector changes that param of the method's own connector."""
    from mcrx.recipe.chain import resolve_chain

    registry = get_registry()
    raw = apply_overrides(demo_raw(), ["training.connector.params.hidden_dim=128"])
    recipe = parse_recipe(raw, "demo.yaml")
    assert check_recipe(recipe, registry, check_files=False) == []
    chain = resolve_chain(recipe, registry)
    assert (chain.connector_name, chain.connector_params) == ("mcrx/ex-mcr", {"hidden_dim": 128})
    raw = apply_overrides(demo_raw(), ["training.connector.params.hidden_dim=-1"])
    errors = dict(check_recipe(parse_recipe(raw, "demo.yaml"), registry, check_files=False))
    assert "training.connector.params.hidden_dim" in errors
