"""ESC-50 (Piczak 2015) as cloned or unzipped from karolpiczak/ESC-50 (``ESC-50-master``):

    <root>/meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    <root>/audio/<filename> 2,000 five-second clips, 1-100032-A-0.wav ...

Items: the clips of the chosen folds (default all five: the 2,000 clips) in the CSV's row
order, as file paths; label: ``target`` (0-49); classes: the ``category`` of each target
with underscores as spaces ("crying baby", "door wood knock"), the names LAION-CLAP's
``ESC50_class_labels_indices_space.json`` prompts with ("This is a sound of {}.").
Zero-shot figures in the papers are over every clip; ``folds: [1]`` gives the 400 clips of
LAION-CLAP's own webdataset test split (LAION-AI/CLAP issue #55: "split according to the
first 5-fold split")."""

from __future__ import annotations

import numpy as np

from mcrx.datasets.common import (
    BenchmarkDataset,
    read_csv_rows,
    require_file,
    require_folder,
    require_root,
    stat_fingerprint,
)
from mcrx.datasets.params import Esc50Params
from mcrx.errors import McrxError

COLUMNS = ("filename", "fold", "target", "category")


class Esc50Dataset(BenchmarkDataset):
    """ESC-50's clips with their class labels."""

    name = "mcrx/esc50"
    modalities = ("audio",)
    LAYOUT = ("  <root>/meta/esc50.csv     (filename,fold,target,category,esc10,src_file,take)\n"
              "  <root>/audio/*.wav        (karolpiczak/ESC-50, cloned or unzipped)")

    def __init__(self, params: Esc50Params) -> None:
        self.params = params
        self.root = require_root(params.root, self.name, self.LAYOUT)
        self.csv = require_file(self.root / "meta" / "esc50.csv", self.name, "the metadata",
                                self.LAYOUT)
        self._loaded: tuple[list[str], np.ndarray, list[str]] | None = None

    def _load(self) -> tuple[list[str], np.ndarray, list[str]]:
        if self._loaded is not None:
            return self._loaded
        audio = require_folder(self.root / "audio", self.name, "the audio folder", self.LAYOUT)
        rows = read_csv_rows(self.csv, COLUMNS, self.name, self.LAYOUT)
        names: dict[int, str] = {}
        paths, labels, missing = [], [], []
        for number, row in enumerate(rows, start=2):
            try:
                fold, target = int(row["fold"]), int(row["target"])
            except (TypeError, ValueError):
                raise McrxError(f"{self.name}: {self.csv} line {number}: fold and target must "
                                f"be integers, got {row['fold']!r}, {row['target']!r}") from None
            category = row["category"].strip()
            if names.setdefault(target, category) != category:
                raise McrxError(f"{self.name}: {self.csv} line {number}: target {target} is "
                                f"{category!r} here but {names[target]!r} above")
            if fold not in self.params.folds:
                continue
            path = audio / row["filename"]
            if not path.is_file():
                missing.append(row["filename"])
            paths.append(str(path))
            labels.append(target)
        if missing:
            raise McrxError(f"{self.name}: {len(missing)} clips named in {self.csv} are not in "
                            f"{audio} ({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''})"
                            f"; expected layout:\n{self.LAYOUT}")
        if sorted(names) != list(range(len(names))):
            raise McrxError(f"{self.name}: {self.csv}: targets must be 0..N-1, got "
                            f"{sorted(names)[:5]} …")
        if not paths:
            raise McrxError(f"{self.name}: no clip of folds {self.params.folds} in {self.csv}")
        classes = [names[t].replace("_", " ") for t in range(len(names))]
        self._loaded = paths, np.asarray(labels, dtype=np.int64), classes
        return self._loaded

    def items(self, modality: str) -> list[str]:
        """The clips' paths, in the CSV's order."""
        self._check(modality)
        return self._load()[0]

    def labels(self, modality: str) -> np.ndarray:
        """``target`` per clip: an index into :meth:`classes`."""
        self._check(modality)
        return self._load()[1]

    def classes(self) -> list[str]:
        """The 50 category names in target order, underscores as spaces."""
        return self._load()[2]

    def fingerprint(self) -> str:
        return stat_fingerprint(self.name, self.params, [self.csv, *self._load()[0]])


def build(params: Esc50Params) -> Esc50Dataset:
    return Esc50Dataset(params)

