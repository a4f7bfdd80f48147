"""Previews of collection items for the web page, rendered on the server.

- image: a thumbnail (PNG, at most 256 px); an ``.npy`` image (an H×W(×3) array, or a raw
  toy vector laid out as a near-square grid) is drawn as a picture;
- audio: an audio file the browser plays is served as it is; an ``.npy`` waveform becomes a
  16 kHz WAV (at most 10 s), and a short raw vector (the toy world's) is sonified, each
  number the loudness of one partial of a chord, so items of one class sound alike;
- pointcloud: a scatter plot of the points seen at an angle (matplotlib, PNG);
- text: the text itself (a ``.txt`` file's content, or the numbers of a raw toy vector).

Every function takes the *bytes* of an item, read by the caller through the file the
collection opened and checked at serving time (never a path: a path can be swapped for a
link between a check and a read). The work is bounded by the input: ``.npy`` headers are
checked against the bytes present before any array is made, images are refused above
:data:`MAX_PIXELS` before they are decoded (Pillow's own decompression-bomb limit is twice
its ``MAX_IMAGE_PIXELS``, ~179 MP: far too much for a thumbnail).
"""

from __future__ import annotations

import io
import tempfile
import wave
from pathlib import Path

import numpy as np

from mcrx.errors import McrxError

THUMBNAIL = 256
#: suffix → MIME type of the files a browser shows or plays as they are
BROWSER_IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                  ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
BROWSER_AUDIO = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
                 ".oga": "audio/ogg", ".opus": "audio/ogg", ".flac": "audio/flac",
                 ".m4a": "audio/mp4"}
TEXT_LIMIT = 600
MAX_POINTS = 4096
#: an image with more pixels than this gets no thumbnail (decoding it would take ~4 bytes a
#: pixel, 160 MiB here, for a 256-px picture)
MAX_PIXELS = 40_000_000
#: raw vectors up to this many numbers are sonified as a chord; longer arrays are waveforms
CHORD_NUMBERS = 128


class PreviewTooLarge(McrxError):
    """The item is too large to preview (the server answers 413)."""


def preview_kind(modality: str) -> str:
    """How the page shows an item: ``image`` (an <img>), ``audio`` or ``text``."""
    return {"audio": "audio", "text": "text"}.get(modality, "image")


def passthrough(name: str, modality: str) -> str | None:
    """The MIME type when the preview of ``name`` is the file itself (audio the browser
    plays): the server streams it instead of rendering it. Else None."""
    suffix = Path(name).suffix.lower()
    return BROWSER_AUDIO.get(suffix) if modality == "audio" else None


