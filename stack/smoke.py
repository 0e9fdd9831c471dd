"""Smoke check of a deployed endpoint, the way a user would call it right after ``pulumi up``.

    python -m stack.smoke --from-stack prod
    python -m stack.smoke --outputs rendered/dev/outputs.json --endpoint http://127.0.0.1:8000/v1

Three steps, in order, stopping at the first failure:

1. ``GET /health`` on the server root (the endpoint without ``/v1``), without the key. A 404
   means the route does not reach it (the public Ingress/HTTPRoute routes ``/v1`` alone, see
   components/exposure.py ``API_PATH``) and is reported as "not routed", not as a failure.
2. ``GET /v1/models`` with ``Authorization: Bearer <key>``: the served model must be listed.
3. One short streamed chat completion: time to first token, total time and the text.

The API key is read from an environment variable (``--api-key-env``, default ``VLLM_API_KEY``)
or from the stack's ``apiKey`` output, never from the command line, and is never printed.
Exit status: 0 all passed, 1 a check failed, 2 bad usage.

The vLLM behaviours relied on were read in vLLM 0.11.0's source (the wheel), cited where used,
and again in 0.34.0's: the same paths, status codes, bodies and stream format; an unknown
model's message adds "Valid aliases: ..." and param "model" (docs/vllm-releases.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import urlsplit

import requests

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_KEY_ENV = "VLLM_API_KEY"
DEFAULT_TIMEOUT = 30.0
DEFAULT_STREAM_TIMEOUT = 120.0
DEFAULT_PROMPT = "Say hello in one short sentence."
DEFAULT_MAX_TOKENS = 8
NOT_A_KEY = {"<redacted>", "[secret]"}
"""What an ``apiKey`` output holds when it is not the key: stack/render.py writes ``<redacted>``
for secrets, ``pulumi stack output`` without ``--show-secrets`` prints ``[secret]``."""
STEPS = ("health", "models", "chat")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SNIPPET = 200


class UsageError(Exception):
    """Bad input: exit 2."""


class CheckFailed(Exception):
    """A step failed; the message is the reason."""


# ---------------------------------------------------------------------------------------------
# What to check


@dataclass
class Target:
    endpoint: str
    model: str
    api_key: Optional[str] = field(default=None, repr=False)
    key_source: Optional[str] = None
    """Where the key came from, for messages: ``$VLLM_API_KEY`` or ``stack output apiKey``."""
    key_env: str = DEFAULT_KEY_ENV


def server_root(endpoint: str) -> str:
    """The server root for an OpenAI base_url: ``https://h/v1`` -> ``https://h``."""
    url = endpoint.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"endpoint {endpoint!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise UsageError(f"endpoint {endpoint!r} has a query or fragment; give the base_url alone")
    if not parts.path.endswith("/v1"):
        raise UsageError(
            f"endpoint {endpoint!r} does not end in /v1; give the OpenAI base_url, e.g. https://host/v1"
        )
    return url.removesuffix("/v1")


def api_url(endpoint: str, path: str) -> str:
    """A URL under the base_url: ``api_url("https://h/v1", "/models")`` -> ``https://h/v1/models``."""
    server_root(endpoint)
    return endpoint.strip().rstrip("/") + "/" + path.lstrip("/")


def health_url(endpoint: str) -> str:
    return server_root(endpoint) + "/health"


def key_from_outputs(outputs: dict[str, Any]) -> Optional[str]:
    """The ``apiKey`` output, unless it is missing, empty or a stand-in for a secret."""
    value = outputs.get("apiKey")
    if not isinstance(value, str) or not value or value in NOT_A_KEY:
        return None
    return value


