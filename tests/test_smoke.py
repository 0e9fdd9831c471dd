"""The post-deploy smoke check (stack/smoke.py) against a local fake of vLLM 0.11.0's OpenAI API."""

import json
import os
import subprocess
import sys

import pytest
import requests
from conftest import ROOT
from fake_openai_server import FakeServer, FakeVLLM

from stack import smoke
from stack.render import write_rendering

KEY = "sk-smoke-0123456789abcdef"
WRONG_KEY = "sk-wrong-fedcba9876543210"
MODEL = "qwen3-0.6b"
RUN_TIMEOUT = 60


@pytest.fixture
def fake():
    """Start a fake vLLM with the given settings; every one started is stopped afterwards."""
    servers = []

    def start(**settings) -> FakeServer:
        server = FakeServer(FakeVLLM(**settings))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def run_smoke(*args: str, key: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m stack.smoke`` from the project directory, the key (if any) in $VLLM_API_KEY."""
    environ = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY" and "proxy" not in k.lower()}
    if key is not None:
        environ["VLLM_API_KEY"] = key
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "stack.smoke", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def failure_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("smoke check failed: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def assert_no_key(done: subprocess.CompletedProcess, *keys: str) -> None:
    for key in keys:
        assert key not in done.stdout and key not in done.stderr


# --- the command against the fake ------------------------------------------------------------


def test_all_good(fake):
    server = fake(api_key=KEY)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, key=KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"model {MODEL}, API key from $VLLM_API_KEY" in out
    assert "[1/3] health ok" in out and "[2/3] models ok" in out and "[3/3] chat   ok" in out
    assert f"serves {MODEL} (max_model_len 40960)" in out
    assert 'text: "Hello! How can I help you today"' in out
    assert "8 tokens, finish_reason length" in out
    assert "smoke check passed: first token after" in out
    assert done.stderr == ""
    assert_no_key(done, KEY)
    # /health went without the key; /v1 calls with it; the request was a small stream.
    sent = {(r["method"], r["path"]): r for r in server.state.requests}
    assert not sent[("GET", "/health")]["auth"] and sent[("GET", "/v1/models")]["auth"]
    body = sent[("POST", "/v1/chat/completions")]["body"]
    assert body["stream"] is True and body["model"] == MODEL and body["max_tokens"] == 8


def test_json_summary(fake):
    server = fake(api_key=KEY)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--json", key=KEY)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["passed"] is True and summary["exit_code"] == 0
    assert [(s["name"], s["status"], s["http_status"]) for s in summary["steps"]] == [
        ("health", "ok", 200), ("models", "ok", 200), ("chat", "ok", 200),
    ]
    assert summary["text"] == "Hello! How can I help you today"
    assert isinstance(summary["ttft_seconds"], float) and summary["ttft_seconds"] >= 0
    assert summary["total_seconds"] >= summary["ttft_seconds"]
    assert summary["served_models"] == [MODEL] and summary["api_key_source"] == "$VLLM_API_KEY"
    assert_no_key(done, KEY)


def test_wrong_key_names_the_variable(fake):
    server = fake(api_key=KEY, echo_auth=True)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, key=WRONG_KEY)
    assert done.returncode == 1
    line = failure_line(done)
    assert line.startswith("smoke check failed: models: 401 ")
    assert "the API key from $VLLM_API_KEY is wrong" in line and "set VLLM_API_KEY" in line
    assert "[3/3] chat   not run" not in done.stdout and "[3/3]" not in done.stdout
    # The fake repeated the Authorization header in its answer: still never printed.
    assert "<api key>" in done.stdout
    assert_no_key(done, KEY, WRONG_KEY)


def test_missing_key_names_the_variable_given(fake):
    server = fake(api_key=KEY)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--api-key-env", "MY_VLLM_KEY")
    assert done.returncode == 1
    line = failure_line(done)
    assert "401 Unauthorized: no API key was sent" in line and "set MY_VLLM_KEY" in line
    assert "no API key ($MY_VLLM_KEY is not set)" in done.stdout


def test_key_from_another_variable(fake):
    server = fake(api_key=KEY)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--api-key-env", "MY_VLLM_KEY",
                     key=WRONG_KEY, env={"MY_VLLM_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert "API key from $MY_VLLM_KEY" in done.stdout
    assert_no_key(done, KEY, WRONG_KEY)


def test_wrong_model_lists_what_is_served(fake):
    server = fake(served=["qwen3-235b", "qwen3-235b-lora"])
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL)
    assert done.returncode == 1
    assert failure_line(done) == (
        f"smoke check failed: models: model '{MODEL}' is not served; the server serves: qwen3-235b, qwen3-235b-lora"
    )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("cut", "the stream stopped before data: [DONE], after 3 chunks: the connection closed in the middle"),
        ("no-done", "the stream stopped between events before data: [DONE], after 3 chunks"),
        ("non-json", "chunk 2 is not JSON: "),
        ("error-chunk", "the server reported an error in the stream: The decoder prompt is too long"),
        ("empty", "the stream ended without any text (finish_reason stop"),
    ],
)
def test_broken_stream_fails_with_reason(fake, fault, reason):
    server = fake(fault=fault)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL)
    assert done.returncode == 1
    assert failure_line(done).startswith(f"smoke check failed: chat: {reason}")
    assert "[2/3] models ok" in done.stdout


def test_slow_first_token_past_the_stream_timeout(fake):
    server = fake(first_token_delay=3)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--stream-timeout", "0.3")
    assert done.returncode == 1
    line = failure_line(done)
    assert "after 1 chunk: no data from 127.0.0.1:" in line and "for 0.3 s (--stream-timeout)" in line


def test_slow_first_token_within_the_timeout_passes(fake):
    server = fake(first_token_delay=0.2)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ttft_seconds"] >= 0 and summary["text"].startswith("Hello")


def test_health_not_routed_is_not_a_failure(fake):
    server = fake(health="not-routed", api_key=KEY)
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, key=KEY)
    assert done.returncode == 0, done.stderr
    assert "[1/3] health not routed" in done.stdout and "not a failure" in done.stdout


def test_dead_engine_fails_health(fake):
    server = fake(health="dead")
    done = run_smoke("--endpoint", server.endpoint, "--model", MODEL)
    assert done.returncode == 1
    assert failure_line(done).startswith("smoke check failed: health: 503 ")


def test_nothing_listening_fails_without_waiting(fake):
    server = fake()
    endpoint = server.endpoint
    server.stop()
    done = run_smoke("--endpoint", endpoint, "--model", MODEL, "--timeout", "5")
    assert done.returncode == 1
    assert failure_line(done).startswith("smoke check failed: health: cannot connect to 127.0.0.1:")


def test_outputs_file_written_by_the_renderer(fake, tmp_path, rendered):
    # What `python -m stack.render dev --out DIR` writes (its main calls write_rendering).
    write_rendering(rendered["dev"], tmp_path)
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    server = fake(served=[outputs["servedModelName"]])
    # dev's endpoint is in-cluster; from outside, a port-forward stands in, given with --endpoint.
    done = run_smoke("--outputs", str(tmp_path / "outputs.json"), "--endpoint", server.endpoint)
    assert done.returncode == 0, done.stderr
    assert f"model {outputs['servedModelName']}, no API key" in done.stdout


def test_outputs_file_with_the_key_and_a_redacted_one(fake, tmp_path):
    server = fake(api_key=KEY)
    outputs = {"endpoint": server.endpoint + "/", "servedModelName": MODEL, "apiKey": KEY,
               "inClusterEndpoint": "http://vllm-x.ai-serving.svc.cluster.local:8000/v1"}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    done = run_smoke("--outputs", str(path))
    assert done.returncode == 0, done.stderr
    assert "API key from stack output apiKey" in done.stdout
    assert_no_key(done, KEY)

    path.write_text(json.dumps({**outputs, "apiKey": "<redacted>"}))  # what stack.render writes
    done = run_smoke("--outputs", str(path))
    assert done.returncode == 1
    assert "no API key was sent" in failure_line(done) and "<redacted>" not in done.stdout
    done = run_smoke("--outputs", str(path), key=KEY)
    assert done.returncode == 0, done.stderr


def test_from_stack_runs_pulumi_stack_output(fake, tmp_path):
    server = fake(api_key=KEY)
    outputs = {"endpoint": server.endpoint, "servedModelName": MODEL, "apiKey": KEY, "namespace": "ai-serving"}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    pulumi = tmp_path / "pulumi"
    pulumi.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps([sys.argv[1:], os.getcwd()]))\n"
        f"print(open({str(tmp_path / 'outputs.json')!r}).read())\n"
    )
    pulumi.chmod(0o755)
    path = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = run_smoke("--from-stack", "prod", env=path)
    assert done.returncode == 0, done.stderr
    argv, cwd = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["stack", "output", "--json", "--show-secrets", "--stack", "prod"] and cwd == str(ROOT)
    assert "API key from stack output apiKey" in done.stdout
    assert_no_key(done, KEY)
    done = run_smoke("--from-stack", env=path)  # the selected stack
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "argv.json").read_text())[0] == ["stack", "output", "--json", "--show-secrets"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no endpoint"),
        (["--endpoint", "http://127.0.0.1:9/v1"], "no model name"),
        (["--endpoint", "http://127.0.0.1:9", "--model", "m"], "does not end in /v1"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--api-key", KEY], "not taken on the command line"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--api-key=" + KEY], "not taken on the command line"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--api-key-en", "K"], "unrecognized arguments: --api-key-en"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--api-key-env", KEY], "--api-key-env takes the name"),
        (["--outputs", "missing.json"], "cannot read missing.json"),
        (["--outputs", "x.json", "--from-stack", "dev"], "not allowed with argument"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--timeout", "0"], "must be more than 0"),
    ],
)
def test_bad_usage_exits_2(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit:
        smoke.main(args)
    out, err = capsys.readouterr()
    assert exit.value.code == 2
    assert message in err
    assert out == "" and KEY not in err


def test_bad_usage_exit_status_of_the_command():
    done = run_smoke("--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--api-key", KEY)
    assert done.returncode == 2 and "not taken on the command line" in done.stderr
    assert done.stdout == "" and KEY not in done.stderr


def test_from_stack_without_pulumi_is_bad_usage(tmp_path):
    done = run_smoke("--from-stack", "dev", env={"PATH": str(tmp_path)})
    assert done.returncode == 2 and "the pulumi CLI is not on PATH" in done.stderr


# --- the functions ---------------------------------------------------------------------------


def test_urls():
    assert smoke.server_root("https://vllm.example.com/v1/") == "https://vllm.example.com"
    assert smoke.server_root("http://svc.ns.svc.cluster.local:8000/v1") == "http://svc.ns.svc.cluster.local:8000"
    assert smoke.server_root("https://h/team/v1") == "https://h/team"
    assert smoke.health_url("https://h/v1") == "https://h/health"
    assert smoke.api_url("https://h/v1/", "/models") == "https://h/v1/models"
    assert smoke.api_url("https://h/v1", "chat/completions") == "https://h/v1/chat/completions"
    for bad in ("https://h", "https://h/v1x", "ftp://h/v1", "h/v1", "https://h/v1?x=1"):
        with pytest.raises(smoke.UsageError):
            smoke.server_root(bad)


def test_in_cluster_hint():
    hint = smoke.in_cluster_hint("http://vllm-qwen3-0-6b.ai-serving-dev.svc.cluster.local:8000/health")
    assert "kubectl -n ai-serving-dev port-forward svc/vllm-qwen3-0-6b 8000:8000" in hint
    assert smoke.in_cluster_hint("https://vllm.ai-serving.company.com/v1/models") == ""


def test_lines_split_on_lf_alone_and_keep_characters_whole():
    text = 'data: {"c":"é\u2028x"}\r\n\r\n'.encode()
    chunks = [text[:10], text[10:15], text[15:16], text[16:]]  # é is split across chunks 2 and 3
    assert list(smoke.iter_lines(chunks)) == ['data: {"c":"é\u2028x"}', ""]
    assert list(smoke.iter_lines([b"a\nb"])) == ["a", "b"]


def test_sse_events():
    lines = [": keep-alive", "", "data:{\"a\":1}", "", "event: x", "id: 7", "data: one", "data:  two", "",
             "retry: 5", "", "data: [DONE]", "", "data: half"]
    end = smoke.SSEEnd()
    assert list(smoke.sse_data(lines, end)) == ['{"a":1}', "one\n two", "[DONE]"]
    assert end.cut_event is True
    end = smoke.SSEEnd()
    assert list(smoke.sse_data(["data: [DONE]", ""], end)) == ["[DONE]"] and end.cut_event is False


def vllm_chunks(*deltas, finish="length", usage=True):
    """A vLLM 0.11.0 chat stream's payloads: role chunk, one per delta (the last with finish_reason)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}], "prompt_token_ids": None}]
    for number, delta in enumerate(deltas):
        last = number == len(deltas) - 1
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish if last else None}]})
    if usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(deltas), "total_tokens": 3 + len(deltas)}})
    return [json.dumps(chunk) for chunk in chunks] + ["[DONE]"]


