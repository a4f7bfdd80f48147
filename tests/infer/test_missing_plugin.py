"""A model whose space's plugin is not installed: ``mcrx.load`` then ``embed``, and
``mcrx evaluate``, name the distribution to install and the plugin version the model's
manifest records, instead of an unknown space name."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import mcrx
import mcrx.plugin.manager as manager
from mcrx.cli import app
from mcrx.errors import McrxError
from mcrx.infer.official import import_official


@pytest.fixture
def model_without_clap(tmp_path, monkeypatch, exmcr_release):
    """An Ex-MCR model (clip base, clap leaf) made while the clap plugin is installed, its
    manifest recording clap 0.1.0; then a registry in which clap's entry point is absent."""
    out = tmp_path / "official"
    import_official(out, ex_clap=exmcr_release(tmp_path / "h.pt", 1))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["versions"]["plugin:clap"] = "0.1.0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    entry_points = manager.metadata.entry_points

    class WithoutClap:
        @staticmethod
        def entry_points(**kwargs):
            return [ep for ep in entry_points(**kwargs) if ep.name != "clap"]

    monkeypatch.setattr(manager, "metadata", WithoutClap)
    manager.reset()
    yield out
    monkeypatch.undo()
    manager.reset()


EXPECTED = ("the model's space clap/630k-fusion needs the plugin 'clap', which is not "
            "installed: install the `mcrx-clap` distribution (plugin clap, version 0.1.0 "
            "recorded in the manifest)")


def test_load_names_the_distribution(model_without_clap):
    model = mcrx.load(model_without_clap)  # the connectors need no plugin
    with pytest.raises(McrxError) as caught:
        model.embed("audio", ["a.wav"])
    assert str(caught.value) == EXPECTED


def test_evaluate_names_the_distribution(model_without_clap, tmp_path):
    (tmp_path / "audio").mkdir()
    with wave.open(str(tmp_path / "audio" / "a.wav"), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(48000)
        clip.writeframes(np.zeros(4800, np.int16).tobytes())
    (tmp_path / "captions.txt").write_text("a dog\n")
    sets = [{"name": "s", "data": {"audio": {"inputs": str(tmp_path / "audio")},
                                   "text": {"inputs": str(tmp_path / "captions.txt")}}}]
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"evaluation": sets}))
    result = CliRunner().invoke(app, ["evaluate", str(model_without_clap),
                                      str(tmp_path / "eval.yaml"), "--no-progress"])
    assert result.exit_code == 1
    assert EXPECTED in " ".join(result.output.split()) and "Traceback" not in result.output


def test_installed_plugin_distribution_and_other_causes(monkeypatch):
    assert manager.distribution_of("toy") == "mcrx-toy"  # from its entry point
    assert manager.distribution_of("nosuch") == "mcrx-nosuch"  # the convention
    monkeypatch.setenv("MCRX_DISABLE_PLUGINS", "clap")
    assert "disabled by MCRX_DISABLE_PLUGINS" in manager.missing_plugin_message(
        "clap", "0.1.0", "the model's space clap/630k")