def npy_array(data: bytes, name: str = "array") -> np.ndarray:
    """The numeric array held by the ``.npy`` bytes ``data``, without copying and without
    unpickling: the header's shape × item size must be exactly the bytes that follow it
    (a header claiming 2⁴⁰ numbers in a small file is refused before anything is made).
    Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html"""
    from numpy.lib import format as npy

    buffer = io.BytesIO(data)
    try:
        version = npy.read_magic(buffer)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(buffer)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"format version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise McrxError(f"{name}: not a readable .npy array ({exc})") from None
    if dtype.hasobject or not np.issubdtype(dtype, np.number):
        raise McrxError(f"{name}: holds {dtype}, not numbers")
    count = 1
    for size in shape:
        count *= int(size)
    present = len(data) - buffer.tell()
    if count * dtype.itemsize != present:
        raise McrxError(f"{name}: the header claims shape {tuple(shape)} ({count:,} numbers) "
                        f"but {present:,} bytes follow it")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=buffer.tell())
    return array.reshape(shape, order="F" if fortran else "C").astype(np.float32)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_preview(data: bytes, name: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of a thumbnail of the image ``data`` (the file ``name``)."""
    from PIL import Image

    if Path(name).suffix.lower() == ".npy":
        return _array_picture(npy_array(data, name)), "image/png"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # read from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise PreviewTooLarge(f"{name}: {width}×{height} pixels is too large to "
                                      f"preview (at most {MAX_PIXELS // 1_000_000} MP)")
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # JPEG: decode at a reduced scale
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            return _png(image.convert("RGB")), "image/png"
    except McrxError:
        raise
    except Image.DecompressionBombError as exc:
        raise PreviewTooLarge(f"{name}: too large to preview ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        raise McrxError(f"{name}: cannot read the image ({type(exc).__name__}: {exc})") from None


def _array_picture(array: np.ndarray) -> bytes:
    """An array drawn as a picture: H×W×3 as colours, H×W or a 1-D vector (laid out as
    the most square grid its length allows) through the viridis colour map."""
    from matplotlib import colormaps
    from PIL import Image

    if array.size == 0:
        raise McrxError("the array is empty: nothing to draw")
    if array.ndim == 1:
        rows = max(r for r in range(1, int(np.sqrt(len(array))) + 1) if len(array) % r == 0)
        array = array.reshape(rows, -1)
    array = np.nan_to_num(array)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        low, high = float(array.min()), float(array.max())
        rgb = (array[..., :3] - low) / (high - low or 1.0)
    elif array.ndim == 2:
        low, high = float(array.min()), float(array.max())
        rgb = colormaps["viridis"]((array - low) / (high - low or 1.0))[..., :3]
    else:
        raise McrxError(f"cannot draw an array of shape {array.shape} as an image")
    picture = Image.fromarray((rgb * 255).astype(np.uint8))
    scale = max(1, THUMBNAIL // max(picture.size))  # small grids: big square pixels
    picture = picture.resize((picture.width * scale, picture.height * scale),
                             Image.Resampling.NEAREST)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    return _png(picture)


def audio_preview(data: bytes, name: str) -> tuple[bytes, str]:
    """(bytes, MIME type) the browser plays for the audio item ``data`` (the file ``name``)."""
    suffix = Path(name).suffix.lower()
    if suffix in BROWSER_AUDIO:
        return data, BROWSER_AUDIO[suffix]
    if suffix != ".npy":
        raise McrxError(f"{name}: no preview for {suffix} audio")
    array = np.nan_to_num(npy_array(data, name).reshape(-1))
    if array.size == 0:
        raise McrxError(f"{name}: the array is empty: nothing to play")
    rate = 16_000
    if len(array) > CHORD_NUMBERS:  # a waveform: play it (at most 10 s)
        signal = array[: 10 * rate].astype(np.float64)
    else:  # a short raw vector: one partial of a chord per number
        t = np.arange(int(0.8 * rate)) / rate
        frequencies = 220.0 * 2 ** (np.arange(len(array)) / 12)  # semitones from A3
        loudness = np.abs(array) / (np.abs(array).max() or 1.0)
        signal = (loudness[:, None] * np.sin(2 * np.pi * frequencies[:, None] * t)).sum(0)
        signal *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades: no clicks
    peak = float(np.abs(signal).max()) or 1.0
    samples = (signal / peak * 0.8 * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue(), "audio/wav"


def _points(data: bytes, name: str) -> np.ndarray:
    suffix = Path(name).suffix.lower()
    if suffix == ".npy":
        array = npy_array(data, name)
        if array.ndim == 1:  # a raw vector (the toy world's): consecutive triples as points
            array = array[: len(array) // 3 * 3].reshape(-1, 3)
        if array.ndim != 2 or array.shape[1] < 3 or len(array) == 0:
            raise McrxError(f"{name}: expected N×3 points, got shape {array.shape}")
        return array[:, :3]
    if suffix in (".xyz", ".txt"):
        try:
            return np.loadtxt(io.BytesIO(data), dtype=np.float32, ndmin=2)[:, :3]
        except (ValueError, IndexError) as exc:
            raise McrxError(f"{name}: cannot read points ({exc})") from None
    try:  # .ply, .obj, .off: the ULIP plugin's readers, when it is installed
        from mcrx_ulip.pointclouds import read_points
    except ImportError:
        raise McrxError(f"{name}: previews of {suffix} files need the ulip plugin") from None
    # the reader takes a path: a private copy of the bytes already checked, never the
    # collection's path
    with tempfile.TemporaryDirectory(prefix="mcrx-preview-") as folder:
        copy = Path(folder) / f"points{suffix}"
        copy.write_bytes(data)
        return read_points(copy)


def pointcloud_preview(data: bytes, name: str) -> tuple[bytes, str]:
    """(PNG bytes, MIME type) of the point cloud ``data`` drawn as a 3-D scatter plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure

    points = np.nan_to_num(_points(data, name))
    if len(points) > MAX_POINTS:  # a fixed subset: the same picture every time
        points = points[np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)]
    figure = Figure(figsize=(2.4, 2.4), dpi=100)
    axes = figure.add_subplot(projection="3d")
    size = 60 if len(points) < 100 else 3
    axes.scatter(points[:, 0], points[:, 1], points[:, 2], c=points[:, 2], cmap="viridis",
                 s=size, depthshade=True)
    axes.view_init(elev=20, azim=45)
    axes.set_box_aspect(None, zoom=1.35)  # the default leaves a wide empty margin
    axes.set_axis_off()
    figure.subplots_adjust(0, 0, 1, 1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue(), "image/png"


def text_preview(data: bytes, name: str, truncated: bool = False) -> str:
    """The text of a text item (a raw vector's numbers, for the toy world's ``.npy``);
    ``truncated``: ``data`` is only the start of the file."""
    if Path(name).suffix.lower() == ".npy":
        if truncated:
            return "raw text vector (too large to show)"
        array = npy_array(data, name).reshape(-1)
        numbers = ", ".join(f"{x:.2f}" for x in array[:12])
        more = ", …" if len(array) > 12 else ""
        return f"raw text vector ({len(array)} numbers): [{numbers}{more}]"
    text = data.decode("utf-8", errors="replace").strip()
    return text if len(text) <= TEXT_LIMIT and not truncated else text[:TEXT_LIMIT] + "…"


def render_preview(data: bytes, name: str, modality: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of the preview of an item whose file ``name`` holds ``data``."""
    if modality == "audio":
        return audio_preview(data, name)
    if modality == "pointcloud":
        return pointcloud_preview(data, name)
    if modality == "text":
        return text_preview(data, name).encode(), "text/plain; charset=utf-8"
    return image_preview(data, name)