def resolve_target(
    outputs: Optional[dict[str, Any]],
    endpoint: Optional[str],
    model: Optional[str],
    key_env: str,
    environ: Optional[dict[str, str]] = None,
) -> Target:
    """Endpoint and model from the flags, else from the stack outputs; the key from the
    environment variable when it is set, else from the ``apiKey`` output."""
    environ = os.environ if environ is None else environ
    outputs = outputs or {}
    endpoint = endpoint or outputs.get("endpoint")
    model = model or outputs.get("servedModelName")
    if not isinstance(endpoint, str) or not endpoint:
        raise UsageError("no endpoint: give --endpoint URL, --from-stack [STACK] or --outputs FILE")
    if not isinstance(model, str) or not model:
        raise UsageError("no model name: give --model NAME, or stack outputs with servedModelName")
    server_root(endpoint)
    if environ.get(key_env):
        key, source = environ[key_env], f"${key_env}"
    elif key := key_from_outputs(outputs):
        source = "stack output apiKey"
    else:
        key, source = None, None
    return Target(endpoint=endpoint.strip().rstrip("/"), model=model, api_key=key, key_source=source, key_env=key_env)


def read_outputs_file(path: Path) -> dict[str, Any]:
    try:
        outputs = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"{path} is not a JSON object of stack outputs")
    return outputs


def stack_output_command(stack: Optional[str]) -> list[str]:
    command = ["pulumi", "stack", "output", "--json", "--show-secrets"]
    return command + (["--stack", stack] if stack else [])


def read_stack_outputs(stack: Optional[str], project_dir: Path = PROJECT_DIR, timeout: float = 120) -> dict[str, Any]:
    """``pulumi stack output --json --show-secrets`` in the project directory."""
    command = stack_output_command(stack)
    try:
        done = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UsageError("the pulumi CLI is not on PATH; use --outputs FILE or --endpoint and --model") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{' '.join(command)} took longer than {timeout:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UsageError(f"{' '.join(command)} failed ({done.returncode}): {last}")
    try:
        outputs = json.loads(done.stdout)
    except ValueError:
        raise UsageError(f"{' '.join(command)} did not print JSON") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"{' '.join(command)} did not print a JSON object")
    return outputs


# ---------------------------------------------------------------------------------------------
# Reading answers


