"""Tests of the toy plugin: the world, its dataset splits, the trained spaces and the cache.

Spaces are trained with small configs (a few dozen steps) in a temporary cache so the file
stays fast; the quality bars are set far above chance, not at the defaults' numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydantic
import pytest
import torch

import mcrx
from mcrx.store.inputs import read_inputs
from mcrx_toy import spaces as toy_spaces
from mcrx_toy.config import (
    MODALITIES,
    RAW_DIMS,
    SPACE_DEFINITIONS,
    ToySpaceParams,
    WorldConfig,
    WorldDatasetParams,
)
from mcrx_toy.dataset import WorldDataset
from mcrx_toy.spaces import ToySpace, build_space, train_encoders

# 32 optimiser steps per space: far above chance already, and quick
SMALL_TRAINING = {"pairs": 2048, "epochs": 4, "batch_size": 256}
# 4 steps: for tests about caching and determinism, not quality
TINY_TRAINING = {"pairs": 512, "epochs": 1, "batch_size": 128}


@pytest.fixture(scope="module")
def small_spaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ToySpace]:
    """The three toy spaces, trained once for the module in a temporary cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCRX_CACHE_DIR", str(tmp_path_factory.mktemp("mcrx-cache")))
        params = ToySpaceParams(**SMALL_TRAINING)
        return {
            name: build_space(f"toy/{name}", definition, params)
            for name, definition in SPACE_DEFINITIONS.items()
        }


@pytest.fixture(scope="module")
def eval_set() -> WorldDataset:
    return WorldDataset(WorldDatasetParams(split="eval", count=1000, seed=0))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MCRX_CACHE_DIR", str(tmp_path))
    return tmp_path / "toy"


# -- plugin -----------------------------------------------------------------------------------


