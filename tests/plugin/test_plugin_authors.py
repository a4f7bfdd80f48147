"""What a plugin author meets: the example plugin of CONTRIBUTING.md (its files verbatim in
the guide, built and run through validate and encode), two functions for one hook in one
module, and the built-in ``features/<name>`` family for precomputed embeddings."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mcrx import hookimpl
from mcrx.cli.app import app
from mcrx.plugin import manager as plugins
from mcrx.store.memory import Memory

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "smell"
EXAMPLE_FILES = ("pyproject.toml", "mcrx_smell/plugin.py", "mcrx_smell/space.py")


@pytest.fixture
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def smell_plugin(fresh_plugins, monkeypatch):
    """The example plugin, imported from docs/examples and registered in code."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mcrx_smell.plugin

    plugins.register_plugin(mcrx_smell.plugin, name="smell")
    yield mcrx_smell.plugin
    plugins.unregister_plugin("smell")


def test_the_guide_shows_the_example_files_verbatim():
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    blocks = re.findall(r"^`(docs/examples/smell/[\w/.]+)`:\n\n```\w*\n(.*?)^```$", guide,
                        re.MULTILINE | re.DOTALL)
    shown = {path.removeprefix("docs/examples/smell/"): text for path, text in blocks}
    assert set(EXAMPLE_FILES) <= set(shown), sorted(shown)
    for name in EXAMPLE_FILES:
        assert shown[name] == (EXAMPLE / name).read_text(), f"CONTRIBUTING.md drifted: {name}"


def features_recipe(tmp_path: Path, rows: int = 300) -> dict:
    """A recipe whose base is features/cluster (CLIP-like embeddings computed elsewhere, 64-d)
    and whose leaf is the example's smell/nose, joined through text."""
    from mcrx_smell.space import save_weights

    rng = np.random.default_rng(0)
    words = ["rose", "smoke", "lemon", "coffee", "rain", "pine", "sea", "bread"]
    (tmp_path / "texts.txt").write_text(
        "\n".join(" ".join(rng.choice(words, size=3)) for _ in range(rows)) + "\n")
    np.save(tmp_path / "smells.npy", rng.standard_normal((rows, 16)).astype(np.float32))
    for modality in ("text", "image"):
        np.save(tmp_path / f"{modality}.npy", rng.standard_normal((rows, 64)).astype(np.float32))
    save_weights(tmp_path / "nose.npz")
    return {
        "name": "smell-demo",
        "method": "ex-mcr",
        "base": {"space": "features/cluster", "params": {"dim": 64,
                                                          "modalities": ["image", "text"]}},
        "leaves": [{"space": "smell/nose", "bridge": "text",
                    "params": {"weights": str(tmp_path / "nose.npz")}}],
        "memories": {
            # the strings are encoded by the nose; CLIP's side comes from the cluster
            "text": {"inputs": str(tmp_path / "texts.txt"),
                     "embeddings": {"features/cluster": str(tmp_path / "text.npy")}},
            "image": {"embeddings": {"features/cluster": str(tmp_path / "image.npy")}},
            "smell": {"inputs": str(tmp_path / "smells.npy")},
        },
        "training": {"batch_size": 64, "epochs": 1},
        "output": str(tmp_path / "run"),
    }


