"""`mcrx serve` against a hostile user: what it reads, what it tells, what it costs.

Each test is one kind of attack: a file swapped for a link after indexing, a typed text
naming a file, a page of another site, an over-long body, numbers and bytes SQLite or the
file system choke on, files that claim to be huge. Through the FastAPI app (TestClient)
where the transport does not matter, through a real uvicorn process where it does (the
chunked body, the headers of every response)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from search_helpers import MODALITIES

from mcrx.errors import McrxError
from mcrx.search import Collection
from mcrx.search import server as server_module
from mcrx.search.previews import PreviewTooLarge, image_preview, npy_array
from mcrx.search.server import _PreviewCache, bind, create_app, serve

PER_MODALITY = 4
SECRET = 7.125  # the numbers of the file outside the collection: never shown


@pytest.fixture(scope="module")
def private(tmp_path_factory, search_model, demo_files, cache_dir) -> dict:
    """A collection of a few copied demo files (the tests swap some of them), and an
    outside folder holding a secret ``.npy`` and ``.txt``."""
    root = tmp_path_factory.mktemp("hostile")
    files = root / "files"
    for modality in MODALITIES:
        for source in sorted((demo_files["files"] / modality).rglob("*.npy"))[:PER_MODALITY]:
            target = files / modality / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    outside = root / "outside"
    outside.mkdir()
    np.save(outside / "secret.npy", np.full(32, SECRET, dtype=np.float32))
    (outside / "secret.txt").write_text("the secret text")
    path = root / "c.mcrx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCRX_CACHE_DIR", str(cache_dir))
        with Collection(path, model=search_model) as collection:
            for modality in MODALITIES:
                report = collection.index([files / modality], modality=modality)
                assert report.added == PER_MODALITY and not report.failed
    return {"root": root, "files": files, "outside": outside, "collection": path}


@pytest.fixture(scope="module")
def opened(private, cache_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCRX_CACHE_DIR", str(cache_dir))
        collection = Collection(private["collection"])
        collection.model  # noqa: B018 - load it once for the module
        yield collection
        collection.close()


@pytest.fixture(scope="module")
def client(opened) -> TestClient:
    app = create_app([opened], max_upload_bytes=256 * 1024)
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def items_of(collection: Collection, modality: str) -> list:
    return list(collection.items(modality))


def error_of(answer: httpx.Response) -> str:
    body = answer.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


# -- serving-time checks: a file (or a folder on its way) swapped for a link -------------------
def test_a_file_swapped_for_a_link_after_indexing_is_not_served(client, opened, private):
    item = items_of(opened, "text")[0]
    path = Path(item.path)
    path.unlink()
    # the link target has the same size and mtime: only the link itself gives it away
    decoy = private["outside"] / "same-stat.npy"
    shutil.copy2(private["outside"] / "secret.npy", decoy)
    os.utime(decoy, ns=(item.mtime_ns, item.mtime_ns))
    path.symlink_to(decoy)
    for url in (f"/api/items/c.mcrx/{item.id}/file", f"/api/items/c.mcrx/{item.id}/preview"):
        answer = client.get(url)
        assert answer.status_code == 410, (url, answer.text)
        assert "7.12" not in answer.text and "cannot be served" in error_of(answer)
    # the text shown in a search result is read through the same check
    answer = client.get("/api/search", params={"q": f"#{item.id}", "n": 1})
    assert answer.status_code == 200, answer.text
    (first,) = answer.json()["results"]
    assert first["id"] == item.id and "7.12" not in first["text"]
    assert first["text"].startswith("(not shown")
    info = client.get(f"/api/items/c.mcrx/{item.id}")
    assert "7.12" not in info.text


def test_a_folder_swapped_for_a_link_after_indexing_is_not_served(client, opened, private):
    item = items_of(opened, "image")[0]
    folder = Path(item.path).parent
    # the same file names, sizes and times in a folder outside, linked in place of the
    # indexed folder: only the path of the opened file gives it away
    copy = private["outside"] / "image-folder"
    shutil.copytree(folder, copy)
    for child in copy.iterdir():
        np.save(child, np.full(np.load(child).shape, SECRET, dtype=np.float32))
        original = folder / child.name
        os.utime(child, ns=(original.stat().st_mtime_ns,) * 2)
    shutil.rmtree(folder)
    folder.symlink_to(copy, target_is_directory=True)
    for url in (f"/api/items/c.mcrx/{item.id}/file", f"/api/items/c.mcrx/{item.id}/preview"):
        answer = client.get(url)
        assert answer.status_code == 410, (url, answer.text)
        assert "cannot be served" in error_of(answer)


def test_a_file_changed_after_indexing_is_not_served(client, opened):
    item = items_of(opened, "pointcloud")[0]
    np.save(item.path, np.full(np.load(item.path).shape, SECRET, dtype=np.float32))
    answer = client.get(f"/api/items/c.mcrx/{item.id}/file")
    assert answer.status_code == 410 and "7.12" not in answer.text


def test_unchanged_files_are_served_from_the_opened_file(client, opened):
    item = items_of(opened, "audio")[1]
    answer = client.get(f"/api/items/c.mcrx/{item.id}/file")
    assert answer.status_code == 200
    assert answer.content == Path(item.path).read_bytes()
    assert "attachment" in answer.headers["content-disposition"]
    preview = client.get(f"/api/items/c.mcrx/{item.id}/preview")
    assert preview.status_code == 200 and preview.content.startswith(b"RIFF")


# -- typed terms are never files ----------------------------------------------------------
def test_a_typed_text_naming_a_file_is_never_read(client, private):
    secret = private["outside"] / "secret.npy"
    missing = private["outside"] / "missing.npy"
    answers = [client.get("/api/search", params={"q": f"text:{p}"}) for p in (secret, missing)]
    assert [a.status_code for a in answers] == [400, 400]
    errors = [error_of(a) for a in answers]
    # the same answer whether the file exists or not: nothing about it is told
    assert errors[0].replace(str(secret), "P") == errors[1].replace(str(missing), "P")
    assert "never opens" in errors[0] and "128" not in errors[0]  # its size
    # without text:, a path outside the collection is refused before anything is looked up
    for q in (str(secret), str(missing), f"audio:{secret}", "~nosuchuser", "~root/x.npy"):
        answer = client.get("/api/search", params={"q": q})
        assert answer.status_code == 400 and "only files of the collection" in error_of(answer)


def test_a_typed_path_of_an_indexed_file_uses_its_stored_vector(client, opened):
    item = items_of(opened, "audio")[2]
    answer = client.get("/api/search", params={"q": item.path, "n": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["id"] == item.id
    wrong = client.get("/api/search", params={"q": f"image:{item.path}"})
    assert wrong.status_code == 400 and f"#{item.id}" in error_of(wrong)


def test_an_uploaded_text_is_embedded_by_its_content(client, opened, monkeypatch):
    seen: list[tuple[str, list]] = []
    stored = opened.vectors([items_of(opened, "text")[1].id])

    def embed(modality, inputs, *args, **kwargs):
        import torch

        seen.append((modality, list(inputs)))
        return torch.from_numpy(stored.copy())

    monkeypatch.setattr(opened.model, "embed", embed)
    for name in ("query.txt", "query", "query.md"):
        answer = client.post("/api/search", data={"file_modality": "text", "n": "3"},
                             files={"file": (name, b"a dog barking\n")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["query"] == ["text:(uploaded file)"]
    assert seen == [("text", ["a dog barking"])] * 3


def test_an_uploaded_text_array_is_embedded_by_its_array(client, opened):
    """The toy world's texts are raw vectors in .npy files: the array, never the path."""
    item = items_of(opened, "text")[2]
    answer = client.post("/api/search", data={"file_modality": "text", "n": "1"},
                         files={"file": ("q.npy", Path(item.path).read_bytes())})
    assert answer.status_code == 200, answer.text
    (first,) = answer.json()["results"]
    assert first["id"] == item.id and first["score"] == pytest.approx(1.0, abs=1e-4)


