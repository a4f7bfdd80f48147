"""Reading raw inputs and embedding files named in recipes.

Every file here comes from the user: each failure is an :class:`McrxError` that names the
file and the reason (empty, pickled Python objects, not UTF-8, wrong shape, ...). Pickles
are never loaded (``allow_pickle=False``): an object array could run code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.errors import McrxError


def npy_header(path: Path, what: str = "array", max_rows: int | None = None
               ) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of a ``.npy`` file from its header alone
    (``np.lib.format.read_magic`` and ``read_array_header_1_0/2_0``, the format of
    https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html), refusing
    before anything is allocated: object dtypes (pickles), a shape whose bytes exceed
    what the file holds after its header, and more than ``max_rows`` rows."""
    from mcrx.search.files import display_path  # a name may hold newlines, ANSI escapes

    path = Path(path)
    shown = display_path(path)
    if not path.is_file():
        raise McrxError(f"{shown}: expected a .npy file, found a folder" if path.is_dir()
                        else f"{what} file not found: {shown}")
    fmt = np.lib.format
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise McrxError(f"{shown}: the file is empty (expected a .npy {what})")
            if handle.read(1) == b"\x80":  # a pickle's PROTO opcode (np.load's own test)
                raise McrxError(f"{shown}: holds pickled Python objects, not a .npy {what}; "
                                "mcrx never unpickles files. Save a numeric array with "
                                "np.save(path, np.asarray(x, dtype=np.float32))")
            handle.seek(0)
            version = fmt.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(handle)
            else:
                raise McrxError(f"{shown}: .npy format version {version[0]}.{version[1]} is "
                                f"not read here (1.0 and 2.0 are); save the {what} with "
                                "np.save")
            data_bytes = size - handle.tell()
    except McrxError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise McrxError(f"{shown}: not a readable .npy {what} ({exc})") from None
    if dtype.hasobject:
        raise McrxError(f"{shown}: holds pickled Python objects (an object array); mcrx "
                        f"never unpickles files. Save a numeric {what} instead "
                        "(np.save(path, np.asarray(x, dtype=np.float32)))")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise McrxError(f"{shown}: the .npy header declares the shape {shape}")
    count = 1
    for n in shape:
        count *= n  # Python integers: no overflow for a forged 2^40 × 2^40
    needed = count * dtype.itemsize
    if needed > data_bytes:
        raise McrxError(f"{shown}: the .npy header declares shape {tuple(shape)} of {dtype} "
                        f"({needed:,} bytes) but the file holds {data_bytes:,} bytes after "
                        "its header (truncated or forged)")
    if max_rows is not None and shape and shape[0] > max_rows:
        raise McrxError(f"{shown}: {shape[0]:,} rows, more than the {max_rows:,} a {what} "
                        "may hold")
    return tuple(shape), dtype, bool(fortran)


def load_npy(path: Path, what: str = "array", mmap: bool = False,
             max_rows: int | None = None) -> np.ndarray:
    """A ``.npy`` file's array without unpickling anything; McrxError naming the file.
    The header is checked first (:func:`npy_header`): nothing is allocated for a shape the
    file cannot hold, nor for more than ``max_rows`` rows."""
    from mcrx.search.files import display_path

    path = Path(path)
    npy_header(path, what, max_rows)
    shown = display_path(path)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if any(word in str(exc) for word in ("allow_pickle", "pickled", "Python objects")):
            raise McrxError(f"{shown}: holds pickled Python objects (an object array); mcrx "
                            f"never unpickles files. Save a numeric {what} instead "
                            "(np.save(path, np.asarray(x, dtype=np.float32)))") from None
        raise McrxError(f"{shown}: not a readable .npy {what} ({exc})") from None
    except (OSError, EOFError, MemoryError) as exc:
        raise McrxError(f"{shown}: not a readable .npy {what} ({exc})") from None


def read_text_lines(path: Path, what: str = "lines") -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise McrxError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save "
                        "it as UTF-8") from None
    except OSError as exc:
        raise McrxError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise McrxError(f"{path}: the file holds no {what} (it is empty or blank)")
    return lines


