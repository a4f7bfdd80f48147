"""Reading the weight files users hand to mcrx, as released, without ever running their code.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only. Released
checkpoints are often whole training states, though, and those hold a few other objects:

- LAION-AI/CLAP ``630k-fusion-best.pt`` and siblings are ``{"epoch", "name", "state_dict",
  "optimizer"}`` as saved by ``src/laion_clap/training/main.py`` (LAION-AI/CLAP, commit
  1e1e659f23871dc147c7ca2f8181c37c0861bf04, the ``checkpoint_dict`` written each epoch). The
  optimizer's learning rate was last set by ``training/scheduler.py``'s ``cosine_lr``, which
  computes it with ``np.cos``: a ``numpy.float64``, pickled as
  ``numpy.core.multiarray.scalar(numpy.dtype('f8'), <8 bytes>)``.
- salesforce/ULIP ``pointbert_ULIP-2.pt`` is ``{epoch, state_dict, optimizer, scaler,
  best_acc1, args}`` as saved by ``main.py`` (salesforce/ULIP, commit
  a559aa8a5a5866616e3b38e1196b34488e3e8d5f): ``args`` is the ``argparse.Namespace`` of the
  training command line, and the learning rate comes from ``utils/utils.py``'s
  ``cosine_scheduler``, a numpy array, so it is a ``numpy.float64`` too.

:data:`ALLOWLIST` names exactly those extra types, each of which only builds a value and
cannot run code; :func:`load_weights` reads every file with it, so these releases load as
they are, with no trust flag. Anything else in a pickle (``os.system``, ``builtins.eval``,
any class of any library) is refused with a message naming the file and the global, and
never run. ``trust=True`` (a plugin's ``trust_checkpoint: true``) is the escape hatch for a
file the user vouches for: it is then unpickled in full, which can run its code.

torch's own refusal advises ``weights_only=False``: for a file from the internet, that means
letting it run arbitrary code. mcrx never passes that advice on.

Params models mark the fields that name weight files with :func:`weights_file` so that
``mcrx validate`` opens them (:func:`check_weights_file`) before any work starts.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import pickletools
import struct
import threading
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mcrx.errors import McrxError

log = logging.getLogger("mcrx.weights")

#: suffixes of the weight files mcrx reads (torch's zip and legacy formats, safetensors,
#: numpy archives)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")
#: what a folder of weights (transformers' or open_clip's layout) holds beside them
FOLDER_CONFIGS = ("config.json", "open_clip_config.json")
#: what the refusal tells the user to set when the file is theirs to trust
TRUST_HINT = "set `trust_checkpoint: true` in the params of the space that reads it"

ADVICE = ("mcrx reads weight files with weights_only=True and never unpickles other Python "
          "objects (that could run code from the file). Re-save the weights as a plain "
          "state dict (torch.save(model.state_dict(), path)) or as .safetensors")

_NUMERIC_DTYPES = (
    "BoolDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType", "Int32DType",
    "UInt32DType", "Int64DType", "UInt64DType", "ByteDType", "UByteDType", "ShortDType",
    "UShortDType", "IntDType", "UIntDType", "LongDType", "ULongDType", "LongLongDType",
    "ULongLongDType", "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
    "Complex64DType", "Complex128DType", "CLongDoubleDType",
)

#: The globals mcrx lets a weights file's pickle name, beyond torch's own weights-only set
#: (tensors, storages, dtypes, ``collections.OrderedDict``, ``builtins.set``, ...), and why
#: each one is harmless: none runs code, each only builds a value from plain data.
ALLOWLIST: tuple[tuple[str, str], ...] = (
    ("numpy.core.multiarray.scalar",
     "builds one numpy scalar (an optimizer's numpy.float64 learning rate) from a dtype and "
     "its raw bytes; the name numpy < 2 pickles"),
    ("numpy._core.multiarray.scalar", "the same function under numpy >= 2's name"),
    ("numpy.dtype", "a numpy data type, built from a type code such as 'f8'"),
    *((f"numpy.dtypes.{name}",
       "the class of a numeric numpy dtype: restoring a pickled dtype's byte order (pickle's "
       "BUILD) checks it; objects of it are only ever numeric type descriptions")
      for name in _NUMERIC_DTYPES),
    ("argparse.Namespace",
     "a training script's parsed command line (ULIP's `args`): an empty object whose "
     "attributes are set from plain values, with no code of its own"),
)

_LOAD_LOCK = threading.RLock()  # torch's safe_globals context is process-wide, not per thread


def _numpy_scalar() -> Any:
    with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 1.26
            from numpy.core.multiarray import scalar
    return scalar


@lru_cache(maxsize=1)
def safe_globals() -> tuple[tuple[Any, str], ...]:
    """:data:`ALLOWLIST` as ``(object, pickled name)`` pairs, the form
    ``torch.serialization.safe_globals`` takes (the name form matters: numpy's scalar
    function is pickled under two module names). Names this numpy lacks are left out."""
    import argparse

    import numpy as np

    resolved: list[tuple[Any, str]] = []
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    for name, _ in ALLOWLIST:
        if name.endswith(".multiarray.scalar"):
            obj = _numpy_scalar()
        elif name == "numpy.dtype":
            obj = np.dtype
        elif name == "argparse.Namespace":
            obj = argparse.Namespace
        else:
            obj = getattr(dtypes, name.rpartition(".")[2], None)
            if obj is None:
                continue
            name = f"{obj.__module__}.{obj.__qualname__}"  # aliases resolve to one class
        resolved.append((obj, name))
    return tuple(dict.fromkeys(resolved))


#: torch's weights-only defaults outside the ``torch.`` namespace (the fallback of
#: :func:`_torch_allowed_names`)
_TORCH_PLAIN = frozenset({"collections.OrderedDict", "collections.Counter", "builtins.set",
                          "builtins.bytearray", "builtins.complex", "_codecs.encode"})


@lru_cache(maxsize=1)
def _torch_allowed_names() -> frozenset[str]:
    """The globals torch's weights-only unpickler allows by default (read from torch, whose
    helper is private: should it move, the plain ones above and every ``torch.`` name).
    Used to name what a file holds; torch's own unpickler still decides what loads."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return frozenset(_get_allowed_globals())
    except Exception:
        return _TORCH_PLAIN


