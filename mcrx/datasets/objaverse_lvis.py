"""Objaverse-LVIS zero-shot on OpenShape's split (Colin97/OpenShape_code: ``src/data.py``
class ``ObjaverseLVIS`` and ``src/configs/train.yaml`` ``objaverse_lvis.split:
meta_data/split/lvis.json``, read at commit 010609a; the data from the Hugging Face dataset
``OpenShape/openshape-training-data`` as its ``download_data.py`` unpacks it):

    <root>/meta_data/split/lvis.json     [{"uid": …, "category": "aerosol_can",
                                            "data_path": "/mnt/data/objaverse-processed/
                                            merged_for_training_final/Objaverse/000-057/<uid>.npy"},
                                           …]  (46,205 shapes, 1,156 categories)
    <root>/objaverse-processed/merged_for_training_final/Objaverse/000-…/<uid>.npy
                                          np.save of a dict: 'xyz' (N, 3), 'rgb' (N, 3), …

``data_path`` is where the authors' copy lived: it is used when it exists, otherwise its
part from ``objaverse-processed/`` on is looked for under ``root``. The ``.npy`` dicts are
pickled object arrays; they are read with :class:`mcrx.datasets.common.NumpyOnlyUnpickler`
(numpy arrays and plain containers only), never ``np.load(allow_pickle=True)``.

Items: one (N, 6) float32 array per shape, xyz then rgb as stored (OpenShape swaps y and z
at load, ``y_up: True``; mcrx gives the file's axes), read when the encoder asks for it (a
lazy sequence: 46k clouds of 10k points are not held at once); order: lvis.json's. Labels:
the index of the category in ``sorted(set(categories))``, OpenShape's ``category2idx``;
classes: those names, underscores as spaces unless ``raw_names``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from mcrx.datasets.common import (
    BenchmarkDataset,
    read_npy,
    require_file,
    require_root,
    stat_fingerprint,
    under,
    warn_skipped,
)
from mcrx.datasets.params import ObjaverseLvisParams
from mcrx.errors import McrxError

ANCHOR = "objaverse-processed"


class LazyClouds(Sequence):
    """Point clouds read from OpenShape ``.npy`` dicts on access: ``clouds[i]`` is an (N, 6)
    float32 array (xyz, rgb), ``clouds[a:b]`` another lazy sequence. Picklable (paths only),
    so DataLoader workers read their own shares."""

    def __init__(self, paths: Sequence[str], name: str = "mcrx/objaverse-lvis") -> None:
        self.paths = list(paths)
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> LazyClouds: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | LazyClouds:
        if isinstance(index, slice):
            return LazyClouds(self.paths[index], self.name)
        return read_cloud(Path(self.paths[index]), self.name)

    def __repr__(self) -> str:
        return f"LazyClouds({len(self.paths)} OpenShape .npy files)"


def read_cloud(path: Path, name: str) -> np.ndarray:
    """An OpenShape shape file as (N, 6) float32: xyz then rgb (xyz alone when it has none)."""
    content = read_npy(path, name)
    if isinstance(content, dict):
        if "xyz" not in content:
            raise McrxError(f"{name}: {path} has no 'xyz' (keys: {sorted(content)})")
        xyz = np.asarray(content["xyz"])
        rgb = content.get("rgb")
    else:
        xyz, rgb = np.asarray(content), None
    if xyz.ndim != 2 or xyz.shape[1] < 3 or not np.issubdtype(xyz.dtype, np.number):
        raise McrxError(f"{name}: {path}: 'xyz' has shape {xyz.shape} ({xyz.dtype}); "
                        "expected (N, 3) numbers")
    parts = [xyz[:, :3]]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape == (xyz.shape[0], 3) and np.issubdtype(rgb.dtype, np.number):
            parts.append(rgb)
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


class ObjaverseLvisDataset(BenchmarkDataset):
    """OpenShape's Objaverse-LVIS shapes with their LVIS category labels."""

    name = "mcrx/objaverse-lvis"
    modalities = ("pointcloud",)
    LAYOUT = ("  <root>/meta_data/split/lvis.json   (OpenShape: uid, category, data_path)\n"
              "  <root>/objaverse-processed/merged_for_training_final/Objaverse/000-…/<uid>.npy\n"
              "  (OpenShape/openshape-training-data unpacked into <root>)")

    def __init__(self, params: ObjaverseLvisParams) -> None:
        self.params = params
        self.root = require_root(params.root, self.name, self.LAYOUT)
        self.split_file = require_file(under(self.root, params.split_file), self.name,
                                       "the LVIS split", self.LAYOUT)
        self._loaded: tuple[list[str], np.ndarray, list[str]] | None = None

    def _resolve(self, data_path: str) -> Path | None:
        stored = Path(data_path)
        if stored.is_absolute() and stored.is_file():
            return stored
        parts = stored.parts
        if ANCHOR in parts:
            local = self.root.joinpath(*parts[parts.index(ANCHOR):])
            if local.is_file():
                return local
        relative = self.root / data_path.lstrip("/")
        return relative if relative.is_file() else None

    def _load(self) -> tuple[list[str], np.ndarray, list[str]]:
        if self._loaded is not None:
            return self._loaded
        try:
            entries: Any = json.loads(self.split_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise McrxError(f"{self.name}: {self.split_file} is not JSON ({exc})") from None
        if not isinstance(entries, list) or not entries:
            raise McrxError(f"{self.name}: {self.split_file} is not OpenShape's list of "
                            f"{{uid, category, data_path}}; expected layout:\n{self.LAYOUT}")
        for number, entry in enumerate(entries):
            if not (isinstance(entry, dict) and isinstance(entry.get("category"), str)
                    and isinstance(entry.get("data_path"), str)):
                raise McrxError(f"{self.name}: {self.split_file} entry {number} lacks "
                                "'category' or 'data_path'")
        # OpenShape's category2idx: the sorted categories of the whole split
        categories = sorted({entry["category"] for entry in entries})
        index = {c: i for i, c in enumerate(categories)}
        paths, labels, skipped = [], [], []
        for entry in entries:
            path = self._resolve(entry["data_path"])
            if path is None:
                skipped.append(str(entry.get("uid") or entry["data_path"]))
                continue
            paths.append(str(path))
            labels.append(index[entry["category"]])
        if skipped and (self.params.missing == "error" or not paths):
            raise McrxError(f"{self.name}: {len(skipped)} of {len(entries)} shapes of "
                            f"{self.split_file} not found ({', '.join(skipped[:3])}"
                            f"{' …' if len(skipped) > 3 else ''}); give 'missing: skip' to "
                            f"evaluate without them. Expected layout:\n{self.LAYOUT}")
        warn_skipped(self.name, self.root, skipped, len(entries), "shapes")
        names = categories if self.params.raw_names else [c.replace("_", " ")
                                                          for c in categories]
        self._loaded = paths, np.asarray(labels, dtype=np.int64), names
        return self._loaded

    def items(self, modality: str) -> LazyClouds:
        """Each shape's (N, 6) xyz+rgb, read on access, in lvis.json's order."""
        self._check(modality)
        return LazyClouds(self._load()[0], self.name)

    def labels(self, modality: str) -> np.ndarray:
        """The index of each shape's category in :meth:`classes`."""
        self._check(modality)
        return self._load()[1]

    def classes(self) -> list[str]:
        """The split's LVIS categories, sorted (OpenShape's order)."""
        return self._load()[2]

    def fingerprint(self) -> str:
        return stat_fingerprint(self.name, self.params, [self.split_file, *self._load()[0]])


def build(params: ObjaverseLvisParams) -> ObjaverseLvisDataset:
    return ObjaverseLvisDataset(params)
