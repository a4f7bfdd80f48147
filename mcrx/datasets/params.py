"""Parameters of the benchmark datasets (``dataset: mcrx/esc50`` + ``params:`` in evaluation
sets). Kept apart from the readers so that registering the datasets imports pydantic only.

Every dataset takes ``root``: the folder the benchmark was downloaded (and unpacked) into;
every other path is relative to it unless given absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Missing = Literal["error", "skip"]


class RootParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: Path = Field(description="the folder the benchmark was downloaded into")


class Esc50Params(RootParams):
    """karolpiczak/ESC-50 as cloned or unzipped (``ESC-50-master``)."""

    folds: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5],
        min_length=1,
        description="the folds to take (1-5); default all five: the 2,000 clips",
    )

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: list[int]) -> list[int]:
        bad = sorted({f for f in folds if not 1 <= f <= 5})
        if bad:
            raise ValueError(f"ESC-50 has folds 1 to 5, not {bad}")
        return sorted(set(folds))


class AudioCapsParams(RootParams):
    """cdjkim/audiocaps ``dataset/<split>.csv`` and the clips downloaded from YouTube."""

    split: Literal["test", "val", "train"] = Field("test", description="the CSV split")
    csv: str | None = Field(None, description="the captions CSV (default: '<split>.csv')")
    audio: str | None = Field(
        None, description="the folder of clips (default: '<split>'), searched recursively")
    missing: Missing = Field(
        "skip",
        description="clips not found (YouTube takedowns): 'skip' them with their captions, "
        "or 'error'",
    )


class ClothoParams(RootParams):
    """Clotho v2 (Zenodo): ``clotho_captions_<split>.csv`` and the unpacked ``<split>/``."""

    split: Literal["evaluation", "development", "validation"] = Field(
        "evaluation", description="the Clotho split; 'evaluation' is the papers' test set")
    csv: str | None = Field(
        None, description="the captions CSV (default: 'clotho_captions_<split>.csv')")
    audio: str | None = Field(None, description="the folder of clips (default: '<split>')")
    missing: Missing = Field("error", description="clips not found: 'error' or 'skip'")


class WavCapsRetrievalParams(RootParams):
    """XinhaoMei/WavCaps ``retrieval/data``: ``<set>/json_files/<split>.json`` whose entries
    name their clip as ``wav`` relative to that folder (``AudioCaps/waveforms/test/Y….wav``)."""

    json_file: str = Field(
        "AudioCaps/json_files/test.json",
        description="the WavCaps retrieval JSON ({'num_captions_per_audio', 'data': [...]})")
    audio: str | None = Field(
        None, description="a folder holding the clips by file name, when they are not at "
        "<root>/<wav> as the JSON says")
    missing: Missing = Field("error", description="clips not found: 'error' or 'skip'")


class KarpathyParams(RootParams):
    """Karpathy's caption splits (``caption_datasets.zip``: ``dataset_coco.json``,
    ``dataset_flickr30k.json``) beside the images."""

    split: Literal["test", "val", "train", "restval"] = Field(
        "test", description="Karpathy split; 'test' is the papers' (COCO 5k, Flickr30K 1k)")
    annotations: str | None = Field(
        None, description="the Karpathy JSON (default: dataset_coco.json / "
        "dataset_flickr30k.json)")
    images: str | None = Field(
        None, description="the image folder (default: COCO: the root, which holds "
        "val2014/...; Flickr30K: 'flickr30k-images')")
    captions_per_image: int | None = Field(
        5, gt=0, description="the first N captions of each image (5: the standard 25,000 / "
        "5,000 texts); null keeps every caption")


class ModelNet40Params(RootParams):
    """ULIP's preprocessed ModelNet40 (``modelnet40_normal_resampled``)."""

    file: str = Field("modelnet40_test_8192pts_fps.dat",
                      description="the pickled [points, labels] file ULIP's loader reads")
    shape_names: str = Field("modelnet40_shape_names.txt",
                             description="class names, one per line, in label order")


class ObjaverseLvisParams(RootParams):
    """OpenShape's Objaverse-LVIS split (``OpenShape/openshape-training-data``)."""

    split_file: str = Field("meta_data/split/lvis.json",
                            description="OpenShape's list of {uid, category, data_path}")
    raw_names: bool = Field(
        False, description="keep the LVIS category names as they are ('aerosol_can'); "
        "default: underscores become spaces ('aerosol can') for the prompts")
    missing: Missing = Field("error", description="shapes not found: 'error' or 'skip'")
