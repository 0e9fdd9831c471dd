"""Exposure's inference route: an HTTPRoute to an InferencePool of the server's pods, and the
Endpoint Picker that scores them (components/endpoint_picker.py), checked against the extension's
v1.5.0 CRD and Kubernetes' schemas."""

import pytest
import yaml
from conftest import run_component
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors
from test_components import assert_refused, exposure_args
from test_stacks import render_variant

from vllm_serving_components import Exposure
from vllm_serving_components.endpoint_picker import PICKER_IMAGE, picker_args, picker_config

SELECTOR = {"app.kubernetes.io/component": "server", "app.kubernetes.io/instance": "srv"}


def inference_args(**changes):
    return exposure_args(**{"selector": SELECTOR, "host": "chat.example.com", "route": "inference", "gateway_name": "public",
                            "gateway_namespace": "gateways", "allowed_namespaces": ["gateways"], **changes})


@pytest.fixture(scope="module")
def rendering():
    return run_component(lambda: Exposure("srv", inference_args()))


def test_the_route_sends_the_api_to_the_pool(rendering):
    route = rendering.only("HTTPRoute")["spec"]
    assert route["rules"][0]["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "srv"}]
    assert route["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert rendering.options("HTTPRoute").depends_on == frozenset({"InferencePool/srv"})


def test_the_pool_selects_the_servers_pods_on_its_port_with_its_picker(rendering):
    pool = rendering.only("InferencePool")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"] == {
        "selector": {"matchLabels": SELECTOR},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {"kind": "Service", "name": "srv-epp", "port": {"number": 9002}, "failureMode": "FailOpen"},
    }
    assert "Deployment/srv-epp" in rendering.options("InferencePool").depends_on


def test_the_picker_reads_its_pool_with_least_privilege(rendering):
    pod = rendering.find("Deployment", "srv-epp")["spec"]["template"]["spec"]
    (epp,) = pod["containers"]
    assert epp["image"] == PICKER_IMAGE
    assert epp["args"] == picker_args("srv", "ns")
    assert {"--metrics-endpoint-auth=false", "--tracing=false"} <= set(epp["args"])
    assert epp["readinessProbe"]["grpc"] == {"port": 9003, "service": "inference-extension"}
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "srv-epp"
    assert {m["mountPath"] for m in epp["volumeMounts"]} >= {"/config", "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert rendering.find("Role", "srv-epp")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
    ]
    config = yaml.safe_load(rendering.find("ConfigMap", "srv-epp")["data"]["epp.yaml"])
    assert config == yaml.safe_load(picker_config(lora_affinity=False, flow_control=False))
    assert "featureGates" not in config
    weights = {p["pluginRef"]: p["weight"] for p in config["schedulingProfiles"][0]["plugins"]}
    assert weights == {"queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3}
    policy = rendering.find("NetworkPolicy", "srv-epp")["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": 9002, "protocol": "TCP"}]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_every_object_passes_its_schema(rendering, version):
    for obj in rendering.objects:
        assert schema_errors(obj.manifest, version) == [], obj.kind


def test_a_multi_node_server_has_its_leaders_alone_in_the_pool(tmp_path):
    from conftest import project_with_stack
    from stack.render import render_stack

    settings = {"host": "chat.example.com", "exposureRoute": "inference", "gatewayName": "public",
                "apiKeySecretName": "vllm-api-key"}
    rendering = render_stack(project_with_stack(tmp_path, settings, drop=("tlsClusterIssuer",), base="multinode"), tmp_path)
    selector = rendering.only("InferencePool")["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "server"  # the workers are server-worker
    assert rendering.find("Service", "vllm-qwen3-235b-mn")["spec"]["selector"] == selector


def test_the_variant_keeps_the_api_key(tmp_path):
    rendering = render_variant(tmp_path, "inference-routing-with-api-key")
    assert rendering.outputs["endpoint"] == "https://chat.example.com/v1"
    server = rendering.find("Deployment", "vllm-qwen3-0-6b")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}} in server["env"]


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"route": "gateway", "failure_mode": "FailClose"}, "failure_mode", "only applies with route inference"),
        ({"route": "ingress", "gateway_name": None, "gateway_namespace": None, "picker_image": "epp:v1"}, "picker_image",
         "only applies with route inference"),
        ({"failure_mode": "Open"}, "failure_mode", "FailOpen or FailClose"),
        ({"gateway_name": None}, "gateway_name", "required"),
    ],
)
def test_inference_mistakes_are_refused(changes, key, words):
    refused = assert_refused(Exposure, inference_args(**changes), [key])
    assert words in refused.problems[key]


def test_flow_control_is_a_setting_of_the_inference_route_alone():
    args = exposure_args(host="chat.example.com", route="inference", gateway_name="public", flow_control=True)
    config = yaml.safe_load(run_component(lambda: Exposure("srv", args)).find("ConfigMap", "srv-epp")["data"]["epp.yaml"])
    assert config["featureGates"] == ["flowControl"]
    assert config == yaml.safe_load(picker_config(lora_affinity=False, flow_control=True))
    assert_refused(Exposure, {**args, "route": "gateway"}, ["flow_control"])