def test_read_chat_stream():
    ticks = iter([10.5, 10.75, 11.0, 11.25, 11.5])
    result = smoke.read_chat_stream(vllm_chunks({"content": "Hi"}, {"content": " there"}), 10.0, clock=lambda: next(ticks))
    assert (result.text, result.ttft_seconds, result.total_seconds) == ("Hi there", 0.75, 1.5)
    assert (result.finish_reason, result.completion_tokens, result.chunks, result.done) == ("length", 2, 4, True)


def test_read_chat_stream_counts_reasoning_as_the_first_token():
    payloads = vllm_chunks({"reasoning_content": "Let me"}, {"reasoning_content": " think"}, usage=False)
    result = smoke.read_chat_stream(payloads, 0.0, clock=lambda: 1.0)
    assert (result.text, result.reasoning, result.ttft_seconds) == ("", "Let me think", 1.0)


@pytest.mark.parametrize(
    ("payloads", "reason"),
    [
        (vllm_chunks({"content": "Hi"})[:-1], "the stream stopped between events before data: [DONE], after 3 chunks and 2 characters"),
        (vllm_chunks({"content": "Hi"})[:1] + ["<html>502</html>"], "chunk 2 is not JSON: '<html>502</html>'"),
        (vllm_chunks({"content": "Hi"})[:1] + ['{"error": {"message": "boom", "type": "BadRequestError", "param": null, "code": 400}}', "[DONE]"],
         "the server reported an error in the stream: boom"),
        (vllm_chunks({}, finish="stop"), "the stream ended without any text (finish_reason stop, 3 chunks)"),
        (["[1, 2]"], "chunk 1 is not a JSON object"),
        (['{"id": "x"}'], "chunk 1 has no choices list"),
    ],
)
def test_read_chat_stream_failures(payloads, reason):
    with pytest.raises(smoke.CheckFailed) as failure:
        smoke.read_chat_stream(payloads, 0.0, clock=lambda: 0.0)
    assert str(failure.value).startswith(reason)


