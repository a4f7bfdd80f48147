"""The aligner: it learns, it is deterministic, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcrx.methods.common import ConnectorSpec
from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
from mcrx.methods.params import ExMcrParams
from mcrx.recipe.schema import Training
from mcrx.store.checkpoints import latest_checkpoint
from mcrx.train.aligner import align

SPEC = ConnectorSpec(leaf_dim=32, parent_dim=24, bridge="text", leaf_modality="audio",
                     parent_modality="image")


def pairs(n: int = 512) -> dict[str, torch.Tensor]:
    """Pseudo pairs of a learnable world: parent rows are a fixed map of the leaf rows."""
    g = torch.Generator().manual_seed(0)
    mapping = torch.randn(32, 24, generator=g)
    leaf_x, leaf_bridge = (F.normalize(torch.randn(n, 32, generator=g), dim=-1) for _ in range(2))
    return {"leaf_x": leaf_x, "leaf_bridge": leaf_bridge,
            "parent_y": F.normalize(leaf_x @ mapping, dim=-1),
            "parent_bridge": F.normalize(leaf_bridge @ mapping, dim=-1)}


def train(tmp_path, name: str, stop: int | None = None, epochs: int = 4):
    torch.manual_seed(0)
    connector = ExMcrConnector(SPEC, ExMcrParams(hidden_dim=32))
    training = Training(batch_size=64, epochs=epochs, checkpoint_every=5, lr=3e-3)
    result = align(connector, ExMcrLoss(), pairs(), training, tmp_path / name,
                   fingerprint="f", seed=1, show_progress=False, stop_after_steps=stop)
    return connector, result


def test_training_lowers_the_loss(tmp_path):
    _, result = train(tmp_path, "a", epochs=10)
    assert result.steps == 10 * (512 // 64)
    assert result.losses[-1][1] < 0.7 * result.losses[0][1]


def test_runs_are_deterministic(tmp_path):
    first, _ = train(tmp_path, "a")
    second, _ = train(tmp_path, "b")
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    reference, _ = train(tmp_path, "reference")
    _, partial = train(tmp_path, "interrupted", stop=13)  # killed after step 13
    checkpoint, state = latest_checkpoint(tmp_path / "interrupted", "f")
    assert state["step"] == 10  # the last checkpoint before the interruption
    resumed, result = train(tmp_path, "interrupted")
    assert result.resumed_from == 10
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_checkpoints_of_other_inputs_are_not_resumed(tmp_path):
    train(tmp_path, "x", stop=12)
    assert latest_checkpoint(tmp_path / "x", "f") is not None
    assert latest_checkpoint(tmp_path / "x", "another fingerprint") is None


def test_a_run_resumed_with_no_step_left_reports_the_curve_and_a_real_final_loss(tmp_path):
    """Once seen in the fuzz test: a finished checkpoint resumed again trained nothing and
    wrote final_loss NaN with exit 0. The curve now travels with the checkpoint."""
    _, first = train(tmp_path, "done")
    _, again = train(tmp_path, "done")
    assert again.resumed_from == again.steps == first.steps
    assert again.losses == first.losses
    assert again.final_loss == first.final_loss is not None


def test_a_resumed_run_keeps_the_losses_read_before_the_interruption(tmp_path):
    _, reference = train(tmp_path, "whole")
    train(tmp_path, "cut", stop=13)
    _, resumed = train(tmp_path, "cut")
    assert resumed.losses == reference.losses  # samples up to step 10 came from the checkpoint
