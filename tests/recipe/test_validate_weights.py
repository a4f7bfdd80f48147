"""``mcrx validate`` opens every weight file a recipe's params name (fields marked with
``mcrx.store.weights.weights_file``): a file that pickles code, a truncated download or a
file that is no checkpoint fails validation at its recipe field, and nothing in it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mcrx.cli import app

pytest.importorskip("mcrx_clap.params")  # the built-in clap plugin's params mark its checkpoint

runner = CliRunner()
FIELD = "leaves.0.params.checkpoint"




def training_state(**extra) -> dict:
    """A checkpoint as training scripts save them: module. keys, an AdamW state whose
    learning rate is a numpy float64, an argparse Namespace."""
    layer = torch.nn.Linear(4, 2)
    adamw = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.ones(1, 4)).sum().backward()
    adamw.step()
    adamw.param_groups[0]["lr"] = 0.5 * (1 + np.cos(np.pi * 0.5)) * 1e-3
    return {"epoch": 45, "name": "run",
            "state_dict": {f"module.{k}": v for k, v in layer.state_dict().items()},
            "optimizer": adamw.state_dict(), "args": argparse.Namespace(lr=1e-3), **extra}


def validate(tmp_path: Path, **params) -> tuple[int, str]:
    recipe = {
        "name": "weights", "method": "ex-mcr", "output": str(tmp_path / "out"),
        "base": {"space": "toy/clip"},
        "leaves": [{"space": "clap/630k-fusion", "bridge": "text", "params": params}],
        "memories": {m: {"dataset": "toy/world", "params": {"split": "memory", "count": 100}}
                     for m in ("text", "image", "audio")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.split())


def test_a_training_state_with_numpy_and_namespace_passes(tmp_path):
    path = tmp_path / "630k-fusion-best.pt"
    torch.save(training_state(), path)
    code, output = validate(tmp_path, checkpoint=str(path))
    assert code == 0, output


@pytest.mark.parametrize("kind", ["system", "eval"])
def test_a_checkpoint_that_pickles_code_fails_at_its_field(tmp_path, hostile_pickle, kind):
    marker = tmp_path / "ran"
    payload, name = hostile_pickle(kind, marker)
    path = tmp_path / "630k-fusion-best.pt"
    torch.save(training_state(hook=payload), path)
    code, output = validate(tmp_path, checkpoint=str(path))
    assert code == 1
    assert f"{FIELD}: {path}: holds Python objects other than tensors ({name})" in output
    assert "trust_checkpoint: true" in output and "weights_only=False" not in output
    # trusted, the file is opened by its opcodes only: validation passes, nothing runs
    code, output = validate(tmp_path, checkpoint=str(path), trust_checkpoint=True)
    assert code == 0, output
    assert not marker.exists()


def test_truncated_and_foreign_files_fail_at_their_field(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(training_state(), good)
    files = {
        "truncated.pt": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
        "page.pt": (b"<!DOCTYPE html><html>Not Found</html>\n", "not a readable PyTorch"),
        "zeros.pt": (bytes(4096), "not a readable PyTorch"),
    }
    for name, (data, expected) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, output = validate(tmp_path, checkpoint=str(path))
        assert code == 1, (name, output)
        assert f"{FIELD}: {path}:" in output and expected in output, (name, output)


def test_no_check_files_leaves_weight_files_closed(tmp_path):
    path = tmp_path / "page.pt"
    path.write_bytes(b"<html></html>")
    recipe_path = tmp_path / "recipe.yaml"
    validate(tmp_path, checkpoint=str(path))
    result = runner.invoke(app, ["validate", str(recipe_path), "--no-check-files"])
    assert result.exit_code == 0, result.output