def test_error_message_shapes():
    assert smoke.error_message('{"error":"Unauthorized"}') == "Unauthorized"
    assert smoke.error_message(
        '{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}}'
    ) == "The model `x` does not exist."
    assert smoke.error_message('{"object":"error","message":"old shape","type":"x","code":400}') == "old shape"
    assert smoke.error_message('{"detail":"Not Found"}') == "Not Found"
    assert smoke.error_message("<html><center><h1>404 Not Found</h1></center></html>").startswith("<html>")
    assert smoke.error_message("") == "(empty body)"


def test_judge_health_and_models():
    assert smoke.judge_health(200, "")[0] == "ok"
    assert smoke.judge_health(404, "<html>")[0] == "not-routed"
    with pytest.raises(smoke.CheckFailed, match="^502 "):
        smoke.judge_health(502, "bad gateway")
    target = smoke.Target("http://h/v1", "b")
    body = json.dumps({"object": "list", "data": [{"id": "a"}, {"id": "b", "max_model_len": 100}]})
    detail, served = smoke.judge_models(200, body, target)
    assert served == ["a", "b"] and "serves b (max_model_len 100); all served: a, b" in detail
    with pytest.raises(smoke.CheckFailed, match="not an OpenAI model list"):
        smoke.judge_models(200, "<html>", target)
    with pytest.raises(smoke.CheckFailed, match="is the endpoint the base_url ending in /v1"):
        smoke.judge_models(404, '{"detail":"Not Found"}', target)