def test_plugin_module_imports_without_torch() -> None:
    code = "import sys, mcrx_toy.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_lists_the_toy_components(monkeypatch) -> None:
    from mcrx.plugin import manager as plugins

    monkeypatch.delenv("MCRX_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("MCRX_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    try:
        registry = plugins.get_registry()
        assert registry.plugins["toy"].error is None
        expected = {
            "toy/clip": (("image", "text"), 64),
            "toy/clap": (("audio", "text"), 48),
            "toy/ulip": (("pointcloud", "image"), 56),
            "toy/haptic": (("tactile", "audio"), 40),
        }
        for name, (modalities, dim) in expected.items():
            spec = registry.space(name)
            assert (spec.modalities, spec.dim, spec.params) == (modalities, dim, ToySpaceParams)
        world = registry.dataset("toy/world")
        assert world.modalities == ("image", "text", "audio", "pointcloud", "tactile")
        # the modality the toy plugin adds is registered by it, beside the core's four
        assert registry.modality("tactile").plugin == "toy"
        assert registry.plugins["toy"].registered["modality"] == ["tactile"]
        assert world.params is WorldDatasetParams

        params = world.validate_params({"split": "eval", "count": 10, "world": {"seed": 3}})
        assert params.world.seed == 3
        with pytest.raises(pydantic.ValidationError):
            world.validate_params({"split": "memory", "cuont": 10})  # misspelt key
        with pytest.raises(pydantic.ValidationError):
            registry.space("toy/clip").validate_params({"world": {"clases": 3}})
    finally:
        plugins.reset()


def test_spaces_and_dataset_share_the_default_world() -> None:
    assert ToySpaceParams().world == WorldDatasetParams().world == WorldConfig()


def test_registry_factories_build_space_and_dataset(cache) -> None:
    from mcrx_toy import plugin

    registered = {}
    plugin.register_spaces(lambda name, factory, **details: registered.update({name: factory}))
    plugin.register_datasets(lambda name, factory, **details: registered.update({name: factory}))
    space = registered["clap"]("toy/clap", ToySpaceParams(**TINY_TRAINING))
    assert (space.name, space.dim, space.modalities) == ("toy/clap", 48, ("audio", "text"))
    dataset = registered["world"](WorldDatasetParams(count=7))
    assert dataset.items("audio").shape == (7, RAW_DIMS["audio"])


# -- world and dataset ------------------------------------------------------------------------


def test_items_are_deterministic_float32_of_the_raw_dims() -> None:
    params = WorldDatasetParams(split="memory", count=50, seed=4)
    first, again = WorldDataset(params), WorldDataset(params)
    other_seed = WorldDataset(params.model_copy(update={"seed": 5}))
    for modality in MODALITIES:
        items = first.items(modality)
        assert items.shape == (50, RAW_DIMS[modality]) and items.dtype == np.float32
        np.testing.assert_array_equal(items, again.items(modality))
        np.testing.assert_array_equal(first.labels(modality), again.labels(modality))
        assert first.labels(modality).dtype == np.int64
        assert not np.allclose(items, other_seed.items(modality))


def test_memory_split_is_unpaired() -> None:
    memory = WorldDataset(WorldDatasetParams(split="memory", count=2000))
    latents = {m: memory.latents(m) for m in MODALITIES}
    for i, first in enumerate(MODALITIES):
        for second in MODALITIES[i + 1 :]:
            # no latent item appears in two modalities, not even in another row
            distances = np.linalg.norm(
                latents[first].codes[:500, None, :] - latents[second].codes[None, :500, :],
                axis=-1,
            )  # (500, 500)
            assert distances.min() > 1e-3
            # row i of two modalities is not even the same class, beyond chance (1/40)
            same_class = np.mean(latents[first].classes == latents[second].classes)
            assert same_class < 0.06


def test_eval_split_is_row_aligned_and_held_out() -> None:
    evaluation = WorldDataset(WorldDatasetParams(split="eval", count=300))
    memory = WorldDataset(WorldDatasetParams(split="memory", count=300))
    codes = evaluation.latents("image").codes
    for modality in MODALITIES:
        np.testing.assert_array_equal(evaluation.latents(modality).codes, codes)
        np.testing.assert_array_equal(evaluation.labels(modality), evaluation.labels("image"))
        assert not np.allclose(memory.latents(modality).codes, codes)
    # one latent, two renderings: nuisance and noise are private to each modality's rendering
    world = evaluation.world
    rng = np.random.default_rng(0)
    twice = [world.render("image", evaluation.latents("image"), rng) for _ in range(2)]
    assert not np.allclose(twice[0], twice[1])


def test_dataset_fingerprint_covers_every_param() -> None:
    base = WorldDatasetParams()
    variants = [
        base,
        base.model_copy(update={"split": "eval"}),
        base.model_copy(update={"count": 11}),
        base.model_copy(update={"seed": 1}),
        base.model_copy(update={"world": WorldConfig(seed=1)}),
        base.model_copy(update={"world": WorldConfig(noise=0.2)}),
    ]
    fingerprints = {WorldDataset(p).fingerprint() for p in variants}
    assert len(fingerprints) == len(variants)
    assert WorldDataset(base).fingerprint() == WorldDataset(WorldDatasetParams()).fingerprint()


def test_unknown_modality_is_a_clear_error() -> None:
    with pytest.raises(mcrx.McrxError, match="no modality 'video'"):
        WorldDataset(WorldDatasetParams(count=3)).items("video")


# -- encoders ---------------------------------------------------------------------------------


def test_encoder_outputs_normalised_rows(small_spaces, eval_set) -> None:
    for space in small_spaces.values():
        for modality in space.modalities:
            encoder = space.encoder(modality)
            assert (encoder.modality, encoder.dim) == (modality, space.dim)
            vectors = encoder.encode(eval_set.items(modality)[:100])
            assert vectors.shape == (100, space.dim) and vectors.dtype == torch.float32
            assert vectors.device.type == "cpu"
            torch.testing.assert_close(vectors.norm(dim=1), torch.ones(100))


def test_encoder_accepts_sequences_and_npy_inputs(small_spaces, eval_set, tmp_path) -> None:
    encoder = small_spaces["clip"].encoder("text")
    items = eval_set.items("text")[:5]
    from_array = encoder.encode(items)
    torch.testing.assert_close(encoder.encode(list(items)), from_array)
    torch.testing.assert_close(encoder.encode([row.tolist() for row in items]), from_array)

    np.save(tmp_path / "texts.npy", items)  # a recipe's `inputs: texts.npy`
    torch.testing.assert_close(
        encoder.encode(encoder.read_inputs(tmp_path / "texts.npy")), from_array
    )
    for i, row in enumerate(items):  # a folder of one-vector .npy files
        np.save(tmp_path / f"item{i}.npy", row)
    assert len(read_inputs(tmp_path)) == 6
    one_per_file = [str(tmp_path / f"item{i}.npy") for i in range(5)]
    torch.testing.assert_close(encoder.encode(one_per_file), from_array)

    assert encoder.encode([]).shape == (0, 64)


def test_encoding_does_not_depend_on_the_batch(small_spaces, eval_set) -> None:
    encoder = small_spaces["ulip"].encoder("pointcloud")
    items = eval_set.items("pointcloud")[:257]
    batch = encoder.encode(items)
    for i in (0, 100, 256):
        alone = encoder.encode(items[i : i + 1])
        torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=0)


