"""LAION-CLAP checkpoints as released (whole training states, see clap_release_format.py) load
with no trust flag and embed; a checkpoint that pickles code is refused, naming the file and
the global, and its code never runs; ``trust_checkpoint: true`` opens a file with other
objects."""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path

import clap_release_format
import numpy as np
import pytest
import torch

from mcrx import McrxError
from mcrx.plugin.manager import get_registry
from mcrx.store.weights import load_weights, pickled_globals

SR = 48000


def build(name: str, **params):
    return get_registry().space(name).build(name, params=params)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("clap-release") / "630k-fusion-best.pt"
    model = clap_release_format.write_release_checkpoint(path, amodel="HTSAT-tiny", fusion=True)
    return path, model


def test_the_file_is_laid_out_as_the_release(release):
    path, _ = release
    names = pickled_globals(path)
    assert {"numpy.dtype", "collections.OrderedDict"} <= set(names)
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} & set(names)
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # what torch alone does
        torch.load(path, weights_only=True)
    content = load_weights(path, mmap=True)
    assert set(content) == {"epoch", "name", "state_dict", "optimizer"}
    assert all(key.startswith("module.") for key in content["state_dict"])
    assert "module.text_branch.embeddings.position_ids" in content["state_dict"]
    groups = content["optimizer"]["param_groups"]
    assert len(groups) == 2 and all(type(g["lr"]) is np.float64 for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.0, clap_release_format.WEIGHT_DECAY]
    state = content["optimizer"]["state"]
    assert state and all({"step", "exp_avg", "exp_avg_sq"} <= set(s) for s in state.values())


def test_the_release_loads_without_trust_and_embeds(release, tokenizer_dir):
    path, model = release
    space = build("clap/630k-fusion", checkpoint=str(path), tokenizer=str(tokenizer_dir),
                  batch_size=2)
    assert space.fusion and not space.params.trust_checkpoint
    loaded = space.model.state_dict()
    for key in ("audio_projection.0.weight", "logit_scale_a",  # moved by the AdamW step
                "text_branch.encoder.layer.11.output.dense.weight",
                "audio_branch.patch_embed.fusion_model.local_att.0.weight"):
        torch.testing.assert_close(loaded[key], model.state_dict()[key], atol=0, rtol=0)
    t = np.arange(int(2.5 * SR)) / SR
    waves = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220, 440)]
    for rows, n in ((space.encoder("audio").encode(waves), 2),
                    (space.encoder("text").encode(["a dog barking", "rain"]), 2)):
        assert rows.shape == (n, 512) and torch.isfinite(rows).all()
        torch.testing.assert_close(rows.norm(dim=-1), torch.ones(n))




@pytest.mark.parametrize("kind", ["system", "eval"])
def test_a_checkpoint_that_pickles_code_is_refused_naming_file_and_global(
        tmp_path, hostile_pickle, kind):
    from mcrx_clap.space import read_checkpoint

    marker = tmp_path / "ran"
    payload, global_name = hostile_pickle(kind, marker)
    path = tmp_path / "630k-fusion-best.pt"
    torch.save({"epoch": 1, "name": "x", "state_dict": {"module.w": torch.zeros(2)},
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4)}]},
                "extra": payload}, path)
    for attempt in (lambda: read_checkpoint(path),
                    lambda: build("clap/630k-fusion", checkpoint=str(path))):
        with pytest.raises(McrxError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and global_name in message
        assert "trust_checkpoint: true" in message and "weights_only=False" not in message
    assert not marker.exists(), "code from the checkpoint ran"


def test_trust_checkpoint_opens_a_file_with_other_objects(tmp_path, caplog):
    from mcrx_clap.space import read_checkpoint

    path = tmp_path / "dated.pt"
    torch.save({"epoch": 3, "saved": datetime.date(2022, 12, 6),
                "state_dict": {"module.w": torch.ones(3)}}, path)
    with pytest.raises(McrxError, match=r"datetime\.date.*trust_checkpoint: true"):
        read_checkpoint(path)
    state = read_checkpoint(path, trust=True)
    assert torch.equal(state["w"], torch.ones(3))
    assert "unpickling it in full as trusted" in caplog.text
    # the params field reaches the reader: the file opens, then does not fit the model
    with pytest.raises(McrxError, match="is a non-fusion checkpoint"):
        build("clap/630k-fusion", checkpoint=str(path), trust_checkpoint=True)