def snippet(text: str, limit: int = SNIPPET) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def error_message(body: str) -> str:
    """The message in an error body, whichever shape vLLM (or a proxy in front) used.

    vLLM 0.11.0: the API-key middleware answers ``{"error": "Unauthorized"}``
    (entrypoints/openai/api_server.py, AuthenticationMiddleware.__call__); handlers answer an
    ErrorResponse ``{"error": {"message", "type", "param", "code"}}`` (protocol.py ErrorResponse,
    serving_engine.py OpenAIServing.create_error_response). Older vLLM releases used a flat
    ``{"object": "error", "message": ...}``; FastAPI's own 404 is ``{"detail": "Not Found"}``.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return snippet(body) or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return snippet(error["message"])
        if isinstance(error, str):
            return snippet(error)
        for key in ("message", "detail"):
            if isinstance(data.get(key), str):
                return snippet(data[key])
    return snippet(body)


def unauthorized_reason(target: Target, status: int, body: str) -> str:
    said = error_message(body)
    if target.api_key is None:
        return (
            f"{status} {said}: no API key was sent and the server requires one; "
            f"set {target.key_env} to the stack's key (pulumi stack output apiKey --show-secrets, "
            f"or read it from the Secret), or name another variable with --api-key-env"
        )
    return (
        f"{status} {said}: the API key from {target.key_source} is wrong; "
        f"set {target.key_env} to the key the server was deployed with"
    )


@dataclass
class Step:
    name: str
    status: str = "not-run"
    """ok, not-routed, failed or not-run."""
    url: Optional[str] = None
    http_status: Optional[int] = None
    detail: str = ""


def judge_health(status: int, body: str) -> tuple[str, str]:
    """(status, detail) for GET /health.

    vLLM 0.11.0 api_server.py ``health``: ``Response(status_code=200)`` (an empty body) when
    ``engine_client.check_health()`` passes, 503 on EngineDeadError. It takes no key (the
    middleware checks paths starting with /v1 only).
    """
    if status == 200:
        return "ok", "200, healthy" + ("" if not body.strip() else f" ({len(body)} bytes of body)")
    if status == 404:
        return "not-routed", "404: /health is not routed here (a public route serves /v1 alone); not a failure"
    if status == 503:
        raise CheckFailed(f"503 {error_message(body)}: the engine is dead or no server pod is ready")
    raise CheckFailed(f"{status} {error_message(body)}")


def judge_models(status: int, body: str, target: Target) -> tuple[str, list[str]]:
    """(detail, served model ids) for GET /v1/models.

    vLLM 0.11.0 api_server.py ``show_available_models`` -> serving_models.py
    ``OpenAIServingModels.show_available_models``: ``{"object": "list", "data": [ModelCard]}``,
    one card per served model name (``id``, ``root`` the model path, ``max_model_len``) and
    one per LoRA adapter.
    """
    if status == 401:
        raise CheckFailed(unauthorized_reason(target, status, body))
    if status == 404:
        raise CheckFailed(f"404 {error_message(body)}: no /v1/models here; is the endpoint the base_url ending in /v1?")
    if status != 200:
        raise CheckFailed(f"{status} {error_message(body)}")
    try:
        data = json.loads(body)
        cards = data["data"]
        served = [card["id"] for card in cards]
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(f"200 but not an OpenAI model list: {snippet(body)}") from None
    if target.model not in served:
        listed = ", ".join(served) if served else "nothing"
        raise CheckFailed(f"model {target.model!r} is not served; the server serves: {listed}")
    card = cards[served.index(target.model)]
    detail = f"200, serves {target.model}"
    if isinstance(card, dict) and card.get("max_model_len"):
        detail += f" (max_model_len {card['max_model_len']})"
    if len(served) > 1:
        detail += f"; all served: {', '.join(served)}"
    if target.api_key is None:
        detail += "; no API key was sent and the server did not ask for one"
    return detail, served


def judge_chat_answer(status: int, content_type: str, body: str, target: Target) -> None:
    """Refuse a chat answer that is not a stream.

    vLLM 0.11.0 api_server.py ``create_chat_completion``: an ErrorResponse is returned as JSON
    with ``error.code`` as the status (an unknown model: 404 NotFoundError "The model `x` does not
    exist.", serving_engine.py ``_check_model``); a stream is a StreamingResponse with media type
    ``text/event-stream``.
    """
    if status == 401:
        raise CheckFailed(unauthorized_reason(target, status, body))
    if status != 200:
        raise CheckFailed(f"{status} {error_message(body)}")
    if not content_type.split(";")[0].strip().lower() == "text/event-stream":
        raise CheckFailed(f"200 but {content_type or 'no content type'}, not a text/event-stream: {snippet(body)}")


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of a byte stream, split on LF alone (a CR before it dropped), decoded as UTF-8 per
    line, so a character split across chunks survives and a U+2028 in a token splits nothing.
    A last line without its LF is yielded too; the SSE reader below decides what it means."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", errors="replace")
    if buffer:
        yield buffer.removesuffix(b"\r").decode("utf-8", errors="replace")


@dataclass
class SSEEnd:
    """Set by sse_data when the stream ends; tells an event cut off at the end apart."""

    cut_event: bool = False


def sse_data(lines: Iterable[str], end: Optional[SSEEnd] = None) -> Iterator[str]:
    """The data of each server-sent event (its ``data:`` lines joined by newlines).

    As the SSE format says: a blank line ends an event, ``:`` starts a comment, one space after
    the field's colon is dropped, other fields (event, id, retry) are ignored, and an event not
    ended by a blank line when the stream stops is discarded.
    vLLM 0.11.0 serving_chat.py ``chat_completion_stream_generator`` yields ``data: <json>\\n\\n``
    per chunk and ``data: [DONE]\\n\\n`` last.
    """
    data: list[str] = []
    pending = False
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
            data, pending = [], False
            continue
        pending = True
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    if end is not None:
        end.cut_event = pending


@dataclass
class StreamResult:
    chunks: int = 0
    text: str = ""
    reasoning: str = ""
    ttft_seconds: Optional[float] = None
    total_seconds: Optional[float] = None
    finish_reason: Optional[str] = None
    completion_tokens: Optional[int] = None
    done: bool = False


def read_chat_stream(
    payloads: Iterable[str],
    started: float,
    clock: Callable[[], float] = time.monotonic,
    deadline: Optional[float] = None,
    end: Optional[SSEEnd] = None,
    result: Optional[StreamResult] = None,
) -> StreamResult:
    """Read chat-completion chunks up to ``[DONE]``; raise CheckFailed with the reason otherwise.

    Chunk format, vLLM 0.11.0 serving_chat.py ``chat_completion_stream_generator`` (protocol.py
    ChatCompletionStreamResponse, dumped with exclude_unset): the first chunk per choice has
    ``delta: {"role": "assistant", "content": ""}``; then ``delta.content`` per token (or
    ``delta.reasoning_content`` with a reasoning parser); the last chunk of a choice carries the
    last delta and ``finish_reason``; with ``stream_options.include_usage`` a chunk with
    ``choices: []`` and ``usage`` follows. An error during generation is sent as
    ``data: {"error": {...}}`` (create_streaming_error_response) and then ``data: [DONE]``.

    Time to first token is the first chunk with text in ``delta.content`` or, when the server
    splits reasoning out, ``delta.reasoning_content``. ``result`` (when given) is filled as the
    chunks arrive, so a caller still sees how far the stream got when reading it raises.
    """
    result = StreamResult() if result is None else result
    for payload in payloads:
        now = clock()
        if payload.strip() == "[DONE]":
            result.done = True
            result.total_seconds = now - started
            break
        result.chunks += 1
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise CheckFailed(f"chunk {result.chunks} is not JSON: {snippet(payload, 80)!r}") from None
        if not isinstance(chunk, dict):
            raise CheckFailed(f"chunk {result.chunks} is not a JSON object: {snippet(payload, 80)!r}")
        if "error" in chunk:
            raise CheckFailed(f"the server reported an error in the stream: {error_message(payload)}")
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            result.completion_tokens = usage["completion_tokens"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise CheckFailed(f"chunk {result.chunks} has no choices list: {snippet(payload, 80)!r}")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            reasoning = delta.get("reasoning_content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                result.text += content
            if isinstance(reasoning, str):
                result.reasoning += reasoning
            if result.ttft_seconds is None and (content or reasoning):
                result.ttft_seconds = now - started
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        if deadline is not None and now > deadline:
            raise CheckFailed(
                f"the stream went on past the {deadline - started:g} s limit (--stream-timeout),"
                f" after {plural(result.chunks, 'chunk')}"
            )
    if not result.done:
        how = "in the middle of an event" if end is not None and end.cut_event else "between events"
        raise CheckFailed(
            f"the stream stopped {how} before data: [DONE], after {plural(result.chunks, 'chunk')}"
            f" and {plural(len(result.text), 'character')} of text"
        )
    if result.ttft_seconds is None:
        raise CheckFailed(
            f"the stream ended without any text"
            f" (finish_reason {result.finish_reason}, {plural(result.chunks, 'chunk')})"
        )
    return result


# ---------------------------------------------------------------------------------------------
# Talking to the server


def describe_exception(error: requests.RequestException, url: str, timeout: float, flag: str = "--timeout") -> str:
    """A short reason for a requests exception, with a hint for an in-cluster URL."""
    host = urlsplit(url).netloc
    if isinstance(error, requests.ConnectTimeout):
        reason = f"no connection to {host} within {timeout:g} s"
    elif isinstance(error, requests.ReadTimeout) or "Read timed out" in str(error):
        reason = f"no data from {host} for {timeout:g} s ({flag})"
    elif isinstance(error, requests.exceptions.SSLError):
        reason = f"TLS error with {host}: {snippet(str(_innermost(error)), 160)}"
    elif isinstance(error, requests.exceptions.ChunkedEncodingError):
        reason = "the connection closed in the middle of the response"
    elif isinstance(error, requests.ConnectionError):
        reason = f"cannot connect to {host}: {snippet(str(_innermost(error)), 160)}"
    else:
        reason = f"{type(error).__name__}: {snippet(str(error), 160)}"
    reached = isinstance(error, (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError))
    reached = reached or "Read timed out" in str(error)
    return reason if reached else reason + in_cluster_hint(url)


def _innermost(error: BaseException) -> BaseException:
    """The cause under requests' and urllib3's wrappers (MaxRetryError.reason, args[0])."""
    for _ in range(8):
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException) and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException) or inner is error:
            break
        error = inner
    return error


def refuse_redirect(response: requests.Response) -> None:
    """Redirects are not followed (a POST would turn into a GET, the key could go to another
    host): say where it points, so the endpoint can be given as that."""
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "(no Location)")
        raise CheckFailed(f"{response.status_code} redirect to {location}; give the endpoint that is redirected to")


def in_cluster_hint(url: str) -> str:
    """For ``http://svc.ns.svc.cluster.local:8000/...``: how to reach it from outside."""
    host = urlsplit(url).hostname or ""
    labels = host.split(".")
    if not (host.endswith(".svc.cluster.local") or host.endswith(".svc")) or len(labels) < 3:
        return ""
    port = urlsplit(url).port or 80
    return (
        f" (this is the in-cluster endpoint; from outside the cluster run"
        f" `kubectl -n {labels[1]} port-forward svc/{labels[0]} 8000:{port}`"
        f" and pass --endpoint http://127.0.0.1:8000/v1)"
    )


@dataclass
class Report:
    endpoint: str
    model: str
    api_key_source: Optional[str]
    steps: list[Step]
    passed: bool = False
    failed_step: Optional[str] = None
    reason: Optional[str] = None
    served_models: list[str] = field(default_factory=list)
    ttft_seconds: Optional[float] = None
    total_seconds: Optional[float] = None
    text: Optional[str] = None
    reasoning_text: Optional[str] = None
    finish_reason: Optional[str] = None
    completion_tokens: Optional[int] = None
    chunks: Optional[int] = None


def run_checks(
    target: Target,
    session: Optional[requests.Session] = None,
    timeout: float = DEFAULT_TIMEOUT,
    stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    on_step: Callable[[Step], None] = lambda step: None,
) -> Report:
    """Run the three steps in order, stopping at the first failure."""
    session = session or requests.Session()
    session.headers["User-Agent"] = "vllm-serving-smoke/1"
    auth = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    steps = [Step(name) for name in STEPS]
    report = Report(target.endpoint, target.model, target.key_source, steps)

    def health(step: Step) -> None:
        # No key: vLLM checks it on /v1 paths alone (AuthenticationMiddleware).
        step.url = health_url(target.endpoint)
        response = session.get(step.url, timeout=(timeout, timeout), allow_redirects=False)
        step.http_status = response.status_code
        refuse_redirect(response)
        step.status, step.detail = judge_health(response.status_code, response.text)

    def models(step: Step) -> None:
        step.url = api_url(target.endpoint, "/models")
        response = session.get(step.url, headers=auth, timeout=(timeout, timeout), allow_redirects=False)
        step.http_status = response.status_code
        refuse_redirect(response)
        step.detail, report.served_models = judge_models(response.status_code, response.text, target)
        step.status = "ok"

    def chat(step: Step) -> None:
        step.url = api_url(target.endpoint, "/chat/completions")
        body = {
            "model": target.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.monotonic()
        response = session.post(
            step.url, json=body, headers=auth, stream=True, timeout=(timeout, stream_timeout), allow_redirects=False
        )
        with response:
            step.http_status = response.status_code
            refuse_redirect(response)
            content_type = response.headers.get("Content-Type", "")
            is_stream = response.status_code == 200 and content_type.startswith("text/event-stream")
            judge_chat_answer(response.status_code, content_type, "" if is_stream else response.text, target)
            end, result = SSEEnd(), StreamResult()
            payloads = sse_data(iter_lines(response.iter_content(chunk_size=None)), end)
            try:
                read_chat_stream(payloads, started, deadline=started + stream_timeout, end=end, result=result)
            except requests.RequestException as error:
                raise CheckFailed(
                    f"the stream stopped before data: [DONE], after {plural(result.chunks, 'chunk')}: "
                    + describe_exception(error, step.url, stream_timeout, "--stream-timeout")
                ) from None
        report.ttft_seconds, report.total_seconds = result.ttft_seconds, result.total_seconds
        report.text, report.finish_reason = result.text, result.finish_reason
        report.reasoning_text = result.reasoning or None
        report.completion_tokens, report.chunks = result.completion_tokens, result.chunks
        tokens = f"{result.completion_tokens} tokens, " if result.completion_tokens is not None else ""
        step.detail = (
            f"200, {plural(result.chunks, 'chunk')}, {tokens}finish_reason {result.finish_reason}, "
            f"first token after {result.ttft_seconds:.3f} s, total {result.total_seconds:.3f} s"
        )
        step.status = "ok"

    for step, check in zip(steps, (health, models, chat)):
        limit = stream_timeout if step.name == "chat" else timeout
        try:
            check(step)
        except CheckFailed as failure:
            step.status, step.detail = "failed", str(failure)
        except requests.RequestException as error:
            flag = "--stream-timeout" if step.name == "chat" else "--timeout"
            step.status, step.detail = "failed", describe_exception(error, step.url or target.endpoint, limit, flag)
        on_step(step)
        if step.status == "failed":
            report.failed_step, report.reason = step.name, step.detail
            return report
    report.passed = True
    return report


# ---------------------------------------------------------------------------------------------
# Command line


SERVER_TEXT_FIELDS = ("detail", "reason", "text", "reasoning_text", "finish_reason")
"""The fields of a Step or Report that hold what a server or proxy sent, which may echo the key.
URLs, the model and the report's own field names come from the user and this program: they are
never redacted, so a short key cannot garble them."""


def redact(text: Optional[str], key: Optional[str]) -> Optional[str]:
    """The text with every whole occurrence of the key blanked out; a longer token that merely
    contains it (a URL path, a word, a JSON field name) stays as it is."""
    if not key or not text:
        return text
    token = r"[\w.~+/=-]"
    return re.sub(rf"(?<!{token}){re.escape(key)}(?!{token})", "<api key>", text)


def redacted(record: Any, key: Optional[str]) -> Any:
    """A Step or Report with the key blanked out of each field that holds server text."""
    changes = {name: redact(getattr(record, name), key) for name in SERVER_TEXT_FIELDS if hasattr(record, name)}
    if isinstance(record, Report):
        changes["steps"] = [redacted(step, key) for step in record.steps]
        changes["served_models"] = [redact(model, key) for model in record.served_models]
    return replace(record, **changes)


def human_step(step: Step, index: int) -> str:
    label = {"ok": "ok", "not-routed": "not routed", "failed": "FAILED", "not-run": "not run"}[step.status]
    where = f" {step.url}" if step.url else ""
    return f"[{index}/{len(STEPS)}] {step.name:<7}{label:<11}{where}\n      {step.detail}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stack.smoke",
        allow_abbrev=False,  # else `--api-key <key>` would be taken as --api-key-env
        description="Smoke check of a deployed vLLM endpoint: /health, /v1/models, one streamed chat completion.",
        epilog="The API key is read from the environment (--api-key-env) or the stack's apiKey output, "
        "never from the command line. Exit status: 0 passed, 1 a check failed, 2 bad usage.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from-stack",
        nargs="?",
        const="",
        metavar="STACK",
        help="read `pulumi stack output --json --show-secrets` (the selected stack without STACK)",
    )
    source.add_argument(
        "--outputs", type=Path, metavar="FILE", help="a JSON file of stack outputs (stack.render's outputs.json)"
    )
    parser.add_argument("--endpoint", metavar="URL", help="the OpenAI base_url, ending in /v1 (overrides the outputs')")
    parser.add_argument("--model", metavar="NAME", help="the served model name (overrides servedModelName)")
    parser.add_argument("--api-key", action=_RefuseKey, help=argparse.SUPPRESS)
    parser.add_argument(
        "--api-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="NAME",
        help=f"environment variable holding the API key (default {DEFAULT_KEY_ENV})"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"connect and read timeout of /health and /v1/models (default {DEFAULT_TIMEOUT:g})"
    )
    parser.add_argument(
        "--stream-timeout", type=_seconds, default=DEFAULT_STREAM_TIMEOUT, metavar="SECONDS",
        help=f"read timeout and overall limit of the streamed completion (default {DEFAULT_STREAM_TIMEOUT:g})",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message (default %(default)r)")
    parser.add_argument(
        "--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS, metavar="N", help="default %(default)s"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the steps")
    return parser


class _RefuseKey(argparse.Action):
    """``--api-key`` is refused without repeating its value."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            "the API key is not taken on the command line (it would stay in shell history and ps); "
            f"put it in ${DEFAULT_KEY_ENV}, or name another variable with --api-key-env"
        )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 and at most 3600 seconds")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"{text} must be from 1 to 4096")
    return value


def main(argv: Optional[list[str]] = None, session: Optional[requests.Session] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not ENV_NAME.fullmatch(args.api_key_env):
        # The value is not repeated: it may be the key itself.
        parser.error("--api-key-env takes the name of an environment variable (letters, digits, _), e.g. VLLM_API_KEY")
    try:
        outputs = None
        if args.from_stack is not None:
            outputs = read_stack_outputs(args.from_stack or None)
        elif args.outputs is not None:
            outputs = read_outputs_file(args.outputs)
        target = resolve_target(outputs, args.endpoint, args.model, args.api_key_env)
    except UsageError as error:
        parser.error(str(error))

    def show(text: str, stream=sys.stdout) -> None:
        print(text, file=stream, flush=True)

    if not args.json:
        key = f"API key from {target.key_source}" if target.key_source else f"no API key (${target.key_env} is not set)"
        show(f"smoke check of {target.endpoint}, model {target.model}, {key}")

    def on_step(step: Step) -> None:
        if not args.json:
            show(human_step(redacted(step, target.api_key), STEPS.index(step.name) + 1))

    report = run_checks(
        target,
        session=session,
        timeout=args.timeout,
        stream_timeout=args.stream_timeout,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        on_step=on_step,
    )
    report = redacted(report, target.api_key)
    if args.json:
        summary = asdict(report)
        summary["exit_code"] = 0 if report.passed else 1
        show(json.dumps(summary, indent=2))
    else:
        if report.text is not None:
            show(f"      text: {json.dumps(report.text, ensure_ascii=False)}")
        if report.reasoning_text:
            show(f"      reasoning: {json.dumps(report.reasoning_text, ensure_ascii=False)}")
        if report.passed:
            show(
                f"smoke check passed: first token after {report.ttft_seconds:.3f} s,"
                f" total {report.total_seconds:.3f} s"
            )
    if not report.passed:
        show(f"smoke check failed: {report.failed_step}: {report.reason}", stream=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
