"""Bad embedding rows (NaN, Inf, all zeros, a constant set) are refused with the file and the
first bad row, or dropped and counted on request; a loss that stops being finite ends
training with the step and the leaf, instead of a run that 'finishes' at chance."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mcrx.errors import McrxError
from mcrx.methods.common import ConnectorSpec
from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
from mcrx.methods.params import ExMcrParams
from mcrx.recipe.schema import Training
from mcrx.store.validate_rows import check_rows
from mcrx.train.aligner import align

DIMS = {"toy/clip": 64, "toy/clap": 48, "toy/ulip": 56}


def rows(n: int = 50, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "infinite"),
                                         (-np.inf, "infinite"), (0.0, "all-zero")])
def test_a_bad_row_is_refused_with_the_file_and_its_index(value, kind):
    array = rows()
    array[7] = value if kind == "all-zero" else array[7]
    if kind != "all-zero":
        array[7, 3] = value
    array[30] = array[7]
    with pytest.raises(McrxError, match=rf"memory.npy: 2 .*{kind}.* \(first: row 7\).*"
                                        "--drop-bad-rows"):
        check_rows(array, None, "memory.npy")


def test_dropping_keeps_good_rows_and_their_labels_and_counts(capsys):
    array, labels = rows(), np.arange(50)
    array[[3, 9], 0] = np.nan
    array[20] = 0
    kept, kept_labels = check_rows(array, labels, "eval.npy", drop=True)
    assert len(kept) == 47 and np.isfinite(kept).all()
    np.testing.assert_array_equal(kept_labels, np.delete(labels, [3, 9, 20]))
    np.testing.assert_array_equal(kept, np.delete(array, [3, 9, 20], axis=0))
    assert "dropped 3 of 50 rows" in capsys.readouterr().err


def test_dropping_a_bridge_memory_keeps_its_spaces_row_aligned():
    """Row i of the text memory is the same caption in CLAP and in CLIP: a row bad in either
    file is dropped from both, or pseudo pairs would pair different captions."""
    clap, clip = rows(40, 6, seed=1), rows(40, 9, seed=2)
    clap[5, 0], clip[17] = np.nan, 0.0
    kept_clap, _ = check_rows(clap, None, "text-clap.npy", drop=True, siblings=[clip])
    kept_clip, _ = check_rows(clip, None, "text-clip.npy", drop=True, siblings=[clap])
    np.testing.assert_array_equal(kept_clap, np.delete(clap, [5, 17], axis=0))
    np.testing.assert_array_equal(kept_clip, np.delete(clip, [5, 17], axis=0))


def test_every_row_bad_or_all_rows_equal_is_refused_even_when_dropping():
    with pytest.raises(McrxError, match="every row is bad"):
        check_rows(np.full((5, 4), np.nan, np.float32), None, "x.npy", drop=True)
    constant = np.tile(rows(1), (40, 1)) * np.linspace(1, 2, 40)[:, None]  # one direction
    with pytest.raises(McrxError, match="point the same way"):
        check_rows(constant, None, "x.npy", drop=True)


def test_good_rows_pass_untouched():
    array, labels = rows(), np.arange(50)
    kept, kept_labels = check_rows(array, labels, "x.npy")
    assert kept is array and kept_labels is labels


def test_a_nan_pair_stops_training_at_that_step_naming_the_leaf(tmp_path):
    """Real connector, real loss, real aligner: one NaN pseudo pair poisons the batch."""
    spec = ConnectorSpec(leaf_dim=16, parent_dim=12, bridge="text", leaf_modality="audio",
                         parent_modality="image")
    g = torch.Generator().manual_seed(0)
    pairs = {role: F.normalize(torch.randn(256, 16 if role.startswith("leaf") else 12,
                                           generator=g), dim=-1)
             for role in ("leaf_x", "leaf_bridge", "parent_y", "parent_bridge")}
    pairs["leaf_x"][100, 0] = float("nan")
    training = Training(batch_size=64, epochs=2, checkpoint_every=100, loss_every=1)
    with pytest.raises(McrxError, match=r"train toy/clap → toy/clip: the loss is nan at "
                                        r"step \d+; training stopped"):
        align(ExMcrConnector(spec, ExMcrParams(hidden_dim=16)), ExMcrLoss(), pairs, training,
              tmp_path / "ckpt", fingerprint="f", show_progress=False,
              description="train toy/clap → toy/clip")


def test_extend_refuses_a_nan_memory_row_in_a_real_process(tmp_path, make_small_recipe):
    raw = make_small_recipe("demo.yaml", tmp_path / "run")
    for modality, spaces in {"text": ["toy/clip", "toy/clap"], "image": ["toy/clip", "toy/ulip"],
                             "audio": ["toy/clap"], "pointcloud": ["toy/ulip"]}.items():
        files = {}
        for space in spaces:
            array = rows(300, DIMS[space], seed=len(files))
            array[42, 5] = np.nan
            files[space] = str(tmp_path / f"{modality}-{space.replace('/', '_')}.npy")
            np.save(files[space], array)
        raw["memories"][modality] = {"embeddings": files}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "mcrx", "extend", str(recipe),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    printed = "".join(done.stderr.split())  # the console wraps long lines, paths included
    assert "1rowwithNaNorinfinitevalues(first:row42)" in printed
    assert f"{tmp_path}/".replace(" ", "") in printed and ".npy:" in printed
    assert not (tmp_path / "run" / "model").exists()
