"""A local stand-in for the ModelScope hub, for driving the real modelscope client in tests.

It answers the requests ``modelscope.snapshot_download`` makes for a model, in the
tested client (modelscope 1.40.2 with modelscope-hub 0.5.1) and in modelscope 1.30.0:

* ``GET /api/v1/repos/internalAccelerationInfo`` - intra-cloud region probe (answered
  with no region, as outside Alibaba Cloud);
* ``GET /api/v1/models/{owner}/{name}`` - the existence probe of 1.30.0
  (``HubApi.repo_exists``, called by ``HubApi.get_endpoint_for_read``); only the status
  code is read;
* ``GET /api/v1/models/{owner}/{name}/revisions`` - branches and tags, which 1.30.0
  (``HubApi.get_valid_revision_detail``) checks the revision against: ``master`` is listed
  as a branch, every other revision as a tag, each with a ``CreatedAt`` timestamp;
* ``GET /api/v1/models/{owner}/{name}/repo/files?Revision=..&Recursive=True`` - the listing
  (a ``Root`` parameter, sent for directory-only allow patterns, is ignored: the client
  filters the full listing itself). Each file carries the ``Revision`` (commit id) that
  1.30.0 keys its local file index on (``hub/utils/caching.py`` ``ModelFileSystemCache``);
* ``GET /api/v1/models/{owner}/{name}/repo?Revision=..&FilePath=..`` - one file, honouring
  ``Range: bytes=N-`` and ``bytes=N-M`` the way the CDN does when the client resumes a
  partial file (1.30.0 always sends a closed range).

* ``GET /api/v1/models/{owner}/{name}/commits?Ref=..&PageNumber=..&PageSize=..`` - the commit
  history of a branch, tag or commit, newest first (modelscope 1.30.0 ``HubApi.list_repo_commits``):
  ``{"Data": {"Commit": [{"Id": <commit id>, "ShortId", "Title", ...}]}, "TotalCount": n}``, here
  the one commit the revision names. ``move_branch`` points a revision at a new commit, as a push
  to the branch does upstream.

* ``POST /api/v1/login`` - modelscope 1.30.0's ``HubApi.login``: the body carries
  ``{"AccessToken": token}``; the answer sets the ``m_session_id`` cookie that 1.30.0 then
  sends with every request (``ModelScopeConfig.save_cookies`` / ``get_cookies``).

The listing and file requests take a commit id as ``Revision`` too, as modelscope-hub documents
for them ("Branch, tag or commit SHA": modelscope_hub/api.py list_repo_files, download_file);
the revisions list names branches and tags only.

Unknown models and revisions get a 404 with a JSON error body, which the client raises as
``requests.HTTPError``. A private model (``add_model(..., token=...)``) answers 403 unless the
request carries ``Authorization: Bearer <token>`` (modelscope-hub sends it, with the token as
the ``m_session_id`` cookie as well) or the session cookie that a login with that token
returned. Every request is recorded, with its Authorization and Cookie headers, so tests can
count what reached the hub and see which credentials came with it.

Files are streamed in 1 MiB pieces from memory, without copying them per request, so the
hub can serve the multi-gigabyte repositories of bench/stage_benchmark.py. A file can be
made to stall: the hub sends the headers and part of the body, then nothing until it is
closed (``stall_file``), or to trickle over a given time (``pace_file``).

modelscope 1.30.0 reaches a hub only over ``https://`` (the scheme is fixed in its
``hub/constants.py``), so the hub can serve TLS: pass ``tls=self_signed_certificate(dir)``
and point the client at the certificate with ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

_MODEL_PATH = re.compile(r"^/api/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
MASTER = "master"


class TlsFiles(NamedTuple):
    certificate: Path  # PEM; also the CA bundle a client trusts
    private_key: Path


def self_signed_certificate(directory: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 and localhost, valid for a day, written into directory."""
    # cryptography is installed with modelscope-hub (a dependency of the tested client).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-modelscope-hub")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "hub-cert.pem", directory / "hub-key.pem")
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict  # parameter name -> first value
    range: str | None
    authorization: str | None = None
    cookie: str | None = None
    body: bytes = b""


@dataclass
class _Model:
    files: dict[str, bytes]
    commit: str  # the commit id the listing gives every file
    created_at: int  # seconds since the epoch
    corrupted: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    stalling: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the stall
    pacing: dict[str, float] = field(default_factory=dict)  # path -> seconds each response takes
    token: str | None = None  # set for a private model
    hashes: dict[str, str] = field(default_factory=dict)  # path -> sha256, computed once


