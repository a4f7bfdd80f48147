"""Untrusted ``.npy`` files and model folders refused before any harm: a header that claims
more than its file holds (no allocation is attempted), an object dtype, weights that are
NaN, a manifest ``dim`` that contradicts the weights."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mcrx
from mcrx.errors import McrxError
from mcrx.store.artifact import MANIFEST
from mcrx.store.inputs import load_npy, npy_header, read_embeddings, read_inputs

LEGACY_MODEL = Path(__file__).parents[1] / "fixtures" / "legacy-971a757" / "model"
CONNECTOR = "connectors/toy--clap.safetensors"


def _forged_npy(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A valid .npy header declaring ``shape``, followed by 16 bytes of data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 16)
    return path


@pytest.mark.parametrize("shape", [(1 << 40,), (1 << 20, 1 << 20), (5,)])
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_allocating(
        tmp_path, shape):
    path = _forged_npy(tmp_path / "forged.npy", shape)
    started = time.perf_counter()
    for read in (lambda p: load_npy(p, "vectors"), lambda p: load_npy(p, mmap=True),
                 read_inputs, read_embeddings):
        with pytest.raises(McrxError, match=r"forged\.npy.*declares shape") as caught:
            read(path)
        assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 5  # nothing of 4 TiB was touched


def test_max_rows_bounds_an_honest_file(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((10, 3), dtype=np.float32))
    assert load_npy(path, max_rows=10).shape == (10, 3)
    with pytest.raises(McrxError, match="rows.npy: 10 rows, more than the 4"):
        load_npy(path, max_rows=4)


def test_object_dtype_and_garbage_headers_are_refused(tmp_path):
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(McrxError, match="objects.npy: holds pickled Python objects"):
        npy_header(objects)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}\n")
    with pytest.raises(McrxError, match="garbage.npy: not a readable .npy"):
        load_npy(garbage)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(LEGACY_MODEL, target)
    return target


def test_nan_connector_weights_are_refused_at_load(model_dir):
    file = model_dir / CONNECTOR
    weights = load_file(file)
    name = sorted(k for k, v in weights.items() if v.dtype.kind == "f")[0]
    weights[name] = np.full_like(weights[name], np.nan)
    save_file(weights, file)
    with pytest.raises(McrxError, match=rf"toy--clap.safetensors: the weight '{name}' holds"):
        mcrx.load(model_dir)


def test_a_manifest_dim_that_contradicts_the_weights_is_refused(model_dir):
    manifest = json.loads((model_dir / MANIFEST).read_text())
    manifest["dim"] = manifest["dim"] + 1
    (model_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(McrxError, match=r"manifest.json: dim is \d+, but the base"):
        mcrx.load(model_dir)


def test_a_spec_width_that_contradicts_the_spaces_is_refused(model_dir):
    manifest = json.loads((model_dir / MANIFEST).read_text())
    spec = manifest["leaves"][0]["connector"]["spec"]
    spec["parent_dim"] = spec["parent_dim"] * 2
    (model_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(McrxError, match="connector.spec.parent_dim"):
        mcrx.load(model_dir)


def test_the_untampered_model_still_loads(model_dir):
    assert mcrx.load(model_dir).dim > 0
