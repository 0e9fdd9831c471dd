"""Exposure: the Service in front of the server and, with a host, a route to it; the endpoint URL.

The route is an Ingress (any controller) or a Gateway API HTTPRoute attached to an existing
Gateway. With a Gateway, TLS is the Gateway listener's business; the route only names it. The
inference route is an HTTPRoute too, whose backend is an InferencePool of the server's pods with
its Endpoint Picker (components/endpoint_picker.py): each request goes to the pod that serves it
best, by queue, KV cache and prompt prefix, where the Service would pick one at random.
"""

import re
from typing import Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from . import grammar
from .arguments import (
    ArgsSpec,
    CommandWord,
    DnsLabel,
    DnsSubdomain,
    Image,
    Labels,
    Problems,
    check,
    int_range,
    rule,
    with_defaults,
)
from .body_router import BASE_MODEL_HEADER, MANAGED_LABEL, MODEL_HEADER, adapters_config_map_data
from .endpoint_picker import (
    CONFIG_FILE,
    FAILURE_MODES,
    GRPC_PORT,
    PICKER_IMAGE,
    POOL_API_VERSION,
    POOL_GROUP,
    picker_config,
    picker_name,
    picker_network_policy,
    picker_pod_spec,
    picker_role_rules,
    pool_spec,
)
from .labels import object_labels, selector_labels
from .network import grpc_service_spec, ingress_from
from .pods import role_for
from .readiness import route_accepted

COMPONENT = "api"
API_PATH = "/v1"
"""The only path routed from outside: vLLM 0.11.0 checks the API key on /v1 alone (api_server.py,
AuthenticationMiddleware); 0.34.0 on /v1, /v2, /inference and /cohere (entrypoints/serve/
middleware/authenticate.py GUARDED_PREFIX). In both, /invocations, /tokenize, /metrics and
others answer anyone, and /health and /metrics are for probes and Prometheus inside the
cluster: /v1 is guarded in every release, so it alone is routed."""
NGINX_PREFIX = "nginx.ingress.kubernetes.io"
MAX_GATEWAY_TIMEOUT_SECONDS = 99999
"""Gateway API durations have at most five digits per unit (HTTPRoute rules[].timeouts)."""
INGRESS_ONLY = ("ingress_class", "max_body_size", "tls_secret_name", "cluster_issuer", "wait_for_address")
GATEWAY_ONLY = ("gateway_name", "gateway_namespace", "gateway_listener", "path_prefix")
INFERENCE_ONLY = ("picker_image", "failure_mode", "flow_control", "model_name")
PICKER_COMPONENT = "endpoint-picker"


