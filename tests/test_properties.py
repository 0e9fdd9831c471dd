"""Arbitrary text in every config key: never a traceback, and whatever is accepted renders safely.

Driven through the config layer and the components' pure builders (not whole renders) to
keep the suite fast. Whatever a key accepts must never put into an object a value with a
control character, an unescaped ``$(`` in a container's command, args or env, a model path
outside the model volume, or a PromQL label value that escapes its quotes.
"""

import posixpath
import re

import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from vllm_serving_components.autoscaler import scaled_object_spec
from vllm_serving_components.exposure import http_route_spec, ingress_spec
from vllm_serving_components.gpu_claim import pod_fragment
from vllm_serving_components.grammar import single_line
from vllm_serving_components.model_store import DEFAULTS as STORE_DEFAULTS
from vllm_serving_components.model_store import adapter_paths, job_spec, model_path
from vllm_serving_components.stage_model import MARKER_NAME
from vllm_serving_components.vllm_server import PORT, PORT_NAME, deployment_spec, time_to_ready
from stack.component_args import (
    StoreOutputs,
    autoscaler_args,
    exposure_args,
    gpu_claim_args,
    model_store_args,
    takes_api_key,
    vllm_server_args,
)
from stack.config import ConfigError
from stack.loading import parse_stack_config
from stack.project import encode, read_project

PROJECT = read_project(ROOT)
DEFAULTS = PROJECT.defaults()
BASE = {
    **DEFAULTS,
    **{k.split(":", 1)[1]: encode(v) for k, v in yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"].items()},
    # Every optional object on, so every value reaches something.
    "host": "vllm.example.com",
    "tls": "true",
    "tlsClusterIssuer": "letsencrypt",
    "autoscalingEnabled": "true",
    "autoscalingMaxReplicas": "3",
    "storageAccessMode": "ReadWriteMany",
    "apiKeySecretName": "vllm-key",
}
MOUNT = STORE_DEFAULTS["mount_path"]
TRICKY = [
    "$(VLLM_API_KEY)", "$$(X)", "a$b", "..", "../..", "../../etc", "/etc", "Qwen/..", "a\nb", "x\n", '"}', '"} or vector(1)',
    "\\", "\u2028", "\x00", " ", "", "-", "--api-key", "--api-key=x", "--api-key x", "'", "`id`", "a;b", "日本",
    "9" * 40, "-1", "0", "1e999", "nan", "true", "null", "[]", '["a"]', "{}", "a=b", "a/b/c=d",
]
text = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(TRICKY), st.text(max_size=10)),
    st.builds(lambda a, b: a + b, st.text(alphabet="Qwen/.-_$()0123456789\n", max_size=12), st.sampled_from(TRICKY)),
)
STRING_KEYS = sorted(key for key, d in PROJECT.declarations.items() if d["type"] == "string")
ALL_KEYS = sorted(PROJECT.declarations)
ARRAY_KEYS = sorted(key for key, d in PROJECT.declarations.items() if d["type"] == "array")
SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(key=st.sampled_from(STRING_KEYS), value=text)
def test_any_text_in_a_string_key_is_refused_or_renders_safely(key, value):
    render_safely({**BASE, key: value})


@SETTINGS
@given(key=st.sampled_from(ALL_KEYS), value=text)
def test_any_text_in_any_key_never_raises_anything_but_a_config_error(key, value):
    render_safely({**BASE, key: value})


@SETTINGS
@given(key=st.sampled_from(ARRAY_KEYS), items=st.lists(text, max_size=4))
def test_any_list_in_an_array_key_is_refused_or_renders_safely(key, items):
    render_safely({**BASE, key: encode(items)})


# Path segments close to valid ones, so that most ids pass validation and reach the path.
# (Arbitrary text in these keys is the string-key test's.)
segment = st.one_of(
    st.sampled_from(["..", ".", ".x", "x..", "...", "a.b", "-x", "x_y", "Qwen", "%2e%2e", "$(X)"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,9}", fullmatch=True),
)
owner_name = st.builds(lambda a, b: f"{a}/{b}", segment, segment)
revisions = st.one_of(segment, st.builds(lambda a, b: f"{a}/{b}", segment, segment))


@SETTINGS
@given(model_id=owner_name, revision=revisions)
def test_the_model_path_never_leaves_the_model_volume(model_id, revision):
    # Steer the search towards values that are accepted: a refused value checks nothing here.
    target(float(render_safely({**BASE, "modelId": model_id, "modelRevision": revision})))


@SETTINGS
@given(name=segment, adapter_id=owner_name, revision=revisions)
def test_an_adapter_path_never_leaves_the_model_volume(name, adapter_id, revision):
    adapters = encode([f"{name}={adapter_id}@{revision}:16"])
    target(float(render_safely({**BASE, "loraAdapters": adapters})))


def render_safely(values: dict[str, str]) -> bool:
    """False when the config is refused; else whether every object is safe (asserted)."""
    try:
        config = parse_stack_config(PROJECT.name, values, DEFAULTS)
    except ConfigError:
        return False
    for manifest in build(config):
        check_manifest(manifest)
    return True


def build(config) -> list[dict]:
    """The objects the stack would create, from the components' pure builders."""
    name, namespace = config.name, config.namespace
    store = {**STORE_DEFAULTS, **{k: v for k, v in model_store_args(config, namespace).items() if v is not None}}
    path = model_path(store)
    outputs = StoreOutputs(
        claim_name="claim", mount_path=MOUNT, model_path=path, marker_name=MARKER_NAME, adapter_paths=adapter_paths(store)
    )
    server = vllm_server_args(config, namespace, pod_fragment(gpu_claim_args(config, namespace)), outputs)
    exposure = exposure_args(config, namespace, {"app": "x"}, PORT, PORT_NAME, takes_api_key(config))
    route = http_route_spec(name, exposure) if config.exposure_route == "gateway" else ingress_spec(name, name, exposure)
    scaler = autoscaler_args(config, name, {"app": "x"}, PORT_NAME, time_to_ready(server))
    return [
        {"kind": "Job", "spec": job_spec(store, name, "claim", "script")},
        {"kind": "Deployment", "spec": deployment_spec(name, server)},
        {"kind": "Route", "spec": route},
        {"kind": "ScaledObject", "spec": scaled_object_spec(scaler, name)},
    ]


def check_manifest(manifest: dict) -> None:
    for text_value in strings(manifest):
        single_line(text_value)
    if manifest["kind"] in ("Job", "Deployment"):
        pod = manifest["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            expanded = [
                *container.get("command", []),
                *container.get("args", []),
                *(env["value"] for env in container.get("env", []) if "value" in env),
            ]
            for value in expanded:
                assert not unescaped_reference(value), value
            paths = [arg for arg in expanded if arg.startswith(MOUNT)]
            for arg in paths:
                literal = arg.replace("$$", "$")
                assert posixpath.normpath(literal) == literal and literal.startswith(MOUNT + "/"), arg
    if manifest["kind"] == "ScaledObject":
        query = manifest["spec"]["triggers"][0]["metadata"]["query"]
        shape = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
        assert shape == 'sum(vllm:num_requests_waiting{namespace="",model_name=""})', query


def unescaped_reference(text: str) -> bool:
    """Whether the kubelet would expand a $(VAR) in this text."""
    return "$(" in re.sub(r"\$\$", "", text)


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