def test_wrong_inputs_raise_clear_errors(small_spaces) -> None:
    space = small_spaces["clip"]
    with pytest.raises(mcrx.McrxError, match="have 48 numbers, got 47"):
        space.encoder("image").encode(np.zeros((3, 47), dtype=np.float32))
    with pytest.raises(mcrx.McrxError, match="one raw vector of 32 numbers"):
        space.encoder("text").encode([np.zeros((2, 32))])
    with pytest.raises(mcrx.McrxError, match="raw vectors"):
        space.encoder("text").encode(["a photo of a dog"])
    with pytest.raises(mcrx.McrxError, match="NaN"):
        space.encoder("text").encode(np.full((1, 32), np.nan))
    with pytest.raises(mcrx.McrxError, match="no 'audio' encoder"):
        space.encoder("audio")


# -- training quality -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPACE_DEFINITIONS))
def test_space_aligns_its_own_modalities_and_keeps_a_gap(name, small_spaces, eval_set) -> None:
    space = small_spaces[name]
    first, second = space.modalities
    x = space.encoder(first).encode(eval_set.items(first))  # (1000, d)
    y = space.encoder(second).encode(eval_set.items(second))  # (1000, d)
    labels = torch.from_numpy(eval_set.labels(first))
    nearest = (x @ y.T).argmax(dim=1)  # first → second retrieval, (1000,)

    pair_recall = (nearest == torch.arange(len(x))).float().mean().item()
    class_recall = (labels[nearest] == labels).float().mean().item()
    assert pair_recall > 0.05  # chance: 1/1000
    assert class_recall > 0.5  # chance: about 1/40
    # the modality gap: the two modalities' embeddings sit in different cones
    assert (x.mean(dim=0) - y.mean(dim=0)).norm().item() > 0.2


# -- cache and determinism --------------------------------------------------------------------


def test_training_is_deterministic() -> None:
    definition = SPACE_DEFINITIONS["clip"]
    params = ToySpaceParams(**TINY_TRAINING)
    first, again = train_encoders(definition, params), train_encoders(definition, params)
    other = train_encoders(definition, params.model_copy(update={"seed": 1}))
    for modality in definition.modalities:
        for key, value in first[modality].state_dict().items():
            torch.testing.assert_close(again[modality].state_dict()[key], value, atol=0, rtol=0)
        assert not torch.equal(first[modality].layers[0].weight, other[modality].layers[0].weight)