class ExposureArgs(TypedDict):
    """Arguments of Exposure."""

    namespace: pulumi.Input[str]
    """Namespace of the Service and its route."""
    selector: pulumi.Input[dict[str, str]]
    """Labels that select the server pods (VLLMServer.selector_labels)."""
    port: int
    """Port of the Service; the same as the container's."""
    target_port_name: str
    """Name of the container port (VLLMServer.port_name)."""
    host: NotRequired[Optional[str]]
    """Public host name; with it a route is created, without it the service stays in-cluster."""
    route: NotRequired[str]
    """How the host reaches the server: ingress (an Ingress to the Service), gateway (an HTTPRoute to
    the Service) or inference (an HTTPRoute to an InferencePool of the server's pods, whose Endpoint
    Picker chooses the pod per request; the Gateway must support the Gateway API Inference
    Extension). Default ingress."""
    picker_image: NotRequired[str]
    """route inference only: the Endpoint Picker's image. Default
    registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0."""
    failure_mode: NotRequired[str]
    """route inference only: what the Gateway does when the Endpoint Picker does not answer:
    FailOpen sends the request to any ready pod, FailClose fails it. Default FailOpen."""
    adapter_names: NotRequired[list[str]]
    """The LoRA adapters the server loads (VLLMServer.adapter_names). With route inference, the
    Endpoint Picker also prefers the pods that have a request's adapter loaded; with model_name too,
    requests naming an adapter are routed here as well, by the X-Gateway-Base-Model-Name header a
    BodyRouter with adapters sets from a ConfigMap that Exposure creates (<name>-adapters, in its
    namespace, which must be the BodyRouter's). Other routes ignore it. Default none."""
    flow_control: NotRequired[bool]
    """route inference only: the Endpoint Picker's flow control layer. While the pool is saturated
    (the mean over its pods of waiting/5 or KV cache use/0.8, whichever is larger, reaches 1), the
    picker holds new requests in its own queue and sends each to the best pod once there is room,
    rather than adding to the servers' queues. One pod with a long queue can saturate the mean
    while others are idle, holding every request: so default false."""
    model_name: NotRequired[Optional[str]]
    """route inference only: the server's served model name (VLLMServer's served_model_name). The
    HTTPRoute then takes only requests whose body names this model, by the X-Gateway-Model-Name
    header a BodyRouter sets from the body, so that several servers share one host, each with a
    route of its own. None takes every request to the host."""
    path_prefix: NotRequired[Optional[str]]
    """route gateway only: serve the API at /<path_prefix>/v1 on the host instead of /v1, so several
    servers share one host; the HTTPRoute strips the prefix (URLRewrite ReplacePrefixMatch). None
    serves /v1."""
    ingress_class: NotRequired[str]
    """ingressClassName of the Ingress. Default nginx."""
    gateway_name: NotRequired[Optional[str]]
    """The Gateway the HTTPRoute attaches to; required with route gateway."""
    gateway_namespace: NotRequired[Optional[str]]
    """Namespace of that Gateway; None means the route's own namespace."""
    gateway_listener: NotRequired[Optional[str]]
    """Listener (sectionName) of the Gateway to attach to; None attaches to every listener that allows it."""
    tls: NotRequired[bool]
    """Serve the host over HTTPS. Default false. With a Gateway, its listener must terminate TLS."""
    tls_secret_name: NotRequired[Optional[str]]
    """Ingress only: Secret with (or to receive) the certificate; None uses <name>-tls."""
    cluster_issuer: NotRequired[Optional[str]]
    """Ingress only: cert-manager ClusterIssuer that issues the certificate; None expects the Secret to exist."""
    stream_timeout_seconds: NotRequired[int]
    """How long the route keeps a request open (streamed completions). Default 3600."""
    route_wait_minutes: NotRequired[int]
    """How long `pulumi up` waits for the route: an HTTPRoute until its Gateway accepts it and
    resolves its backends, an Ingress until its controller publishes an address. Default 10."""
    max_body_size: NotRequired[str]
    """Largest request body for nginx, e.g. 64m (nginx's default 1m rejects long prompts)."""
    allowed_namespaces: NotRequired[list[str]]
    """Namespaces whose pods may reach the server's port, beside its own: the ingress controller's
    or the Gateway's, and Prometheus'. Default ingress-nginx and monitoring."""
    network_policy: NotRequired[bool]
    """Create the NetworkPolicy that admits only those namespaces to the server's port. Default true."""
    wait_for_address: NotRequired[bool]
    """Ingress only: wait until the controller publishes the Ingress's address (Pulumi's default, up to
    10 minutes). False for controllers that never publish one, e.g. on bare metal. Default true."""
    server_takes_api_key: NotRequired[Optional[bool]]
    """Whether the server checks an API key: VLLMServer.takes_api_key. With a host, Exposure refuses
    to publish a server that takes no key, and one whose key status it is not told (None), unless
    allow_without_api_key is true."""
    allow_without_api_key: NotRequired[bool]
    """Publish the host although the server takes no API key: anyone who finds it can use the model.
    Default false."""


