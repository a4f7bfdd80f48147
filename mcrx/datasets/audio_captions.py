"""Audio–text retrieval benchmarks: clips with several captions each.

Every dataset here has the modalities ``audio`` (clip file paths) and ``text`` (captions), in
one order: the clips in the order of the metadata file, and the captions clip by clip, each
clip's captions in their own order. ``item_ids("audio")`` is each clip's index,
``item_ids("text")`` the index of each caption's clip (``ground_truth: items``).

- :class:`AudioCapsDataset` (``mcrx/audiocaps``): cdjkim/audiocaps ``dataset/test.csv`` —
  ``audiocap_id,youtube_id,start_time,caption``, one row per caption, ``audiocap_id``
  unique per caption; a clip is a (``youtube_id``, ``start_time``) pair, five captions per
  test clip (975 clips, 4,875 captions). The clips come from YouTube, so a download names
  them in one of the common ways, all accepted: ``Y<youtube_id>.<ext>`` (WavCaps's
  ``AudioCaps/waveforms/test``), ``<youtube_id>.<ext>``, or ``<audiocap_id>.<ext>`` for any
  of the clip's rows (MorenoLaQuatra/audiocaps-download ``Downloader.download_file``, one
  copy per caption row). Clips taken down since are skipped with their captions
  (``missing: skip``, the default; the papers report on the clips their copy had).
- :class:`ClothoDataset` (``mcrx/clotho``): Clotho v2 from Zenodo —
  ``clotho_captions_evaluation.csv`` with ``file_name,caption_1,…,caption_5`` and the clips
  unpacked from ``clotho_audio_evaluation.7z`` into ``evaluation/`` (1,045 clips, 5,225
  captions).
- :class:`WavCapsRetrievalDataset` (``mcrx/wavcaps-retrieval``): the JSON files of
  XinhaoMei/WavCaps ``retrieval/data/<set>/json_files/<split>.json`` (``{"num_captions_per
  _audio": 5, "data": [{"caption_1": …, "caption_5": …, "wav": "AudioCaps/waveforms/test/
  Y….wav", "audio": <absolute path on the authors' machine>, …}]}``) read by WavCaps's
  ``retrieval/data_handling/caption_dataset.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.datasets.common import (
    AUDIO_SUFFIXES,
    BenchmarkDataset,
    index_audio,
    read_csv_rows,
    require_file,
    require_folder,
    require_root,
    stat_fingerprint,
    under,
    warn_skipped,
)
from mcrx.datasets.params import AudioCapsParams, ClothoParams, WavCapsRetrievalParams
from mcrx.errors import McrxError


@dataclass
class Clips:
    """Clips (file paths) and their captions, flattened clip by clip."""

    paths: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_items: list[int] = field(default_factory=list)

    def add(self, path: Path, captions: list[str]) -> None:
        index = len(self.paths)
        self.paths.append(str(path))
        self.captions.extend(captions)
        self.caption_items.extend([index] * len(captions))


class CaptionedAudio(BenchmarkDataset):
    """Clips with several captions: ``audio`` and ``text``, no class labels."""

    modalities = ("audio", "text")

    def __init__(self, params: Any) -> None:
        self.params = params
        self.root = require_root(params.root, self.name, self.LAYOUT)
        self._clips: Clips | None = None
        self._sources: list[Path] = []  # metadata files, for the fingerprint

    def read(self) -> Clips:  # pragma: no cover - every subclass reads its own layout
        raise NotImplementedError

    def clips(self) -> Clips:
        if self._clips is None:
            clips = self.read()
            if not clips.paths:
                raise McrxError(f"{self.name}: no clip found under {self.root}; expected "
                                f"layout:\n{self.LAYOUT}")
            self._clips = clips
        return self._clips

    def items(self, modality: str) -> list[str]:
        """``audio``: clip file paths; ``text``: the captions, clip by clip."""
        self._check(modality)
        clips = self.clips()
        return clips.paths if modality == "audio" else clips.captions

    def item_ids(self, modality: str) -> np.ndarray:
        """``audio``: 0..clips-1; ``text``: the index of each caption's clip."""
        self._check(modality)
        clips = self.clips()
        if modality == "audio":
            return np.arange(len(clips.paths), dtype=np.int64)
        return np.asarray(clips.caption_items, dtype=np.int64)

    def fingerprint(self) -> str:
        clips = self.clips()
        return stat_fingerprint(self.name, self.params, [*self._sources, *clips.paths])

    def _missing(self, skipped: list[str], total: int) -> None:
        if not skipped:
            return
        if self.params.missing == "error":
            shown = ", ".join(skipped[:3]) + (" …" if len(skipped) > 3 else "")
            raise McrxError(f"{self.name}: {len(skipped)} of {total} clips not found under "
                            f"{self.root} ({shown}); give 'missing: skip' to evaluate without "
                            f"them, or complete the download. Expected layout:\n{self.LAYOUT}")
        warn_skipped(self.name, self.root, skipped, total, "clips")