def test_resolve_target():
    outputs = {"endpoint": "https://h/v1", "servedModelName": "m", "apiKey": "from-outputs"}
    target = smoke.resolve_target(outputs, None, None, "VLLM_API_KEY", environ={})
    assert (target.endpoint, target.model, target.api_key, target.key_source) == ("https://h/v1", "m", "from-outputs", "stack output apiKey")
    target = smoke.resolve_target(outputs, "http://127.0.0.1:8000/v1/", "n", "K", environ={"K": "from-env"})
    assert (target.endpoint, target.model, target.api_key, target.key_source) == ("http://127.0.0.1:8000/v1", "n", "from-env", "$K")
    for stand_in in ("<redacted>", "[secret]", ""):
        assert smoke.resolve_target({**outputs, "apiKey": stand_in}, None, None, "K", environ={"K": ""}).api_key is None
    assert "from-outputs" not in repr(smoke.resolve_target(outputs, None, None, "K", environ={}))


def test_run_checks_in_process(fake):
    server = fake(api_key=KEY)
    seen = []
    with requests.Session() as session:
        report = smoke.run_checks(smoke.Target(server.endpoint, MODEL, KEY, "$VLLM_API_KEY"), session=session,
                                  on_step=lambda step: seen.append((step.name, step.status)))
    assert report.passed and seen == [("health", "ok"), ("models", "ok"), ("chat", "ok")]
    assert report.text == "Hello! How can I help you today" and report.ttft_seconds >= 0


