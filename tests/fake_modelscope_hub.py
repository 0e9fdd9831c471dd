"""A local stand-in for the ModelScope hub, for driving the real modelscope client in tests.

It answers the requests ``modelscope.snapshot_download`` makes for a model:

* ``GET /api/v1/repos/internalAccelerationInfo`` - intra-cloud region probe (answered
  with no region, as outside Alibaba Cloud);
* ``GET /api/v1/models/{owner}/{name}/repo/files?Revision=..&Recursive=True`` - the listing
  (a ``Root`` parameter, sent for directory-only allow patterns, is ignored: the client
  filters the full listing itself);
* ``GET /api/v1/models/{owner}/{name}/repo?Revision=..&FilePath=..`` - one file, honouring
  ``Range: bytes=N-`` the way the CDN does when the client resumes a partial file.

Unknown models and revisions get a 404 with a JSON error body, which the client raises as
``requests.HTTPError``. Every request is recorded so tests can count what reached the hub.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_MODEL_PATH = re.compile(r"^/api/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict  # parameter name -> first value
    range: str | None


@dataclass
class _Model:
    files: dict[str, bytes]
    corrupted: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)


class FakeModelScopeHub:
    """Serve in-memory models on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], _Model] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeModelScopeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- test set-up ---------------------------------------------------------------
    def add_model(self, model_id: str, revision: str, files: dict[str, bytes]) -> None:
        self._models[(model_id, revision)] = _Model(files=dict(files))

    def corrupt_file(self, model_id: str, revision: str, path: str) -> None:
        """Serve bytes that differ from the Sha256 in the listing (same length)."""
        self._models[(model_id, revision)].corrupted.add(path)

    def fail_file(self, model_id: str, revision: str, path: str) -> None:
        """Answer every download of this file with HTTP 500."""
        self._models[(model_id, revision)].failing.add(path)

    # -- assertions ----------------------------------------------------------------
    def downloads_of(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/repo") and r.query.get("FilePath") == path]

    def listings(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/repo/files")]

    # -- request handling ----------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _listing(self, model: _Model) -> dict:
        entries = []
        for directory in sorted({p.rsplit("/", 1)[0] for p in model.files if "/" in p}):
            entries.append({"Path": directory, "Name": directory.rsplit("/", 1)[-1], "Type": "tree", "Size": 0})
        for path, content in sorted(model.files.items()):
            entries.append(
                {
                    "Path": path,
                    "Name": path.rsplit("/", 1)[-1],
                    "Type": "blob",
                    "Size": len(content),
                    "Sha256": hashlib.sha256(content).hexdigest(),
                }
            )
        return {"Code": 200, "Data": {"Files": entries}, "Message": "success", "Success": True}

    def _served_bytes(self, model: _Model, path: str) -> bytes:
        content = model.files[path]
        if path in model.corrupted:
            return bytes([content[0] ^ 0xFF]) + content[1:]
        return content

    def handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        range_header = handler.headers.get("Range")
        self._record(RecordedRequest("GET", url.path, query, range_header))

        if url.path == "/api/v1/repos/internalAccelerationInfo":
            return _send_json(handler, 200, {"Code": 200, "Data": {"InternalRegionQueryAddress": ""}, "Success": True})
        match = _MODEL_PATH.match(url.path)
        if match is None:
            return _send_not_found(handler, f"no route for {url.path}")
        model_id = f"{unquote(match['owner'])}/{unquote(match['name'])}"
        model = self._models.get((model_id, query.get("Revision", "master")))
        if model is None:
            return _send_not_found(handler, f"model {model_id} has no revision {query.get('Revision')}")
        if match["rest"] == "/repo/files":
            return _send_json(handler, 200, self._listing(model))
        if match["rest"] == "/repo":
            return self._send_file(handler, model, query.get("FilePath", ""), range_header)
        return _send_not_found(handler, f"no route for {url.path}")

    def _send_file(self, handler: BaseHTTPRequestHandler, model: _Model, path: str, range_header: str | None) -> None:
        if path not in model.files:
            return _send_not_found(handler, f"file {path} does not exist")
        if path in model.failing:
            return _send_json(handler, 500, {"Code": 500, "Message": "internal error", "Success": False})
        content = self._served_bytes(model, path)
        start = 0
        range_match = _RANGE.match(range_header or "")
        if range_match:
            start = int(range_match[1])
            if start >= len(content):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(content)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(content) - start))
        handler.end_headers()
        handler.wfile.write(content[start:])


def _handler_for(hub: FakeModelScopeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            hub.handle_get(self)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature fixed by http.server
            pass

    return Handler


def _send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _send_not_found(handler: BaseHTTPRequestHandler, message: str) -> None:
    _send_json(handler, 404, {"Code": 404, "Message": message, "Success": False})
