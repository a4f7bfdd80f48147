"""User text printed by the CLI is never read as rich markup (issue 7, item 1), and hostile
arguments give one clean error, exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mcrx.cli import app

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "recipes" / "demo.yaml"
runner = CliRunner()


def flat(text: str) -> str:
    """``text`` without whitespace: the console wraps long paths at its width."""
    return "".join(text.split())


def test_markup_in_a_missing_path_is_printed_as_it_is(tmp_path):
    """``[/x]`` used to crash the printer and ``[bold]`` to vanish from the path shown."""
    for name in ("closing[/x].yaml", "r[bold]x[/bold].yaml"):
        missing = tmp_path / "[red]dir" / name
        result = runner.invoke(app, ["validate", str(missing)])
        assert result.exit_code == 1, result.output
        assert flat(f"recipe not found: {missing}") in flat(result.output)


def test_markup_in_errors_and_success_lines(tmp_path):
    folder = tmp_path / "[bold]runs"
    folder.mkdir()
    raw = yaml.safe_load(DEMO.read_text())
    raw["output"] = str(folder / "out")
    recipe = folder / "r[italic].yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert flat(f"ok: {recipe}") in flat(result.output)
    (folder / "[").mkdir()  # so that the path holds "[/x]", a closing tag for rich
    (folder / "[/x]").write_text("a file in the way")
    result = runner.invoke(app, ["validate", str(recipe), "--set",
                                 f"output={folder / '[/x]'}"])
    assert result.exit_code == 1, result.output
    assert flat(f"output: the output folder: {folder / '[/x]'} is a file, not a folder") in (
        flat(result.output))


def mcrx(*args: str | bytes, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcrx", *args], capture_output=True,
                          cwd=cwd, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_hostile_arguments_in_a_real_process(tmp_path):
    """Bytes that are not UTF-8 reach Python as surrogates; brackets nested 50k deep blew
    the YAML parser's stack: each is one line naming the option, exit 1."""
    cases = {
        b"seed=\xff\xfe": "the value is not valid UTF-8 text",
        b"seed=" + b"[" * 50_000: "nested more than",
        b"seed=!!python/object/apply:os.system ['touch pwned']": "is not allowed in a recipe",
        b"training.epochs=[": "not valid YAML",
    }
    for override, expected in cases.items():
        done = mcrx(b"validate", str(DEMO).encode(), b"--set", override, cwd=tmp_path)
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
        assert flat(expected) in flat(stderr), stderr
    assert not (tmp_path / "pwned").exists()
    done = mcrx(b"validate", str(tmp_path / "r\xff.yaml").encode(), cwd=tmp_path)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1 and "recipe not found" in stderr and "Traceback" not in stderr
