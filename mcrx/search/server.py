"""``mcrx serve``: a JSON API and a small web page over one or more collections.

    GET  /                                   the page (static/index.html, plain HTML + JS)
    GET  /api/collections                    the collections served: items, modalities, model
    GET  /api/search?q=...&collection=&n=10&in=audio,image&modality=&each=0
    POST /api/search                         the same as a multipart form, plus an uploaded
                                             ``file`` (``file_modality``, ``file_weight``)
                                             added to the query as one more term
    GET  /api/items/{collection}/{id}        one item's metadata
    GET  /api/items/{collection}/{id}/file   the item's file, as it is
    GET  /api/items/{collection}/{id}/preview  a thumbnail, a playable sound, a picture of a
                                             point cloud, or the text

What keeps it safe to run on a workstation, checked on every request:

- it binds 127.0.0.1 unless told otherwise, and answers only requests whose ``Host`` is
  the address it serves (a web page elsewhere cannot reach it through DNS rebinding);
- every response carries ``Cross-Origin-Resource-Policy: same-origin`` (Fetch standard,
  https://fetch.spec.whatwg.org/#cross-origin-resource-policy-header): another site cannot
  embed a preview or a file to learn which ids exist; a POST whose ``Origin`` is another
  origin, or whose ``Sec-Fetch-Site`` (https://www.w3.org/TR/fetch-metadata/) is not
  ``same-origin``/``none``, is refused (a form on another site cannot search with a file);
- a collection's file is read only through the file the collection opened and checked when
  it is served (:mod:`mcrx.search.serving_files`), by item id; a typed query names files
  only by the path the collection recorded, and uses their stored vectors: nothing typed
  is ever opened (``text:`` terms and texts are embedded as words);
- an upload is counted as it arrives (chunked bodies too) and refused past
  ``max_upload_bytes``; it is saved under a fresh temporary folder with a name of the
  server's choosing and deleted once embedded; an ``.npy`` upload is checked by
  :func:`mcrx.store.inputs.load_npy` before the encoder reads it;
- a bad request is a 4xx with a one-line ``{"error": ...}``; previews are rendered from
  bounded inputs and cached in a byte-bounded LRU.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcrx.errors import McrxError
from mcrx.search.collection import Collection, Hit
from mcrx.search.files import looks_like_path, modality_of_suffix
from mcrx.search.previews import (
    PreviewTooLarge,
    passthrough,
    preview_kind,
    render_preview,
    text_preview,
)
from mcrx.search.query import MAX_ITEM_ID, Term, combine, parse_query
from mcrx.search.serving_files import never_opened, open_item, read_bounded

log = logging.getLogger("mcrx.serve")

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
MAX_RESULTS = 200
#: bytes of rendered previews kept in memory, at most (least recently used go first)
PREVIEW_CACHE_BYTES = 64 * 1024 * 1024
#: an item file larger than this is not read to render a preview (a browser-playable sound
#: is streamed as it is, whatever its size)
PREVIEW_READ_LIMIT = 32 * 1024 * 1024
#: bytes of a text item read to show it in a result
TEXT_READ_LIMIT = 64 * 1024
#: rows an uploaded ``.npy`` may claim (a query is one item: a vector, a waveform, a cloud)
UPLOAD_MAX_ROWS = 1_000_000
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
OUTSIDE_FILES = ("only files of the collection can be named here, as the collection "
                 "records them (or #id); drop the file on the page to search with it")
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ItemId = Annotated[int, PathParam(ge=0, le=MAX_ITEM_ID, description="the item's id")]


def collection_names(paths: Sequence[Path]) -> list[str]:
    """A short, unique name per collection folder (its name, numbered when repeated)."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name) or "collection"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class _PreviewCache:
    """The last rendered previews, at most ``max_bytes`` of them (least recently used
    dropped first; one preview above a quarter of it is not kept). Rendering a point cloud
    costs ~50 ms."""

    def __init__(self, max_bytes: int = PREVIEW_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = make()
        size = len(value[0])
        if size > self.max_bytes // 4:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = value
                self.bytes += size
            while self.bytes > self.max_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self.bytes -= len(dropped)
        return value


class _Guard:
    """The outermost layer of the app (pure ASGI, so that it sees every response, the
    errors of the layers inside included):

    - security headers on every response: ``Cross-Origin-Resource-Policy: same-origin``,
      ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, and a
      ``Content-Security-Policy`` (a sandbox for the items' files and previews);
    - requests that change nothing only: a non-GET request from another site (``Origin``
      not this server's, or ``Sec-Fetch-Site`` other than ``same-origin``/``none``) is
      refused with 403 before its body is read;
    - the body limit on the bytes that arrive: a declared ``Content-Length`` above it is
      refused at once, and a body without one (``Transfer-Encoding: chunked``) is counted
      as it is received and refused (413) at the first byte past the limit."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cross-Origin-Resource-Policy"] = "same-origin"
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if path.startswith("/api/items/"):  # a user's file never runs as a page
                    headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
                else:
                    headers.setdefault(
                        "Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data: blob:; "
                        "media-src 'self' blob:; frame-ancestors 'none'")
            await send(message)

        request_headers = Headers(scope=scope)
        if scope["method"] not in _SAFE_METHODS:
            refused = _cross_site(request_headers)
            if refused:
                await _send_error(send_with_headers, 403, refused)
                return
        length = request_headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_error(send_with_headers, 413, self._too_large())
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, self._too_large(), {"Connection": "close"})
            return message

        await self.app(scope, counted, send_with_headers)

    def _too_large(self) -> str:
        return (f"the request is larger than the server's limit of "
                f"{self.max_body / 1024 / 1024:g} MiB (mcrx serve --max-upload-mb)")


def _cross_site(headers: Headers) -> str | None:
    """Why a state-changing request looks sent by another site's page, or None. Browsers
    send ``Origin`` with every POST (https://fetch.spec.whatwg.org/#origin-header) and,
    today, ``Sec-Fetch-Site``; a client without either (curl, scripts) is no browser."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: a {site} request (only this server's own page may POST here)"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != headers.get("host", "").lower():
            return (f"refused: a request from the page of {one_line(origin, 80)!r} (only "
                    "this server's own page may POST here)")
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=status,
                            headers={"Connection": "close"})
    await send({"type": "http.response.start", "status": status,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class _App(FastAPI):
    """FastAPI with :class:`_Guard` around everything (its error pages included)."""

    max_body: int = DEFAULT_MAX_UPLOAD

    def build_middleware_stack(self) -> ASGIApp:
        return _Guard(super().build_middleware_stack(), self.max_body)


def create_app(
    collections: Sequence[Collection],
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The FastAPI app serving ``collections`` (already opened, models loadable)."""
    if not collections:
        raise McrxError("serve needs at least one collection")
    served = dict(zip(collection_names([c.path for c in collections]), collections,
                      strict=True))
    previews = _PreviewCache()
    # one query at a time per process: torch already uses every core for one embedding,
    # and a collection's SQLite handle is shared
    search_lock = threading.Lock()

    app = _App(title="mcrx search", docs_url="/api/docs", redoc_url=None,
               openapi_url="/api/openapi.json")
    # the form's fields and its file, besides the upload itself
    app.max_body = max_upload_bytes + 64 * 1024
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(McrxError)
    async def user_error(request: Request, exc: McrxError) -> JSONResponse:
        return JSONResponse({"error": one_line(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}"
                             f": {e.get('msg', 'invalid')}" for e in exc.errors())
        return JSONResponse({"error": one_line(problems)}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server's "
                             "log has the details"}, status_code=500)

    def collection(name: str | None) -> tuple[str, Collection]:
        if not name:
            name = next(iter(served))
        if name not in served:
            raise HTTPException(404, f"no collection {one_line(name, 80)!r}; serving "
                                f"{', '.join(served)}")
        return name, served[name]

    def common_root(c: Collection) -> str:
        paths = [item.path for item in c.items()]
        if not paths:
            return ""
        root = os.path.commonpath(paths)
        return root if root not in paths else os.path.dirname(root)

    roots = {name: common_root(c) for name, c in served.items()}

    def shown_text(c: Collection, item_id: int, name: str) -> str:
        """A text item's text, read through the checked open file (bounded)."""
        try:
            with open_item(c, item_id) as file:
                data, more = read_bounded(file, TEXT_READ_LIMIT)
            return text_preview(data, name, truncated=more)
        except McrxError as exc:
            return f"(not shown: {one_line(exc, 200)})"

    def describe(name: str, c: Collection, hit: Hit | Any,
                 score: float | None = None) -> dict[str, Any]:
        root = roots.get(name) or ""
        path = Path(hit.path)
        shown = (os.path.relpath(hit.path, root) if root and hit.path.startswith(root + os.sep)
                 else hit.path)
        entry = {
            "id": hit.id, "path": hit.path, "name": shown, "modality": hit.modality,
            "folder": path.parent.name,
            "preview": {"kind": preview_kind(hit.modality),
                        "url": f"/api/items/{name}/{hit.id}/preview"},
            "file": f"/api/items/{name}/{hit.id}/file",
        }
        if score is not None:
            entry["score"] = round(score, 6)
        if hit.modality == "text":
            entry["text"] = shown_text(c, hit.id, path.name)
        return entry

    def embed_text(c: Collection, text: str) -> np.ndarray:
        """A text's vector; the text is never opened as a file, whatever the encoder."""
        if "text" not in c.model_modalities:
            raise McrxError(f"{one_line(text, 80)!r} is not a file of the collection, and "
                            f"the model embeds no text ({', '.join(c.model_modalities)})")
        try:
            with never_opened(text):
                return c.model.embed("text", [text]).numpy()[0].astype(np.float32)
        except McrxError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tokenizer's own error: the input's fault
            raise McrxError(f"the text encoder cannot embed {one_line(text, 60)!r} "
                            f"({type(exc).__name__}: {one_line(exc, 120)})") from None

    def named_item(c: Collection, name: str, value: str):
        """The item a typed path names, as the collection records it (absolute, or
        relative to the collection's common folder); nothing is looked up on disk."""
        if value.startswith("~"):
            return None  # never expanded: the server's home is none of the user's business
        root = roots.get(name) or ""
        if not os.path.isabs(value):
            if not root:
                return None
            value = os.path.join(root, value)
        return c.item_by_path(os.path.normpath(value))

    def term_vector(name: str, c: Collection, term: Term,
                    default_modality: str | None) -> np.ndarray:
        if term.item is not None:
            return c.vectors([term.item])[0]
        if term.modality == "text":
            return embed_text(c, term.value)
        item = named_item(c, name, term.value)
        if item is not None:
            wanted = term.modality or default_modality
            if wanted and wanted != item.modality:
                raise McrxError(f"{one_line(term.value, 120)} is indexed as {item.modality}, "
                                f"not {wanted}: search with #{item.id}")
            return c.vectors([item.id])[0]  # the stored vector: the file is not read
        if term.modality is not None or looks_like_path(term.value):
            raise McrxError(f"{one_line(term.value, 120)}: {OUTSIDE_FILES}")
        return embed_text(c, term.value)

    def upload_vector(c: Collection, path: Path, modality: str) -> np.ndarray:
        """The vector of an uploaded file: a text by its content (an ``.npy`` text, the toy
        world's raw vector, by its array: never its path, which a text tower would embed
        as words), anything else by the encoder reading the private copy (an ``.npy``
        checked by ``load_npy`` first)."""
        if modality == "text" and path.suffix == ".npy":
            from mcrx.store.inputs import load_npy

            try:
                array = load_npy(path, "uploaded text array", max_rows=UPLOAD_MAX_ROWS)
                return c.model.embed("text", [array]).numpy()[0].astype(np.float32)
            except McrxError as exc:
                raise McrxError(str(exc).replace(str(path), "(uploaded file)")) from None
            except Exception as exc:  # noqa: BLE001 - the encoder's own error: the input's
                raise McrxError(f"the text encoder cannot embed the uploaded array "
                                f"({type(exc).__name__}: {one_line(exc, 120)})") from None
        if modality == "text":
            try:
                text = path.read_bytes().decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise McrxError(f"the uploaded text is not UTF-8 ({exc.reason} at byte "
                                f"{exc.start})") from None
            if not text:
                raise McrxError("the uploaded text is empty")
            return embed_text(c, text)
        try:
            if path.suffix == ".npy":
                from mcrx.store.inputs import load_npy

                # header against the file's size and a row limit before anything is
                # allocated; mapped, not read: checking costs no copy
                load_npy(path, f"uploaded {modality} array", mmap=True,
                         max_rows=UPLOAD_MAX_ROWS)
            return c.model.embed(modality, [str(path)]).numpy()[0].astype(np.float32)
        except McrxError as exc:
            raise McrxError(str(exc).replace(str(path), "(uploaded file)")) from None
        except Exception as exc:  # noqa: BLE001 - a decoder's own error: the upload's fault
            raise McrxError(f"the {modality} encoder cannot read the uploaded file "
                            f"({type(exc).__name__}: "
                            f"{one_line(str(exc).replace(str(path), '(uploaded file)'), 120)})"
                            ) from None

    def run_search(name: str, c: Collection, q: str, n: int, modalities: str | None,
                   default_modality: str | None, upload: tuple[Path, str, float] | None,
                   each: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        selected = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
        if not 1 <= n <= MAX_RESULTS:
            raise McrxError(f"n must be between 1 and {MAX_RESULTS}, got {n}")
        if default_modality and default_modality not in c.model_modalities:
            raise McrxError(f"the model embeds {', '.join(c.model_modalities)}, not "
                            f"{one_line(default_modality, 40)!r}")
        terms: list[Term] = parse_query(q, c.model_modalities) if q.strip() else []
        if not terms and upload is None:
            raise McrxError("type a query or drop a file")
        with search_lock:
            weights = [t.weight for t in terms]
            vectors = [term_vector(name, c, t, default_modality) for t in terms]
            query = [t.describe() for t in terms]
            if upload is not None:
                path, modality, weight = upload
                weights.append(weight)
                vectors.append(upload_vector(c, path, modality))
                query.append(Term(weight, "(uploaded file)", modality).describe())
            if not all(math.isfinite(w) for w in weights):
                raise McrxError("weights must be finite numbers")
            vector = combine(weights, np.stack(vectors))
            hits = c.search_vector(vector, n, selected, each=each)
        results = [describe(name, c, hit, hit.score) for hit in hits]
        return {
            "collection": name,
            "query": query,
            "results": results,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/collections")
    async def list_collections() -> list[dict[str, Any]]:
        return [{"name": name, "items": len(c), "counts": c.counts(),
                 "modalities": c.model_modalities, "root": roots[name],
                 "model": {"name": c.model_name, "fingerprint": c.model_fingerprint,
                           "dim": c.dim}} for name, c in served.items()]

    @app.get("/api/search")
    async def search_get(
        q: str = "",
        n: int = 10,
        collection_name: str | None = Query(None, alias="collection"),
        modalities: str | None = Query(None, alias="in", description="audio,image,..."),
        modality: str | None = Query(None, description="modality of file terms"),
        each: bool = Query(False, description="the top n of every modality"),
    ) -> dict[str, Any]:
        name, c = collection(collection_name)
        return await asyncio.to_thread(run_search, name, c, q, n, modalities, modality, None,
                                       each)

    @app.post("/api/search")
    async def search_post(
        q: Annotated[str, Form(description="the query (see GET /api/search)")] = "",
        n: Annotated[int, Form(description="results, 1-200")] = 10,
        collection_name: Annotated[str | None, Form(alias="collection")] = None,
        modalities: Annotated[str | None, Form(alias="in", description="audio,image,...")
                              ] = None,
        modality: Annotated[str | None, Form(description="modality of typed file terms")
                            ] = None,
        each: Annotated[bool, Form(description="the top n of every modality")] = False,
        file: Annotated[UploadFile | None, File(
            description="a file to search with, one more term of the sum")] = None,
        file_modality: Annotated[str | None, Form(
            description="the uploaded file's modality (default: from its suffix)")] = None,
        file_weight: Annotated[float, Form(description="the uploaded file's weight")] = 1.0,
    ) -> dict[str, Any]:
        """The search of ``GET /api/search`` as a multipart form, plus an uploaded ``file``
        (at most ``mcrx serve --max-upload-mb``) added to the query as one more term."""
        name, c = collection(collection_name)
        # a fresh private folder per request: nothing is written anywhere else, and the
        # folder goes when the search is done (or fails)
        with tempfile.TemporaryDirectory(prefix="mcrx-upload-") as folder:
            upload = None
            if file is not None and (file.filename or file.size):
                upload = await asyncio.to_thread(
                    _save_upload, file, Path(folder), c, file_modality, file_weight)
            return await asyncio.to_thread(run_search, name, c, q, n, modalities or None,
                                           modality or None, upload, each)

    def stored_item(name: str, item_id: int):
        _, c = collection(name)
        item = c.item(item_id)
        if item is None:
            raise HTTPException(404, f"collection {name} has no item #{item_id}")
        return c, item

    def opened(c: Collection, item_id: int):
        try:
            return open_item(c, item_id)
        except McrxError as exc:
            raise HTTPException(410, f"item #{item_id} cannot be served: "
                                f"{one_line(exc, 240)}") from None

    @app.get("/api/items/{name}/{item_id}")
    def item_info(name: str, item_id: ItemId) -> dict[str, Any]:
        c, item = stored_item(name, item_id)
        return {**describe(name, c, item), "size": item.size, "sha256": item.sha256}

    @app.get("/api/items/{name}/{item_id}/file", response_class=StreamingResponse)
    def item_file(name: str, item_id: ItemId) -> StreamingResponse:
        c, item = stored_item(name, item_id)
        file = opened(c, item_id)
        size = os.fstat(file.fileno()).st_size
        filename = quote(Path(item.path).name)
        return StreamingResponse(
            _chunks(file), media_type="application/octet-stream",
            headers={"Content-Length": str(size),
                     "Content-Disposition": f"attachment; filename*=utf-8''{filename}"})

    @app.get("/api/items/{name}/{item_id}/preview")
    def item_preview(name: str, item_id: ItemId) -> Response:
        c, item = stored_item(name, item_id)
        file = opened(c, item_id)
        filename = Path(item.path).name
        played = passthrough(filename, item.modality)
        if played:  # a sound the browser plays: the checked open file, streamed
            return StreamingResponse(
                _chunks(file), media_type=played,
                headers={"Content-Length": str(os.fstat(file.fileno()).st_size),
                         "Cache-Control": "private, max-age=300"})
        with file:
            key = (name, item.id, item.path, item.modality, item.size, item.mtime_ns)

            def render() -> tuple[bytes, str]:
                data, more = read_bounded(file, PREVIEW_READ_LIMIT)
                if more:
                    raise PreviewTooLarge(f"{filename} is larger than "
                                          f"{PREVIEW_READ_LIMIT // 2**20} MiB: no preview")
                return render_preview(data, filename, item.modality)

            try:
                content, media_type = previews.get(key, render)
            except PreviewTooLarge as exc:
                raise HTTPException(413, one_line(exc)) from None
            except McrxError as exc:
                raise HTTPException(415, f"no preview: {one_line(exc)}") from None
        return Response(content, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=300"})

    return app


def _chunks(file, size: int = 256 * 1024) -> Iterator[bytes]:
    """The open ``file`` in chunks, closed at the end (or when the client goes)."""
    with file:
        while chunk := file.read(size):
            yield chunk


def _save_upload(file: UploadFile, folder: Path, c: Collection, file_modality: str | None,
                 file_weight: float) -> tuple[Path, str, float]:
    """Copy an uploaded file into ``folder`` under a name of our own (the client's name is
    never used as a path: only its suffix, when it is plain letters and digits)."""
    suffix = Path(file.filename or "").suffix
    suffix = suffix if _SAFE_SUFFIX.match(suffix) else ""
    target = folder / f"upload{suffix.lower()}"
    with open(target, "wb") as out:
        file.file.seek(0)
        shutil.copyfileobj(file.file, out)
    shown = one_line(file.filename or "", 80)
    if target.stat().st_size == 0:
        raise McrxError(f"the uploaded file {shown!r} is empty")
    modality = file_modality or modality_of_suffix(target, c.model_modalities)
    if modality is None:
        raise McrxError(
            f"cannot tell the modality of the uploaded {suffix or 'suffix-less'} file "
            f"{shown!r}: choose one ({', '.join(c.model_modalities)})")
    if modality not in c.model_modalities:
        raise McrxError(f"the model embeds {', '.join(c.model_modalities)}, not "
                        f"{one_line(modality, 40)!r}")
    if not math.isfinite(file_weight):
        raise McrxError(f"file_weight must be a finite number, got {file_weight}")
    return target, modality, file_weight


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``; McrxError (one line) when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise McrxError(f"port {port} of {host} is in use: choose another with --port"
                            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise McrxError(f"cannot listen on port {port} of {host} (permission denied): "
                            "choose a port above 1023 with --port") from None
        raise McrxError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                        "another address with --host or port with --port") from None
    sock.set_inheritable(True)
    return sock


def serve(collections: Sequence[Collection], host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, log_level: str = "warning",
          announce: Callable[[str], None] | None = print) -> None:
    """Run the server until interrupted: bind first (a busy port is a one-line
    McrxError), then ``announce`` the address it serves, then answer."""
    import uvicorn

    if host in ("0.0.0.0", "::"):
        allowed = ["*"]  # reachable on every address: the user chose to expose it
    else:
        allowed = sorted({*LOOPBACK_HOSTS, host, f"[{host}]" if ":" in host else host})
    app = create_app(collections, max_upload_bytes, allowed)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"serving {', '.join(str(c.path) for c in collections)} on "
                 f"http://{shown}:{bound}/ (Ctrl+C stops)")
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