def read_inputs(path: Path) -> Sequence[Any]:
    """Items at ``path``: a folder gives its files (recursively, sorted, hidden files
    skipped), a ``.txt`` file its non-empty lines, a ``.npy`` file its rows, any other file
    is itself the single item."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise McrxError(f"{path}: the folder holds no files")
        return [str(p) for p in files]
    if not path.exists():
        raise McrxError(f"not found: {path}")
    if path.stat().st_size == 0:
        raise McrxError(f"{path}: the file is empty")
    if path.suffix == ".txt":
        return read_text_lines(path, "inputs")
    if path.suffix == ".npy":
        array = load_npy(path, "inputs array")
        if array.ndim == 0 or len(array) == 0:
            raise McrxError(f"{path}: the array holds no items (shape {array.shape})")
        return array
    return [str(path)]


def read_embeddings(path: Path, dim: int | None = None) -> np.ndarray:
    """An N×d float array from ``.npy`` or ``.safetensors`` (a single tensor, or the one
    named ``embeddings``); checks its shape against ``dim`` and that it holds numbers."""
    path = Path(path)
    if not path.is_file():
        raise McrxError(f"embeddings file not found: {path}")
    if path.stat().st_size == 0:
        raise McrxError(f"{path}: the embeddings file is empty")
    if path.suffix == ".npy":
        array = load_npy(path, "embeddings array", mmap=True)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors' own error type, header too large, ...
            raise McrxError(f"{path}: not a readable safetensors file ({exc})") from None
        if "embeddings" in tensors:
            array = tensors["embeddings"]
        elif len(tensors) == 1:
            array = next(iter(tensors.values()))
        else:
            raise McrxError(f"{path}: several tensors {sorted(tensors)[:6]} and none is named "
                            "'embeddings'")
    else:
        raise McrxError(f"{path}: expected a .npy or .safetensors file")
    if array.ndim != 2:
        raise McrxError(f"{path}: expected an N×d array, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise McrxError(f"{path}: the embeddings array holds no rows")
    if dim is not None and array.shape[1] != dim:
        raise McrxError(f"{path}: rows are {array.shape[1]}-d but the space is {dim}-d")
    if not np.issubdtype(array.dtype, np.floating):
        raise McrxError(f"{path}: expected floating-point values, got {array.dtype}")
    return np.asarray(array, dtype=np.float32)


def read_labels(path: Path) -> np.ndarray:
    """Labels as written, one per item: a ``.npy`` array's values, or a ``.txt`` file's
    non-empty stripped lines as strings. Nothing is coded here: every source of an
    evaluation set is coded together (:mod:`mcrx.metrics.vocabulary`), so that a label
    means the same item or class in every file."""
    path = Path(path)
    if path.is_dir():
        raise McrxError(f"{path}: expected a labels file (.npy or .txt), found a folder")
    if not path.is_file():
        raise McrxError(f"labels file not found: {path}")
    if path.suffix == ".npy":
        labels = load_npy(path, "labels array")
    else:
        labels = np.asarray(read_text_lines(path, "labels"), dtype=str)
    return np.asarray(labels).reshape(-1)


# ---------------------------------------------------------------------------------------
# Images: refuse decompression bombs and extreme shapes BEFORE decoding
# ---------------------------------------------------------------------------------------
#: PIL's own default bomb threshold (its ``Image.MAX_IMAGE_PIXELS``): a 9459² RGB image,
#: 256 MiB decoded. Larger photos exist (gigapixel scans) but are not what a 224-px encoder
#: should decode whole; PIL itself only warns up to twice this, then refuses.
MAX_IMAGE_PIXELS = 89_478_485
#: Encoders resize the shorter side to 224 and keep the ratio before cropping: a 1×60000
#: PNG of 312 bytes becomes 224 × 13.4M pixels (about 9 GB). 100:1 bounds that at 224×22400
#: (15 MB), far beyond any panorama (about 10:1).
MAX_IMAGE_ASPECT = 100


def open_image(path: str | Path) -> Any:
    """The PIL image of the file ``path``, opened lazily (header read, pixels not yet
    decoded) after refusing, by the size its header declares, images above
    :data:`MAX_IMAGE_PIXELS` or with sides in a ratio above :data:`MAX_IMAGE_ASPECT`.
    Use it as ``with open_image(path) as image: ...``."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our own limit below replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise McrxError(f"{path}: refused, the image is too large to decode ({exc})") from None
    except FileNotFoundError:
        raise McrxError(f"{path}: cannot read the image (file not found)") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise McrxError(f"{path}: cannot read the image ({exc})") from None
    width, height = image.size
    problem = None
    if width < 1 or height < 1:
        problem = f"it declares {width}×{height} pixels"
    elif width * height > MAX_IMAGE_PIXELS:
        problem = (f"{width}×{height} = {width * height:,} pixels exceed the limit of "
                   f"{MAX_IMAGE_PIXELS:,} (a decompression bomb, or far larger than an "
                   "encoder needs: downscale it first)")
    elif max(width, height) > MAX_IMAGE_ASPECT * min(width, height):
        problem = (f"its sides {width}×{height} are in a ratio above {MAX_IMAGE_ASPECT}:1; "
                   "resizing it for the encoder would take "
                   f"{224 * 224 * max(width, height) // min(width, height) * 3:,} bytes")
    if problem:
        image.close()
        raise McrxError(f"{path}: refused before decoding: {problem}")
    return image
