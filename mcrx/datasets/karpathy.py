"""Image–text retrieval on Karpathy's splits (Karpathy & Fei-Fei 2015, ``caption_datasets.zip``
from cs.stanford.edu/people/karpathy/deepimagesent, the splits of karpathy/neuraltalk2):

    dataset_coco.json / dataset_flickr30k.json = {"dataset": …, "images": [
        {"filepath": "val2014" (COCO only), "filename": "COCO_val2014_….jpg",
         "split": "train" | "restval" | "val" | "test", "imgid": …,
         "sentences": [{"raw": "A man with a red helmet …", "tokens": […], …}, …]}, …]}

- ``mcrx/coco``: the images at ``<root>/<filepath>/<filename>`` (``val2014/`` unpacked from
  COCO's ``val2014.zip``); test split: 5,000 images.
- ``mcrx/flickr30k``: the images at ``<root>/flickr30k-images/<filename>``; test split:
  1,000 images.

Items: ``image`` the file paths of the split's images in the JSON's order; ``text`` the
``raw`` sentences image by image (the first ``captions_per_image``, 5 by default: a few COCO
images have 6 or 7, and the standard 5k test set is scored on 25,000 captions).
``item_ids("text")`` is the index of each caption's image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.datasets.common import (
    BenchmarkDataset,
    require_file,
    require_folder,
    require_root,
    stat_fingerprint,
    under,
)
from mcrx.datasets.params import KarpathyParams
from mcrx.errors import McrxError


class KarpathyDataset(BenchmarkDataset):
    """One Karpathy split: images and their captions."""

    modalities = ("image", "text")
    ANNOTATIONS = ""
    IMAGES = ""

    def __init__(self, params: KarpathyParams) -> None:
        self.params = params
        self.root = require_root(params.root, self.name, self.LAYOUT)
        self.annotations = require_file(
            under(self.root, params.annotations or self.ANNOTATIONS), self.name,
            "the Karpathy split JSON", self.LAYOUT)
        self.images = require_folder(
            under(self.root, params.images if params.images is not None else self.IMAGES),
            self.name, "the image folder", self.LAYOUT)
        self._loaded: tuple[list[str], list[str], np.ndarray] | None = None

    def _load(self) -> tuple[list[str], list[str], np.ndarray]:
        if self._loaded is not None:
            return self._loaded
        try:
            document = json.loads(self.annotations.read_text(encoding="utf-8"))
            entries = document["images"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise McrxError(f"{self.name}: {self.annotations} is not a Karpathy split JSON "
                            f"({{'images': [...]}}): {exc}") from None
        limit = self.params.captions_per_image
        paths, captions, owners, missing = [], [], [], []
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("split") != self.params.split:
                continue
            path = self._image(entry, number)
            if not path.is_file():
                missing.append(str(path))
            sentences = [s.get("raw", "").strip() for s in entry.get("sentences") or []
                         if isinstance(s, dict)]
            sentences = [s for s in sentences if s][:limit]
            if not sentences:
                raise McrxError(f"{self.name}: {self.annotations} images[{number}] has no "
                                "sentences[].raw")
            owners.extend([len(paths)] * len(sentences))
            paths.append(str(path))
            captions.extend(sentences)
        if missing:
            raise McrxError(f"{self.name}: {len(missing)} images of the {self.params.split!r} "
                            f"split are missing ({', '.join(missing[:3])}"
                            f"{' …' if len(missing) > 3 else ''}); expected layout:\n"
                            f"{self.LAYOUT}")
        if not paths:
            raise McrxError(f"{self.name}: {self.annotations} has no image of split "
                            f"{self.params.split!r}")
        self._loaded = paths, captions, np.asarray(owners, dtype=np.int64)
        return self._loaded

    def _image(self, entry: dict[str, Any], number: int) -> Path:
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            raise McrxError(f"{self.name}: {self.annotations} images[{number}] has no filename")
        return self.images / (entry.get("filepath") or "") / filename

    def items(self, modality: str) -> list[str]:
        """``image``: file paths in the JSON's order; ``text``: captions image by image."""
        self._check(modality)
        paths, captions, _ = self._load()
        return paths if modality == "image" else captions

    def item_ids(self, modality: str) -> np.ndarray:
        """``image``: 0..images-1; ``text``: the index of each caption's image."""
        self._check(modality)
        paths, _, owners = self._load()
        return np.arange(len(paths), dtype=np.int64) if modality == "image" else owners

    def fingerprint(self) -> str:
        # the split and its images follow from the annotation file and the params
        return stat_fingerprint(self.name, self.params, [self.annotations, self.images])


class CocoDataset(KarpathyDataset):
    name = "mcrx/coco"
    ANNOTATIONS = "dataset_coco.json"
    IMAGES = ""
    LAYOUT = ("  <root>/dataset_coco.json   (Karpathy's caption_datasets.zip)\n"
              "  <root>/val2014/COCO_val2014_….jpg   (COCO 2014 val images; the JSON's "
              "filepath/filename)\n  (params annotations: and images: name other places)")


class Flickr30kDataset(KarpathyDataset):
    name = "mcrx/flickr30k"
    ANNOTATIONS = "dataset_flickr30k.json"
    IMAGES = "flickr30k-images"
    LAYOUT = ("  <root>/dataset_flickr30k.json     (Karpathy's caption_datasets.zip)\n"
              "  <root>/flickr30k-images/<filename>.jpg   (flickr30k-images.tar unpacked)\n"
              "  (params annotations: and images: name other places)")


def build_coco(params: KarpathyParams) -> CocoDataset:
    return CocoDataset(params)


def build_flickr30k(params: KarpathyParams) -> Flickr30kDataset:
    return Flickr30kDataset(params)
