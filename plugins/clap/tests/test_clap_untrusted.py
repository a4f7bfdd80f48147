"""A CLAP checkpoint that pickles code never runs it unless the user trusts the file."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mcrx import McrxError


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_pickles_code_is_refused_and_the_code_never_runs(tmp_path):
    from mcrx_clap.space import read_checkpoint

    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _RunsCode(str(marker))}, path,
               pickle_module=pickle)
    with pytest.raises(McrxError, match="trust_checkpoint"):
        read_checkpoint(path)
    assert not marker.exists(), "code from the checkpoint ran"


def test_a_weights_only_checkpoint_loads_without_trust(tmp_path):
    from mcrx_clap.space import read_checkpoint

    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"module.w": torch.ones(3)}, "epoch": 3}, path)
    state = read_checkpoint(path)
    assert torch.equal(state["w"], torch.ones(3))
