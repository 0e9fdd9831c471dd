"""BodyRouter, the extension's body-based router (components/body_router.py), and Exposure's routes
by model: the objects, checked against Kubernetes' and the CRDs' schemas, Pod Security restricted
and the policy pack; every refusal's message."""

import json

import pulumi
import pytest
from conftest import run_component
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors
from test_components import assert_refused
from test_inference_route import inference_args

from vllm_serving_components import BodyRouter, Exposure, body_router_problems
from vllm_serving_components.body_router import ROUTER_IMAGE, router_args
from vllm_serving_components.pods import CONTAINER_SECURITY, POD_SECURITY
from vllm_serving_components.summary import object_details
from policy.check import violations

ROUTER = {"namespace": "models", "gateway": "istio", "gateway_name": "public", "gateway_namespace": "gateways"}


def router_args_with(**changes):
    return {**ROUTER, **changes}


@pytest.fixture(scope="module")
def rendering():
    def build():
        BodyRouter("router", router_args_with(adapters=True))
        Exposure("chat", inference_args(model_name="qwen3", adapter_names=["sql", "poems"]))
        Exposure("coder", inference_args(model_name="coder"))

    return run_component(build)


def test_the_router_copies_the_model_into_a_header_and_maps_adapters(rendering):
    pod = rendering.find("Deployment", "router")["spec"]["template"]["spec"]
    (bbr,) = pod["containers"]
    assert bbr["image"] == ROUTER_IMAGE
    plugins = [bbr["args"][i + 1] for i, word in enumerate(bbr["args"]) if word == "--plugin"]
    assert plugins == [
        'body-field-to-header:model-to-header:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}',
        "base-model-to-header:base-model-to-header",
    ]
    assert {"--streaming", "--tracing=false", "--metrics-endpoint-auth=false", "--enable-pprof=false"} <= set(bbr["args"])
    assert {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in bbr["env"]
    assert bbr["readinessProbe"]["grpc"] == {"port": 9005}
    assert rendering.find("Role", "router")["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    ]
    assert rendering.find("Service", "router")["spec"]["ports"] == [
        {"name": "grpc", "port": 9004, "targetPort": "grpc", "protocol": "TCP"}
    ]


def test_the_router_runs_under_pod_security_restricted_with_a_token_for_its_client(rendering):
    pod = rendering.find("Deployment", "router")["spec"]["template"]["spec"]
    assert pod["securityContext"] == POD_SECURITY
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "router"
    (bbr,) = pod["containers"]
    assert bbr["securityContext"] == CONTAINER_SECURITY
    assert {m["mountPath"] for m in bbr["volumeMounts"]} == {"/tmp", "/var/run/secrets/kubernetes.io/serviceaccount"}


def test_only_the_gateways_namespace_reaches_the_router(rendering):
    policy = rendering.find("NetworkPolicy", "router")["spec"]
    assert policy["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gateways"]}]}}],
            "ports": [{"port": 9004, "protocol": "TCP"}],
        }
    ]
    assert policy["egress"][1] == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}


