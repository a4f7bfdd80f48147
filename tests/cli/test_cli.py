"""The command line, through typer's CliRunner and as a real process."""

from __future__ import annotations

import json
import os
import re
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


# -- polish: --version, did you mean, help placeholders, third-party warnings ----------------
def test_version():
    from mcrx import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mcrx {__version__}"
    process = mcrx_process("--version", timeout=120)
    assert process.returncode == 0 and process.stdout.strip() == f"mcrx {__version__}"


def test_a_mistyped_command_gets_a_suggestion():
    for typed, meant in (("extned", "extend"), ("evaluat", "evaluate"), ("list", "list-plugins"),
                         ("plna", "plan")):
        result = runner.invoke(app, [typed, "x"])
        assert result.exit_code == 2
        assert f"Did you mean '{meant}'" in " ".join(result.output.split()), result.output
    nothing = runner.invoke(app, ["zzzzzz"])
    assert nothing.exit_code == 2 and "Did you mean" not in nothing.output


def test_suggest_commands():
    from mcrx.cli.app import suggest_commands

    names = ["extend", "encode", "evaluate", "list-plugins", "plan"]
    assert suggest_commands("extnd", names) == ["extend"]
    assert suggest_commands("list", names) == ["list-plugins"]
    assert suggest_commands("qqq", names) == []


def _commands(group, ctx, prefix=()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if hasattr(command, "list_commands"):
            yield from _commands(command, ctx, (*prefix, name))


def test_help_shows_no_typer_placeholders():
    """Flags show no ``<bool>``, arguments read ``RECIPE`` (not ``{recipe}`` / ``<path>``),
    values click's names (``INTEGER``) or the command's metavar (``FIELD=VALUE``)."""
    import typer

    group = typer.main.get_command(app)
    ctx = group.make_context("mcrx", ["--help"], resilient_parsing=True)
    commands = [(), *_commands(group, ctx)]
    assert ("extend",) in commands and ("evaluate",) in commands
    env = {"COLUMNS": "200"}
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env=env)
        assert result.exit_code == 0, (command, result.output)
        text = result.stdout
        assert not re.search(r"<\w+(\[\w+\])?>|\{\w+\}", text), (command, text)
    extend = runner.invoke(app, ["extend", "--help"], env=env).stdout
    assert "Usage: mcrx extend [OPTIONS] RECIPE" in extend
    assert re.search(r"--set\s+FIELD=VALUE", extend) and re.search(r"--workers\s+INTEGER", extend)
    assert re.search(r"--json\s+print metrics.json", extend)  # a flag: no placeholder
    evaluate = runner.invoke(app, ["evaluate", "--help"], env=env).stdout
    assert "Usage: mcrx evaluate [OPTIONS] ARGUMENTS..." in evaluate


def test_known_noisy_warnings_are_hidden_at_cli_entry(monkeypatch):
    import warnings

    from mcrx.cli.app import quiet_known_warnings

    monkeypatch.delenv("MCRX_SHOW_WARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quiet_known_warnings()
        warnings.warn("Importing from timm.models.layers is deprecated, please import via "
                      "timm.layers", FutureWarning, stacklevel=1)
        warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass "
                      "the indexing argument.", UserWarning, stacklevel=1)
        warnings.warn("something mcrx's user should read", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something mcrx's user should read"]
    monkeypatch.setenv("MCRX_SHOW_WARNINGS", "1")
    assert not quiet_known_warnings()


def test_warnings_filter_in_a_real_process(tmp_path):
    """The console script hides a timm deprecation raised while a command runs."""
    script = tmp_path / "run.py"
    script.write_text(
        "import warnings, typer\n"
        "from mcrx.cli import app\n"
        "@app.command('noisy-test')\n"
        "def noisy() -> None:\n"
        "    warnings.warn('Importing from timm.models.layers is deprecated', FutureWarning)\n"
        "    warnings.warn('kept', UserWarning)\n"
        "app(['noisy-test'])\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items()
                                              if k not in {"PYTHONWARNINGS",
                                                           "MCRX_SHOW_WARNINGS"}})
    assert result.returncode == 0, result.stderr
    assert "timm" not in result.stderr and "kept" in result.stderr
