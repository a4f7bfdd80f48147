"""Previews of collection items for the web page, rendered on the server.

- image: a thumbnail (PNG, at most 256 px); an ``.npy`` image (an H×W(×3) array, or a raw
  toy vector laid out as a near-square grid) is drawn as a picture;
- audio: an audio file the browser plays is served as it is; an ``.npy`` waveform (≥ 4000
  samples) becomes a 16 kHz WAV, and a short raw vector (the toy world's) is sonified, each
  number the loudness of one partial of a chord, so items of one class sound alike;
- pointcloud: a scatter plot of the points seen at an angle (matplotlib, PNG);
- text: the text itself (a ``.txt`` file's content, or the numbers of a raw toy vector).

Every function takes a path the caller has checked is an item of the collection.
"""

from __future__ import annotations

import io
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


def preview_kind(modality: str) -> str:
    """How the page shows an item: ``image`` (an <img>), ``audio`` or ``text``."""
    return {"audio": "audio", "text": "text"}.get(modality, "image")


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise McrxError(f"{path}: cannot read ({exc})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise McrxError(f"{path}: holds {array.dtype}, not numbers")
    return np.asarray(array, dtype=np.float32)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_preview(path: Path) -> tuple[bytes, str]:
    """(bytes, MIME type) of a thumbnail of the image at ``path``."""
    from PIL import Image

    if path.suffix.lower() == ".npy":
        return _array_picture(_load_npy(path)), "image/png"
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            return _png(image.convert("RGB")), "image/png"
    except OSError as exc:
        raise McrxError(f"{path}: cannot read the image ({exc})") from None


def _array_picture(array: np.ndarray) -> bytes:
    """An array drawn as a picture: H×W×3 as colours, H×W or a 1-D vector (laid out as
    the most square grid its length allows) through the viridis colour map."""
    from matplotlib import colormaps
    from PIL import Image

    if array.ndim == 1:
        rows = max(r for r in range(1, int(np.sqrt(len(array))) + 1) if len(array) % r == 0)
        array = array.reshape(rows, -1)
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
    return _png(picture.resize((picture.width * scale, picture.height * scale),
                               Image.Resampling.NEAREST))


def audio_preview(path: Path) -> tuple[bytes, str]:
    """(bytes, MIME type) the browser plays for the audio item at ``path``."""
    suffix = path.suffix.lower()
    if suffix in BROWSER_AUDIO:
        return path.read_bytes(), BROWSER_AUDIO[suffix]
    if suffix != ".npy":
        raise McrxError(f"{path}: no preview for {suffix} audio")
    array = _load_npy(path).reshape(-1)
    rate = 16_000
    if len(array) >= 4000:  # a waveform: play it (at most 10 s)
        signal = array[: 10 * rate]
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


def _points(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
        if array.ndim == 1:  # a raw vector (the toy world's): consecutive triples as points
            array = array[: len(array) // 3 * 3].reshape(-1, 3)
        if array.ndim != 2 or array.shape[1] < 3:
            raise McrxError(f"{path}: expected N×3 points, got shape {array.shape}")
        return array[:, :3]
    if suffix in (".xyz", ".txt"):
        try:
            return np.loadtxt(path, dtype=np.float32, ndmin=2)[:, :3]
        except ValueError as exc:
            raise McrxError(f"{path}: cannot read points ({exc})") from None
    try:  # .ply, .obj, .off: the ULIP plugin's readers, when it is installed
        from mcrx_ulip.pointclouds import read_points
    except ImportError:
        raise McrxError(f"{path}: previews of {suffix} files need the ulip plugin") from None
    return read_points(path)


def pointcloud_preview(path: Path) -> tuple[bytes, str]:
    """(PNG bytes, MIME type) of the point cloud at ``path`` drawn as a 3-D scatter plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure

    points = _points(path)
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


def text_preview(path: Path) -> str:
    """The text of a text item (a raw vector's numbers, for the toy world's ``.npy``)."""
    if path.suffix.lower() == ".npy":
        array = _load_npy(path).reshape(-1)
        numbers = ", ".join(f"{x:.2f}" for x in array[:12])
        more = ", …" if len(array) > 12 else ""
        return f"raw text vector ({len(array)} numbers): [{numbers}{more}]"
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise McrxError(f"{path}: cannot read ({exc})") from None
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"


def render_preview(path: Path, modality: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of the preview of an item."""
    if modality == "audio":
        return audio_preview(path)
    if modality == "pointcloud":
        return pointcloud_preview(path)
    if modality == "text":
        return text_preview(path).encode(), "text/plain; charset=utf-8"
    return image_preview(path)