DEFAULTS: dict[str, Any] = {
    "host": None,
    "route": "ingress",
    "picker_image": PICKER_IMAGE,
    "failure_mode": "FailOpen",
    "adapter_names": [],
    "flow_control": False,
    "model_name": None,
    "path_prefix": None,
    "ingress_class": "nginx",
    "gateway_name": None,
    "gateway_namespace": None,
    "gateway_listener": None,
    "tls": False,
    "tls_secret_name": None,
    "cluster_issuer": None,
    "stream_timeout_seconds": 3600,
    "route_wait_minutes": 10,
    "max_body_size": "64m",
    "wait_for_address": True,
    "allowed_namespaces": ["ingress-nginx", "monitoring"],
    "network_policy": True,
    "server_takes_api_key": None,
    "allow_without_api_key": False,
}
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def _nginx_size(value: str) -> str:
    if not re.fullmatch(r"[0-9]+[kKmMgG]?", value):
        raise ValueError("must be an nginx size such as 64m or 1g")
    return value


def _given(args: dict, fields: tuple[str, ...]) -> list[str]:
    """The fields set to something other than their default."""
    return [field for field in fields if args[field] not in (None, DEFAULTS[field])]


@check("tls", *INGRESS_ONLY, *GATEWAY_ONLY, *INFERENCE_ONLY, "route", "stream_timeout_seconds", "route_wait_minutes")
def _route_settings_take_effect(args: dict) -> Problems:
    # host is only tested for being set, so this runs even when its value is wrong.
    if not args["host"]:
        problems = {"tls": "needs a host: a certificate is issued for a host name"} if args["tls"] else {}
        route_fields = ("route", "stream_timeout_seconds", "route_wait_minutes", *INGRESS_ONLY, *GATEWAY_ONLY, *INFERENCE_ONLY)
        return problems | {field: "has no effect without a host; remove it" for field in _given(args, route_fields)}
    inference = {} if args["route"] == "inference" else {
        field: "only applies with route inference; remove it" for field in _given(args, INFERENCE_ONLY)
    }
    if args["route"] == "ingress":
        problems = inference | {field: "only applies with route gateway or inference; remove it" for field in _given(args, GATEWAY_ONLY)}
        if "path_prefix" in problems:
            problems["path_prefix"] = (
                "needs route gateway: an Ingress cannot strip a path prefix without controller-specific "
                "annotations; use route gateway, or give each server a host of its own"
            )
        if not args["tls"]:
            problems |= {
                field: "has no effect while tls is false; remove it or set tls"
                for field in _given(args, ("tls_secret_name", "cluster_issuer"))
            }
        return problems
    problems = {
        field: f"belongs to the Gateway's listener with route {args['route']}; configure TLS there and remove it"
        for field in _given(args, ("cluster_issuer", "tls_secret_name"))
    }
    problems |= {
        field: f"only applies to an Ingress; remove it with route {args['route']}"
        for field in _given(args, ("ingress_class", "max_body_size", "wait_for_address"))
    }
    if not args["gateway_name"]:
        problems["gateway_name"] = "is required to attach the HTTPRoute to a Gateway"
    return inference | problems


@check("server_takes_api_key", "allow_without_api_key")
def _public_host_takes_a_key(args: dict) -> Problems:
    # host is only tested for being set, so this runs even when its value is wrong.
    takes_key, allowed = args["server_takes_api_key"], args["allow_without_api_key"]
    if args["host"] and not takes_key and not allowed:
        if takes_key is None:
            return {
                "host": "is public but Exposure is not told whether the server takes an API key: pass "
                "server_takes_api_key (VLLMServer.takes_api_key), or allow_without_api_key to serve anyone"
            }
        return {
            "host": "is public but the server takes no API key: give the server api_key or api_key_secret, "
            "or set allow_without_api_key to serve anyone"
        }
    if allowed and (takes_key or not args["host"]):
        return {"allow_without_api_key": "has no effect with an API key or without a host; remove it"}
    return {}