def _torch_allows(name: str) -> bool:
    names = _torch_allowed_names()
    return name in names or (names is _TORCH_PLAIN and name.startswith("torch."))


def is_allowed(name: str, allowlist: bool = True) -> bool:
    """Whether a weights file may name the global ``name`` (``module.qualname``): torch's
    default set, and :data:`ALLOWLIST` unless ``allowlist`` is false."""
    return _torch_allows(name) or (allowlist and name in {n for n, _ in ALLOWLIST})


# ---------------------------------------------------------------------------------------
# Looking into a file without running it
# ---------------------------------------------------------------------------------------
def is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive (OpenAI's CLIP ``ViT-B-32.pt``): a zip file with compiled code
    (``code/``, ``constants.pkl``), unlike ``torch.save`` files, which hold only data."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n
                       for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
ZIP_SIGNATURE = b"PK\x03\x04"


def _damaged_zip(path: Path) -> McrxError | None:
    """The error for a file that starts as a zip archive (torch's format) but does not open
    as one: truncated by a download, or damaged."""
    with path.open("rb") as stream:
        starts_as_zip = stream.read(4) == ZIP_SIGNATURE
    if not starts_as_zip or zipfile.is_zipfile(path):
        return None
    return McrxError(f"{path}: not a readable PyTorch weights file (a damaged or truncated "
                     "zip archive, torch's format: its central directory is missing); download "
                     "the file again")


def _globals_of_one_pickle(stream: Any) -> Iterator[str]:
    """The ``module.name`` of every global one pickle in ``stream`` refers to, read from its
    opcodes (nothing is unpickled). ``STACK_GLOBAL`` (protocol 4+) names come from the
    strings pushed before it."""
    strings: list[str] = []
    memo: dict[int, str] = {}
    last_string: str | None = None
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            # protocol 2 writes Python 2's names for builtins (``__builtin__ eval``)
            yield f"{_PY2_MODULES.get(module, module)}.{attr}"
        elif name == "STACK_GLOBAL":
            yield ".".join(strings[-2:]) if len(strings) >= 2 else "<unknown STACK_GLOBAL>"
        if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
            last_string = str(arg)
            strings.append(last_string)
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") and last_string is not None:
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = last_string
        elif name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
            strings.append(memo[int(arg)])
        elif name != "MEMOIZE":
            last_string = None


def _data_pickle(archive: zipfile.ZipFile) -> str:
    names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if not names:
        raise McrxError("a zip file without data.pkl: not a torch.save file")
    return min(names, key=len)


def pickled_globals(path: str | Path) -> list[str]:
    """Every global the object pickle of a torch weights file names (zip format: its
    ``data.pkl``; legacy format: the pickle after torch's header), without unpickling."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data = archive.read(_data_pickle(archive))
        return list(dict.fromkeys(_globals_of_one_pickle(io.BytesIO(data))))
    with path.open("rb") as stream:
        for _ in range(3):  # magic number, protocol version, system info
            list(_globals_of_one_pickle(stream))
        return list(dict.fromkeys(_globals_of_one_pickle(stream)))


def _refused(path: Path, allowlist: bool = True, extra: Iterable[Any] = ()) -> list[str]:
    """The globals of ``path`` that neither torch nor mcrx (nor ``extra``, objects or
    ``(object, name)`` pairs) allows; [] when the file cannot be read so."""
    try:
        found = pickled_globals(path)
    except Exception:
        return []
    names = {e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}"
             for e in extra}
    return [name for name in found if not is_allowed(name, allowlist) and name not in names]


def _global_in_torch_message(text: str) -> str | None:
    for marker in ("Unsupported global: GLOBAL ", "unsupported GLOBAL "):
        if marker in text:
            return text[text.index(marker) + len(marker):].split()[0]
    return None


def _refusal(path: Path, names: list[str], trust_hint: str | None,
             allowlist: bool = True) -> McrxError:
    trust = (f"If you trust this file (it came from where you think), {trust_hint}; "
             "otherwise re-save" if trust_hint else "Re-save")
    reads = ("tensors and plain containers" if not allowlist else
             "tensors, plain containers, numpy scalars and dtypes and argparse.Namespace")
    return McrxError(
        f"{path}: holds Python objects other than tensors ({', '.join(names)}); refused to "
        "unpickle them, as that could run code from the file (mcrx reads weights with "
        f"weights_only=True: {reads} only). {trust} the weights as a plain state dict "
        "(torch.save(model.state_dict(), path)) or as .safetensors")


def _is_refusal(exc: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused an object (rather than bytes that are
    no pickle at all)."""
    text = str(exc)
    return (_global_in_torch_message(text) is not None or "unrecognized function" in text
            or "Can only" in text)


def unpickling_refused(path: str | Path, exc: BaseException, trust_hint: str | None = None,
                       allowlist: bool = True, allowed: Iterable[Any] = ()) -> McrxError:
    """mcrx's message for a file torch refused under ``weights_only=True``: the file and
    every global it holds that is not allowed, never torch's ``weights_only=False`` advice."""
    path = Path(path)
    text = str(exc)
    found = _global_in_torch_message(text)
    if not _is_refusal(exc):
        # not a refusal: the bytes are not a pickle torch can read
        after = text.split("Unpickler error:", 1)[-1] if "Unpickler error:" in text else ""
        cause = next((line.strip() for line in after.splitlines() if line.strip()),
                     "not a pickle torch can read")
        return McrxError(f"{path}: not a readable PyTorch weights file ({cause})")
    names = _refused(path, allowlist, allowed) or [found or text.strip().splitlines()[0]]
    return _refusal(path, names, trust_hint, allowlist)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _load_torch(path: Path, mmap: bool, extra: list[Any], weights_only: bool,
                allowlist: bool = True) -> Any:
    import torch

    with _LOAD_LOCK:
        if not weights_only:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        with torch.serialization.safe_globals([*(safe_globals() if allowlist else ()), *extra]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_weights(path: str | Path, *, mmap: bool = False, allowed: Iterable[Any] = (),
                 trust: bool = False, trust_hint: str | None = None,
                 allowlist: bool = True) -> Any:
    """The content of a weights file, on the CPU; every failure an McrxError naming the file.

    torch files (zip or legacy format) are unpickled with ``weights_only=True`` and
    :data:`ALLOWLIST` (plus ``allowed``: extra classes, or ``(object, "pickled.name")``
    pairs, one caller knows a release pickles); ``.safetensors`` and ``.npz`` files give a
    dict of tensors. ``mmap`` maps a zip-format file's tensors instead of reading them (a
    legacy file is read). A file holding other globals is refused, naming them and
    ``trust_hint`` (what to set to trust the file, e.g. :data:`TRUST_HINT` where the params
    offer ``trust_checkpoint``; None: no such option), unless ``trust``: then it is unpickled
    in full (which can run code from it) with a warning. ``allowlist=False`` reads plain
    state dicts only (torch's own set: a file that is no training state has no reason to
    hold anything else). A TorchScript archive is code, not weights, and is refused here:
    the plugin that knows the format reads it."""
    path = Path(path)
    if not path.is_file():
        raise McrxError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise McrxError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix == ".npz":
        return _load_npz(path)
    damaged = _damaged_zip(path)
    if damaged is not None:
        raise damaged
    if is_torchscript(path):
        raise McrxError(f"{path}: a TorchScript archive (compiled code), not a weights file; "
                        "only a plugin that knows the release (e.g. clip for OpenAI's "
                        "ViT-B-32.pt) reads it")
    mmap = mmap and zipfile.is_zipfile(path)  # torch maps zip-format files only
    allowed = list(allowed)
    try:
        return _load_torch(path, mmap, allowed, weights_only=True, allowlist=allowlist)
    except pickle.UnpicklingError as exc:
        if not trust or not _is_refusal(exc):
            raise unpickling_refused(path, exc, trust_hint, allowlist, allowed) from None
        log.warning("%s holds Python objects other than tensors (%s); unpickling it in full "
                    "as trusted (this can run code from the file)", path,
                    ", ".join(_refused(path, allowlist, allowed)) or "see torch's message")
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        raise McrxError(f"{path}: not a readable PyTorch weights file "
                        f"({_first_line(exc)})") from None
    try:
        return _load_torch(path, mmap, [], weights_only=False)
    except Exception as exc:
        raise McrxError(f"{path}: not a readable PyTorch weights file, even trusted "
                        f"({type(exc).__name__}: {_first_line(exc)})") from None


def _load_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise McrxError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") \
            from None


def _load_npz(path: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: torch.from_numpy(np.array(archive[name])) for name in archive.files}
    except Exception as exc:  # object arrays (pickles), a broken zip, ...
        raise McrxError(f"{path}: not a readable .npz of numeric arrays "
                        f"({_first_line(exc)})") from None


# ---------------------------------------------------------------------------------------
# Checking (mcrx validate): the structure, never the tensor data
# ---------------------------------------------------------------------------------------
def _check_safetensors(path: Path) -> str:
    """The header only: its length, its JSON, and offsets that fit the file."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise McrxError(f"{path}: not a .safetensors file (shorter than its header length)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, 100_000_000):
            raise McrxError(f"{path}: not a .safetensors file (a header of {length:,} bytes in "
                            f"a file of {size:,}): truncated or another format")
        try:
            header = json.loads(stream.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise McrxError(f"{path}: not a .safetensors file (its header is not JSON: "
                            f"{exc})") from None
    if not isinstance(header, dict):
        raise McrxError(f"{path}: not a .safetensors file (its header is not a JSON object)")
    data = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            raise McrxError(f"{path}: tensor {name!r} lies outside the file's {data:,} bytes "
                            "of data (truncated?)")
    return f"safetensors, {len(tensors)} tensors"


def _check_legacy(path: Path, trust: bool, trust_hint: str | None) -> str:
    """torch's pre-1.6 format: four pickles then raw storages. Reads the pickles' opcodes
    only (nothing is unpickled, no tensor is read)."""
    import torch

    with path.open("rb") as stream:
        try:
            magic = [arg for op, arg, _ in pickletools.genops(stream)
                     if op.name != "PROTO" and isinstance(arg, int)]
            if magic[:1] != [torch.serialization.MAGIC_NUMBER]:
                raise ValueError("no torch magic number")
            for _ in range(2):  # protocol version, system info
                list(_globals_of_one_pickle(stream))
            found = list(dict.fromkeys(_globals_of_one_pickle(stream)))
            list(_globals_of_one_pickle(stream))  # the storage keys
        except Exception as exc:  # not a pickle, another pickle, truncated
            raise McrxError(f"{path}: not a readable PyTorch weights file (neither torch's zip "
                            f"format nor its legacy pickles: {_first_line(exc)})") from None
    refused = [name for name in found if not is_allowed(name)]
    if refused and not trust:
        raise _refusal(path, refused, trust_hint)
    return "a PyTorch file in the legacy format"


def _check_torch_zip(path: Path, trust: bool, trust_hint: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(_data_pickle(archive))
        list(_globals_of_one_pickle(io.BytesIO(data)))
    except McrxError as exc:
        raise McrxError(f"{path}: {exc}") from None
    except Exception as exc:
        raise McrxError(f"{path}: not a readable PyTorch weights file "
                        f"({_first_line(exc)})") from None
    if trust:  # opcodes only: unpickling a trusted file can still run its code
        return "a PyTorch zip file (trusted)"
    # torch's loader, mapping tensors without reading them: every storage record must exist
    load_weights(path, mmap=True, trust_hint=trust_hint)
    return "a PyTorch zip file"


def check_weights_file(path: str | Path, *, trust: bool = False, folder: bool = False,
                       torchscript: bool = False, trust_hint: str | None = None) -> str:
    """Open a weights file's structure without reading its tensor data; a short description
    of what it is, or McrxError with what is wrong.

    - zip-format ``.pt/.pth/.bin/.ckpt``: ``torch.load(mmap=True, weights_only=True)`` with
      :data:`ALLOWLIST` (tensors are mapped, not read); with ``trust``, its pickle's opcodes
    - a TorchScript archive: accepted as such when ``torchscript`` (nothing is unpickled)
    - torch's legacy format: its pickles' opcodes and globals
    - ``.safetensors``: the header; ``.npz``: its member list
    - a folder (when ``folder``): a config (``config.json`` or ``open_clip_config.json``)
      and weights files, each checked as above"""
    path = Path(path).expanduser()
    if path.is_dir():
        if not folder:
            raise McrxError(f"{path} is a folder; expected a weights file")
        return _check_folder(path, trust, torchscript, trust_hint)
    if not path.is_file():
        raise McrxError(f"weights file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise McrxError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _check_safetensors(path)
    if suffix == ".npz":
        _load_npz_names(path)
        return "a numpy .npz archive"
    damaged = _damaged_zip(path)
    if damaged is not None:
        raise damaged
    if zipfile.is_zipfile(path):
        if is_torchscript(path):
            if not torchscript:
                raise McrxError(f"{path}: a TorchScript archive (compiled code), not the "
                                "weights file this field takes")
            return "a TorchScript archive"
        return _check_torch_zip(path, trust, trust_hint)
    return _check_legacy(path, trust, trust_hint)


def _load_npz_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise McrxError(f"{path}: not a readable .npz archive ({exc})") from None


def _check_folder(path: Path, trust: bool, torchscript: bool, trust_hint: str | None) -> str:
    configs = [name for name in FOLDER_CONFIGS if (path / name).is_file()]
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    if not configs or not files:
        lacks = " and ".join(what for what, ok in (
            (f"a config ({' or '.join(FOLDER_CONFIGS)})", configs),
            (f"a weights file ({', '.join(WEIGHT_SUFFIXES)})", files)) if not ok)
        raise McrxError(f"{path}: a weights folder holds a config and its weights; this one "
                        f"has no {lacks}")
    for file in files:
        check_weights_file(file, trust=trust, torchscript=torchscript, trust_hint=trust_hint)
    return f"a folder with {configs[0]} and {len(files)} weights file(s)"


# ---------------------------------------------------------------------------------------
# Marking params fields that name weight files
# ---------------------------------------------------------------------------------------
#: the key :func:`weights_file` puts in a field's ``json_schema_extra`` (and so in the JSON
#: schema of the params, where tools can see it)
WEIGHTS_MARK = "x-mcrx-weights"


@dataclass(frozen=True)
class WeightsField:
    """How ``mcrx validate`` checks one params field (see :func:`weights_file`)."""

    name: str
    trust: str | None = None
    folder: bool = False
    torchscript: bool = False


def weights_file(*, trust: str | None = None, folder: bool = False,
                 torchscript: bool = False) -> dict[str, Any]:
    """``json_schema_extra`` for a params field that names a weights file, so that
    ``mcrx validate`` opens it (:func:`check_weights_file`)::

        checkpoint: Path | None = Field(None, json_schema_extra=weights_file(
            trust="trust_checkpoint"))

    ``trust``: the name of the model's bool field that lets the file hold other Python
    objects; ``folder``: a folder of weights (config + weights files) is accepted too;
    ``torchscript``: a TorchScript archive is accepted as such."""
    return {WEIGHTS_MARK: {"trust": trust, "folder": folder, "torchscript": torchscript}}


def weights_fields(model: Any) -> list[WeightsField]:
    """The fields of a pydantic model (class or instance) marked by :func:`weights_file`."""
    fields = getattr(type(model) if not isinstance(model, type) else model, "model_fields", {})
    marked = []
    for name, info in fields.items():
        extra = info.json_schema_extra
        mark = extra.get(WEIGHTS_MARK) if isinstance(extra, dict) else None
        if isinstance(mark, dict):
            marked.append(WeightsField(name, mark.get("trust"), bool(mark.get("folder")),
                                       bool(mark.get("torchscript"))))
    return marked


def _looks_local(value: str) -> bool:
    return (value.startswith(("/", "./", "../", "~", "\\"))
            or Path(value).suffix.lower() in WEIGHT_SUFFIXES)


def weights_problems(params: Any) -> list[tuple[str, str]]:
    """``(field, message)`` for every marked field of a validated params model whose file
    does not open. Fields left empty are skipped, and so are values that are neither an
    existing path nor look like one (``openai``, ``org/model``: tags and hub ids the plugin
    resolves)."""
    problems = []
    for field in weights_fields(params):
        value = getattr(params, field.name, None)
        if value is None or value == "":
            continue
        path = Path(str(value)).expanduser()
        if not path.exists() and not _looks_local(str(value)):
            continue  # a hub id or a library tag, not a local path: the plugin resolves it
        trust = bool(getattr(params, field.trust, False)) if field.trust else False
        hint = f"set `{field.trust}: true` in these params" if field.trust else None
        try:
            check_weights_file(path, trust=trust, folder=field.folder,
                               torchscript=field.torchscript, trust_hint=hint)
        except McrxError as exc:
            problems.append((field.name, str(exc)))
    return problems
