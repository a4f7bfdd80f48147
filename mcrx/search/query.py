"""Query arithmetic: ``"2:dog barking" + cat.png - "indoors"``.

A query is a weighted sum of terms, each one unified-space vector; the sum is normalised
and searched by cosine similarity (inner product of unit vectors). The syntax, after
rclip's:

- terms are separated by ``+`` and ``-`` standing alone (``-`` negates the next term);
  words between two operators form one term (``dog barking``);
- ``2:term`` or ``0.5:term`` weights a term (default 1);
- ``audio:sound.npy`` names the term's modality (any modality of the model; ``text:x.png``
  embeds the string ``x.png`` as a text);
- ``#12`` is item 12 of the collection (its stored vector: "more like this");
- otherwise an existing file is embedded as a file of its modality, anything else as a text.

Parsing (this module) is pure syntax and touches no file; :class:`~mcrx.search.collection.
Collection` resolves the terms (files, modalities, stored items) and embeds them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mcrx.errors import McrxError

OPERATORS = ("+", "-")
#: the modality names a ``name:`` prefix may use when the caller names none (mcrx's own)
DEFAULT_MODALITIES = ("image", "text", "audio", "pointcloud")
_WEIGHT = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?):(.+)$", re.IGNORECASE)
_MODALITY = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.+)$")
_ITEM = re.compile(r"^#(\d+)$")
#: the largest item id: SQLite's INTEGER PRIMARY KEY is a signed 64-bit integer
#: (https://www.sqlite.org/datatype3.html)
MAX_ITEM_ID = 2**63 - 1


@dataclass(frozen=True)
class Term:
    """One term of a query: ``weight · vector(value)``.

    ``item`` is set for ``#id`` references; ``modality`` when the term named one."""

    weight: float
    value: str
    modality: str | None = None
    item: int | None = None

    def describe(self) -> str:
        what = f"#{self.item}" if self.item is not None else self.value
        if self.modality:
            what = f"{self.modality}:{what}"
        return what if self.weight == 1 else f"{self.weight:g}:{what}"


def tokenize(query: str | Sequence[str]) -> list[str]:
    """Tokens of a query: a sequence (the shell already split it) is taken as it is; one
    string (a web form, or one quoted argument) is split like a shell line, so quotes group
    words: ``'"2:dog barking" + cat.png'`` → ``['2:dog barking', '+', 'cat.png']``."""
    if isinstance(query, str):
        query = [query]
    tokens = [token for token in query if token.strip()]
    if len(tokens) == 1:
        try:
            tokens = shlex.split(tokens[0])
        except ValueError:  # an apostrophe in a text ("it's raining"): the string is one term
            tokens = [tokens[0].strip()]
    return tokens


def parse_query(query: str | Sequence[str], modalities: Sequence[str] | None = None) -> list[Term]:
    """The terms of ``query`` (see the module docstring). ``modalities`` are the names a
    ``name:`` prefix may use (default: mcrx's four); other prefixes stay part of the term,
    so ``note: buy milk`` is one text."""
    modalities = DEFAULT_MODALITIES if modalities is None else tuple(modalities)
    if any("\x00" in part for part in ([query] if isinstance(query, str) else query)):
        raise McrxError("the query holds a NUL byte (\\x00): no text or file name has one")
    tokens = tokenize(query)
    if not tokens:
        raise McrxError("empty query: give a text, a file, or a sum of them "
                        '("2:dog barking" + cat.png - indoors)')
    terms: list[Term] = []
    sign = 1.0
    words: list[str] = []
    after_operator = False
    for token in tokens:
        if token in OPERATORS:
            if words:  # the operator closes the term before it
                terms.append(_parse_term(" ".join(words), sign, modalities))
                sign, words = 1.0, []
            elif terms or after_operator or token == "+":  # only a leading "-" stands alone
                raise McrxError(f"query {' '.join(tokens)!r}: {token!r} must stand between "
                                "two terms")
            sign = -1.0 if token == "-" else 1.0
            after_operator = True
        else:
            words.append(token)
            after_operator = False
    if not words:
        raise McrxError(f"query {' '.join(tokens)!r} ends with an operator")
    terms.append(_parse_term(" ".join(words), sign, modalities))
    return terms


def _parse_term(text: str, sign: float, modalities: Sequence[str]) -> Term:
    weight = 1.0
    match = _WEIGHT.match(text)
    if match:
        weight = float(match.group(1))
        text = match.group(2).strip()
    modality = None
    match = _MODALITY.match(text)
    if match and match.group(1) in modalities:
        modality, text = match.group(1), match.group(2).strip()
    item = None
    match = _ITEM.match(text)
    if match and modality is None:
        digits = match.group(1).lstrip("0") or "0"  # int() of 4,300+ digits raises: look first
        if len(digits) > len(str(MAX_ITEM_ID)) or int(digits) > MAX_ITEM_ID:
            raise McrxError(f"no item #{match.group(1)[:24]}: item ids are at most "
                            f"{MAX_ITEM_ID}")
        item = int(digits)
    if not text:
        raise McrxError("a query term is empty (after its weight or modality prefix)")
    return Term(weight=sign * weight, value=text, modality=modality, item=item)


def combine(weights: Sequence[float], vectors: np.ndarray) -> np.ndarray:
    """The query vector: ``normalize(Σ wᵢ·vᵢ)`` of unit rows ``vectors`` (n, d) → (d,)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    total = np.asarray(weights, dtype=np.float32) @ vectors  # (d,)
    norm = float(np.linalg.norm(total))
    if not np.isfinite(norm) or norm < 1e-6:
        raise McrxError("the query's terms cancel out (their weighted sum is zero)")
    return (total / norm).astype(np.float32)