@check("model_name", "adapter_names")
def _adapters_apart_from_the_model(args: dict) -> Problems:
    adapters, model = args["adapter_names"], args["model_name"]
    for index, adapter in enumerate(adapters, start=1):
        if adapter == model:
            return {"adapter_names": f"item {index} ({adapter}) is model_name itself; list only the adapters"}
        if adapters.index(adapter) < index - 1:
            return {"adapter_names": f"item {index} ({adapter}) is listed twice; list each adapter once"}
    return {}


SPEC = ArgsSpec(
    "Exposure",
    ExposureArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "selector": Labels,
        "port": int_range(1, 65535),
        "target_port_name": rule(grammar.port_name),
        "host": rule(grammar.host_name),
        "route": Literal["ingress", "gateway", "inference"],
        "picker_image": Image,
        "failure_mode": Literal[FAILURE_MODES],
        "adapter_names": list[rule(grammar.adapter_name)],  # type: ignore[misc]
        "model_name": CommandWord,
        "path_prefix": rule(lambda value: grammar.path_segments(value, "a path under the host, e.g. qwen")),
        "ingress_class": DnsSubdomain,
        "gateway_name": DnsSubdomain,
        "gateway_namespace": DnsLabel,
        "gateway_listener": DnsSubdomain,
        "tls_secret_name": DnsSubdomain,
        "cluster_issuer": DnsSubdomain,
        "stream_timeout_seconds": int_range(1, MAX_GATEWAY_TIMEOUT_SECONDS),
        "route_wait_minutes": int_range(1, 24 * 60),
        "max_body_size": rule(_nginx_size),
        "allowed_namespaces": list[DnsLabel],  # type: ignore[valid-type]
    },
    checks=(_route_settings_take_effect, _public_host_takes_a_key, _adapters_apart_from_the_model),
    # The Service's name is a DNS-1035 label: it becomes the host name clients resolve.
    name_rule=grammar.dns_1035_label,
)


def exposure_problems(args: ExposureArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def ingress_annotations(args: ExposureArgs) -> dict[str, str]:
    """Annotations that keep long streamed completions alive, and cert-manager's issuer.

    No rewrite-target: it would send every request for /v1/... to the path it names.
    """
    args = with_defaults(args, DEFAULTS)
    annotations: dict[str, str] = {}
    if args["ingress_class"] == "nginx":
        timeout = str(args["stream_timeout_seconds"])
        annotations.update(
            {
                f"{NGINX_PREFIX}/proxy-read-timeout": timeout,
                f"{NGINX_PREFIX}/proxy-send-timeout": timeout,
                f"{NGINX_PREFIX}/proxy-buffering": "off",
                f"{NGINX_PREFIX}/proxy-body-size": args["max_body_size"],
            }
        )
    if args["tls"] and args["cluster_issuer"]:
        annotations["cert-manager.io/cluster-issuer"] = args["cluster_issuer"]
    if not args["wait_for_address"]:
        # pulumi-kubernetes waits for .status.loadBalancer.ingress otherwise (pkg/await/ingress.go).
        annotations.update(SKIP_AWAIT)
    return annotations


def ingress_spec(name: str, service_name: str, args: ExposureArgs) -> dict:
    args = with_defaults(args, DEFAULTS)
    host = args["host"]
    spec: dict = {
        "ingressClassName": args["ingress_class"],
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": API_PATH,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service_name, "port": {"number": args["port"]}}},
                        }
                    ]
                },
            }
        ],
    }
    if args["tls"]:
        spec["tls"] = [{"hosts": [host], "secretName": args["tls_secret_name"] or f"{name}-tls"}]
    return spec


