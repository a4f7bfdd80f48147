"""Corrupt and hostile inputs in the ULIP readers (meshes, point clouds, images): each
refused with an McrxError naming the file, never a numpy traceback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcrx import McrxError
from mcrx_ulip.pointclouds import prepare_cloud
from mcrx_ulip.space import prepare_image

TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


@pytest.mark.parametrize("text, expected", [
    ("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "vertex 2 has NaN"),  # was "probabilities
    ("v 0 0 0\nv inf 0 0\nv 0 1 0\nf 1 2 3\n", "vertex 2 has NaN"),  # contain NaN"
    ("v 0 0 0\nv 1 0 0\nf 1 2 9\n", "faces that index missing vertices"),
    ("v 0 0 zero\nf 1 1 1\n", "malformed OBJ"),
    ("# only a comment\n", "no vertices"),
])
def test_bad_obj_meshes_name_the_file(tmp_path, text, expected):
    path = tmp_path / "mesh.obj"
    path.write_text(text)
    with pytest.raises(McrxError, match=expected) as caught:
        prepare_cloud(str(path), npoints=64)
    assert str(path) in str(caught.value)


def test_a_good_obj_mesh_still_samples(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text(TRIANGLE)
    cloud = prepare_cloud(str(path), npoints=64)
    assert cloud.shape == (64, 3) and np.isfinite(cloud).all()


@pytest.mark.parametrize("name, content", [
    ("cloud.off", "OFF\n3 1 0\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n"),
    ("cloud.off", "OFF\n9 9 0\n0 0 0\n"),
    ("cloud.ply", "ply\nformat ascii 1.0\nelement vertex 2\nend_header\n0 0\n"),
    ("cloud.npy", None),
])
def test_other_bad_clouds_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array([[0.0, np.nan, 1.0]] * 4))
    else:
        path.write_text(content)
    with pytest.raises(McrxError, match=name):
        prepare_cloud(str(path), npoints=64)


def test_image_bombs_and_strips_are_refused(tmp_path, monkeypatch):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 60_000), dtype=np.uint8)).save(strip)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only mcrx's own limit stands
    big = tmp_path / "big.png"
    Image.new("L", (10_000, 9_000)).save(big)  # 90M pixels, above the limit
    for path, expected in ((strip, "ratio above"), (big, "exceed the limit")):
        with pytest.raises(McrxError, match=expected) as caught:
            prepare_image(str(path))
        assert str(path) in str(caught.value)


def test_unreadable_image_names_the_file(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(McrxError, match="photo.jpg"):
        prepare_image(str(path))