SEND_PIECE = 1024 * 1024


def session_id_for(token: str) -> str:
    """The m_session_id cookie a login with this token gets."""
    return "session-" + hashlib.sha256(token.encode()).hexdigest()[:24]


class FakeModelScopeHub:
    """Serve in-memory models on 127.0.0.1; use as a context manager.

    With tls, serve HTTPS with that certificate and key instead of plain HTTP.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self._models: dict[tuple[str, str], _Model] = {}  # (model id, branch or tag) -> model
        self._by_commit: dict[tuple[str, str], _Model] = {}  # (model id, commit id) -> model
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._closing = threading.Event()  # releases stalled responses on exit
        self._scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.certificate, tls.private_key)
            # The handshake then runs in each request's thread, not in the accepting one.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self._scheme = "https"
        # A short poll interval keeps shutdown() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def domain(self) -> str:
        """host:port, the form MODELSCOPE_DOMAIN takes."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def endpoint(self) -> str:
        return f"{self._scheme}://{self.domain}"

    def __enter__(self) -> FakeModelScopeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- test set-up ---------------------------------------------------------------
    def add_model(
        self, model_id: str, revision: str, files: dict[str, bytes], token: str | None = None, commit: str | None = None
    ) -> str:
        """Serve files as model_id at revision; with a token, only to requests that carry it. Returns the commit id."""
        commit = commit or hashlib.sha1(f"{model_id}@{revision}".encode()).hexdigest()
        created_at = int(time.time()) - 86400 + len(self._models)  # later additions are newer
        hashes = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}
        model = _Model(files=dict(files), commit=commit, created_at=created_at, token=token, hashes=hashes)
        self._models[(model_id, revision)] = self._by_commit[(model_id, commit)] = model
        return commit

    def move_branch(self, model_id: str, revision: str, files: dict[str, bytes]) -> str:
        """Point revision at a new commit holding files, as a push upstream does; returns its id."""
        old = self._models[(model_id, revision)]
        return self.add_model(model_id, revision, files, old.token, hashlib.sha1(f"{old.commit}+1".encode()).hexdigest())

    def corrupt_file(self, model_id: str, revision: str, path: str) -> None:
        """Serve bytes that differ from the Sha256 in the listing (same length)."""
        self._models[(model_id, revision)].corrupted.add(path)

    def fail_file(self, model_id: str, revision: str, path: str) -> None:
        """Answer every download of this file with HTTP 500."""
        self._models[(model_id, revision)].failing.add(path)

    def stall_file(self, model_id: str, revision: str, path: str, after_bytes: int) -> None:
        """Send the headers and the first after_bytes bytes of this file, then nothing until closed."""
        self._models[(model_id, revision)].stalling[path] = after_bytes

    def release_file(self, model_id: str, revision: str, path: str) -> None:
        """Serve this file normally again (after stall_file)."""
        self._models[(model_id, revision)].stalling.pop(path, None)

    def pace_file(self, model_id: str, revision: str, path: str, seconds: float) -> None:
        """Spread each response with this file over about this many seconds, in 20 steps."""
        self._models[(model_id, revision)].pacing[path] = seconds

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
                    "Sha256": model.hashes[path],
                    "Revision": model.commit,
                }
            )
        return {"Code": 200, "Data": {"Files": entries}, "Message": "success", "Success": True}

    def _revisions(self, model_id: str) -> dict:
        revisions = {rev: model for (mid, rev), model in self._models.items() if mid == model_id}
        details = {
            rev: {"Revision": rev, "CommitId": model.commit, "CreatedAt": model.created_at}
            for rev, model in revisions.items()
        }
        # Newest tag first, as the hub orders them.
        tags = sorted((d for rev, d in details.items() if rev != MASTER), key=lambda d: -d["CreatedAt"])
        branches = [details[MASTER]] if MASTER in details else []
        return {"Code": 200, "Data": {"RevisionMap": {"Branches": branches, "Tags": tags}}, "Success": True}

    def _commits(self, model: _Model) -> dict:
        commit = {
            "Id": model.commit, "ShortId": model.commit[:11], "Title": "Upload", "Message": "Upload",
            "AuthorName": "tester", "AuthoredDate": model.created_at, "CommittedDate": model.created_at,
            "CreatedAt": model.created_at,
        }  # fmt: skip
        return {"Code": 200, "Data": {"Commit": [commit]}, "TotalCount": 1, "Success": True}

    def _served_bytes(self, model: _Model, path: str) -> memoryview:
        content = model.files[path]
        if path in model.corrupted:
            return memoryview(bytes([content[0] ^ 0xFF]) + content[1:])
        return memoryview(content)

    def _authorized(self, model: _Model, handler: BaseHTTPRequestHandler) -> bool:
        if model.token is None:
            return True
        if handler.headers.get("Authorization") == f"Bearer {model.token}":
            return True
        cookies = SimpleCookie(handler.headers.get("Cookie") or "")
        session = cookies.get("m_session_id")
        return session is not None and session.value in (model.token, session_id_for(model.token))

    def handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self._record(
            RecordedRequest(
                "POST", url.path, {}, None, handler.headers.get("Authorization"), handler.headers.get("Cookie"), body
            )
        )
        if url.path != "/api/v1/login":
            return _send_not_found(handler, f"no route for {url.path}")
        try:
            token = json.loads(body)["AccessToken"]
        except (ValueError, KeyError, TypeError):
            token = None
        if not token or not any(model.token == token for model in self._models.values()):
            return _send_json(handler, 401, {"Code": 401, "Message": "invalid access token", "Success": False})
        data = {"AccessToken": "git-token", "Username": "tester", "Email": "tester@example.com"}
        cookie = f"m_session_id={session_id_for(token)}; Path=/"
        return _send_json(handler, 200, {"Code": 200, "Data": data, "Success": True}, {"Set-Cookie": cookie})

    def handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        range_header = handler.headers.get("Range")
        headers = handler.headers
        self._record(
            RecordedRequest("GET", url.path, query, range_header, headers.get("Authorization"), headers.get("Cookie"))
        )

        if url.path == "/api/v1/repos/internalAccelerationInfo":
            return _send_json(handler, 200, {"Code": 200, "Data": {"InternalRegionQueryAddress": ""}, "Success": True})
        match = _MODEL_PATH.match(url.path)
        if match is None:
            return _send_not_found(handler, f"no route for {url.path}")
        model_id = f"{unquote(match['owner'])}/{unquote(match['name'])}"
        revisions = [model for (mid, _), model in self._models.items() if mid == model_id]
        if not revisions:
            return _send_not_found(handler, f"model {model_id} does not exist")
        if not all(self._authorized(model, handler) for model in revisions):
            return _send_json(handler, 403, {"Code": 403, "Message": "access denied", "Success": False})
        if match["rest"] is None:
            return _send_json(handler, 200, {"Code": 200, "Data": {"Path": model_id}, "Success": True})
        if match["rest"] == "/revisions":
            return _send_json(handler, 200, self._revisions(model_id))
        if match["rest"] == "/commits":
            ref = query.get("Ref", MASTER)
            model = self._models.get((model_id, ref)) or self._by_commit.get((model_id, ref))
            if model is None:
                return _send_not_found(handler, f"model {model_id} has no revision {query.get('Ref')}")
            return _send_json(handler, 200, self._commits(model))
        revision = query.get("Revision", MASTER)
        model = self._models.get((model_id, revision)) or self._by_commit.get((model_id, revision))
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
        start, end = 0, len(content) - 1
        range_match = _RANGE.match(range_header or "")
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
        handler.end_headers()
        stop = end + 1
        stall_at = model.stalling.get(path)
        if stall_at is not None:
            stop = max(start, min(stop, stall_at))
        _send_body(handler, content[start:stop], model.pacing.get(path))
        if stall_at is not None:
            # The connection stays open and silent, as with a hung CDN node, until the hub closes.
            self._closing.wait()
            handler.close_connection = True


def _send_body(handler: BaseHTTPRequestHandler, body: memoryview, seconds: float | None = None) -> None:
    piece, pause = SEND_PIECE, 0.0
    if seconds:
        piece, pause = max(1, -(-len(body) // 20)), seconds / 20
    try:
        for offset in range(0, len(body), piece):
            handler.wfile.write(body[offset : offset + piece])
            if pause:
                time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True  # the client gave up on this response


def _handler_for(hub: FakeModelScopeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            hub.handle_get(self)

        def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
            hub.handle_post(self)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature fixed by http.server
            pass

    return Handler


def _send_json(handler: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


def _send_not_found(handler: BaseHTTPRequestHandler, message: str) -> None:
    _send_json(handler, 404, {"Code": 404, "Message": message, "Success": False})
