"""A local stand-in for the Hugging Face Hub, for driving the real huggingface_hub client in tests.

It answers the requests ``huggingface_hub.snapshot_download`` (0.35.3) makes with a
``local_dir``, and the listing ``HfApi.model_info(files_metadata=True)`` makes:

* ``GET /api/models/{owner}/{name}/revision/{revision}`` - the repository at a branch, tag
  or commit (``HfApi.model_info``, which ``HfApi.repo_info`` and so ``snapshot_download``
  call; huggingface_hub/hf_api.py). ``id``, the commit ``sha`` and ``siblings``, one per
  file, ``{"rfilename": path}``; with ``?blobs=true`` also ``size``, ``blobId`` and, for
  LFS files, ``lfs: {"size", "sha256", "pointerSize"}`` (hf_api.py ModelInfo, RepoSibling).
* ``HEAD /{owner}/{name}/resolve/{revision}/{path}`` - a file's metadata
  (file_download.py get_hf_file_metadata): ``X-Repo-Commit``, ``ETag`` (the git blob id), and
  for LFS files ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``, which the client
  prefers to ``ETag`` and ``Content-Length``. The real hub redirects LFS downloads to a CDN;
  this one serves them itself. No ``X-Xet-Hash`` header, so the client downloads over HTTP
  (file_download.py _download_to_tmp_and_move), not through hf_xet.
* ``GET`` on the same URL - the file, honouring ``Range: bytes=N-`` when the client resumes
  ``<local_dir>/.cache/huggingface/download/<path>.<etag>.incomplete`` (file_download.py
  http_get).

Errors carry the ``X-Error-Code`` header that huggingface_hub/utils/_http.py
hf_raise_for_status turns into typed errors: ``RepoNotFound`` (404; and 401 for a private
model without its token, as the real hub answers), ``RevisionNotFound``, ``EntryNotFound``.
A private model (``add_model(..., token=...)``) needs ``Authorization: Bearer <token>``.

``move_branch`` points a branch at a new commit, as a push upstream does; the old commit stays
reachable by its id, as on the real hub.

Files whose name ends with ``.safetensors``, ``.bin`` or ``.pth`` are served as LFS files.
Every request is recorded with its Authorization header. A file can be made to fail (HTTP
500) or to stall: headers and part of the body, then nothing until the hub closes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_INFO_PATH = re.compile(r"^/api/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/revision/(?P<revision>[^/]+)$")
_RESOLVE_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")
SEND_PIECE = 1024 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # unquoted
    query: dict
    range: str | None
    authorization: str | None


@dataclass
class _Model:
    model_id: str
    files: dict[str, bytes]
    commit: str
    token: str | None
    sha256: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    stalling: dict[str, int] = field(default_factory=dict)


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHuggingFaceHub:
    """Serve in-memory models on 127.0.0.1 over HTTP; use as a context manager."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], _Model] = {}  # (model id, branch, tag or commit) -> model
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHuggingFaceHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- test set-up ---------------------------------------------------------------
    def add_model(self, model_id: str, revision: str, files: dict[str, bytes], token: str | None = None) -> str:
        """Serve files as model_id at revision (and at its commit id); return the commit id."""
        commit = hashlib.sha1(f"{model_id}@{revision}".encode()).hexdigest()
        model = _Model(model_id, dict(files), commit, token)
        model.sha256 = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}
        self._models[(model_id, revision)] = self._models[(model_id, commit)] = model
        return commit

    def move_branch(self, model_id: str, revision: str, files: dict[str, bytes]) -> str:
        """Point revision at a new commit holding files; returns its id."""
        old = self._models[(model_id, revision)]
        commit = hashlib.sha1(f"{old.commit}+1".encode()).hexdigest()
        model = _Model(model_id, dict(files), commit, old.token)
        model.sha256 = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}
        self._models[(model_id, revision)] = self._models[(model_id, commit)] = model
        return commit

    def model(self, model_id: str, revision: str) -> _Model:
        return self._models[(model_id, revision)]

    def fail_file(self, model_id: str, revision: str, path: str) -> None:
        self.model(model_id, revision).failing.add(path)

    def stall_file(self, model_id: str, revision: str, path: str, after_bytes: int) -> None:
        """Send the headers and the first after_bytes bytes of this file, then nothing until closed."""
        self.model(model_id, revision).stalling[path] = after_bytes

    # -- assertions ----------------------------------------------------------------
    def downloads_of(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + path)]

    def listings(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/models/")]

    # -- request handling ----------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        range_header = handler.headers.get("Range")
        with self._lock:
            authorization = handler.headers.get("Authorization")
            self.requests.append(RecordedRequest(method, path, query, range_header, authorization))

        info = _INFO_PATH.match(url.path)
        resolve = _RESOLVE_PATH.match(url.path)
        match = info or resolve
        if match is None:
            return _send_error(handler, 404, None, f"no route for {path}")
        model_id = f"{unquote(match['owner'])}/{unquote(match['name'])}"
        revision = unquote(match["revision"])
        known = [model for (mid, _), model in self._models.items() if mid == model_id]
        if not known:
            return _send_error(handler, 404, "RepoNotFound", "Repository not found")
        token = known[0].token
        if token is not None and handler.headers.get("Authorization") != f"Bearer {token}":
            # The hub answers 401 for a private repository without its token (hf_raise_for_status).
            return _send_error(handler, 401, "RepoNotFound", "Repository not found")
        model = self._models.get((model_id, revision))
        if model is None:
            return _send_error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if info:
            return _send_json(handler, self._info(model, blobs=query.get("blobs", "").lower() == "true"))
        file_path = unquote(match["path"])
        if file_path not in model.files:
            return _send_error(handler, 404, "EntryNotFound", f"{file_path} does not exist")
        if file_path in model.failing:
            return _send_error(handler, 500, None, "Internal Error")
        self._send_file(handler, model, file_path, method, range_header)

    def _info(self, model: _Model, blobs: bool) -> dict:
        siblings = []
        for path, content in sorted(model.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=len(content), blobId=git_blob_id(content))
                if path.endswith(LFS_SUFFIXES):
                    sibling["lfs"] = {"size": len(content), "sha256": model.sha256[path], "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": model.commit[:24],
            "id": model.model_id,
            "modelId": model.model_id,
            "sha": model.commit,
            "private": model.token is not None,
            "tags": [],
            "siblings": siblings,
        }

    def _send_file(
        self, handler: BaseHTTPRequestHandler, model: _Model, path: str, method: str, range_header: str | None
    ) -> None:
        content = memoryview(model.files[path])
        start, end = 0, len(content) - 1
        range_match = _RANGE.match(range_header or "") if method == "GET" else None
        if range_match:
            start = int(range_match[1])
            if range_match[2]:
                end = min(end, int(range_match[2]))
            if start >= len(content) or start > end:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(content)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(end + 1 - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("X-Repo-Commit", model.commit)
        handler.send_header("ETag", f'"{git_blob_id(model.files[path])}"')
        if path.endswith(LFS_SUFFIXES):
            handler.send_header("X-Linked-Etag", f'"{model.sha256[path]}"')
            handler.send_header("X-Linked-Size", str(len(content)))
        handler.end_headers()
        if method == "HEAD":
            return
        stop = end + 1
        stall_at = model.stalling.get(path)
        if stall_at is not None:
            stop = max(start, min(stop, stall_at))
        try:
            for offset in range(start, stop, SEND_PIECE):
                handler.wfile.write(content[offset : min(stop, offset + SEND_PIECE)])
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
            return
        if stall_at is not None:
            self._closing.wait()
            handler.close_connection = True


def _handler_for(hub: FakeHuggingFaceHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            hub.handle(self, "GET")

        def do_HEAD(self) -> None:  # noqa: N802 - name fixed by http.server
            hub.handle(self, "HEAD")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature fixed by http.server
            pass

    return Handler


def _send_json(handler: BaseHTTPRequestHandler, body: dict) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


def _send_error(handler: BaseHTTPRequestHandler, status: int, error_code: str | None, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    if error_code:
        handler.send_header("X-Error-Code", error_code)
        handler.send_header("X-Error-Message", message)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)
