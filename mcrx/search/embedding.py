"""Vectors for a collection: embedding files while indexing (a failing batch retried file
by file) and turning a query (an expression, parsed terms, or a vector) into one unit
vector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mcrx.errors import McrxError
from mcrx.search.files import (
    FileStat,
    display_path,
    encoder_item,
    looks_like_path,
    modality_of_suffix,
)
from mcrx.search.query import Term, combine, parse_query

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.search.collection import Collection

#: decides whether a query may name a file (the server allows only the collection's files)
FilePolicy = Callable[[Path], bool]


def embed_items(collection: Collection, modality: str, paths: Sequence[Path]) -> np.ndarray:
    """The (len(paths), dim) float32 vectors of the files ``paths`` of ``modality``. A
    ``.npy`` file's header is checked first (:func:`mcrx.store.inputs.npy_header`: a shape
    larger than the file, an object dtype), before an encoder reads it."""
    from mcrx.store.inputs import npy_header

    for path in paths:
        if Path(path).suffix.lower() == ".npy":
            npy_header(Path(path), f"{modality} item")
    items = [encoder_item(path, modality) for path in paths]
    vectors = collection.model.embed(modality, items).numpy().astype(np.float32)
    if vectors.shape != (len(paths), collection.dim):
        raise McrxError(f"the model of {collection.path} gave vectors of shape "
                        f"{vectors.shape} for {len(paths)} {modality} items; expected "
                        f"{collection.dim}-d rows")
    if not np.isfinite(vectors).all():  # weights are checked at load: the input is at fault
        shown = display_path(paths[0]) if len(paths) == 1 else f"{len(paths)} {modality} files"
        raise McrxError(f"{shown}: embeds to NaN or infinity (the file holds NaN or "
                        "infinite values, or the encoder cannot read it)")
    return np.ascontiguousarray(vectors)


def embed_files(collection: Collection, modality: str, paths: list[Path]
                ) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
    """Vectors of ``paths`` (None where the encoder failed) and the failures. A batch that
    fails is retried file by file, so one bad file costs only itself (one that embeds to
    NaN too: it is never stored)."""
    try:
        return list(embed_items(collection, modality, paths)), []
    except Exception:  # noqa: BLE001 - find the file(s) at fault below
        pass
    vectors: list[np.ndarray | None] = []
    failures = []
    for path in paths:
        try:
            vectors.append(embed_items(collection, modality, [path])[0])
        except McrxError as exc:
            vectors.append(None)
            failures.append((str(path), str(exc)))
        except Exception as exc:  # a decoder's own error (PIL, soundfile): name the file
            vectors.append(None)
            failures.append((str(path), f"{type(exc).__name__}: {exc}"))
    return vectors, failures


def vector_query(collection: Collection, vector: Any) -> np.ndarray:
    """A query given as a vector (dim,) or (1, dim): finite, of the collection's width,
    normalised to unit length."""
    array = np.asarray(vector)
    if array.dtype.kind not in "fiu" or array.size != collection.dim or array.ndim > 2 or (
            array.ndim == 2 and array.shape[0] != 1):
        raise McrxError(f"a vector query of {collection.path} is {collection.dim} numbers, "
                        f"got an array of shape {array.shape} and dtype {array.dtype}")
    array = array.reshape(-1).astype(np.float32)
    if not np.isfinite(array).all():
        raise McrxError("the query vector holds NaN or infinity")
    return combine([1.0], array[None])


def query_vector(
    collection: Collection,
    query: Any,
    default_modality: str | None = None,
    allow_file: FilePolicy | None = None,
    outside_files: str | None = None,
) -> np.ndarray:
    """The unit vector of a query: ``normalize(Σ wᵢ·vᵢ)`` over its terms, or a vector."""
    if isinstance(query, np.ndarray):
        return vector_query(collection, query)
    if query is None or isinstance(query, bytes):
        raise McrxError(f"a query is a text, terms, or a vector; got {type(query).__name__}")
    if not isinstance(query, str) and len(query) and all(isinstance(t, Term) for t in query):
        terms = list(query)
    else:
        terms = parse_query(query, collection.model_modalities)
    vectors = np.stack([term_vector(collection, t, default_modality, allow_file,
                                    outside_files) for t in terms])
    return combine([t.weight for t in terms], vectors)


def term_vector(collection: Collection, term: Term, default_modality: str | None,
                allow_file: FilePolicy | None, outside_files: str | None) -> np.ndarray:
    if term.item is not None:
        return collection.vectors([term.item])[0]
    if term.modality == "text":
        return embed_text(collection, term.value)
    path = Path(term.value).expanduser()
    allowed = allow_file is None or allow_file(path)
    if allowed and path.is_file():
        return file_vector(collection, path.resolve(), term.modality or default_modality,
                           term.value)
    shown = display_path(term.value)
    if looks_like_path(term.value) or term.modality is not None:
        if not allowed and outside_files:
            raise McrxError(f"{shown}: {outside_files}")
        if term.modality is not None:
            raise McrxError(f"not found: {shown} (a {term.modality} term is a file)")
        raise McrxError(f"not found: {shown} (to search for this text itself, write "
                        f"text:{shown})")
    return embed_text(collection, term.value)


def embed_text(collection: Collection, text: str) -> np.ndarray:
    modalities = collection.model_modalities
    if "text" not in modalities:
        raise McrxError(f"{display_path(repr(text))} is not a file, and the model embeds no "
                        f"text ({', '.join(modalities)})")
    vector = collection.model.embed("text", [text]).numpy()[0]
    if not np.isfinite(vector).all():
        raise McrxError(f"the model of {collection.path} embeds the text to NaN or "
                        "infinity")
    return vector


def file_vector(collection: Collection, path: Path, modality: str | None,
                written: str) -> np.ndarray:
    """The vector of a query file: the stored one when the file is indexed and unchanged,
    else embedded now."""
    modalities = collection.model_modalities
    item = collection.item_by_path(path)
    modality = (modality or (item.modality if item else None)
                or modality_of_suffix(path, modalities))
    shown = display_path(written)
    if modality is None:
        raise McrxError(
            f"{shown}: cannot tell the modality of a {path.suffix or 'suffix-less'} "
            f"file; write it as MODALITY:{shown} (or pass --modality), MODALITY one "
            f"of {', '.join(modalities)}")
    if modality not in modalities:
        raise McrxError(f"the model embeds {', '.join(modalities)}, not {modality!r}")
    if item is not None and item.modality == modality:
        stat = FileStat.of(path)
        if (stat.size, stat.mtime_ns) == (item.size, item.mtime_ns):
            return collection.vectors([item.id])[0]  # indexed and unchanged: no need to embed
    return embed_items(collection, modality, [path])[0]
