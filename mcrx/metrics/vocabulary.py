"""One vocabulary per evaluation set: the item ids or class labels of every source of a set
(each modality's ``labels:`` file or dataset, and the zero-shot prompts) coded together, so
that code ``c`` means the same item or class in every file.

1. Keys. A source's raw labels become keys of one kind:
   - a ``.txt`` file whose lines are all integers, or an integer ``.npy`` array: integers;
   - anything else (names, ``"YxB2m_30"``, ...): strings, exactly as written.
   Across the sources of a set, integers are compared as integers when every source holds
   integers (``"10"`` and ``10`` are one id, ``"10"`` never sorts before ``"2"``); as soon as
   one source holds strings, every key is compared as its string (``3`` and ``"3"`` agree).
2. Item ids (``ground_truth: items``): the vocabulary is the union of all sources' ids;
   an id present in one modality and absent from another is *unmatched*: counted per
   modality and named, never shifted onto another id.
3. Classes (``ground_truth: labels`` and zero-shot): the set's class names (``classes:``,
   else the dataset's :meth:`~mcrx.plugin.interfaces.Dataset.classes`) are authoritative,
   ``classes[k]`` is class ``k``; a key is a class name or an integer index into them, and
   one naming no class is an error. Without names the vocabulary is the sorted union of all
   sources' keys (numerically for integers) and one-sided classes are reported as above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcrx.errors import McrxError

INTEGER = re.compile(r"^[+-]?\d+$")
EXAMPLES = 5  # unmatched keys named per modality in warnings and metrics.json


def as_keys(raw: Sequence[Any] | np.ndarray, where: str) -> np.ndarray:
    """One source's raw labels as keys: int64 when they are all integers (integer arrays,
    integral floats, strings of digits), else strings as written."""
    array = np.asarray(raw).reshape(-1)
    kind = array.dtype.kind
    if kind in "iub":
        return array.astype(np.int64)
    if kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise McrxError(f"{where}: labels must be integers or strings; found fractional "
                            "or NaN values")
        return array.astype(np.int64)
    if kind in "US":
        strings = np.char.strip(array.astype(str))
        if len(strings) and all(INTEGER.match(s) for s in strings.tolist()):
            return np.asarray([int(s) for s in strings.tolist()], dtype=np.int64)
        return strings
    raise McrxError(f"{where}: labels must be integers or strings, got dtype {array.dtype}")


def _common(keys: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every source's keys of one kind: integers when all are integers, else strings."""
    if all(k.dtype.kind == "i" for k in keys.values()):
        return dict(keys)
    return {m: k.astype(str) for m, k in keys.items()}


@dataclass
class Vocabulary:
    """The coded labels of one set: ``codes[m][i]`` is the vocabulary index of row ``i`` of
    source ``m``; ``values[c]`` is what code ``c`` stands for."""

    kind: str  # "items" or "classes"
    values: list[Any]
    codes: dict[str, np.ndarray]
    unmatched: dict[str, list[Any]] = field(default_factory=dict)  # source → keys alone

    def report(self) -> dict[str, Any]:
        """What metrics.json shows: size, and per source its unmatched count and examples."""
        return {
            "kind": self.kind,
            "size": len(self.values),
            "unmatched": {m: len(v) for m, v in self.unmatched.items()},
            "unmatched_examples": {m: [_plain(x) for x in v[:EXAMPLES]]
                                   for m, v in self.unmatched.items() if v},
        }

    def warnings(self) -> list[str]:
        """One line per source with keys absent from another source, naming a few."""
        noun = "ids" if self.kind == "items" else "classes"
        return [f"{len(v)} {noun} of {m} appear in no other modality "
                f"({', '.join(repr(_plain(x)) for x in v[:EXAMPLES])}"
                f"{', …' if len(v) > EXAMPLES else ''})"
                for m, v in self.unmatched.items() if v]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _one_sided(keys: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """Per source, its distinct keys missing from at least one other source (sorted)."""
    distinct = {m: set(np.unique(k).tolist()) for m, k in keys.items()}
    out = {}
    for m, own in distinct.items():
        others = [d for n, d in distinct.items() if n != m]
        missing = set().union(*(own - d for d in others)) if others else set()
        out[m] = sorted(missing)
    return out


def item_vocabulary(ids: Mapping[str, Sequence[Any] | np.ndarray], where: str) -> Vocabulary:
    """Item ids of every source of a set, coded together (step 2 of the module)."""
    keys = _common({m: as_keys(v, f"{where}.{m}") for m, v in ids.items()})
    values, inverse = np.unique(np.concatenate(list(keys.values())), return_inverse=True)
    codes, start = {}, 0
    for m, k in keys.items():
        codes[m] = inverse.reshape(-1)[start : start + len(k)].astype(np.int64)
        start += len(k)
    return Vocabulary("items", values.tolist(), codes, _one_sided(keys))


def class_vocabulary(labels: Mapping[str, Sequence[Any] | np.ndarray],
                     names: Sequence[str] | None, where: str,
                     report_one_sided: bool = True) -> Vocabulary:
    """Class labels of every source of a set against ``names`` (step 3 of the module)."""
    keys = {m: as_keys(v, f"{where}.{m}") for m, v in labels.items()}
    if names is None:
        keys = _common(keys)
        values = np.unique(np.concatenate(list(keys.values())))
        index = {v: i for i, v in enumerate(values.tolist())}
        codes = {m: np.asarray([index[x] for x in k.tolist()], dtype=np.int64)
                 for m, k in keys.items()}
        return Vocabulary("classes", values.tolist(), codes,
                          _one_sided(keys) if report_one_sided else {})
    index = {name: i for i, name in enumerate(names)}
    codes = {}
    for m, k in keys.items():
        if k.dtype.kind == "i":  # integer indices into the class names
            bad = sorted({int(x) for x in k.tolist() if not 0 <= x < len(names)})
            if bad:
                raise McrxError(f"{where}.{m}: class indices {bad[:EXAMPLES]} lie outside "
                                f"0..{len(names) - 1} (the {len(names)} class names)")
            codes[m] = k.astype(np.int64)
            continue
        unknown = sorted({x for x in k.tolist() if x not in index})
        if unknown:
            raise McrxError(f"{where}.{m}: names classes that are not in 'classes': "
                            f"{unknown[:EXAMPLES]}{' …' if len(unknown) > EXAMPLES else ''}")
        codes[m] = np.asarray([index[x] for x in k.tolist()], dtype=np.int64)
    one_sided = _one_sided({m: np.asarray([names[c] for c in np.unique(v)], dtype=object)
                            for m, v in codes.items()}) if report_one_sided else {}
    return Vocabulary("classes", list(names), codes, one_sided)


def shared_codes(query: Sequence[Any] | np.ndarray, gallery: Sequence[Any] | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Codes of two sides' raw ids or labels under the rules above (for callers that hand
    raw labels to the metric functions directly)."""
    vocabulary = item_vocabulary({"query": query, "gallery": gallery}, "labels")
    return vocabulary.codes["query"], vocabulary.codes["gallery"]
