"""ModelNet40 zero-shot, as ULIP evaluates it (salesforce/ULIP ``data/dataset_3d.py``, class
``ModelNet``, read at commit 1998594; ``data/ModelNet40.yaml``: ``DATA_PATH:
data/modelnet40_normal_resampled``, ``USE_NORMALS: FALSE``):

    <root>/modelnet40_test_8192pts_fps.dat   pickle.dump([list_of_points, list_of_labels])
                                             points: (8192, 6) float32 (xyz + normals),
                                             labels: np.array([class], int32)
    <root>/modelnet40_shape_names.txt        the 40 class names in label order

The ``.dat`` file is a pickle; it is read with :class:`mcrx.datasets.common.NumpyOnlyUnpickler`,
which rebuilds numpy arrays and refuses every other global, so a crafted file cannot run
code (``pickle.load`` as ULIP calls it would).

Items: the 2,468 test shapes in the file's order, each its (N, 3) float32 xyz (ULIP drops the
normals, ``USE_NORMALS: FALSE``; the encoder normalises to the unit sphere as ULIP's
``pc_normalize`` does); labels: the class index; classes: the shape names with underscores
as spaces ("flower pot", "night stand"), the names of ULIP's ``data/labels.json``
``modelnet40`` list, which its 64 templates are filled with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from mcrx.datasets.common import (
    BenchmarkDataset,
    require_file,
    require_root,
    safe_unpickle,
    stat_fingerprint,
    under,
)
from mcrx.datasets.params import ModelNet40Params
from mcrx.errors import McrxError


@lru_cache(maxsize=1)
def _read_dat(path: str, size: int, mtime_ns: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The (xyz clouds, labels) of ULIP's .dat file, kept for the next build of the dataset
    in this process (an evaluation builds it once per space); keyed by the file's stat."""
    name = ModelNet40Dataset.name
    content = safe_unpickle(Path(path), name)
    if not (isinstance(content, (list, tuple)) and len(content) == 2
            and isinstance(content[0], (list, tuple)) and isinstance(content[1], (list, tuple))):
        raise McrxError(f"{name}: {path} is not ULIP's [list_of_points, list_of_labels] pickle")
    points, labels = content
    if len(points) != len(labels) or not points:
        raise McrxError(f"{name}: {path} holds {len(points)} clouds and {len(labels)} labels")
    clouds = []
    for i, cloud in enumerate(points):
        cloud = np.asarray(cloud)
        if cloud.ndim != 2 or cloud.shape[1] < 3 or not np.issubdtype(cloud.dtype, np.number):
            raise McrxError(f"{name}: {path} cloud {i} has shape {cloud.shape} "
                            f"({cloud.dtype}); expected (N, 3) or (N, 6) numbers")
        xyz = np.ascontiguousarray(cloud[:, :3], dtype=np.float32)
        xyz.setflags(write=False)
        clouds.append(xyz)
    try:
        flat = np.asarray([int(np.asarray(label).reshape(-1)[0]) for label in labels],
                          dtype=np.int64)
    except (TypeError, ValueError, IndexError):
        raise McrxError(f"{name}: {path}: the labels are not integers") from None
    flat.setflags(write=False)
    return tuple(clouds), flat


class ModelNet40Dataset(BenchmarkDataset):
    """ULIP's ModelNet40 test shapes with their class labels."""

    name = "mcrx/modelnet40"
    modalities = ("pointcloud",)
    LAYOUT = ("  <root>/modelnet40_test_8192pts_fps.dat   (ULIP's modelnet40_normal_resampled)\n"
              "  <root>/modelnet40_shape_names.txt        (40 names, one per line)")

    def __init__(self, params: ModelNet40Params) -> None:
        self.params = params
        self.root = require_root(params.root, self.name, self.LAYOUT)
        self.file = require_file(under(self.root, params.file), self.name, "the test file",
                                 self.LAYOUT)
        self.names_file = require_file(under(self.root, params.shape_names), self.name,
                                       "the shape names", self.LAYOUT)

    def _data(self) -> tuple[Sequence[np.ndarray], np.ndarray]:
        stat = os.stat(self.file)
        clouds, labels = _read_dat(str(self.file.resolve()), stat.st_size, stat.st_mtime_ns)
        classes = self.classes()
        if int(labels.max()) >= len(classes) or int(labels.min()) < 0:
            raise McrxError(f"{self.name}: {self.file} has labels up to {int(labels.max())} "
                            f"but {self.names_file} names {len(classes)} classes")
        return clouds, labels

    def items(self, modality: str) -> list[np.ndarray]:
        """Each shape's (N, 3) float32 xyz, in the file's order."""
        self._check(modality)
        return list(self._data()[0])

    def labels(self, modality: str) -> np.ndarray:
        """The class index of each shape (into :meth:`classes`)."""
        self._check(modality)
        return self._data()[1]

    def classes(self) -> list[str]:
        """The names of modelnet40_shape_names.txt, underscores as spaces."""
        lines = self.names_file.read_text(encoding="utf-8").splitlines()
        names = [line.strip().replace("_", " ") for line in lines if line.strip()]
        if not names:
            raise McrxError(f"{self.name}: {self.names_file} is empty")
        return names

    def fingerprint(self) -> str:
        return stat_fingerprint(self.name, self.params, [self.file, self.names_file])


def build(params: ModelNet40Params) -> ModelNet40Dataset:
    return ModelNet40Dataset(params)
