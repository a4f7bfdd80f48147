"""What a plugin implements: a ``Space`` with one ``Encoder`` per modality, ``Dataset``s of
raw inputs, and the ``MethodRules`` a new method declares. This module imports without
torch so that plugin hook modules can subclass these at import time and defer the heavy
work to the factories."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mcrx.store.fingerprint import fingerprint_of

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class Encoder(ABC):
    """Turns raw inputs of one modality into L2-normalised rows of its space."""

    modality: str
    dim: int
    #: how many items ``encode`` should receive at once when mcrx batches a dataset
    batch_size: int = 64

    @abstractmethod
    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        """Embed ``items`` (files, strings, arrays, ...): returns (len(items), dim) float32,
        rows L2-normalised, on the CPU."""

    def prepare(self, item: Any) -> Any:
        """Per-item loading and preprocessing (decode a file, resample, tokenise, ...).
        mcrx runs it in DataLoader worker processes when encoding datasets, then hands
        lists of prepared items to :meth:`encode_prepared`. Default: the item itself."""
        return item

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        """Embed items already passed through :meth:`prepare`. Default: :meth:`encode`.
        Encoders that split loading from the forward pass override both methods and
        define ``encode(items)`` as ``encode_prepared([prepare(i) for i in items])``."""
        return self.encode(prepared)

    def encode_in_batches(self, items: Sequence[Any]) -> torch.Tensor:
        """``prepare`` then ``encode_prepared``, ``batch_size`` items at a time: a ready-made
        ``encode`` for encoders that split loading from the forward pass."""
        import torch

        size = self.batch_size
        chunks = [
            self.encode_prepared([self.prepare(item) for item in items[i : i + size]])
            for i in range(0, len(items), size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def read_inputs(self, path: Path) -> Sequence[Any]:
        """Items found at ``path`` (a recipe's ``inputs:``). Default: a folder gives its
        files sorted by name, a ``.txt`` file gives its non-empty lines, a ``.npy`` file its
        rows, any other file is itself the one item."""
        from mcrx.store.inputs import read_inputs

        return read_inputs(path)

    def fingerprint(self) -> str:
        """Identifies weights and preprocessing: embeddings are cached under it."""
        return fingerprint_of(type(self).__qualname__, self.modality, self.dim)


class Space(ABC):
    """A pretrained contrastive space: a name, a dimension and one encoder per modality.

    ``dim`` governs: it shapes the connectors and every encoder's rows are checked against
    it. The ``dim=`` given to ``register`` is what mcrx knows before the space is built
    (``mcrx validate`` checks precomputed embedding files against it) and must agree."""

    name: str
    dim: int
    modalities: tuple[str, ...]

    @abstractmethod
    def encoder(self, modality: str) -> Encoder:
        """The encoder of ``modality`` (one of ``self.modalities``)."""

    def fingerprint(self) -> str:
        """Identifies the space's weights; defaults to its name and dimension."""
        return fingerprint_of(self.name, self.dim)


class Dataset(ABC):
    """Raw inputs of one or more modalities, optionally with class labels."""

    modalities: tuple[str, ...]

    @abstractmethod
    def items(self, modality: str) -> Sequence[Any]:
        """The raw inputs of ``modality``, in a stable order."""

    def labels(self, modality: str) -> np.ndarray | None:
        """Integer class label per item of ``modality``, or None when the set has none."""
        return None

    def classes(self) -> list[str] | None:
        """Class names in label-index order: ``classes()[k]`` names label ``k`` of
        :meth:`labels`. A zero-shot evaluation set built on the dataset takes them as its
        class names when it declares no ``classes:``. Default None: the set has no names."""
        return None

    def item_ids(self, modality: str) -> np.ndarray | None:
        """Item id per item of ``modality`` (integers or strings), for evaluation sets with
        ``ground_truth: items``: rows of two modalities that share an id are a pair (an
        audio and each of its captions). Default None: the dataset has no ids."""
        return None

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the items would change."""


@dataclass(frozen=True)
class MethodRules:
    """What a method declares without importing torch (``register_methods``): the defaults a
    recipe gets for ``training.connector`` and ``training.loss``, and the shape of chain the
    method can train, checked by ``mcrx validate``."""

    connector: str  # default connector, full name (``mcrx/ex-mcr``)
    loss: str  # default loss, full name
    target: Literal["parent", "new"] = "parent"  # the unified space: the base's own, or new
    max_leaves: int | None = None  # C-MCR connects exactly two spaces: one leaf
    leaves_attach_to_base: bool = False  # no chains of leaves (C-MCR)
