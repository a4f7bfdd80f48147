"""The command line, through typer's CliRunner and as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mcrx.cli import app

ROOT = Path(__file__).parents[2]
runner = CliRunner()


def mcrx_process(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcrx", *args], capture_output=True,
                          text=True, **kwargs)


def test_list_plugins_json():
    result = runner.invoke(app, ["list-plugins", "--json"])
    assert result.exit_code == 0
    plugins = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert {"mcrx", "toy"} <= set(plugins)
    assert plugins["toy"]["spaces"] == ["toy/clap", "toy/clip", "toy/haptic", "toy/ulip"]
    assert plugins["toy"]["datasets"] == ["toy/world"]
    assert plugins["mcrx"]["version"]


def test_list_plugins_table():
    result = runner.invoke(app, ["list-plugins"])
    assert result.exit_code == 0 and "toy/clip" in result.stdout


def test_validate_accepts_the_demo():
    result = runner.invoke(app, ["validate", str(ROOT / "recipes" / "demo.yaml")])
    assert result.exit_code == 0, result.output


def test_validate_reports_every_error_with_its_location(tmp_path):
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    raw["leaves"][0]["bridge"] = "audio"
    raw["leaves"][1]["space"] = "toy/nope"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "leaves.0.bridge: 'audio' is not a modality of space toy/clip" in result.output
    assert "leaves.1.space: unknown space 'toy/nope'" in result.output


def test_validate_with_overrides():
    demo = str(ROOT / "recipes" / "demo.yaml")
    assert runner.invoke(app, ["validate", demo, "--set", "training.epochs=0"]).exit_code == 1
    assert runner.invoke(app, ["validate", demo, "--set", "training.epochs=2"]).exit_code == 0


def test_schema_includes_plugin_params():
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.stdout)
    assert schema["title"] == "Recipe" and "leaves" in schema["properties"]
    assert "space:toy/clip" in schema["x-mcrx-components"]
    assert "connector:mcrx/ex-mcr" in schema["x-mcrx-components"]


def test_help_teaches():
    result = runner.invoke(app, ["--help"])
    assert "mcrx extend recipes/demo.yaml" in result.stdout
    result = runner.invoke(app, ["extend", "--help"])
    assert "--set" in result.stdout and "resume" in result.stdout


def test_user_errors_exit_1_without_a_traceback(tmp_path):
    done = mcrx_process("validate", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1
    assert "recipe not found" in done.stderr and "Traceback" not in done.stderr
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    raw["memories"]["audio"] = {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = mcrx_process("validate", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"memories.audio.embeddings.toy/clap: file not found: {tmp_path / 'audio.npy'}" in (
        " ".join(done.stderr.split()))


def test_extend_killed_during_training_resumes_and_finishes(write_recipe, cache_dir):
    """A real process killed (SIGKILL) after its first checkpoint; the second run resumes."""
    path = write_recipe("demo.yaml", training={"batch_size": 128, "epochs": 6,
                                               "checkpoint_every": 5})
    out = Path(yaml.safe_load(path.read_text())["output"])
    env = {**os.environ, "MCRX_CACHE_DIR": str(cache_dir)}
    process = subprocess.Popen([sys.executable, "-m", "mcrx", "extend", str(path),
                                "--no-progress"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if list((out / "checkpoints").glob("*/step-*")):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model").exists()  # no unified model before a run completes

    done = subprocess.run([sys.executable, "-m", "mcrx", "extend", str(path), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "resumed from step" in done.stderr
    assert json.loads((out / "metrics.json").read_text())["retrieval"]
    assert (out / "model" / "manifest.json").is_file()