def http_route_spec(service_name: str, args: ExposureArgs) -> dict:
    """An HTTPRoute sending the host's API to the Service (or, with route inference, to the
    InferencePool of the same name), with a stream-length timeout."""
    args = with_defaults(args, DEFAULTS)
    parent: dict = {"name": args["gateway_name"]}
    if args["gateway_namespace"]:
        parent["namespace"] = args["gateway_namespace"]
    if args["gateway_listener"]:
        parent["sectionName"] = args["gateway_listener"]
    rule: dict = {
        "matches": route_matches(public_path(args["path_prefix"]), args["model_name"], args["adapter_names"]),
        "backendRefs": [
            {"group": POOL_GROUP, "kind": "InferencePool", "name": service_name}
            if args["route"] == "inference"
            else {"name": service_name, "port": args["port"]}
        ],
        "timeouts": {"request": f"{args['stream_timeout_seconds']}s"},
    }
    if args["path_prefix"]:
        # ReplacePrefixMatch swaps the matched /<prefix>/v1 for /v1 (Gateway API HTTPPathModifier;
        # it requires a PathPrefix match).
        rule["filters"] = [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": API_PATH}}}
        ]
    return {"parentRefs": [parent], "hostnames": [args["host"]], "rules": [rule]}


def route_matches(path: str, model_name: Optional[str], adapters: list[str]) -> list[dict]:
    """The path; with a model name, only requests for that model (matches are ORed): the model
    itself by X-Gateway-Model-Name and, with adapters, the model and its adapters by
    X-Gateway-Base-Model-Name (the ConfigMap maps the model to itself too)."""
    match = {"path": {"type": "PathPrefix", "value": path}}
    if not model_name:
        return [match]
    headers = [MODEL_HEADER, BASE_MODEL_HEADER] if adapters else [MODEL_HEADER]
    return [{**match, "headers": [{"type": "Exact", "name": header, "value": model_name}]} for header in headers]


def public_path(path_prefix: Optional[str]) -> str:
    """Where the API is on the host: /v1, or /<path_prefix>/v1."""
    return f"/{path_prefix}{API_PATH}" if path_prefix else API_PATH


def public_endpoint(host: str, tls: bool, path_prefix: Optional[str] = None) -> str:
    """The base_url an OpenAI client uses for a public host."""
    return f"{'https' if tls else 'http'}://{host}{public_path(path_prefix)}"


def create_route(
    name: str, labels: dict, backend: pulumi.Resource, args: ExposureArgs, parent: pulumi.Resource
) -> pulumi.CustomResource:
    """The Ingress or HTTPRoute that brings the host to its backend (the Service, or the InferencePool)."""
    args = with_defaults(args, DEFAULTS)
    wait = f"{args['route_wait_minutes']}m"
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[backend], custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait))
    metadata = {"name": name, "namespace": args["namespace"], "labels": labels}
    if args["route"] in ("gateway", "inference"):
        return k8s.apiextensions.CustomResource(
            name,
            api_version="gateway.networking.k8s.io/v1",
            kind="HTTPRoute",
            metadata={**metadata, "annotations": route_accepted()},
            spec=http_route_spec(name, args),
            opts=opts,
        )
    return k8s.networking.v1.Ingress(
        name,
        metadata={**metadata, "annotations": ingress_annotations(args)},
        spec=ingress_spec(name, name, args),
        opts=opts,
    )