# -- another site ------------------------------------------------------------------------------
def test_posts_from_another_site_are_refused(client, private):
    query = next(private["files"].glob("audio/*/*.npy")).read_bytes()
    form = {"data": {"file_modality": "audio"}, "files": {"file": ("q.npy", query)}}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-origin"}):
        answer = client.post("/api/search", headers=headers, **form)
        assert answer.status_code == 403, (headers, answer.text)
        assert "refused" in error_of(answer)
    for headers in ({}, {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}):
        answer = client.post("/api/search", headers=headers, **form)
        assert answer.status_code == 200, (headers, answer.text)


def test_every_response_forbids_cross_origin_use(server):
    """A real uvicorn: the header on pages, JSON, previews, files and every error."""
    urls = ["/", "/static/app.js", "/api/collections", "/api/search?q=%231",
            "/api/items/toy.mcrx/1/preview", "/api/items/toy.mcrx/1/file",
            "/api/items/toy.mcrx/1/nothing", "/api/items/toy.mcrx/99999999999999999999/file",
            "/api/search?q=/etc/passwd"]
    answers = [httpx.get(server.url + url, timeout=60) for url in urls]
    answers.append(httpx.get(server.url + "/", headers={"Host": "evil.example"}, timeout=60))
    answers.append(httpx.post(server.url + "/api/search", headers={"Origin": "http://x.y"},
                              data={"q": "#1"}, timeout=60))
    for url, answer in zip([*urls, "Host", "Origin"], answers, strict=True):
        assert answer.headers.get("cross-origin-resource-policy") == "same-origin", url
        assert answer.headers.get("x-content-type-options") == "nosniff", url
    statuses = [a.status_code for a in answers]
    assert statuses[:6] == [200] * 6 and statuses[6:] == [404, 422, 400, 400, 403]


