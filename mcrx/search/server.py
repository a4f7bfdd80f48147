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

What keeps it safe to run on a workstation: it binds 127.0.0.1 unless told otherwise, and
answers only requests whose Host is the address it serves (a web page elsewhere cannot
reach it through DNS rebinding); a query may name only files of the collection (anything
else is uploaded); an upload is refused above ``max_upload_bytes``, is saved under a fresh
temporary folder with a name of the server's choosing, and is deleted once embedded; files
are served only by item id, so only paths recorded in the collection can be read.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mcrx.errors import McrxError
from mcrx.search.collection import Collection, Hit
from mcrx.search.files import modality_of_suffix
from mcrx.search.previews import preview_kind, render_preview, text_preview
from mcrx.search.query import Term, parse_query

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
MAX_RESULTS = 200
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
OUTSIDE_FILES = ("only files of the collection can be named here; drop the file on the page "
                 "to search with it")
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


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


class _PreviewCache:
    """The last rendered previews (rendering a point cloud costs ~50 ms)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, make) -> tuple[bytes, str]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = make()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value


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

    app = FastAPI(title="mcrx search", docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(McrxError)
    async def user_error(request: Request, exc: McrxError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.endswith("/file"):  # a user's file never runs as a page of ours
            response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
        else:
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:")
        return response

    def collection(name: str | None) -> tuple[str, Collection]:
        if not name:
            name = next(iter(served))
        if name not in served:
            raise HTTPException(404, f"no collection {name!r}; serving {', '.join(served)}")
        return name, served[name]

    def common_root(c: Collection) -> str:
        paths = [item.path for item in c.items()]
        if not paths:
            return ""
        import os

        root = os.path.commonpath(paths)
        return root if Path(root).is_dir() else str(Path(root).parent)

    roots = {name: common_root(c) for name, c in served.items()}

    def describe(name: str, hit: Hit | Any, score: float | None = None) -> dict[str, Any]:
        root = roots.get(name) or ""
        path = Path(hit.path)
        shown = str(path.relative_to(root)) if root and hit.path.startswith(root) else hit.path
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
            try:
                entry["text"] = text_preview(path)
            except McrxError as exc:
                entry["text"] = str(exc)
        return entry

    def run_search(name: str, c: Collection, q: str, n: int, modalities: str | None,
                   default_modality: str | None, upload: tuple[Path, str, float] | None,
                   each: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        selected = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
        if not 1 <= n <= MAX_RESULTS:
            raise McrxError(f"n must be between 1 and {MAX_RESULTS}, got {n}")
        terms: list[Term] = parse_query(q, c.model_modalities) if q.strip() else []
        if upload is not None:
            path, modality, weight = upload
            terms.append(Term(weight=weight, value=str(path), modality=modality))
        if not terms:
            raise McrxError("type a query or drop a file")
        uploaded = upload[0] if upload else None

        def allow(path: Path) -> bool:  # uploads and the collection's own files only
            return (uploaded is not None and path == uploaded) or c.contains_path(path)

        with search_lock:
            vector = c.query_vector(terms, default_modality or None, allow, OUTSIDE_FILES)
            hits = c.search_vector(vector, n, selected, each=each)
        query = [t.describe() for t in terms]
        if upload is not None:
            query[-1] = query[-1].replace(str(upload[0]), "(uploaded file)")
        return {
            "collection": name,
            "query": query,
            "results": [describe(name, hit, hit.score) for hit in hits],
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
    async def search_post(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "send a Content-Length (chunked uploads are refused)")
        if not length.isdigit() or int(length) > max_upload_bytes:
            limit = max_upload_bytes / 1024 / 1024
            raise HTTPException(413, f"the upload is larger than the server's limit of "
                                     f"{limit:g} MiB (mcrx serve --max-upload-mb)")
        form = await request.form(max_files=1, max_fields=16)
        try:
            name, c = collection(str(form.get("collection") or "") or None)
            q = str(form.get("q") or "")
            n = _int(form.get("n"), 10, "n")
            file = form.get("file")
            # a fresh private folder per request: nothing is written anywhere else, and
            # the folder goes when the search is done (or fails)
            with tempfile.TemporaryDirectory(prefix="mcrx-upload-") as folder:
                upload = None
                if isinstance(file, UploadFile) and (file.filename or file.size):
                    upload = _save_upload(file, Path(folder), c, form)
                each = str(form.get("each") or "").lower() in ("1", "true", "on")
                return await asyncio.to_thread(
                    run_search, name, c, q, n, str(form.get("in") or "") or None,
                    str(form.get("modality") or "") or None, upload, each)
        finally:
            await form.close()

    def stored_item(name: str, item_id: int):
        _, c = collection(name)
        item = c.item(item_id)
        if item is None:
            raise HTTPException(404, f"collection {name} has no item #{item_id}")
        path = Path(item.path)
        if not path.is_file():
            raise HTTPException(410, f"the file of item #{item_id} is gone: {item.path}")
        return c, item, path

    @app.get("/api/items/{name}/{item_id}")
    async def item_info(name: str, item_id: int) -> dict[str, Any]:
        _, item, _ = stored_item(name, item_id)
        return {**describe(name, item), "size": item.size, "sha256": item.sha256}

    @app.get("/api/items/{name}/{item_id}/file")
    async def item_file(name: str, item_id: int) -> FileResponse:
        _, item, path = stored_item(name, item_id)  # only paths recorded in the collection
        return FileResponse(path, filename=path.name)

    @app.get("/api/items/{name}/{item_id}/preview")
    async def item_preview(name: str, item_id: int) -> Response:
        _, item, path = stored_item(name, item_id)
        key = (item.path, item.modality, item.size, item.mtime_ns)
        try:
            content, media_type = await asyncio.to_thread(
                previews.get, key, lambda: render_preview(path, item.modality))
        except McrxError as exc:
            raise HTTPException(415, f"no preview: {exc}") from None
        return Response(content, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=300"})

    return app


def _int(value: Any, default: int, what: str) -> int:
    if value in (None, ""):
        return default
    try:
        return int(str(value))
    except ValueError:
        raise McrxError(f"{what} must be a whole number, got {value!r}") from None


def _save_upload(file: UploadFile, folder: Path, c: Collection, form) -> tuple[Path, str, float]:
    """Copy an uploaded file into ``folder`` under a name of our own (the client's name is
    never used as a path: only its suffix, when it is plain letters and digits)."""
    suffix = Path(file.filename or "").suffix
    suffix = suffix if _SAFE_SUFFIX.match(suffix) else ""
    target = folder / f"upload{suffix.lower()}"
    with open(target, "wb") as out:
        shutil.copyfileobj(file.file, out)
    modality = str(form.get("file_modality") or "") or modality_of_suffix(
        target, c.model_modalities)
    if modality is None:
        raise McrxError(
            f"cannot tell the modality of the uploaded {suffix or 'suffix-less'} file "
            f"{file.filename!r}: choose one ({', '.join(c.model_modalities)})")
    if modality not in c.model_modalities:
        raise McrxError(f"the model embeds {', '.join(c.model_modalities)}, not {modality!r}")
    try:
        weight = float(str(form.get("file_weight") or "1"))
    except ValueError:
        raise McrxError(f"file_weight must be a number, got {form.get('file_weight')!r}") from None
    return target, modality, weight


def serve(collections: Sequence[Collection], host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, log_level: str = "warning") -> None:
    """Run the server until interrupted."""
    import uvicorn

    if host in ("0.0.0.0", "::"):
        allowed = ["*"]  # reachable on every address: the user chose to expose it
    else:
        allowed = sorted({*LOOPBACK_HOSTS, host, f"[{host}]" if ":" in host else host})
    app = create_app(collections, max_upload_bytes, allowed)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
