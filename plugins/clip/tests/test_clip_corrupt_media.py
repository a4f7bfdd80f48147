"""Corrupt and hostile images in the CLIP image reader: each refused with the file named,
bombs and extreme aspect ratios before a single pixel is decoded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcrx import McrxError
from mcrx.store.inputs import MAX_IMAGE_ASPECT, MAX_IMAGE_PIXELS
from mcrx_clip.space import load_image


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width``×``height`` but whose pixel data is one
    compressed row: what a decompression bomb looks like to a reader of headers."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def never_decode(monkeypatch):
    """Fail the test if any pixel data is decoded."""
    def refuse(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", refuse)


@pytest.mark.parametrize("size", [(12_000, 12_000), (100_000, 100_000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, never_decode, size):
    path = png_declaring(tmp_path / "bomb.png", *size)
    with pytest.raises(McrxError, match=str(path)) as caught:
        load_image(str(path))
    assert "too large" in str(caught.value) or f"{MAX_IMAGE_PIXELS:,}" in str(caught.value)


def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path):
    path = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 60_000), dtype=np.uint8)).save(path)
    assert path.stat().st_size < 2000  # the 312-byte kind of file of the issue
    with pytest.raises(McrxError, match=f"ratio above {MAX_IMAGE_ASPECT}:1") as caught:
        load_image(str(path))
    assert str(path) in str(caught.value)


def test_wide_but_reasonable_image_still_reads(tmp_path):
    path = tmp_path / "panorama.png"
    Image.fromarray(np.zeros((20, 20 * MAX_IMAGE_ASPECT), dtype=np.uint8)).save(path)
    assert load_image(str(path)).size == (20 * MAX_IMAGE_ASPECT, 20)


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_unreadable_and_truncated_images_name_the_file(tmp_path, content):
    path = tmp_path / "photo.png"
    if content is None:  # a real PNG cut in half
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
            path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(McrxError, match="photo.png"):
        load_image(str(path))
