"""BodyRouter: the Gateway API Inference Extension's Body-Based Router (BBR), which copies the
request body's `model` into a header so that HTTPRoutes can send each model to its own pool.

Several servers share one host this way: each Exposure with route inference and model_name
takes only the requests whose X-Gateway-Model-Name header is its served model name (and, with
adapter_names, whose X-Gateway-Base-Model-Name is), and BBR sets those headers from the body
before the Gateway routes.

The facts below are from the extension's v1.5.0 module (sigs.k8s.io/gateway-api-inference-extension):
- BBR is an ext_proc server: gRPC on 9004 (TLS with a self-signed certificate unless
  --secure-serving=false), gRPC health on 9005, metrics on 9090 (pkg/bbr/server/options.go). Its
  health service answers SERVING to any service name (cmd/bbr/runner/health.go).
- Its plugins are given by repeated --plugin type:name[:json] (pkg/bbr/config/spec.go);
  without any it runs body-field-to-header for `model` and base-model-to-header
  (cmd/bbr/runner/runner.go). body-field-to-header sets the named header from a body field
  (pkg/bbr/plugins/bodyfieldtoheader). base-model-to-header sets X-Gateway-Base-Model-Name to the
  base model of the body's `model`, from ConfigMaps labeled inference.networking.k8s.io/bbr-managed
  =true whose data holds baseModel and adapters (a YAML list); a ConfigMap controller watches them
  (pkg/bbr/plugins/basemodelextractor). With NAMESPACE set, it watches its own namespace only
  (runner.go: the manager's cache), and reads them with get/list/watch (the chart's rbac.yaml).
- It builds its Kubernetes client from the pod's service account at start (ctrl.GetConfig in
  runner.go), whatever its plugins, so the pod gets a token even when its account may read nothing.
- --streaming pairs with Envoy's FULL_DUPLEX_STREAMED body mode, which the chart uses with Istio.
  BBR answers the request's headers once the whole body is in (pkg/bbr/handlers/server.go,
  request.go), with clear_route_cache so the Gateway routes on the new headers.
- It exports traces unless --tracing=false, asks the API to authenticate metrics scrapes unless
  --metrics-endpoint-auth=false, and serves pprof unless --enable-pprof=false (options.go): all off.
- The chart (config/charts/body-based-routing) attaches it to a Gateway for two providers: istio,
  an EnvoyFilter inserting the ext_proc filter first in the Gateway's HTTP filters, with a
  DestinationRule that speaks TLS to BBR without verifying its self-signed certificate; and gke,
  a GCPRoutingExtension with a HealthCheckPolicy. It is installed once per Gateway.
"""

import json
from typing import Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from . import grammar
from .arguments import ArgsSpec, DnsLabel, DnsSubdomain, Image, Problems, check, int_range
from .labels import object_labels, selector_labels
from .network import API_PORTS, gateway_ext_proc, grpc_service_spec
from .pods import ext_proc_container, locked_down, projected_api_access, role_for

ROUTER_IMAGE = "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0"
GRPC_PORT = 9004
HEALTH_PORT = 9005
METRICS_PORT = 9090
MODEL_HEADER = "X-Gateway-Model-Name"
"""bodyfieldtoheader.ModelHeader: the body's model, as is."""
BASE_MODEL_HEADER = "X-Gateway-Base-Model-Name"
"""basemodelextractor.BaseModelHeader: the base model of the body's model, from the ConfigMaps."""
MANAGED_LABEL = "inference.networking.k8s.io/bbr-managed"
"""The label base-model-to-header watches ConfigMaps by (configmap_reconciler.go, value "true")."""
COMPONENT = "body-router"
GATEWAYS = ("istio", "none")
ISTIO_API = "networking.istio.io"


def adapters_config_map_data(base_model: str, adapters: list[str]) -> dict[str, str]:
    """What base-model-to-header reads from a ConfigMap: baseModel, and adapters as a YAML list
    (adapters_store.go parseConfigMap; a JSON list is YAML)."""
    return {"baseModel": base_model, "adapters": json.dumps(adapters)}


def router_args(adapters: bool) -> list[str]:
    model = {"fieldName": "model", "headerName": MODEL_HEADER}
    plugins = [f"body-field-to-header:model-to-header:{json.dumps(model, separators=(',', ':'))}"]
    if adapters:
        plugins.append("base-model-to-header:base-model-to-header")
    return [
        "--grpc-port", str(GRPC_PORT),
        "--grpc-health-port", str(HEALTH_PORT),
        "--metrics-port", str(METRICS_PORT),
        "--streaming",
        "--tracing=false",
        "--metrics-endpoint-auth=false",
        "--enable-pprof=false",
        *[word for plugin in plugins for word in ("--plugin", plugin)],
    ]  # fmt: skip


