"""Pure helpers: vLLM arguments, probe timing, quantities, images, labels, rendering, stack files."""

from decimal import Decimal

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from vllm_serving_components.escaping import container_text, promql_selector, promql_string
from vllm_serving_components.grammar import image_reference, parse_quantity
from vllm_serving_components.labels import object_labels, selector_labels
from vllm_serving_components.probes import health_probes
from vllm_serving_components.vllm_args import serve_flags
from stack.project import SECRET_PLACEHOLDER, StackFileError, encode, read_project, stack_config
from stack.render import REDACTED, plain, redact, run_under_mocks


def test_serve_flags_order_and_formatting():
    flags = serve_flags(
        served_model_name="m",
        port=8000,
        tensor_parallel_size=8,
        pipeline_parallel_size=1,
        gpu_memory_utilization=0.90,
        max_model_len=32768,
        backend_args=["--enforce-eager"],
        extra_args=["--enable-prefix-caching"],
    )
    assert flags == [
        "--served-model-name", "m",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--tensor-parallel-size", "8",
        "--pipeline-parallel-size", "1",
        "--gpu-memory-utilization", "0.9",
        "--max-model-len", "32768",
        "--enforce-eager",
        "--enable-prefix-caching",
    ]


@pytest.mark.parametrize(("minutes", "threshold"), [(1, 6), (15, 90), (60, 360), (7, 42)])
def test_startup_probe_budget_covers_the_startup_timeout(minutes, threshold):
    probes = health_probes("http", minutes)
    startup = probes["startupProbe"]
    assert startup["failureThreshold"] == threshold
    assert startup["failureThreshold"] * startup["periodSeconds"] >= minutes * 60
    assert probes["livenessProbe"]["failureThreshold"] * probes["livenessProbe"]["periodSeconds"] == 60
    assert {p["httpGet"]["path"] for p in probes.values()} == {"/health"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("8", Decimal(8)),
        ("160Gi", Decimal(160 * 1024**3)),
        ("500G", Decimal(500 * 1000**3)),
        ("1.5Ki", Decimal(1536)),
        ("1e3", Decimal(1000)),
    ],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["16GB", "", "Gi", "1.2.3", "1 Gi", "1Gi\n", "1e99999999999"])
def test_parse_quantity_refuses_non_quantities(text):
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    "image", ["vllm/vllm-openai:v0.11.0", "registry.local:5000/vllm:v1", "vllm/vllm-openai@sha256:" + "a" * 64]
)
def test_pinned_images_pass(image):
    assert image_reference(image) == image


@pytest.mark.parametrize(
    ("image", "words"),
    [("vllm/vllm-openai", "no tag"), ("registry.local:5000/vllm", "no tag"), ("vllm/vllm-openai:latest", "latest")],
)
def test_unpinned_images_fail(image, words):
    with pytest.raises(ValueError, match=words):
        image_reference(image)


def test_object_labels_extend_the_selector_labels():
    selector = selector_labels("vllm", "server")
    labels = object_labels("vllm", "server")
    assert selector.items() < labels.items()
    assert labels["app.kubernetes.io/managed-by"] == "pulumi"


def test_plain_turns_integral_floats_into_integers():
    assert plain({"replicas": 1.0, "ratio": 0.5, "items": [2.0, "3"]}) == {"replicas": 1, "ratio": 0.5, "items": [2, "3"]}


def test_pulumi_secrets_are_never_rendered():
    def program():
        k8s.core.v1.ConfigMap("c", metadata={"name": "c"}, data={"token": pulumi.Output.secret("s3cret")})
        k8s.core.v1.ConfigMap("d", metadata={"name": "d"}, data={"plain": "visible"})
        pulumi.export("token", pulumi.Output.secret("s3cret"))

    rendering = run_under_mocks(program, "p", "s", {})
    assert rendering.find("ConfigMap", "c")["data"] == {"token": REDACTED}
    assert rendering.find("ConfigMap", "d")["data"] == {"plain": "visible"}
    assert rendering.outputs == {"token": REDACTED}
    assert "s3cret" not in repr([o.manifest for o in rendering.objects])


def test_redact_replaces_secret_values_only():
    secret = {"kind": "Secret", "data": {"api-key": "c2VjcmV0"}, "stringData": {"token": "secret"}}
    assert redact(secret) == {"kind": "Secret", "data": {"api-key": REDACTED}, "stringData": {"token": REDACTED}}
    config_map = {"kind": "ConfigMap", "data": {"a": "b"}}
    assert redact(config_map) is config_map


def test_encode_matches_how_the_cli_passes_config():
    assert [encode("x"), encode(8), encode(True), encode(["a"]), encode("0.9")] == ["x", "8", "true", '["a"]', "0.9"]


def write_project(tmp_path, stack_settings):
    (tmp_path / "Pulumi.yaml").write_text(
        yaml.safe_dump({"name": "p", "runtime": "python", "config": {"a": {"type": "integer", "default": 1}, "b": {"type": "string"}}})
    )
    (tmp_path / "Pulumi.s.yaml").write_text(yaml.safe_dump({"config": stack_settings}))
    return read_project(tmp_path)


def test_stack_config_layers_the_stack_file_over_project_defaults(tmp_path):
    project = write_project(tmp_path, {"p:b": "x", "p:config:c": [1], "kubernetes:context": "k"})
    settings = stack_config(project, "s")
    assert settings.values == {"p:a": "1", "p:b": "x", "p:c": "[1]", "kubernetes:context": "k"}
    assert settings.problems == settings.secret_keys == []


def test_stack_config_reports_what_the_cli_refuses_and_stands_in_for_secrets(tmp_path):
    project = write_project(tmp_path, {"p:b": {"secure": "AAAB"}, "p:a": None, "c": 1})
    settings = stack_config(project, "s")
    assert settings.values == {"p:b": SECRET_PLACEHOLDER}
    assert settings.secret_keys == ["p:b"]
    assert sorted((p.key, p.message.split(";")[0]) for p in settings.problems) == [
        ("a", "has no value (null)"),
        ("c", "has no namespace"),
    ]
    with pytest.raises(StackFileError, match="no stack file Pulumi.other.yaml"):
        stack_config(project, "other")


@pytest.mark.parametrize(
    ("value", "escaped"),
    [("plain", "plain"), ("$(VLLM_API_KEY)", "$$(VLLM_API_KEY)"), ("a$b", "a$$b"), ("$$(X)", "$$$$(X)")],
)
def test_container_text_survives_kubelet_expansion(value, escaped):
    assert container_text(value) == escaped
    assert kubelet_expand(escaped) == value


def kubelet_expand(text: str) -> str:
    """The kubelet's $(VAR) expansion with an empty environment (third_party/forked/golang/expansion)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(" and ")" in text[i + 2:]:
                i = text.index(")", i) + 1  # a reference: stands for whatever the variable holds
                out.append("<expanded>")
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_promql_strings_cannot_escape_their_quotes():
    assert promql_string('a"}b\\') == '"a\\"}b\\\\"'
    assert promql_selector("m", {"model_name": 'x"} or vector(1)'}) == 'm{model_name="x\\"} or vector(1)"}'