# -- bounded work --------------------------------------------------------------------------
def test_a_chunked_body_is_counted_as_it_arrives(server):
    """A 40 MiB body without Content-Length: refused at the 16 MiB limit (+ the form's
    slack), the spooled part deleted, the server still answering."""
    sent = 0

    def body():
        nonlocal sent
        boundary_start = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                          b"filename=\"a.npy\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        yield boundary_start
        for _ in range(40):
            sent += 1
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    try:
        answer = httpx.post(server.url + "/api/search", content=body(), timeout=60,
                            headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert answer.status_code == 413 and "limit" in error_of(answer)
        assert answer.headers["cross-origin-resource-policy"] == "same-origin"
    except httpx.TransportError:  # the server answered and closed while we were sending
        pass
    assert sent < 40  # it stopped reading at the limit
    time.sleep(0.5)
    assert list(server.tmp.iterdir()) == []  # nothing spooled is left behind
    assert httpx.get(server.url + "/api/collections", timeout=30).status_code == 200


def test_a_declared_length_above_the_limit_is_refused_before_reading(client):
    answer = client.post("/api/search", content=b"x" * 10,
                         headers={"Content-Length": str(2**40),
                                  "Content-Type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413


def test_ids_beyond_sqlite_integers_are_4xx(client):
    huge = "9" * 30
    for url in (f"/api/items/c.mcrx/{huge}/file", f"/api/items/c.mcrx/{huge}/preview",
                f"/api/items/c.mcrx/{huge}", f"/api/items/c.mcrx/{2**63}/file",
                "/api/items/c.mcrx/-1/file", "/api/items/c.mcrx/1e3/file"):
        answer = client.get(url)
        assert answer.status_code == 422, (url, answer.text)
        error_of(answer)
    assert client.get(f"/api/items/c.mcrx/{2**63 - 1}/file").status_code == 404
    for q in (f"#{huge}", f"#{2**63}", "#" + "9" * 5000, f"2:#{huge} + #1",
              f"#{2**63 - 1}"):
        answer = client.get("/api/search", params={"q": q})
        assert answer.status_code == 400 and "no item" in error_of(answer), q
    answer = client.get("/api/search", params={"q": "#1", "n": huge})
    assert answer.status_code == 400


def test_nul_bytes_and_home_folders_in_queries_are_4xx(client):
    for q in ("a\x00b", "text:\x00", "/etc/passwd\x00.npy", "~nosuchuser", "~nosuchuser/a.npy",
              "~"):
        answer = client.get("/api/search", params={"q": q})
        assert 400 <= answer.status_code < 500, (q, answer.text)
        error_of(answer)
    answer = client.post("/api/search", data={"q": "x\x00y"})
    assert answer.status_code == 400 and "NUL" in error_of(answer)


def npy_claiming(shape: tuple, payload: bytes = b"\0" * 16) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def test_npy_uploads_are_checked_before_anything_is_allocated(client):
    cases = {"empty": b"", "header of 2^40 floats": npy_claiming((2**40,)),
             "header of 2^20 rows": npy_claiming((2**20, 32)), "not npy": b"hello"}
    for what, content in cases.items():
        started = time.perf_counter()
        answer = client.post("/api/search", data={"file_modality": "audio"},
                             files={"file": ("q.npy", content)})
        assert answer.status_code == 400, (what, answer.text)
        assert time.perf_counter() - started < 10, what
        assert "(uploaded file)" in error_of(answer) or "empty" in error_of(answer)


def test_an_over_large_image_gets_no_preview(client, opened, private):
    """A 20,000² PNG (small on disk, 400 MP decoded): 413, not a decoder's 500."""
    from PIL import Image

    big = private["files"] / "image" / "big.png"  # inside the collection's roots
    Image.new("1", (20_000, 20_000)).save(big)
    vector = opened.vectors([items_of(opened, "image")[0].id])[0].tobytes()
    stat = big.stat()
    # the toy world has no PNG encoder: the row is written as an image encoder would
    with sqlite3.connect(private["collection"] / "items.sqlite") as db:
        item_id = db.execute(
            "INSERT INTO items (path, modality, size, mtime_ns, sha256, indexed_at, vector) "
            "VALUES (?, 'image', ?, ?, 'x', 0, ?)",
            (str(big.resolve()), stat.st_size, stat.st_mtime_ns, vector)).lastrowid
    answer = client.get(f"/api/items/c.mcrx/{item_id}/preview")
    assert answer.status_code == 413 and "too large" in error_of(answer)
    with pytest.raises(PreviewTooLarge):
        image_preview(big.read_bytes(), "big.png")


def test_npy_previews_check_the_header_against_the_bytes():
    with pytest.raises(McrxError, match="header claims"):
        npy_array(npy_claiming((2**40,)), "x.npy")
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert npy_array(buffer.getvalue()).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_the_preview_cache_is_bounded_in_bytes():
    cache = _PreviewCache(max_bytes=1000)
    for key in range(50):
        cache.get((key,), lambda: (b"x" * 100, "x"))
        assert cache.bytes <= 1000
    assert cache.get(("big",), lambda: (b"x" * 900, "x"))[0] == b"x" * 900  # not kept
    assert cache.bytes <= 1000 and ("big",) not in cache._entries
    assert (49,) in cache._entries and (0,) not in cache._entries  # least recent went first


def test_no_request_is_a_500(client, private):
    """Odd inputs everywhere: each answer a 4xx with one line."""
    gets = ["/api/search?n=abc", "/api/search?q=%231&in=nothing", "/api/search?q=%231&n=0",
            "/api/search?q=%231&modality=smell", "/api/search?collection=x&q=a",
            "/api/search?q=" + "a%20" * 5000, "/api/search?q=1e999:%231",
            "/api/search?q=%231%20-%201:%231", "/api/search?q=%22unclosed",
            "/api/items/c.mcrx/abc", "/api/items/nope/1/file", "/api/nothing"]
    for url in gets:
        answer = client.get(url)
        assert 400 <= answer.status_code < 500, (url, answer.text)
        error_of(answer)
    posts = [({"n": "x"}, None), ({"file_weight": "nan"}, ("a.npy", b"\x93NUMPY")),
             ({"file_modality": "smell"}, ("a.npy", b"1")), ({}, ("a.bin", b"123")),
             ({"file_modality": "text"}, ("a.txt", b"\xff\xfe")),
             ({"file_modality": "image"}, ("a.png", b"not a png"))]
    for data, file in posts:
        answer = client.post("/api/search", data=data, files={"file": file} if file else None)
        assert 400 <= answer.status_code < 500, (data, answer.text)
        error_of(answer)


# -- the schema and the bind -----------------------------------------------------------------
def test_the_upload_form_is_in_the_openapi_schema(client):
    schema = client.get("/api/openapi.json").json()
    body = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]
    (form,) = body.values()
    ref = form["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][ref]["properties"]
    assert {"q", "n", "collection", "in", "file", "file_modality", "file_weight"} <= set(fields)
    assert "multipart/form-data" in body


def test_serve_binds_before_it_announces_and_a_busy_port_is_one_line(opened, monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(McrxError) as caught:
            serve([opened], port=port, announce=pytest.fail)
        assert str(caught.value).count("\n") == 0
        assert str(port) in str(caught.value) and "--port" in str(caught.value)

    heard: list[str] = []

    def announce(line: str) -> None:  # the port already takes connections when we say so
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        heard.append(line)

    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    serve([opened], port=0, announce=announce)
    assert len(heard) == 1 and heard[0].startswith(f"serving {opened.path} on http://127.0.0.1:")
    sock = bind("127.0.0.1", 0)  # the socket serve hands to uvicorn: listening already
    sock.close()


def test_the_page_script_keeps_only_the_latest_answer():
    """The page: ?q= runs the search, each search sets the address, late answers drop."""
    script = (Path(server_module.__file__).parent / "static" / "app.js").read_text()
    for needed in ("URLSearchParams(window.location.search)", "history.pushState",
                   "AbortController", "sequence !== latest", "popstate"):
        assert needed in script, needed


def test_many_concurrent_requests_stay_correct(client, opened):
    """Threads searching and previewing at once: every answer right, none an error."""
    ids = [item.id for item in opened.items() if not item.path.endswith("big.png")]
    failures: list[str] = []

    def work(offset: int) -> None:
        for k in range(10):
            item_id = ids[(offset + k) % len(ids)]
            answer = client.get("/api/search", params={"q": f"#{item_id}", "n": 1})
            if answer.status_code != 200 or answer.json()["results"][0]["id"] != item_id:
                failures.append(answer.text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert json.dumps(client.get("/api/collections").json())


def test_mcrx_serve_on_a_busy_port_says_so_in_one_line(private, cache_dir):
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mcrx", "serve", str(private["collection"]), "--port",
             str(port)], capture_output=True, text=True, timeout=120,
            env={**os.environ, "MCRX_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "in use" in line]
    assert len(errors) == 1 and str(port) in errors[0] and "--port" in errors[0]
    assert "Traceback" not in done.stderr