def router_pod_spec(name: str, image: str, adapters: bool) -> dict:
    """BBR: unprivileged, a projected token for its client, health on its gRPC health port."""
    # The chart sets no resources. BBR parses each request's JSON body and keeps no state but the
    # adapters' names: small requests, and limits so one large body cannot take the node's memory.
    resources = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    container = ext_proc_container("bbr", image, router_args(adapters), (GRPC_PORT, HEALTH_PORT, METRICS_PORT), resources)
    spec = {"containers": [container]}
    return projected_api_access(locked_down(spec, service_account=name), "bbr")


def router_role_rules() -> list[dict]:
    """base-model-to-header's ConfigMap controller: read ConfigMaps of its own namespace."""
    return [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]


def router_network_policy(selector: dict, gateway_namespaces: list[str], adapters: bool) -> dict:
    """The Gateways' namespaces reach the ext_proc port; BBR calls DNS and, to watch its
    ConfigMaps, the API server."""
    return gateway_ext_proc(selector, GRPC_PORT, gateway_namespaces, API_PORTS if adapters else [])


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def istio_envoy_filter_spec(gateway_name: str, host: str) -> dict:
    """The chart's templates/istio.yaml: BBR's ext_proc filter first among the Gateway's HTTP
    filters, so it runs before the route is chosen. Unlike the chart, responses are not sent to
    BBR (it runs no response plugin here): a streamed completion would otherwise reach the client
    only once BBR had the whole of it (server.go buffers the response body until its end)."""
    return {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway_name}],
        "configPatches": [
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}},
                },
                "patch": {
                    "operation": "INSERT_FIRST",
                    "value": {
                        "name": "envoy.filters.http.ext_proc.bbr",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                            # As the chart: a request BBR did not read fails rather than reaching
                            # a pool it was not meant for. Envoy refuses fail-open with
                            # FULL_DUPLEX_STREAMED anyway (Envoy Gateway v1.7.0 states the rule in
                            # api/v1alpha1/ext_proc_types.go).
                            "failure_mode_allow": False,
                            # Envoy's names (go-control-plane envoy v1.37.0, the extension's,
                            # extensions/filters/http/ext_proc/v3/processing_mode.pb.go).
                            "processing_mode": {
                                "request_header_mode": "SEND",
                                "request_body_mode": "FULL_DUPLEX_STREAMED",
                                "request_trailer_mode": "SEND",
                                "response_header_mode": "SKIP",
                                "response_body_mode": "NONE",
                                "response_trailer_mode": "SKIP",
                            },
                            "grpc_service": {"envoy_grpc": {"cluster_name": f"outbound|{GRPC_PORT}||{host}"}},
                        },
                    },
                },
            }
        ],
    }


def istio_destination_rule_spec(host: str) -> dict:
    """The chart's: TLS to BBR's self-signed certificate, which nothing can verify."""
    return {"host": host, "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}}


class BodyRouterArgs(TypedDict):
    """Arguments of BodyRouter."""

    namespace: pulumi.Input[str]
    """Namespace of the router: the servers' own when they serve LoRA adapters, since the router
    reads the ConfigMaps that map adapters to base models in its own namespace only."""
    gateway: str
    """How the router is put in front of the Gateway's routing: istio (an EnvoyFilter on the
    Gateway, as the extension's chart does, and a DestinationRule for TLS to the router) or none
    (attach it yourself: send each request's headers and full body to the ext_proc service at
    `endpoint`, over TLS without verification, before the route is chosen, and clear the route
    cache on its answer; see docs/several-models.md)."""
    gateway_name: NotRequired[Optional[str]]
    """The Gateway the router serves; required with gateway istio."""
    gateway_namespace: NotRequired[Optional[str]]
    """Namespace of that Gateway, where the EnvoyFilter goes; None means the router's own."""
    adapters: NotRequired[bool]
    """Map LoRA adapters to their base models (the base-model-to-header plugin, X-Gateway-Base-Model-Name,
    from the ConfigMaps Exposure creates with adapter_names); the router may then read ConfigMaps
    of its namespace. Default false: only X-Gateway-Model-Name, and no access to the API."""
    image: NotRequired[str]
    """The router's image. Default registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0."""
    replicas: NotRequired[int]
    """Replicas of the router; every request through the Gateway passes it. Default 2."""
    allowed_namespaces: NotRequired[Optional[list[str]]]
    """Namespaces whose pods (the Gateway's proxies) may reach the router; None means the Gateway's
    namespace with gateway istio, the router's own with gateway none."""
    network_policy: NotRequired[bool]
    """Create the NetworkPolicy that admits only those namespaces. Default true."""


DEFAULTS: dict[str, Any] = {
    "gateway_name": None,
    "gateway_namespace": None,
    "adapters": False,
    "image": ROUTER_IMAGE,
    "replicas": 2,
    "allowed_namespaces": None,
    "network_policy": True,
}


@check("gateway", "gateway_name", "gateway_namespace")
def _gateway_settings_take_effect(args: dict) -> Problems:
    if args["gateway"] == "none":
        return {
            field: "has no effect with gateway none, where you attach the router yourself; remove it"
            for field in ("gateway_name", "gateway_namespace")
            if args[field]
        }
    if not args["gateway_name"]:
        return {"gateway_name": f"is required with gateway {args['gateway']}: the Gateway the router is attached to"}
    return {}


@check("allowed_namespaces", "network_policy")
def _allowed_namespaces_take_effect(args: dict) -> Problems:
    if args["allowed_namespaces"] is not None and not args["network_policy"]:
        return {"allowed_namespaces": "has no effect without network_policy; remove it or set network_policy"}
    if args["allowed_namespaces"] == []:
        return {"allowed_namespaces": "is empty, so no Gateway could reach the router; name the Gateway's namespace"}
    return {}


SPEC = ArgsSpec(
    "BodyRouter",
    BodyRouterArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "gateway": Literal[GATEWAYS],
        "gateway_name": DnsSubdomain,
        "gateway_namespace": DnsLabel,
        "image": Image,
        "replicas": int_range(1, 100),
        "allowed_namespaces": list[DnsLabel],  # type: ignore[valid-type]
    },
    checks=(_gateway_settings_take_effect, _allowed_namespaces_take_effect),
    # The Service's name is a DNS-1035 label: the Gateway resolves it.
    name_rule=grammar.dns_1035_label,
)