def write(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_the_example_plugin_validates_and_encodes(smell_plugin, tmp_path, cache_dir):
    registry = plugins.get_registry()
    assert registry.plugins["smell"].error is None
    assert registry.space("smell/nose").modalities == ("smell", "text")
    recipe = write(tmp_path, features_recipe(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["validate", recipe])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["encode", recipe, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "encoded 600 items" in result.output  # text and smell, 300 each, by the nose
    stored = {(m.parent.parent.name, m.parent.name): Memory(m) for m in
              (cache_dir / "embeddings").glob("smell--nose/*/*") if m.is_dir()}
    shapes = {key: (memory.count, memory.dim) for key, memory in stored.items()}
    assert shapes == {("smell--nose", "text"): (300, 32), ("smell--nose", "smell"): (300, 32)}
    rows = next(m for k, m in stored.items() if k[1] == "smell").read()
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)
    # a second run encodes nothing: the cache key is the encoder's fingerprint
    result = runner.invoke(app, ["encode", recipe, "--no-progress"])
    assert result.exit_code == 0 and "encoded 0 items" in result.output, result.output


def test_the_example_plugin_names_a_missing_weights_file(smell_plugin, tmp_path):
    raw = features_recipe(tmp_path)
    raw["leaves"][0]["params"]["weights"] = str(tmp_path / "absent.npz")
    result = CliRunner().invoke(app, ["validate", write(tmp_path, raw)])
    assert result.exit_code == 1
    assert "leaves.0.params.weights" in result.output and "absent.npz" in result.output


def test_validate_checks_precomputed_widths_against_dim(smell_plugin, tmp_path):
    raw = features_recipe(tmp_path)
    np.save(tmp_path / "image.npy", np.ones((300, 48), dtype=np.float32))
    raw["base"]["params"]["modalities"] = ["image", "text", "sonar"]
    result = CliRunner().invoke(app, ["validate", write(tmp_path, raw)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "base.params.modalities: unknown modalities ['sonar']" in output
    raw["base"]["params"]["modalities"] = ["image", "text"]
    result = CliRunner().invoke(app, ["validate", write(tmp_path, raw)])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "memories.image.embeddings.features/cluster" in output
    assert "features/cluster is 64-d" in output
    raw["base"]["params"] = {"modalities": ["image", "text"]}  # dim is required
    result = CliRunner().invoke(app, ["validate", write(tmp_path, raw)])
    assert result.exit_code == 1 and "base.params.dim" in result.output


def test_a_features_space_has_no_encoder(fresh_plugins):
    from mcrx.errors import McrxError

    space = plugins.get_registry().space("features/x").build(
        "features/x", params={"dim": 8, "modalities": ["audio", "text"]})
    assert (space.dim, space.modalities) == (8, ("audio", "text"))
    with pytest.raises(McrxError, match=r"embeddings: \{features/x: audio.npy\}"):
        space.encoder("audio")


def test_two_functions_for_one_hook_in_one_module_are_refused(fresh_plugins, tmp_path,
                                                              monkeypatch):
    (tmp_path / "twice_defined.py").write_text(textwrap.dedent('''
        from mcrx import hookimpl

        @hookimpl
        def register_modalities(register):
            register("odour")

        @hookimpl
        def register_modalities(register):  # replaces the first: 'odour' would vanish
            register("flavour")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import twice_defined

    plugins.register_plugin(twice_defined, name="twice")
    try:
        info = plugins.get_registry().plugins["twice"]
        assert info.error and "register_modalities is defined 2 times" in info.error
        assert "lines 5, 9" in info.error and "twice_defined.py" in info.error
        assert not plugins.get_registry().has("modality", "flavour")
    finally:
        plugins.unregister_plugin("twice")


def test_plugin_classes_are_checked_too_and_one_function_per_hook_passes(fresh_plugins):
    class Twice:
        @hookimpl
        def register_modalities(self, register):
            register("odour")

        @hookimpl
        def register_modalities(self, register):  # noqa: F811 - the mistake under test
            register("flavour")

    (problem,) = plugins.duplicate_hooks(Twice())
    assert problem.startswith("register_modalities is defined 2 times")
    # the core's own plugins and every built-in plugin module define each hook once
    for name, plugin in plugins.get_plugin_manager().list_name_plugin():
        assert plugins.duplicate_hooks(plugin) == [], name


def test_the_connector_api_is_exported_and_each_loss_gets_the_keys_the_guide_names():
    """CONTRIBUTING.md names every public member of mcrx.methods.common and the outputs each
    core loss reads; the papers' connectors really return those keys, and noise goes where
    the guide says."""
    import torch

    from mcrx.methods import common
    from mcrx.methods.cmcr import CMcrConnector, CMcrLoss
    from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
    from mcrx.methods.params import CMcrParams, ExMcrParams

    guide = (ROOT / "CONTRIBUTING.md").read_text()
    for name in common.__all__:
        assert f"`{name}" in guide, f"CONTRIBUTING.md does not document {name}"
    spec = common.ConnectorSpec(leaf_dim=6, parent_dim=8, bridge="text", leaf_modality="audio",
                                parent_modality="image")
    generator = torch.Generator().manual_seed(0)
    batch = {role: torch.nn.functional.normalize(
        torch.randn(16, 6 if role.startswith("leaf") else 8, generator=generator), dim=-1)
        for role in common.PAIR_ROLES}
    documented = {
        "mcrx/ex-mcr": ({"x_hat", "bridge_hat", "x_mid"}, ("leaf_x", "leaf_bridge"),
                        ExMcrConnector(spec, ExMcrParams(hidden_dim=12)), ExMcrLoss()),
        "mcrx/c-mcr": ({"parent_bridge_hat", "parent_y_hat", "leaf_bridge_hat", "leaf_x_hat"},
                       common.PAIR_ROLES, CMcrConnector(spec, CMcrParams(hidden_dim=12)),
                       CMcrLoss()),
    }
    for name, (keys, noised, connector, loss) in documented.items():
        outputs = connector(batch)
        assert set(outputs) == keys, name
        assert connector.noised_roles == tuple(noised), name
        for key in keys:
            assert f"`{key}`" in guide, key
        value, parts = loss(outputs, batch)
        assert value.ndim == 0 and torch.isfinite(value) and set(parts) == {"inter", "intra"}


def test_a_modality_two_hops_from_the_base_is_aligned_with_what_it_never_met(
        write_recipe, cache_dir):
    """recipes/demo_chain.yaml, shrunk: tactile (a modality the toy plugin registers) reaches
    CLIP through toy/haptic → toy/clap → toy/clip and retrieves images, texts and point
    clouds above chance and above the composed linear baseline."""
    from mcrx.recipe import load_recipe
    from mcrx.stages.extend import extend

    registry = plugins.get_registry()
    metrics = extend(load_recipe(write_recipe("demo_chain.yaml"), registry=registry), registry,
                     show_progress=False)
    linear = metrics["baselines"]["linear"]["retrieval"]
    for pair in ("tactile->image", "tactile->text", "tactile->pointcloud", "image->tactile"):
        values = metrics["retrieval"][pair]
        assert values["R@1"] > 3 * values["chance_R@1"], (pair, values)
        assert values["R@1"] > linear[pair]["R@1"], (pair, values, linear[pair])
    tactile = metrics["zeroshot"]["zeroshot/tactile"]
    assert tactile["top1"] > 3 * tactile["chance_top1"]


# -- the guide's methods, losses and closed-form maps ------------------------------------------
def guide_blocks() -> list[str]:
    """The python blocks of CONTRIBUTING.md from the "tested" marker to the next ### heading."""
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    start = guide.index("<!-- tested: tests/plugin/test_plugin_authors.py")
    section = guide[start:guide.index("\n### ", start)]
    return re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


@pytest.fixture
def guide_plugin(fresh_plugins):
    """The guide's method, loss and closed-form example, executed, its hooks registered as
    the plugin ``guide``."""
    import types

    blocks = guide_blocks()
    assert len(blocks) == 3
    namespace: dict = {"__name__": "guide"}
    for block in blocks:
        exec(compile(block, "CONTRIBUTING.md", "exec"), namespace)  # noqa: S102
    module = types.ModuleType("guide")
    module.register_methods = namespace["register_methods"]
    module.register_losses = namespace["register_losses"]
    plugins.register_plugin(module, name="guide")
    yield namespace
    plugins.unregister_plugin("guide")


def test_the_guides_method_makes_one_pair_per_query_row(guide_plugin):
    import torch
    import torch.nn.functional as F

    from mcrx.methods.common import PAIR_ROLES, LeafMemories

    registry = plugins.get_registry()
    assert registry.plugins["guide"].error is None
    method = registry.method("guide/two-pools").build()
    g = torch.Generator().manual_seed(0)
    memories = LeafMemories(*(F.normalize(torch.randn(n, d, generator=g), dim=-1)
                              for n, d in ((70, 16), (50, 16), (50, 24), (90, 24))))
    # query roles leaf_bridge (50 rows) and leaf_x (70 rows): one pseudo pair each
    assert method.count(memories) == 50 + 70
    pairs = method.build(memories, temperature=0.01)
    assert {role: rows.shape for role, rows in pairs.items()} == {
        role: (120, memories.widths()[role]) for role in PAIR_ROLES}
    demo = str(ROOT / "recipes" / "demo.yaml")
    result = CliRunner().invoke(app, ["validate", demo, "--set", "method=guide/two-pools",
                                      "--set", "training.loss=guide/x-to-y"])
    assert result.exit_code == 0, result.output


def test_the_guides_loss_reads_training(guide_plugin):
    import torch
    import torch.nn.functional as F

    from mcrx.recipe.schema import Training

    loss_fn = plugins.get_registry().loss("guide/x-to-y").build(Training(temperature=0.07))
    assert loss_fn.temperature == 0.07
    g = torch.Generator().manual_seed(0)
    rows = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    loss, parts = loss_fn({"x_hat": rows}, {"parent_y": rows})
    assert torch.isfinite(loss) and set(parts) == {"x_to_y"}


def test_the_guides_closed_form_example_recovers_the_rotation(guide_plugin):
    import torch

    # the block asserts it itself; here: the fitted map is a rotation, as Procrustes promises
    weight = guide_plugin["linear"].weight
    torch.testing.assert_close(weight.T @ weight, torch.eye(48), atol=1e-4, rtol=0)