def test_istio_runs_the_router_before_routing(rendering):
    envoy_filter = rendering.find("EnvoyFilter", "router")
    assert envoy_filter["metadata"]["namespace"] == "gateways"
    spec = envoy_filter["spec"]
    assert spec["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    (patch,) = spec["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_FIRST"
    config = patch["patch"]["value"]["typed_config"]
    assert config["grpc_service"] == {"envoy_grpc": {"cluster_name": "outbound|9004||router.models.svc.cluster.local"}}
    assert config["failure_mode_allow"] is False
    mode = config["processing_mode"]
    assert (mode["request_body_mode"], mode["response_header_mode"], mode["response_body_mode"]) == ("FULL_DUPLEX_STREAMED", "SKIP", "NONE")
    assert rendering.find("DestinationRule", "router")["spec"] == {
        "host": "router.models.svc.cluster.local",
        "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}},
    }


def test_each_route_takes_its_model_and_its_adapters(rendering):
    path = {"type": "PathPrefix", "value": "/v1"}
    assert rendering.find("HTTPRoute", "coder")["spec"]["rules"][0]["matches"] == [
        {"path": path, "headers": [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": "coder"}]}
    ]
    assert rendering.find("HTTPRoute", "chat")["spec"]["rules"][0]["matches"] == [
        {"path": path, "headers": [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": "qwen3"}]},
        {"path": path, "headers": [{"type": "Exact", "name": "X-Gateway-Base-Model-Name", "value": "qwen3"}]},
    ]
    adapters = rendering.find("ConfigMap", "chat-adapters")
    assert adapters["metadata"]["labels"]["inference.networking.k8s.io/bbr-managed"] == "true"
    assert adapters["metadata"]["namespace"] == "ns"
    assert adapters["data"]["baseModel"] == "qwen3" and json.loads(adapters["data"]["adapters"]) == ["sql", "poems"]
    assert not [o for o in rendering.objects if o.kind == "ConfigMap" and o.name == "coder-adapters"]


def test_a_model_list_request_keeps_the_header_its_client_set():
    """GET /v1/models has no body, so the router sets no header; the route matches on the path
    and the header alone (no method, no body), so a client that sets X-Gateway-Model-Name reaches
    that model's server, which answers with its names (docs/several-models.md)."""
    rendering = run_component(lambda: Exposure("coder", inference_args(model_name="coder")))
    (rule,) = rendering.only("HTTPRoute")["spec"]["rules"]
    assert all(set(match) == {"path", "headers"} for match in rule["matches"])


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_every_object_passes_its_schema(rendering, version):
    for obj in rendering.objects:
        assert schema_errors(obj.manifest, version) == [], (obj.kind, obj.name)


def test_the_objects_pass_the_policy_pack(rendering):
    assert violations([o.manifest for o in rendering.objects]) == []


def test_without_adapters_the_router_reads_nothing_from_the_api():
    rendering = run_component(lambda: BodyRouter("router", router_args_with()))
    assert not [o for o in rendering.objects if o.kind in ("Role", "RoleBinding")]
    bbr = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert bbr["args"] == router_args(adapters=False) and bbr["args"].count("--plugin") == 1
    assert rendering.only("NetworkPolicy")["spec"]["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    ]
    assert rendering.only("Deployment")["spec"]["replicas"] == 2


def test_attached_by_hand_it_creates_no_gateway_object_and_admits_its_own_namespace():
    rendering = run_component(lambda: BodyRouter("router", {"namespace": "models", "gateway": "none"}))
    assert sorted(o.kind for o in rendering.objects) == ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
    peers = rendering.only("NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["models"]


@pulumi.runtime.test
def test_the_endpoint_is_the_routers_grpc_address(pulumi_mocks):
    router = BodyRouter("router", {"namespace": "models", "gateway": "none"})

    def check(values):
        endpoint, service = values
        assert endpoint == "router.models.svc.cluster.local:9004"
        assert service == "router"

    return pulumi.Output.all(router.endpoint, router.service_name).apply(check)


@pytest.mark.parametrize(
    ("args", "problems"),
    [
        (router_args_with(gateway="envoy"), {"gateway": "must be one of istio or none"}),
        (router_args_with(gateway_name=None), {"gateway_name": "is required with gateway istio: the Gateway the router is attached to"}),
        ({"namespace": "models", "gateway": "none", "gateway_name": "public", "gateway_namespace": "gateways"}, {
            "gateway_name": "has no effect with gateway none, where you attach the router yourself; remove it",
            "gateway_namespace": "has no effect with gateway none, where you attach the router yourself; remove it",
        }),
        (router_args_with(allowed_namespaces=["gateways"], network_policy=False),
         {"allowed_namespaces": "has no effect without network_policy; remove it or set network_policy"}),
        (router_args_with(allowed_namespaces=[]),
         {"allowed_namespaces": "is empty, so no Gateway could reach the router; name the Gateway's namespace"}),
        (router_args_with(replicas=0), {"replicas": "must be at least 1"}),
        (router_args_with(image="bbr:latest"), {"image": "uses the moving tag latest; pin a release, e.g. vllm/vllm-openai:v0.34.0, or a digest"}),
        (router_args_with(adapters="yes"), {"adapters": "must be true or false, not str"}),
    ],
)
def test_router_mistakes_are_refused_with_their_fix(args, problems):
    assert body_router_problems(args) == problems
    refused = assert_refused(BodyRouter, args, list(problems))
    assert refused.problems == problems


def test_a_router_name_that_cannot_be_a_service_is_refused():
    assert list(body_router_problems(ROUTER, name="Router_1")) == ["name"]


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({"model_name": "qwen3", "adapter_names": ["sql", "qwen3"]},
         {"adapter_names": "item 2 (qwen3) is model_name itself; list only the adapters"}),
        ({"model_name": "qwen3", "adapter_names": ["sql", "sql"]},
         {"adapter_names": "item 2 (sql) is listed twice; list each adapter once"}),
        ({"route": "gateway", "model_name": "qwen3"}, {"model_name": "only applies with route inference; remove it"}),
        ({"model_name": "--port"},
         {"model_name": "must not start with '-': on the command line it would be read as another option"}),
        ({"model_name": "two words"}, {"model_name": "must be a non-empty string without spaces"}),
    ],
)
def test_model_route_mistakes_are_refused_with_their_fix(changes, problems):
    refused = assert_refused(Exposure, inference_args(**changes), list(problems))
    assert refused.problems == problems


def test_the_plan_shows_which_models_a_route_takes(rendering):
    chat = next(o for o in rendering.objects if o.kind == "HTTPRoute" and o.name == "chat")
    assert ("host", "chat.example.com /v1, Gateway gateways/public, when X-Gateway-Base-Model-Name: qwen3 "
                    "or X-Gateway-Model-Name: qwen3") in object_details(chat, rendering.objects)
