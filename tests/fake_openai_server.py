"""A local stand-in for vLLM 0.11.0's OpenAI server, for the smoke check's tests.

Answers as vLLM 0.11.0 does (read in the release's wheel, vllm/entrypoints/openai/):

- ``GET /health``: 200 with an empty body (api_server.py ``health``), no key needed;
- any path starting with ``/v1`` without ``Authorization: Bearer <key>`` when a key is set:
  401 ``{"error":"Unauthorized"}`` (api_server.py ``AuthenticationMiddleware``);
- ``GET /v1/models``: ``{"object":"list","data":[ModelCard...]}`` with ``id`` the served model
  name (serving_models.py ``show_available_models``);
- ``POST /v1/chat/completions`` for a model it does not serve: 404 with an ErrorResponse
  ``{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":null,
  "code":404}}`` (serving_engine.py ``_check_model``);
- streamed: ``text/event-stream; charset=utf-8`` in chunked transfer encoding, a first chunk with
  ``delta: {"role":"assistant","content":""}``, one chunk per token, the last token's chunk with
  ``finish_reason``, a usage chunk with ``choices: []`` when ``stream_options.include_usage``,
  then ``data: [DONE]`` (serving_chat.py ``chat_completion_stream_generator``);
- any other path: FastAPI's 404 ``{"detail":"Not Found"}``.

vLLM 0.34.0 answers these paths the same way (entrypoints/serve/instrumentator/health.py,
entrypoints/serve/middleware/authenticate.py, entrypoints/openai/models/api_router.py,
entrypoints/openai/chat_completion/serving.py), but for an unknown model's message, which adds
"Valid aliases: <served names>." with ``param`` "model" (entrypoints/serve/engine/serving.py).

Faults (``FakeVLLM.fault``): ``cut`` (the connection closes in the middle of a chunk after two
tokens, no [DONE]), ``no-done`` (the response ends cleanly after two tokens without [DONE]),
``non-json`` (a chunk whose data is not JSON), ``error-chunk`` (vLLM's in-stream error chunk,
then [DONE]), ``empty`` (role and finish chunks but no text); ``first_token_delay`` seconds
before the first token; ``health``: ``ok``, ``not-routed`` (an Ingress's HTML 404, as when only
/v1 is routed) or ``dead`` (503, vLLM's answer on EngineDeadError).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

INGRESS_404 = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
SOCKET_TIMEOUT = 10
"""Seconds a connection may sit idle before the handler gives up on it."""


@dataclass
class FakeVLLM:
    served: list[str] = field(default_factory=lambda: ["qwen3-0.6b"])
    api_key: Optional[str] = None
    tokens: list[str] = field(default_factory=lambda: ["Hello", "!", " How", " can", " I", " help", " you", " today"])
    max_model_len: int = 40960
    health: str = "ok"
    fault: Optional[str] = None
    first_token_delay: float = 0.0
    echo_auth: bool = False
    """Not vLLM: repeat the Authorization header in a 401 body, as a careless proxy might."""
    requests: list[dict] = field(default_factory=list)
    """What arrived: method, path, whether an Authorization header came, the JSON body."""
    stopping: threading.Event = field(default_factory=threading.Event)


def _chunk(request_id: str, created: int, model: str, choices: list, **extra) -> bytes:
    # ChatCompletionStreamResponse.model_dump_json(exclude_unset=True): compact, fields set.
    body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    body.update(extra)
    return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def make_handler(state: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "uvicorn"
        sys_version = ""
        timeout = SOCKET_TIMEOUT

        def log_message(self, *args) -> None:  # quiet
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a test's timeout): nothing to answer

        # -- helpers ---------------------------------------------------------------------

        def send_body(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, data) -> None:
            # Starlette JSONResponse.render: compact separators, UTF-8.
            self.send_body(status, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())

        def error_response(self, status: int, message: str, kind: str) -> None:
            # ErrorResponse(error=ErrorInfo(...)).model_dump(), status = error.code.
            self.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

        def write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def authorized(self) -> bool:
            if state.api_key is None:
                return True
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            return scheme.lower() == "bearer" and token == state.api_key

        def unauthorized(self) -> None:
            if state.echo_auth:  # not vLLM: a proxy that repeats what it was sent
                return self.send_json(401, {"error": f"Unauthorized: {self.headers.get('Authorization')}"})
            self.send_json(401, {"error": "Unauthorized"})

        def record(self, body=None) -> None:
            state.requests.append(
                {"method": self.command, "path": self.path, "auth": "Authorization" in self.headers, "body": body}
            )

        # -- routes ----------------------------------------------------------------------

        def do_GET(self) -> None:
            self.record()
            if self.path.startswith("/v1") and not self.authorized():
                return self.unauthorized()
            if self.path == "/health":
                if state.health == "not-routed":
                    return self.send_body(404, INGRESS_404.encode(), "text/html")
                return self.send_body(503 if state.health == "dead" else 200, b"", "text/plain")
            if self.path == "/v1/models":
                created = int(time.time())
                cards = [
                    {
                        "id": name,
                        "object": "model",
                        "created": created,
                        "owned_by": "vllm",
                        "root": "/models/Qwen/Qwen3-0.6B/master",
                        "parent": None,
                        "max_model_len": state.max_model_len,
                        "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission"}],
                    }
                    for name in state.served
                ]
                return self.send_json(200, {"object": "list", "data": cards})
            return self.send_json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self.record(body)
            if self.path.startswith("/v1") and not self.authorized():
                return self.unauthorized()
            if self.path != "/v1/chat/completions":
                return self.send_json(404, {"detail": "Not Found"})
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return self.error_response(400, "1 validation error: messages: Field required", "Bad Request")
            model = body.get("model")
            if model and model not in state.served:
                return self.error_response(404, f"The model `{model}` does not exist.", "NotFoundError")
            model = model or state.served[0]
            tokens = state.tokens[: int(body.get("max_tokens") or len(state.tokens))]
            if not body.get("stream"):
                return self.send_json(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                                                 "finish_reason": "length"}],
                })
            self.stream(model, tokens, bool((body.get("stream_options") or {}).get("include_usage")))

        def stream(self, model: str, tokens: list[str], include_usage: bool) -> None:
            request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            self.write_chunk(_chunk(request_id, created, model, [first], prompt_token_ids=None))
            if state.first_token_delay:
                state.stopping.wait(state.first_token_delay)
            if state.fault == "empty":
                tokens = []
            if state.fault == "non-json":
                self.write_chunk(b'data: {"id":"' + request_id.encode() + b'","choices":[{"index":0,"delta":{"content":"He\n\n')
            if state.fault == "error-chunk":
                error = {"error": {"message": "The decoder prompt is too long", "type": "BadRequestError", "param": None, "code": 400}}
                self.write_chunk(f"data: {json.dumps(error)}\n\n".encode())
                self.write_chunk(b"data: [DONE]\n\n")
                return self.write_chunk(b"")
            for number, token in enumerate(tokens):
                if state.fault in ("cut", "no-done") and number == 2:
                    if state.fault == "no-done":
                        return self.write_chunk(b"")
                    # A pod going away mid-stream: half a chunk, then the connection closes.
                    self.wfile.write(b"40\r\ndata: {\"id\":")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                last = number == len(tokens) - 1
                choice = {"index": 0, "delta": {"content": token}, "logprobs": None, "finish_reason": None, "token_ids": None}
                if last:
                    choice.update(finish_reason="length", stop_reason=None)
                self.write_chunk(_chunk(request_id, created, model, [choice]))
            if not tokens:
                choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "stop_reason": None, "token_ids": None}
                self.write_chunk(_chunk(request_id, created, model, [choice]))
            if include_usage:
                usage = {"prompt_tokens": 14, "total_tokens": 14 + len(tokens), "completion_tokens": len(tokens)}
                self.write_chunk(_chunk(request_id, created, model, [], usage=usage))
            self.write_chunk(b"data: [DONE]\n\n")
            self.write_chunk(b"")  # the last chunk of the chunked encoding

    return Handler


class FakeServer:
    """The fake on 127.0.0.1, a free port, in a daemon thread; ``stop()`` ends it."""

    def __init__(self, state: FakeVLLM) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def root(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def endpoint(self) -> str:
        return self.root + "/v1"

    def stop(self) -> None:
        self.state.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