def body_router_problems(args: BodyRouterArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


class BodyRouter(pulumi.ComponentResource):
    """The extension's Body-Based Router, so that one host serves several models chosen by the
    request body's `model`: Deployment, Service, account, NetworkPolicy, and its attachment to the
    Gateway."""

    service_name: pulumi.Output[str]
    """Name of the router's Service."""
    endpoint: pulumi.Output[str]
    """host:port of the router's ext_proc service (gRPC over TLS), for a Gateway you attach it to yourself."""

    def __init__(self, name: str, args: BodyRouterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:BodyRouter", name, None, opts)
        namespace, child = args["namespace"], pulumi.ResourceOptions(parent=self)
        labels, pods = object_labels(name, COMPONENT), selector_labels(name, COMPONENT)
        metadata = {"name": name, "namespace": namespace, "labels": labels}
        account = k8s.core.v1.ServiceAccount(name, metadata=metadata, automount_service_account_token=False, opts=child)
        depends: list[pulumi.Resource] = [account]
        if args["adapters"]:
            depends.append(role_for(account, metadata, router_role_rules(), parent=self))
        k8s.apps.v1.Deployment(
            name,
            metadata=metadata,
            spec={
                "replicas": args["replicas"],
                "selector": {"matchLabels": pods},
                "template": {"metadata": {"labels": pods}, "spec": router_pod_spec(name, args["image"], args["adapters"])},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        service = k8s.core.v1.Service(name, metadata=metadata, spec=grpc_service_spec(pods, GRPC_PORT), opts=child)
        gateway_namespace = args["gateway_namespace"] or namespace
        if args["network_policy"]:
            allowed = args["allowed_namespaces"]
            k8s.networking.v1.NetworkPolicy(
                name,
                metadata=metadata,
                spec=pulumi.Output.from_input(gateway_namespace).apply(
                    lambda ns: router_network_policy(pods, allowed if allowed is not None else [ns], args["adapters"])
                ),
                opts=child,
            )
        host = pulumi.Output.from_input(namespace).apply(lambda ns: service_host(name, ns))
        if args["gateway"] == "istio":
            k8s.apiextensions.CustomResource(
                name,
                api_version=f"{ISTIO_API}/v1",
                kind="DestinationRule",
                metadata=metadata,
                spec=host.apply(istio_destination_rule_spec),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[service]),
            )
            k8s.apiextensions.CustomResource(
                name,
                api_version=f"{ISTIO_API}/v1alpha3",
                kind="EnvoyFilter",
                metadata={**metadata, "namespace": gateway_namespace},
                spec=host.apply(lambda h: istio_envoy_filter_spec(args["gateway_name"], h)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[service]),
            )
        self.service_name = service.metadata.name
        self.endpoint = pulumi.Output.concat(host, f":{GRPC_PORT}")
        self.register_outputs({"serviceName": self.service_name, "endpoint": self.endpoint})