def create_pool(name: str, args: ExposureArgs, parent: pulumi.Resource) -> pulumi.Resource:
    """The InferencePool of the server's pods and its Endpoint Picker: Deployment, Service, account,
    Role, config and NetworkPolicy; with model_name and adapter_names, the ConfigMap that maps them to the model
    for a BodyRouter. The pool is returned once the picker is ready."""
    args = with_defaults(args, DEFAULTS)
    namespace, child = args["namespace"], pulumi.ResourceOptions(parent=parent)
    picker = picker_name(name)
    labels, pods = object_labels(name, PICKER_COMPONENT), selector_labels(name, PICKER_COMPONENT)
    metadata = {"name": picker, "namespace": namespace, "labels": labels}
    account = k8s.core.v1.ServiceAccount(picker, metadata=metadata, automount_service_account_token=False, opts=child)
    binding = role_for(account, metadata, picker_role_rules(), parent=parent)
    config = k8s.core.v1.ConfigMap(picker, metadata=metadata, data={CONFIG_FILE: picker_config(bool(args["adapter_names"]), args["flow_control"])}, opts=child)
    deployment = k8s.apps.v1.Deployment(
        picker,
        metadata=metadata,
        spec=pulumi.Output.from_input(namespace).apply(
            lambda ns: {
                "replicas": 1,
                "selector": {"matchLabels": pods},
                "template": {"metadata": {"labels": pods}, "spec": picker_pod_spec(name, ns, args["picker_image"], pods)},
            }
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[binding, config]),
    )
    k8s.core.v1.Service(picker, metadata=metadata, spec=grpc_service_spec(pods, GRPC_PORT), opts=child)
    if args["model_name"] and args["adapter_names"]:
        adapters = f"{name}-adapters"
        k8s.core.v1.ConfigMap(
            adapters,
            metadata={"name": adapters, "namespace": namespace, "labels": {**object_labels(name, COMPONENT), MANAGED_LABEL: "true"}},
            data=adapters_config_map_data(args["model_name"], args["adapter_names"]),
            opts=child,
        )
    if args["network_policy"]:
        k8s.networking.v1.NetworkPolicy(
            picker,
            metadata=metadata,
            spec=picker_network_policy(pods, args["port"], args["allowed_namespaces"]),
            opts=child,
        )
    return k8s.apiextensions.CustomResource(
        name,
        api_version=POOL_API_VERSION,
        kind="InferencePool",
        metadata={"name": name, "namespace": namespace, "labels": object_labels(name, COMPONENT)},
        spec=pulumi.Output.from_input(args["selector"]).apply(
            lambda selector: pool_spec(selector, args["port"], name, args["failure_mode"])
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[deployment]),
    )


class Exposure(pulumi.ComponentResource):
    """A ClusterIP Service for the server and, when a host is given, an Ingress or HTTPRoute."""

    service_name: pulumi.Output[str]
    """Name of the Service."""
    in_cluster_endpoint: pulumi.Output[str]
    """base_url for clients inside the cluster."""
    endpoint: pulumi.Output[str]
    """base_url for clients: the public URL with a host, else the in-cluster one."""

    def __init__(self, name: str, args: ExposureArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:Exposure", name, None, opts)
        labels = object_labels(name, COMPONENT)
        namespace = args["namespace"]
        service = k8s.core.v1.Service(
            name,
            metadata={"name": name, "namespace": namespace, "labels": labels},
            spec={
                "type": "ClusterIP",
                "selector": args["selector"],
                "ports": [
                    {
                        "name": args["target_port_name"],
                        "port": args["port"],
                        "targetPort": args["target_port_name"],
                        "protocol": "TCP",
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args["network_policy"]:
            k8s.networking.v1.NetworkPolicy(
                name,
                metadata={"name": name, "namespace": namespace, "labels": labels},
                spec=pulumi.Output.from_input(args["selector"]).apply(
                    lambda selector: ingress_from(selector, args["target_port_name"], args["allowed_namespaces"])
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.service_name = service.metadata.name
        self.in_cluster_endpoint = pulumi.Output.concat(
            "http://", self.service_name, ".", namespace, ".svc.cluster.local:", str(args["port"]), "/v1"
        )
        if args["host"]:
            backend = create_pool(name, args, parent=self) if args["route"] == "inference" else service
            route = create_route(name, labels, backend, args, parent=self)
            url = public_endpoint(args["host"], args["tls"], args["path_prefix"])
            self.endpoint = route.metadata.apply(lambda _: url)
        else:
            self.endpoint = self.in_cluster_endpoint
        self.register_outputs(
            {
                "serviceName": self.service_name,
                "inClusterEndpoint": self.in_cluster_endpoint,
                "endpoint": self.endpoint,
            }
        )
