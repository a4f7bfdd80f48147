"""The plugin system: namespacing, duplicates, broken third-party plugins, the knobs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mcrx import hookimpl
from mcrx.errors import McrxError
from mcrx.plugin import manager as plugins
from mcrx.plugin.registry import DuplicateComponentError, UnknownComponentError


@pytest.fixture
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


class TinyPlugin:
    """A complete in-code plugin: one modality, one space family, one dataset."""

    @hookimpl
    def register_modalities(self, register):
        register("smell", description="odours")

    @hookimpl
    def register_spaces(self, register):
        register("nose", lambda name, params: name, modalities=["smell", "text"], dim=4)
        register("family-*", lambda name, params: name, modalities=["smell"], dim=8)


def test_core_components_are_registered(fresh_plugins):
    registry = plugins.get_registry()
    assert {"image", "text", "audio", "pointcloud"} <= set(registry.names("modality"))
    assert {"mcrx/ex-mcr", "mcrx/c-mcr", "mcrx/linear"} <= set(registry.names("connector"))
    assert registry.plugins["mcrx"].error is None


def test_names_are_namespaced_by_plugin_and_families_match(fresh_plugins):
    plugins.register_plugin(TinyPlugin(), name="tiny")
    try:
        registry = plugins.get_registry()
        spec = registry.space("tiny/nose")
        assert spec.plugin == "tiny" and spec.modalities == ("smell", "text")
        assert registry.space("tiny/family-xl").dim == 8
        assert registry.space("tiny/family-xl").build("tiny/family-xl") == "tiny/family-xl"
        assert registry.modality("smell").plugin == "tiny"
        assert registry.plugins["tiny"].registered["space"] == ["tiny/family-*", "tiny/nose"]
    finally:
        plugins.unregister_plugin("tiny")


def test_unknown_names_list_the_known_ones(fresh_plugins):
    registry = plugins.get_registry()
    with pytest.raises(UnknownComponentError, match="known spaces: .*toy/clip"):
        registry.space("toy/nope")


def test_duplicates_are_refused(fresh_plugins):
    class Twice:
        @hookimpl
        def register_spaces(self, register):
            register("same", lambda n, p: n, modalities=["text"])
            register("same", lambda n, p: n, modalities=["text"])

    plugins.register_plugin(Twice(), name="twice")
    try:
        registry = plugins.get_registry()
        assert "registered twice" in registry.plugins["twice"].error
        assert not registry.has("space", "twice/same")  # all or nothing
        assert registry.plugins["mcrx"].error is None  # the others still load
    finally:
        plugins.unregister_plugin("twice")

    registry = plugins.get_registry()
    with pytest.raises(DuplicateComponentError):
        from mcrx.plugin.registry import ComponentSpec

        registry.add(ComponentSpec(kind="modality", name="image", plugin="other"))


def test_a_modality_taken_by_another_plugin_marks_only_the_newcomer_broken(fresh_plugins):
    class Thief:
        @hookimpl
        def register_modalities(self, register):
            register("image")

    plugins.register_plugin(Thief(), name="thief")
    try:
        registry = plugins.get_registry()
        assert "already registered by 'mcrx'" in registry.plugins["thief"].error
        assert registry.modality("image").plugin == "mcrx"
    finally:
        plugins.unregister_plugin("thief")


def test_plugin_params_are_validated_by_the_plugin_model(fresh_plugins):
    registry = plugins.get_registry()
    spec = registry.connector("mcrx/ex-mcr")
    assert spec.validate_params({"hidden_dim": 32}).hidden_dim == 32
    with pytest.raises(Exception, match="hidden_dim"):
        spec.validate_params({"hidden_dim": -1})
    with pytest.raises(McrxError, match="takes no params"):
        registry.loss("mcrx/ex-mcr").validate_params({"x": 1})


BROKEN_PLUGIN = {
    "broken_mcrx_plugin.py": "raise RuntimeError('this plugin is broken on purpose')\n",
    "raising_mcrx_plugin.py": textwrap.dedent(
        """
        from mcrx import hookimpl

        @hookimpl
        def register_spaces(register):
            raise ValueError('hook failed')
        """
    ),
    "broken_mcrx_plugin-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\n"
    "Name: broken-mcrx-plugin\nVersion: 1.2.3\n",
    "broken_mcrx_plugin-1.2.3.dist-info/entry_points.txt": "[mcrx]\nbroken = broken_mcrx_plugin\n"
    "raising = raising_mcrx_plugin\n",
}


@pytest.fixture
def third_party_site(tmp_path):
    """A folder on sys.path holding an installed (dist-info) third-party distribution with
    two broken plugins: one fails at import, one in its hook."""
    for relative, text in BROKEN_PLUGIN.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_broken_third_party_plugins_are_reported_and_never_stop_the_others(
    third_party_site, monkeypatch, fresh_plugins
):
    monkeypatch.syspath_prepend(str(third_party_site))
    registry = plugins.get_registry()
    assert "this plugin is broken on purpose" in registry.plugins["broken"].error
    assert registry.plugins["broken"].version == "1.2.3"
    assert "hook failed" in registry.plugins["raising"].error
    assert registry.has("space", "toy/clip")  # the built-in plugin still loaded


def test_list_plugins_shows_broken_plugins_as_a_real_process(third_party_site):
    env = {**__import__("os").environ, "PYTHONPATH": str(third_party_site)}
    done = subprocess.run([sys.executable, "-m", "mcrx", "list-plugins", "--json"], env=env,
                          capture_output=True, text=True, check=True)
    listed = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert listed["broken"]["error"] and listed["toy"]["error"] is None
    assert listed["toy"]["spaces"] == ["toy/clap", "toy/clip", "toy/haptic", "toy/ulip"]
    assert listed["toy"]["version"]


def test_disable_knobs(monkeypatch, fresh_plugins):
    monkeypatch.setenv("MCRX_DISABLE_PLUGINS", "toy")
    assert not plugins.get_registry().has("space", "toy/clip")
    plugins.reset()
    monkeypatch.delenv("MCRX_DISABLE_PLUGINS")
    monkeypatch.setenv("MCRX_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = plugins.get_registry()
    assert set(registry.plugins) == {"mcrx", "features"}  # the core's own two


def test_core_and_plugin_hook_modules_import_without_torch():
    code = ("import sys, mcrx, mcrx.plugin.manager, mcrx.recipe.check; "
            "registry = mcrx.plugin.manager.get_registry(); "
            "mcrx.recipe.load_recipe('recipes/demo.yaml', registry=registry); "
            "mcrx.recipe.check.check_recipe("
            "mcrx.recipe.load_recipe('recipes/audio_3d.yaml'), registry); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    from pathlib import Path

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_every_hook_is_documented_for_plugin_authors():
    """CONTRIBUTING.md lists every hookspec with its signature (docs cannot drift)."""
    import inspect
    from pathlib import Path

    from mcrx.plugin import hookspecs

    guide = (Path(__file__).parents[2] / "CONTRIBUTING.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    assert len(hooks) == 7
    for name in hooks:
        parameters = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({parameters})`" in guide, name
