"""training.log_with: the aligner's loss reaches Accelerate's TensorBoard tracker."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mcrx.errors import McrxError
from mcrx.recipe.schema import Training
from mcrx.train.aligner import align, check_trackers


class Tiny(nn.Module):
    noised_roles = ()

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, batch):
        return {"x": self.linear(batch["a"])}


def test_tensorboard_receives_the_loss(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    pairs = {"a": torch.randn(64, 4), "b": torch.randn(64, 4)}
    training = Training(batch_size=16, epochs=5, log_with="tensorboard", loss_every=2)
    assert training.log_with == ["tensorboard"]
    result = align(Tiny(), lambda out, batch: (((out["x"] - batch["b"]) ** 2).mean(), {}),
                   pairs, training, checkpoint_dir=tmp_path / "ckpt", fingerprint="f",
                   description="train leaf → base", show_progress=False,
                   log_dir=tmp_path / "logs")
    (run,) = (tmp_path / "logs").iterdir()
    assert run.name == "train_leaf_base"
    events = EventAccumulator(str(run))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [s for s, _ in logged] == [s for s, _ in result.losses] == list(range(2, 21, 2))
    assert [v for _, v in logged] == pytest.approx([v for _, v in result.losses])
    assert "lr" in events.Tags()["scalars"]


def test_a_missing_tracker_says_how_to_install_it():
    with pytest.raises(McrxError, match="pip install"):
        check_trackers(["dvclive_not_a_module"])