def test_redact():
    assert smoke.redact(f"Bearer {KEY}", KEY) == "Bearer <api key>"
    assert smoke.redact("text", None) == "text"
    # Only the whole key: a token that merely contains a short key stays as it is.
    assert smoke.redact("GET /v1/models: Bearer v1", "v1") == "GET /v1/models: Bearer <api key>"
    assert smoke.redact("v1x, xv1, v1.2", "v1") == "v1x, xv1, v1.2"


def test_a_short_key_garbles_no_url_and_no_json_field_name(fake):
    """The key is blanked out of what the server sent, by field: the URLs and the JSON report's
    field names, which contain the short key 'v1' and 'model', are printed as they are."""
    for key in ("v1", "model"):
        server = fake(api_key="right-key", echo_auth=True)
        done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, key=key)
        assert f"{server.endpoint}/models" in done.stdout, done.stdout
        assert "Bearer <api key>" in done.stdout
        done = run_smoke("--endpoint", server.endpoint, "--model", MODEL, "--json", key=key)
        summary = json.loads(done.stdout)
        assert summary["endpoint"] == server.endpoint and summary["model"] == MODEL
        assert summary["steps"][1]["url"] == f"{server.endpoint}/models"
        assert "Bearer <api key>" in summary["steps"][1]["detail"] and summary["reason"] == summary["steps"][1]["detail"]


def test_redirects_are_reported_not_followed():
    response = requests.Response()
    response.status_code, response.headers["Location"] = 308, "https://vllm.example.com/v1/models"
    with pytest.raises(smoke.CheckFailed, match="^308 redirect to https://vllm.example.com/v1/models; give the endpoint"):
        smoke.refuse_redirect(response)
    response.status_code = 200
    smoke.refuse_redirect(response)


def test_describe_exception():
    url = "http://vllm-qwen3-0-6b.ai-serving-dev.svc.cluster.local:8000/health"
    reason = smoke.describe_exception(requests.ConnectionError(OSError("Name or service not known")), url, 30)
    assert reason.startswith("cannot connect to vllm-qwen3-0-6b.ai-serving-dev.svc.cluster.local:8000: Name or service")
    assert "port-forward svc/vllm-qwen3-0-6b" in reason
    reason = smoke.describe_exception(requests.ReadTimeout("x"), "https://h/v1/models", 30)
    assert reason == "no data from h for 30 s (--timeout)"
    reason = smoke.describe_exception(requests.ConnectTimeout("x"), "https://h/v1/models", 5)
    assert reason == "no connection to h within 5 s"
