"""The JSON API of `mcrx serve`, through a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from search_helpers import ITEMS, MODALITIES, Server, class_of

from mcrx.search import Collection


def get(server, path: str, **kwargs) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, **kwargs)


def post(server, data: dict, files: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/api/search", data=data, files=files, timeout=60, **kwargs)


def test_binds_localhost_and_lists_the_collection(server):
    assert f"http://127.0.0.1:{server.port}/" in server.log.read_text()
    (listed,) = get(server, "/api/collections").json()
    assert listed["items"] == len(MODALITIES) * ITEMS
    assert listed["counts"] == dict.fromkeys(sorted(MODALITIES), ITEMS)
    assert set(listed["modalities"]) == set(MODALITIES)


def test_get_search_by_item_with_a_modality_filter(server, demo_collection):
    with Collection(demo_collection) as collection:
        item = next(collection.items("audio"))
        expected = collection.search(f"#{item.id}", n=5, modalities=["pointcloud", "image"])
    answer = get(server, "/api/search", params={"q": f"#{item.id}", "n": 5,
                                                 "in": "pointcloud,image"}).json()
    assert [r["id"] for r in answer["results"]] == [h.id for h in expected]
    assert {r["modality"] for r in answer["results"]} <= {"pointcloud", "image"}
    first = answer["results"][0]
    assert first["score"] == pytest.approx(expected[0].score, abs=1e-5)
    assert first["folder"] == class_of(first["path"])
    assert first["preview"]["url"].endswith(f"/{first['id']}/preview")


def test_post_an_upload_searches_with_it_and_leaves_nothing_behind(server, demo_files,
                                                                   demo_collection):
    query = sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0]
    with Collection(demo_collection) as collection:
        expected = collection.search(f"audio:{query}", n=10)
    answer = post(server, {"q": "", "n": "10", "file_modality": "audio"},
                  files={"file": ("../../etc/evil name.npy", query.read_bytes())})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert [r["id"] for r in data["results"]] == [h.id for h in expected]
    assert data["query"] == ["audio:(uploaded file)"]
    # the upload went to a temporary folder of the server's TMPDIR, deleted after the search
    assert list(server.tmp.iterdir()) == []


def test_upload_plus_typed_terms_is_one_sum(server, demo_files, demo_collection):
    query = sorted((demo_files["queries"] / "pointcloud").rglob("*.npy"))[0]
    with Collection(demo_collection) as collection:
        item = next(collection.items("text"))
        vector = collection.query_vector(f"2:#{item.id} - 0.5:pointcloud:{query}")
        expected = collection.search_vector(vector, n=5)
    answer = post(server, {"q": f"2:#{item.id}", "n": "5", "file_modality": "pointcloud",
                           "file_weight": "-0.5"},
                  files={"file": ("cloud.npy", query.read_bytes())}).json()
    assert [r["id"] for r in answer["results"]] == [h.id for h in expected]


def test_user_errors_are_json_400s(server):
    cases = {
        "/etc/passwd": "only files of the collection",
        "#99999999": "no item #99999999",
        "a + + b": "must stand between two terms",
    }
    for q, message in cases.items():
        answer = get(server, "/api/search", params={"q": q})
        assert answer.status_code == 400 and message in answer.json()["error"]
    answer = post(server, {"q": ""}, files={"file": ("x.npy", b"\x93NUMPY")})
    assert answer.status_code == 400 and "cannot tell the modality" in answer.json()["error"]


def test_files_and_previews_are_served_only_by_item_id(server, demo_collection):
    with Collection(demo_collection) as collection:
        items = {m: next(collection.items(m)) for m in MODALITIES}
    raw = get(server, f"/api/items/toy.mcrx/{items['audio'].id}/file")
    assert raw.status_code == 200
    assert raw.content == open(items["audio"].path, "rb").read()
    assert "sandbox" in raw.headers["content-security-policy"]

    magic = {"image": b"\x89PNG", "pointcloud": b"\x89PNG", "audio": b"RIFF"}
    for modality, start in magic.items():
        preview = get(server, f"/api/items/toy.mcrx/{items[modality].id}/preview")
        assert preview.status_code == 200 and preview.content.startswith(start), modality
    text = get(server, f"/api/items/toy.mcrx/{items['text'].id}/preview")
    assert text.headers["content-type"].startswith("text/plain")
    assert "raw text vector (32 numbers)" in text.text

    for path in ("/api/items/toy.mcrx/99999999/file", "/api/items/other/1/file",
                 "/api/items/toy.mcrx/..%2F..%2Fetc%2Fpasswd/file", "/static/../items.sqlite",
                 "/static/%2e%2e/server.py"):
        assert get(server, path).status_code in (404, 422), path


def test_requests_for_another_host_are_refused(server):
    answer = get(server, "/api/collections", headers={"Host": "attacker.example"})
    assert answer.status_code == 400


def test_uploads_above_the_limit_are_refused(tmp_path_factory, demo_collection, cache_dir):
    tmp = tmp_path_factory.mktemp("small-upload-tmp")
    small = Server(demo_collection, cache_dir, tmp, "--max-upload-mb", "0.01")
    try:
        big = np.zeros(20_000, dtype=np.float32).tobytes()  # 80 kB > 10 kB
        answer = post(small, {"file_modality": "audio"}, files={"file": ("a.npy", big)})
        assert answer.status_code == 413 and "limit" in answer.json()["error"]
        assert list(tmp.iterdir()) == []
    finally:
        small.stop()
