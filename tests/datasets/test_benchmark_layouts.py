"""Each benchmark dataset on a stand-in of its downloaded layout: items, labels, classes and
item ids in the documented order, and located errors when something is missing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mcrx.errors import McrxError
from mcrx.metrics.templates import MODELNET40_CLASSES


def build(registry, name: str, **params):
    return registry.dataset(name).build(params=params)


def test_registered_with_modalities_and_params(registry):
    expected = {"mcrx/esc50": ("audio",), "mcrx/audiocaps": ("audio", "text"),
                "mcrx/clotho": ("audio", "text"), "mcrx/wavcaps-retrieval": ("audio", "text"),
                "mcrx/coco": ("image", "text"), "mcrx/flickr30k": ("image", "text"),
                "mcrx/modelnet40": ("pointcloud",), "mcrx/objaverse-lvis": ("pointcloud",)}
    for name, modalities in expected.items():
        spec = registry.dataset(name)
        assert spec.modalities == modalities and spec.params is not None, name


# -- ESC-50 ------------------------------------------------------------------------------
def test_esc50_all_folds(registry, layout):
    root = layout("esc50")
    data = build(registry, "mcrx/esc50", root=str(root))
    items = data.items("audio")
    assert [Path(p).name for p in items] == ["1-100032-A-0.wav", "1-100038-A-14.wav",
                                             "2-102414-A-20.wav", "3-102583-A-0.wav",
                                             "5-103415-A-14.wav"]
    assert all(Path(p).is_file() for p in items)
    assert data.labels("audio").tolist() == [0, 2, 1, 0, 2]
    assert data.classes() == ["dog", "crying baby", "chirping birds"]
    assert data.item_ids("audio").tolist() == [0, 1, 2, 3, 4]
    assert data.fingerprint() == build(registry, "mcrx/esc50", root=str(root)).fingerprint()


def test_esc50_folds(registry, layout):
    root = layout("esc50")
    data = build(registry, "mcrx/esc50", root=str(root), folds=[5, 1])
    assert [Path(p).name[0] for p in data.items("audio")] == ["1", "1", "5"]
    assert data.labels("audio").tolist() == [0, 2, 2]
    assert len(data.classes()) == 3  # classes come from every row, whatever the folds
    other = build(registry, "mcrx/esc50", root=str(root))
    assert data.fingerprint() != other.fingerprint()
    with pytest.raises(Exception, match="folds 1 to 5"):
        build(registry, "mcrx/esc50", root=str(root), folds=[6])


def test_esc50_missing_files_are_located(registry, layout, tmp_path):
    with pytest.raises(McrxError, match="not a folder"):
        build(registry, "mcrx/esc50", root=str(tmp_path / "nowhere"))
    root = layout("esc50")
    (root / "audio" / "3-102583-A-0.wav").unlink()
    with pytest.raises(McrxError, match=r"1 clips .*3-102583-A-0.wav.*\n.*meta/esc50.csv"):
        build(registry, "mcrx/esc50", root=str(root)).items("audio")
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(McrxError, match=r"the metadata not found: .*esc50.csv; expected"):
        build(registry, "mcrx/esc50", root=str(root))


def test_esc50_wrong_header(registry, layout, tools):
    root = layout("esc50")
    tools.write_csv(root / "meta" / "esc50.csv", ["file", "fold"], [["a.wav", 1]])
    with pytest.raises(McrxError, match=r"has no column \['filename', 'target', 'category'\]"):
        build(registry, "mcrx/esc50", root=str(root)).items("audio")


# -- AudioCaps ---------------------------------------------------------------------------
def test_audiocaps_naming_styles_and_skipped_clip(registry, layout):
    root = layout("audiocaps")
    data = build(registry, "mcrx/audiocaps", root=str(root))
    assert [Path(p).name for p in data.items("audio")] == [
        "Y7fmOlUlwoNg.wav", "6BJ455B1aAs.flac", "105001.wav"]
    assert data.items("text") == [
        "Constant rattling noise and sharp vibrations",
        "Vibrations and rattling, people speaking in the distance",
        "A whooshing noise followed by an explosion",
        'A "missile" launching, then an explosion',
        "Humming and vibrating with a man speaking",
        "A toy train running as a young boy talks"]
    assert data.item_ids("audio").tolist() == [0, 1, 2]
    assert data.item_ids("text").tolist() == [0, 0, 1, 1, 2, 2]
    assert data.labels("audio") is None and data.classes() is None


def test_audiocaps_missing_error_and_other_places(registry, layout, tmp_path):
    root = layout("audiocaps")
    with pytest.raises(McrxError, match=r"1 of 4 clips not found .*gonezzzzzzz.*missing: skip"):
        build(registry, "mcrx/audiocaps", root=str(root), missing="error").items("audio")
    moved = tmp_path / "elsewhere"
    (root / "test").rename(moved)
    with pytest.raises(McrxError, match=r"the clip folder not found: .*test; expected"):
        build(registry, "mcrx/audiocaps", root=str(root)).items("audio")
    data = build(registry, "mcrx/audiocaps", root=str(root), audio=str(moved))
    assert len(data.items("audio")) == 3


def test_audiocaps_start_time_spelling_groups_one_clip(registry, layout, tools):
    root = layout("audiocaps")
    rows = [[1, "abc", "30", "one"], [2, "abc", "30.0", "two"], [3, "abc", 40, "three"]]
    tools.write_csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
                    rows)
    tools.write_wav(root / "test" / "Yabc.wav")
    data = build(registry, "mcrx/audiocaps", root=str(root))
    # (abc, 30) and (abc, 40) are two clips; both found by the youtube id
    assert data.item_ids("text").tolist() == [0, 0, 1]


# -- Clotho and WavCaps --------------------------------------------------------------------
def test_clotho(registry, layout, tools):
    root = layout("clotho")
    data = build(registry, "mcrx/clotho", root=str(root))
    assert [Path(p).name for p in data.items("audio")] == ["Santa Motor.wav",
                                                           "Radio Garble.wav"]
    texts = data.items("text")
    assert len(texts) == 10 and texts[3] == tools.CLOTHO_ROWS[0][4]  # the comma survived
    assert data.item_ids("text").tolist() == [0] * 5 + [1] * 5
    (root / "evaluation" / "Radio Garble.wav").unlink()
    with pytest.raises(McrxError, match="1 of 2 clips not found .*Radio Garble.wav"):
        build(registry, "mcrx/clotho", root=str(root)).items("audio")
    skipping = build(registry, "mcrx/clotho", root=str(root), missing="skip")
    assert skipping.item_ids("text").tolist() == [0] * 5


def test_wavcaps_retrieval_json(registry, layout, tmp_path):
    root = layout("wavcaps")
    data = build(registry, "mcrx/wavcaps-retrieval", root=str(root),
                 json_file="Clotho/json_files/test.json")
    assert [Path(p).name for p in data.items("audio")] == ["Santa Motor.wav",
                                                           "Radio Garble.wav"]
    assert data.item_ids("text").tolist() == [0] * 5 + [1] * 5
    flat = tmp_path / "flat"
    (root / "Clotho" / "waveforms" / "test").rename(flat)  # clips elsewhere, by file name
    with pytest.raises(McrxError, match="2 of 2 clips not found"):
        build(registry, "mcrx/wavcaps-retrieval", root=str(root),
              json_file="Clotho/json_files/test.json").items("audio")
    data = build(registry, "mcrx/wavcaps-retrieval", root=str(root),
                 json_file="Clotho/json_files/test.json", audio=str(flat))
    assert len(data.items("audio")) == 2


# -- COCO and Flickr30K ------------------------------------------------------------------
def test_coco_karpathy_test(registry, layout):
    root = layout("coco")
    data = build(registry, "mcrx/coco", root=str(root))
    images = data.items("image")
    assert [Path(p).relative_to(root).as_posix() for p in images] == [
        "val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000391897.jpg",
        "val2014/COCO_val2014_000000391900.jpg"]
    texts = data.items("text")
    assert len(texts) == 15  # the 7-caption image keeps its first 5
    assert texts[5] == "Image 2, caption 0." and texts[9] == "Image 2, caption 4."
    assert data.item_ids("text").tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert data.item_ids("image").tolist() == [0, 1, 2]
    every = build(registry, "mcrx/coco", root=str(root), captions_per_image=None)
    assert len(every.items("text")) == 17
    train = build(registry, "mcrx/coco", root=str(root), split="restval")
    assert [Path(p).parent.name for p in train.items("image")] == ["train2014"]


def test_coco_missing_image_and_json(registry, layout):
    root = layout("coco")
    (root / "val2014" / "COCO_val2014_000000391897.jpg").unlink()
    with pytest.raises(McrxError, match=r"1 images of the 'test' split are missing .*391897"):
        build(registry, "mcrx/coco", root=str(root)).items("image")
    (root / "dataset_coco.json").unlink()
    with pytest.raises(McrxError, match="the Karpathy split JSON not found.*dataset_coco.json"):
        build(registry, "mcrx/coco", root=str(root))


def test_flickr30k_karpathy_test(registry, layout):
    root = layout("flickr30k")
    data = build(registry, "mcrx/flickr30k", root=str(root))
    assert [Path(p).name for p in data.items("image")] == ["1000092796.jpg", "1000092798.jpg"]
    assert all(Path(p).parent.name == "flickr30k-images" for p in data.items("image"))
    assert data.items("text")[0] == "Image 1, caption 0."
    assert data.item_ids("text").tolist() == [0] * 5 + [1] * 5


# -- ModelNet40 ----------------------------------------------------------------------------
def test_modelnet40_ulip_dat(registry, layout):
    root = layout("modelnet40")
    data = build(registry, "mcrx/modelnet40", root=str(root))
    clouds = data.items("pointcloud")
    assert len(clouds) == 4 and all(c.shape == (32, 3) and c.dtype == np.float32
                                    for c in clouds)
    with open(root / "modelnet40_test_8192pts_fps.dat", "rb") as handle:
        points, _ = pickle.load(handle)  # the test's own file: trusted
    np.testing.assert_array_equal(clouds[1], points[1][:, :3])
    assert data.labels("pointcloud").tolist() == [0, 15, 39, 23]
    assert data.classes() == list(MODELNET40_CLASSES)  # ULIP's labels.json names, in order
    assert data.item_ids("pointcloud").tolist() == [0, 1, 2, 3]


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_modelnet40_refuses_code_in_the_pickle(registry, layout, tmp_path):
    root = layout("modelnet40")
    target = tmp_path / "created-by-the-pickle"
    with open(root / "modelnet40_test_8192pts_fps.dat", "wb") as handle:
        pickle.dump([[_Payload(target)], [np.array([0], np.int32)]], handle)
    with pytest.raises(McrxError, match=r"not a pickle of numpy arrays .*refusing .*mkdir"):
        build(registry, "mcrx/modelnet40", root=str(root)).items("pointcloud")
    assert not target.exists()


def test_modelnet40_missing_and_bad_labels(registry, layout):
    root = layout("modelnet40")
    (root / "modelnet40_shape_names.txt").write_text("airplane\nbathtub\n")
    with pytest.raises(McrxError, match="labels up to 39 .*names 2 classes"):
        build(registry, "mcrx/modelnet40", root=str(root)).labels("pointcloud")
    (root / "modelnet40_test_8192pts_fps.dat").unlink()
    with pytest.raises(McrxError, match="the test file not found.*modelnet40_test_8192pts"):
        build(registry, "mcrx/modelnet40", root=str(root))


# -- Objaverse-LVIS ------------------------------------------------------------------------
def test_objaverse_lvis_openshape_split(registry, layout):
    root = layout("objaverse_lvis")
    data = build(registry, "mcrx/objaverse-lvis", root=str(root))
    clouds = data.items("pointcloud")
    assert len(clouds) == 4
    first = clouds[0]
    assert first.shape == (40, 6) and first.dtype == np.float32
    assert len(clouds[1:3]) == 2 and clouds[1:3][0].shape == (40, 6)
    assert pickle.loads(pickle.dumps(clouds)).paths == clouds.paths  # travels to workers
    # OpenShape's category2idx: sorted(set(categories)) — uppercase sorts first
    assert data.classes() == ["Christmas tree", "aerosol can", "zebra"]
    assert data.labels("pointcloud").tolist() == [1, 0, 1, 2]
    raw = build(registry, "mcrx/objaverse-lvis", root=str(root), raw_names=True)
    assert raw.classes() == ["Christmas_tree", "aerosol_can", "zebra"]
    assert data.item_ids("pointcloud").tolist() == [0, 1, 2, 3]


def test_objaverse_lvis_missing_shapes(registry, layout):
    root = layout("objaverse_lvis")
    next(root.rglob("uid2ccc.npy")).unlink()
    with pytest.raises(McrxError, match="1 of 4 shapes .* not found .*uid2ccc.*missing: skip"):
        build(registry, "mcrx/objaverse-lvis", root=str(root)).items("pointcloud")
    data = build(registry, "mcrx/objaverse-lvis", root=str(root), missing="skip")
    assert data.labels("pointcloud").tolist() == [1, 0, 2]
    assert len(data.classes()) == 3  # classes stay those of the whole split


def test_objaverse_lvis_refuses_code_in_a_shape(registry, layout, tmp_path):
    root = layout("objaverse_lvis")
    target = tmp_path / "created-by-the-npy"
    path = next(root.rglob("uid0aaa.npy"))
    array = np.empty((), dtype=object)
    array[()] = {"xyz": _Payload(target)}
    np.save(path, array)
    data = build(registry, "mcrx/objaverse-lvis", root=str(root))
    with pytest.raises(McrxError, match="refusing .*mkdir"):
        data.items("pointcloud")[0]
    assert not target.exists()