class AudioCapsDataset(CaptionedAudio):
    """AudioCaps (Kim et al. 2019), a CSV split of cdjkim/audiocaps and its clips."""

    name = "mcrx/audiocaps"
    LAYOUT = ("  <root>/test.csv    (cdjkim/audiocaps dataset/test.csv: "
              "audiocap_id,youtube_id,start_time,caption)\n"
              "  <root>/test/       the clips, named Y<youtube_id>, <youtube_id> or "
              f"<audiocap_id>, any of {', '.join(AUDIO_SUFFIXES)}\n"
              "  (params csv: and audio: name other places)")

    def read(self) -> Clips:
        params: AudioCapsParams = self.params
        csv_path = require_file(under(self.root, params.csv or f"{params.split}.csv"),
                                self.name, "the captions CSV", self.LAYOUT)
        audio = require_folder(under(self.root, params.audio or params.split), self.name,
                               "the clip folder", self.LAYOUT)
        self._sources = [csv_path]
        rows = read_csv_rows(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"),
                             self.name, self.LAYOUT)
        groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for row in rows:  # a clip is (youtube_id, start_time), first appearance first
            key = (row["youtube_id"].strip(), _seconds(row["start_time"]))
            ids, captions = groups.setdefault(key, ([], []))
            ids.append(row["audiocap_id"].strip())
            captions.append(row["caption"].strip())
        found = index_audio(audio)
        clips, skipped = Clips(), []
        for (youtube_id, _), (ids, captions) in groups.items():
            stems = [f"Y{youtube_id}", youtube_id, *ids]
            path = next((found[s] for s in stems if s in found), None)
            if path is None:
                skipped.append(youtube_id)
                continue
            clips.add(path, captions)
        self._missing(skipped, len(groups))
        return clips


def _seconds(value: str) -> str:
    """``start_time`` as one spelling ("30", "30.0" → "30")."""
    try:
        return f"{float(value):g}"
    except ValueError:
        return value.strip()


class ClothoDataset(CaptionedAudio):
    """Clotho v2 (Drossos et al. 2020), one split's captions CSV and its clips."""

    name = "mcrx/clotho"
    LAYOUT = ("  <root>/clotho_captions_evaluation.csv  (file_name,caption_1,…,caption_5)\n"
              "  <root>/evaluation/<file_name>          (clotho_audio_evaluation.7z unpacked)\n"
              "  (params split: development/validation, csv: and audio: name other places)")

    def read(self) -> Clips:
        params: ClothoParams = self.params
        csv_path = require_file(
            under(self.root, params.csv or f"clotho_captions_{params.split}.csv"),
            self.name, "the captions CSV", self.LAYOUT)
        audio = require_folder(under(self.root, params.audio or params.split), self.name,
                               "the clip folder", self.LAYOUT)
        self._sources = [csv_path]
        rows = read_csv_rows(csv_path, ("file_name", "caption_1"), self.name, self.LAYOUT)
        columns = sorted((c for c in rows[0] if c and c.startswith("caption_")
                          and c[len("caption_"):].isdigit()),
                         key=lambda c: int(c[len("caption_"):]))
        clips, skipped = Clips(), []
        for row in rows:
            path = audio / row["file_name"]
            if not path.is_file():
                skipped.append(row["file_name"])
                continue
            clips.add(path, [row[c].strip() for c in columns if (row.get(c) or "").strip()])
        self._missing(skipped, len(rows))
        return clips


class WavCapsRetrievalDataset(CaptionedAudio):
    """A WavCaps retrieval JSON (AudioCaps or Clotho test, as WavCaps evaluates them)."""

    name = "mcrx/wavcaps-retrieval"
    LAYOUT = ("  <root>/AudioCaps/json_files/test.json   (XinhaoMei/WavCaps retrieval/data)\n"
              "  <root>/<wav of each entry>              (AudioCaps/waveforms/test/Y….wav)\n"
              "  (params json_file: Clotho/json_files/test.json for Clotho; audio: a folder "
              "holding the clips by file name)")

    def read(self) -> Clips:
        params: WavCapsRetrievalParams = self.params
        json_path = require_file(under(self.root, params.json_file), self.name,
                                 "the retrieval JSON", self.LAYOUT)
        self._sources = [json_path]
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
            entries = document["data"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise McrxError(f"{self.name}: {json_path} is not a WavCaps retrieval JSON "
                            f"({{'data': [...]}}): {exc}") from None
        folder = under(self.root, params.audio) if params.audio else None
        clips, skipped = Clips(), []
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise McrxError(f"{self.name}: {json_path} data[{number}] is not an object")
            path = self._clip(entry, folder)
            if path is None:
                skipped.append(str(entry.get("wav") or entry.get("audio") or number))
                continue
            clips.add(path, _captions(entry, json_path, number, self.name))
        self._missing(skipped, len(entries))
        return clips

    def _clip(self, entry: dict[str, Any], folder: Path | None) -> Path | None:
        wav, audio = entry.get("wav"), entry.get("audio")
        candidates = []
        if isinstance(wav, str):
            candidates.append(self.root / wav)
        if isinstance(audio, str):
            candidates.append(Path(audio))
        name = next((Path(v).name for v in (wav, audio, entry.get("id"))
                     if isinstance(v, str)), None)
        if folder is not None and name:
            candidates.append(folder / name)
        return next((p for p in candidates if p.is_file()), None)


def _captions(entry: dict[str, Any], path: Path, number: int, name: str) -> list[str]:
    """``caption_1``…``caption_N`` in order, or ``caption`` (one string or a list)."""
    numbered = sorted((k for k in entry if k.startswith("caption_")
                       and k[len("caption_"):].isdigit()), key=lambda k: int(k[len("caption_"):]))
    if numbered:
        values = [entry[k] for k in numbered]
    elif "caption" in entry:
        values = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
    else:
        raise McrxError(f"{name}: {path} data[{number}] has no caption_1… or caption")
    if not all(isinstance(v, str) for v in values):
        raise McrxError(f"{name}: {path} data[{number}]: captions must be strings")
    return [v.strip() for v in values if v.strip()]


def build_audiocaps(params: AudioCapsParams) -> AudioCapsDataset:
    return AudioCapsDataset(params)


def build_clotho(params: ClothoParams) -> ClothoDataset:
    return ClothoDataset(params)


def build_wavcaps(params: WavCapsRetrievalParams) -> WavCapsRetrievalDataset:
    return WavCapsRetrievalDataset(params)
