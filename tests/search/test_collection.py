"""Collections: the index → search round trip on the toy world, incremental re-indexing,
the pinned model, IVF indexes, and an index that heals after a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from search_helpers import CLASSES, ITEMS, MODALITIES, class_of

import mcrx
from mcrx.errors import McrxError
from mcrx.search import Collection, model_fingerprint
from mcrx.search.collection import INDEX_DIR


def test_round_trip_nearest_items_are_of_the_query_class(demo_collection, demo_files):
    """A held-out item of one modality finds items of its class in every other modality
    (audio and point clouds never met in training: their alignment emerged)."""
    hits = total = 0
    per_pair = {}
    with Collection(demo_collection) as collection:
        assert collection.counts() == dict.fromkeys(sorted(MODALITIES), ITEMS)
        for query_modality in MODALITIES:
            queries = sorted((demo_files["queries"] / query_modality).rglob("*.npy"))
            for target in MODALITIES:
                if target == query_modality:
                    continue
                right = 0
                for query in queries:
                    (best,) = collection.search(f"{query_modality}:{query}", n=1,
                                                modalities=[target])
                    assert best.modality == target
                    right += class_of(best.path) == class_of(query)
                per_pair[f"{query_modality}->{target}"] = right / len(queries)
                hits, total = hits + right, total + len(queries)
    accuracy = hits / total
    print(f"top-1 class accuracy {accuracy:.3f} (chance {1 / CLASSES:.3f}): {per_pair}")
    # chance is 1/40; the small demo model gets about 0.4 (measured 0.3-0.5 per pair)
    assert accuracy > 8 / CLASSES, per_pair
    assert per_pair["audio->pointcloud"] > 4 / CLASSES, per_pair


def test_the_python_api_is_mcrx_collection(demo_collection):
    assert mcrx.Collection is Collection
    with mcrx.Collection(demo_collection) as collection:
        assert len(collection) == len(MODALITIES) * ITEMS


def test_stored_vectors_are_the_models_embeddings(demo_collection, search_model):
    model = mcrx.load(search_model)
    with Collection(demo_collection) as collection:
        items = list(collection.items("pointcloud"))[:16]
        expected = model.embed("pointcloud", [item.path for item in items]).numpy()
        np.testing.assert_allclose(collection.vectors([i.id for i in items]), expected,
                                   atol=1e-6)
        assert collection.model_fingerprint == model_fingerprint(search_model)


def test_modality_filter_and_result_count(demo_collection):
    with Collection(demo_collection) as collection:
        item = next(collection.items("audio"))
        hits = collection.search(f"#{item.id}", n=7, modalities=["image", "pointcloud"])
        assert len(hits) == 7
        assert {h.modality for h in hits} <= {"image", "pointcloud"}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        everything = collection.search(f"#{item.id}", n=3)
        assert everything[0].id == item.id and everything[0].score == pytest.approx(1, abs=1e-5)
        with pytest.raises(McrxError, match="no smell"):
            collection.search(f"#{item.id}", modalities=["smell"])
        # --each: the top 3 of every modality, each group best first
        each = collection.search(f"#{item.id}", n=3, each=True)
        assert [h.modality for h in each] == [m for m in sorted(MODALITIES) for _ in range(3)]
        for start in range(0, len(each), 3):
            group = [h.score for h in each[start : start + 3]]
            assert group == sorted(group, reverse=True)


def _audio_folder(tmp_path: Path, demo_files) -> Path:
    folder = tmp_path / "sounds"
    shutil.copytree(demo_files["files"] / "audio", folder)
    return folder


def test_reindex_embeds_only_new_or_changed_files_and_drops_deleted(
        tmp_path, search_model, demo_files):
    folder = _audio_folder(tmp_path, demo_files)
    files = sorted(folder.rglob("*.npy"))
    with Collection(tmp_path / "c.mcrx", model=search_model) as collection:
        first = collection.index([folder], modality="audio")
        assert (first.added, first.embedded, first.unchanged) == (ITEMS, ITEMS, 0)

        again = collection.index([folder], modality="audio")
        assert (again.embedded, again.unchanged) == (0, ITEMS)

        # one file's content changes: exactly that one is re-embedded, and keeps its id
        changed = files[3]
        before = collection.item_by_path(changed.resolve())
        np.save(changed, np.load(files[100]) * 0.5 + 0.1)
        report = collection.index([folder], modality="audio")
        assert (report.changed, report.embedded, report.unchanged) == (1, 1, ITEMS - 1)
        after = collection.item_by_path(changed.resolve())
        assert after.id == before.id and after.sha256 != before.sha256
        model = mcrx.load(search_model)
        np.testing.assert_allclose(collection.vectors([after.id])[0],
                                   model.embed("audio", [str(changed)]).numpy()[0], atol=1e-6)

        # touching a file (new mtime, same bytes) re-reads it but embeds nothing
        later = os.stat(files[5]).st_mtime_ns + 5_000_000_000
        os.utime(files[5], ns=(later, later))
        report = collection.index([folder], modality="audio")
        assert (report.touched, report.embedded) == (1, 0)

        # a copy under a new name reuses the stored vector; a deleted file is dropped
        copy = folder / "copy-of-7.npy"
        shutil.copy(files[7], copy)
        gone = collection.item_by_path(files[9].resolve())
        files[9].unlink()
        report = collection.index([folder], modality="audio")
        assert (report.reused, report.dropped, report.embedded) == (1, 1, 0)
        assert len(collection) == ITEMS
        assert collection.item(gone.id) is None
        hits = collection.search(f"#{collection.item_by_path(copy.resolve()).id}", n=ITEMS)
        assert gone.id not in {h.id for h in hits} and len(hits) == ITEMS


def test_an_unreadable_file_is_reported_and_the_rest_indexed(tmp_path, search_model,
                                                            demo_files):
    folder = _audio_folder(tmp_path, demo_files)
    broken = folder / "class-00" / "broken.npy"
    broken.write_bytes(b"this is not a numpy file")
    wrong = folder / "class-00" / "wrong-size.npy"
    np.save(wrong, np.zeros(7, dtype=np.float32))
    with Collection(tmp_path / "c.mcrx", model=search_model) as collection:
        report = collection.index([folder], modality="audio")
    assert report.added == ITEMS
    failed = dict(report.failed)
    assert set(failed) == {str(broken.resolve()), str(wrong.resolve())}
    assert "broken.npy" in failed[str(broken.resolve())]
    assert "40 numbers, got 7" in failed[str(wrong.resolve())]


def _other_model(search_model: Path, target: Path) -> Path:
    """The same model with different connector weights: another model."""
    shutil.copytree(search_model, target)
    for file in (target / "connectors").glob("*.safetensors"):
        tensors = load_file(file)
        save_file({k: v * 1.01 if v.dtype.kind == "f" else v for k, v in tensors.items()}, file)
    return target


def test_a_collection_refuses_another_model(tmp_path, search_model, demo_files):
    other = _other_model(search_model, tmp_path / "other-model")
    folder = _audio_folder(tmp_path, demo_files)
    with Collection(tmp_path / "c.mcrx", model=search_model) as collection:
        collection.index([folder / "class-00"], modality="audio")
    with pytest.raises(McrxError, match="not the model collection .* was built with"):
        Collection(tmp_path / "c.mcrx", model=other)
    # a moved copy of the same model is accepted
    moved = tmp_path / "moved-model"
    shutil.copytree(search_model, moved)
    with Collection(tmp_path / "c.mcrx", model=moved) as collection:
        assert collection.model_path == moved.resolve()


def test_a_model_changed_in_place_is_detected(tmp_path, search_model, demo_files):
    model = tmp_path / "model"
    shutil.copytree(search_model, model)
    folder = _audio_folder(tmp_path, demo_files)
    with Collection(tmp_path / "c.mcrx", model=model) as collection:
        collection.index([folder / "class-00"], modality="audio")
    shutil.rmtree(model)
    _other_model(search_model, model)
    with Collection(tmp_path / "c.mcrx") as collection, pytest.raises(
            McrxError, match="changed since collection"):
        collection.search("audio:" + str(next(folder.rglob("*.npy"))))


def test_not_a_collection_and_a_folder_in_the_way(tmp_path, search_model):
    with pytest.raises(McrxError, match="is not a collection .*mcrx index MODEL"):
        Collection(tmp_path / "nothing")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(McrxError, match="exists and is not a collection"):
        Collection(tmp_path / "busy", model=search_model)


def test_ivf_index_above_the_threshold_agrees_with_exact(demo_collection, collection_copy):
    with Collection(demo_collection) as exact, Collection(collection_copy,
                                                          ivf_threshold=100) as ivf:
        shutil.rmtree(collection_copy / INDEX_DIR, ignore_errors=True)
        ivf.refresh_indexes(write=True)
        assert set(ivf.info()["indexes"].values()) == {"ivf"}
        assert set(exact.info()["indexes"].values()) == {"flat"}
        overlap = []
        for item in list(exact.items("text"))[:20]:
            truth = [h.id for h in exact.search(f"#{item.id}", n=10, modalities=["audio"])]
            every_list = ivf.search(f"#{item.id}", n=10, modalities=["audio"], nprobe=10_000)
            assert [h.id for h in every_list] == truth  # visiting every list is exact
            approx = [h.id for h in ivf.search(f"#{item.id}", n=10, modalities=["audio"])]
            overlap.append(len(set(approx) & set(truth)) / 10)
        assert np.mean(overlap) > 0.5


def test_a_lost_or_stale_index_is_rebuilt_from_the_database(collection_copy):
    with Collection(collection_copy) as collection:
        item = next(collection.items("image"))
        before = collection.search(f"#{item.id}", n=5)
    shutil.rmtree(collection_copy / INDEX_DIR)  # as if the process died before writing it
    with Collection(collection_copy) as collection:
        assert collection.search(f"#{item.id}", n=5) == before
        collection.remove([item.path])
        assert len(collection) == len(MODALITIES) * ITEMS - 1
        other = next(collection.items("text"))
        assert item.id not in {h.id for h in collection.search(f"#{other.id}", n=50)}
    files = sorted(p.name for p in (collection_copy / INDEX_DIR).iterdir())
    assert len(files) == len(MODALITIES)  # one file per modality, old versions removed