def test_second_construction_loads_the_cache(cache, monkeypatch) -> None:
    definition = SPACE_DEFINITIONS["ulip"]
    params = ToySpaceParams(**TINY_TRAINING)
    trained = build_space("toy/ulip", definition, params)
    assert trained.weights_path.parent == cache and trained.weights_path.is_file()
    written_at = trained.weights_path.stat().st_mtime_ns
    assert not list(cache.glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached weights should have been loaded")

    monkeypatch.setattr(toy_spaces, "train_encoders", no_training)
    cached = build_space("toy/ulip", definition, params)
    assert cached.weights_path == trained.weights_path
    assert cached.weights_path.stat().st_mtime_ns == written_at
    assert cached.fingerprint() == trained.fingerprint()
    raw = np.random.default_rng(0).standard_normal((4, RAW_DIMS["pointcloud"]))
    torch.testing.assert_close(
        cached.encoder("pointcloud").encode(raw), trained.encoder("pointcloud").encode(raw)
    )


def test_fingerprint_and_cache_file_follow_the_config(cache) -> None:
    definition = SPACE_DEFINITIONS["clip"]
    params = ToySpaceParams(**TINY_TRAINING)
    changed = [
        params.model_copy(update={"world": WorldConfig(seed=1)}),
        params.model_copy(update={"temperature": 0.05}),
    ]
    spaces = [build_space("toy/clip", definition, p) for p in [params, *changed]]
    assert len({s.fingerprint() for s in spaces}) == 3
    assert len({s.weights_path for s in spaces}) == 3
    encoder_prints = {s.encoder(m).fingerprint() for s in spaces for m in s.modalities}
    assert len(encoder_prints) == 6


def test_damaged_cache_file_is_retrained(cache) -> None:
    definition = SPACE_DEFINITIONS["clap"]
    params = ToySpaceParams(**TINY_TRAINING)
    path = build_space("toy/clap", definition, params).weights_path
    path.write_bytes(b"not a safetensors file")
    rebuilt = build_space("toy/clap", definition, params)
    assert rebuilt.weights_path == path and path.stat().st_size > 1000


def test_a_crash_while_writing_leaves_no_file(cache, monkeypatch) -> None:
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(toy_spaces, "save_file", disk_full)
    with pytest.raises(OSError, match="disk full"):
        build_space("toy/clip", SPACE_DEFINITIONS["clip"], ToySpaceParams(**TINY_TRAINING))
    assert not list(cache.glob("*.safetensors")) and not list(cache.glob("*.tmp"))


# -- the modality the plugin adds ---------------------------------------------------------------


def test_adding_tactile_kept_the_other_spaces_cache_keys() -> None:
    """The world's fifth modality must not retrain the other spaces nor re-encode their
    memories: their keys hash the four core raw dims, as they did before tactile existed."""
    from mcrx_toy.config import CORE_RAW_DIMS

    params = ToySpaceParams()
    for name in ("clip", "clap", "ulip"):
        definition = SPACE_DEFINITIONS[name]
        before = mcrx.fingerprint_of("mcrx-toy-space", 1, name, list(definition.modalities),
                                     definition.dim, CORE_RAW_DIMS, params.model_dump(mode="json"))
        assert toy_spaces.cache_key(definition, params) == before, name
    assert "tactile" not in CORE_RAW_DIMS and RAW_DIMS["tactile"] == 24


def test_tactile_items_carry_the_shared_concept_and_nothing_else_changed() -> None:
    """Rendering tactile draws from its own streams: the other modalities' items are those
    of the four-modality world, and eval rows stay aligned across all five."""
    evaluation = WorldDataset(WorldDatasetParams(split="eval", count=200))
    np.testing.assert_array_equal(evaluation.labels("tactile"), evaluation.labels("audio"))
    assert evaluation.items("tactile").shape == (200, 24)
    memory = WorldDataset(WorldDatasetParams(split="memory", count=200))
    assert not np.array_equal(memory.labels("tactile"), memory.labels("audio"))
