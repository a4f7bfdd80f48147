"""`mcrx import-official` on wrong input: every case a one-line error naming what is wrong,
exit 1, no traceback; and nothing of the user's deleted or moved at --out."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from test_official import ReferenceExMcr, randomised
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("heads")
    good = randomised(ReferenceExMcr(), 7).state_dict()
    torch.save(good, folder / "good.pt")
    narrow = dict(good)
    narrow["Head1.weight"] = torch.zeros(512, 256)  # a head of another width
    torch.save(narrow, folder / "narrow.pt")
    torch.save({**good, "Head1.bias": [0.0] * 512}, folder / "list.pt")  # not a tensor
    torch.save({**good, "epoch": 3}, folder / "epoch.pt")
    torch.save({"Head1.weight": argparse.Namespace(run="code")}, folder / "object.pt")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "garbage.pt").write_bytes(b"PK\x03\x04 not really a zip")
    return folder


def invoke(*args: str):
    return CliRunner().invoke(app, ["import-official", *args])


def one_line(output: str) -> str:
    return " ".join(output.split())


CASES = {
    "wrong shape": (["--ex-clap", "narrow.pt"], "wrong shape"),
    "list value": (["--ex-clap", "list.pt"], "not tensors: ['Head1.bias']"),
    "int value": (["--ex-clap", "epoch.pt"], "not tensors: ['epoch']"),
    "pickled object": (["--ex-clap", "object.pt"], "holds Python objects other than tensors"),
    "empty head file": (["--ex-clap", "empty.pt"], "empty"),
    "garbage head file": (["--ex-clap", "garbage.pt"], "not a readable PyTorch weights file"),
    "missing head file": (["--ex-clap", "missing.pt"], "not found"),
    # a name in a plugin's family (``clap/*``) is valid, as in recipes; no plugin is not
    "unknown clip space": (["--ex-clap", "good.pt", "--clip-space", "openai/ViT-B-32"],
                           "--clip-space openai/ViT-B-32: unknown space"),
    "unknown clap space": (["--ex-clap", "good.pt", "--clap-space", "clapp/fusion"],
                           "--clap-space clapp/fusion: unknown space"),
    "space without the modality": (["--ex-ulip", "good.pt", "--ulip-space", "clap/music"],
                                   "lacks the modalities ['image', 'pointcloud']"),
    "space of another width": (["--ex-clap", "good.pt", "--clip-space", "toy/clip"],
                               "512-d"),
    "unknown params key": (["--ex-clap", "good.pt", "--clip-params", '{"pretrianed": "x"}'],
                           "pretrianed: Extra inputs are not permitted"),
    "missing weights file": (["--ex-clap", "good.pt", "--clip-params",
                              '{"pretrained": "/nowhere/ViT-B-32.pt"}'], "not found"),
    "params not JSON": (["--ex-clap", "good.pt", "--clap-params", "{oops"], "not valid JSON"),
    "params not an object": (["--ex-clap", "good.pt", "--clap-params", "[1]"], "JSON object"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_heads_and_options_are_clean_errors(heads, tmp_path, case):
    args, expected = CASES[case]
    args = [str(heads / a) if a.endswith(".pt") else a for a in args]
    result = invoke(*args, "--out", str(tmp_path / "m"))
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                    SystemExit)
    assert "Traceback" not in result.output and expected in one_line(result.output)
    assert "weights_only=False" not in result.output and "weights_only` set" not in result.output
    assert not (tmp_path / "m").exists()


def test_out_with_user_files_is_refused_then_kept_with_force(heads, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    result = invoke("--ex-clap", str(heads / "good.pt"), "--out", str(out))
    assert result.exit_code == 1 and "--force" in one_line(result.output)
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]
    result = invoke("--ex-clap", str(heads / "good.pt"), "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert (out / "chapter1.tex").read_text() == "years of work"
    assert mcrx.load(out).method == "ex-mcr"
    # importing again over the model it wrote: replaced, the user's file still there
    assert invoke("--ex-clap", str(heads / "good.pt"), "--out", str(out)).exit_code == 0
    assert (out / "chapter1.tex").read_text() == "years of work"


def test_out_that_is_a_file_is_never_moved_or_replaced(heads, tmp_path):
    out = tmp_path / "model.bin"
    out.write_bytes(b"precious")
    for extra in ([], ["--force"]):
        result = invoke("--ex-clap", str(heads / "good.pt"), "--out", str(out), *extra)
        assert result.exit_code == 1 and "not a folder" in one_line(result.output)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
