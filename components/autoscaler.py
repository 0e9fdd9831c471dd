"""Autoscaler: scales the server on what vLLM is doing, and lets an operator see it and be alerted.

Signals (combinable; the autoscaler follows whichever asks for the most replicas): requests
waiting per replica (the default), requests running per replica, KV cache usage, a latency
quantile from vLLM's histograms, GPU utilisation from the DCGM exporter (a weak signal: a
duty cycle, and per pod only when the exporter's series carry the pod's labels), and CPU as a
last resort. Engines: a KEDA ScaledObject (default) or an autoscaling/v2 HorizontalPodAutoscaler
on external metrics that prometheus-adapter serves (its rules are the ``adapter_rules`` output).

Beside the scaler: a PodMonitor so Prometheus scrapes the server, a PrometheusRule with alerts,
and a Grafana dashboard in a ConfigMap for the Grafana sidecar, all from ``monitoring``'s
expressions.
"""

import re
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pydantic import Field

from . import grammar
from . import monitoring as queries
from .arguments import (
    ArgsSpec,
    DnsLabel,
    DnsSubdomain,
    HttpUrl,
    Labels,
    Problems,
    Token,
    check,
    int_range,
    rule,
    with_defaults,
)
from .labels import object_labels
from .multinode import LWS_API_VERSION, LWS_KIND
from .readiness import CUSTOM_RESOURCE_WAIT, condition_true

COMPONENT = "autoscaler"
MAX_PERIOD_SECONDS = 1800
"""The HPA's limit for a scaling policy's period (autoscaling/v2 HPAScalingPolicy)."""
MAX_STABILIZATION_SECONDS = 3600
KEDA_POLLING_SECONDS = 30
"""KEDA's default pollingInterval (keda.sh/v1alpha1 ScaledObject, pkg/apis/keda/v1alpha1)."""
MAX_POLLING_SECONDS = 3600
GRAFANA_DASHBOARD_LABEL = {"grafana_dashboard": "1"}
"""What the Grafana Helm chart's dashboard sidecar looks for by default."""


class SignalArgs(TypedDict):
    """One thing to scale on, and the value to hold it at."""

    kind: str
    """queue (requests waiting per replica), running (requests running per replica), kv_cache
    (mean KV cache usage, 0 to 1), latency (seconds, a quantile), gpu (mean GPU utilisation, percent)
    or cpu (percent of the CPU request; a last resort)."""
    target: float
    """The value per replica the autoscaler aims for."""
    histogram: NotRequired[str]
    """latency only: ttft (time to first token), e2e (whole request) or itl (between tokens). Default ttft."""
    quantile: NotRequired[float]
    """latency only: the quantile, e.g. 0.95. Default 0.95."""
    window: NotRequired[str]
    """latency only: the rate window, a Prometheus duration such as 5m. Default 5m."""


class AutoscalerArgs(TypedDict):
    """Arguments of Autoscaler."""

    namespace: str
    """Namespace of the server; also the Prometheus label that scopes every query."""
    deployment_name: pulumi.Input[str]
    """The workload to scale (VLLMServer.deployment_name)."""
    target_kind: NotRequired[str]
    """Deployment, or LeaderWorkerSet for multi-node replicas, scaled group by group through its
    scale subresource (VLLMServer.workload_kind). Default Deployment."""
    served_model_name: str
    """vLLM's model_name metric label, which scopes the queries to this model."""
    engine: NotRequired[str]
    """keda (a ScaledObject) or hpa (an autoscaling/v2 HorizontalPodAutoscaler on prometheus-adapter's
    external metrics). Default keda."""
    signals: NotRequired[list[SignalArgs]]
    """What to scale on. Default: 5 requests waiting per replica."""
    min_replicas: NotRequired[int]
    """Fewest replicas; 0 only with scale_to_zero. Default 1."""
    max_replicas: int
    """Most replicas."""
    prometheus_address: str
    """URL of the Prometheus KEDA queries (keda engine)."""
    scale_up_pods: NotRequired[int]
    """Replicas added at most per scale-up period. Default 1."""
    scale_up_period_seconds: NotRequired[int]
    """The scale-up period: a new replica should have loaded before the next is added. Default 300."""
    scale_down_stabilization_seconds: NotRequired[int]
    """How long load must stay low before a replica is removed. Default 600."""
    scale_down_period_seconds: NotRequired[int]
    """Replicas removed at most one per this period. Default 300."""
    polling_seconds: NotRequired[Optional[int]]
    """keda with scale_to_zero: KEDA's pollingInterval, how often its operator queries the triggers
    to decide scaling from and to zero replicas. With at least one replica the HPA reads the metric
    through KEDA's metrics server every sync period of kube-controller-manager (15 s by default)
    and KEDA does not poll (ScaledObject.IsPollingIntervalRelevant). None: 30 (KEDA's default)."""
    fallback_replicas: NotRequired[Optional[int]]
    """keda only: the replicas to hold while Prometheus cannot be queried. None: none, and the
    ScaledObject reports the error (a fallback would hide a missing metric)."""
    scale_to_zero: NotRequired[bool]
    """keda only: allow zero replicas. vLLM exports nothing at zero, so activation_query must come
    from outside the pods. Default false."""
    activation_query: NotRequired[Optional[str]]
    """keda with scale_to_zero: a PromQL query, from outside the pods (e.g. the ingress controller's
    request rate for the host), whose value above 0 wakes the server."""
    pod_monitor: NotRequired[bool]
    """Create a Prometheus Operator PodMonitor for the server's /metrics. Default true."""
    pod_selector: NotRequired[pulumi.Input[dict[str, str]]]
    """Labels of the server pods (VLLMServer.selector_labels); needed with pod_monitor."""
    metrics_port_name: NotRequired[str]
    """Name of the container port serving /metrics (VLLMServer.port_name); needed with pod_monitor."""
    pod_monitor_labels: NotRequired[dict[str, str]]
    """Labels Prometheus selects PodMonitors and PrometheusRules by (kube-prometheus-stack:
    release=<its release name>)."""
    alerts: NotRequired[bool]
    """Create a PrometheusRule with alerts on the server. Default true."""
    not_ready_alert_minutes: NotRequired[int]
    """How long fewer replicas may be ready than wanted before VLLMPodsNotReady fires: longer than
    a new replica takes to pull its image and load (rollout.ready_within_minutes). Default 30."""
    dashboard: NotRequired[bool]
    """Create a ConfigMap with a Grafana dashboard for the Grafana sidecar. Default true."""


DEFAULTS: dict[str, Any] = {
    "target_kind": "Deployment",
    "engine": "keda",
    "signals": [{"kind": "queue", "target": 5}],
    "min_replicas": 1,
    "scale_up_pods": 1,
    "scale_up_period_seconds": 300,
    "scale_down_stabilization_seconds": 600,
    "scale_down_period_seconds": 300,
    "polling_seconds": None,
    "fallback_replicas": None,
    "scale_to_zero": False,
    "activation_query": None,
    "pod_monitor": True,
    "pod_selector": None,
    "metrics_port_name": None,
    "pod_monitor_labels": {},
    "alerts": True,
    "not_ready_alert_minutes": 30,
    "dashboard": True,
}
SIGNAL_DEFAULTS = {"histogram": "ttft", "quantile": 0.95, "window": "5m"}
AVERAGE_VALUE = ("queue", "running")
"""Signals summed over the pods, which the scaler divides by the replicas (AverageValue)."""
TARGET_RANGES = {"queue": (0, 10**6), "running": (0, 10**6), "kv_cache": (0, 1), "latency": (0, 3600), "gpu": (0, 100), "cpu": (0, 1000)}


def _prometheus_duration(value: str) -> str:
    if not re.fullmatch(r"[1-9]\d*[smh]", value):
        raise ValueError("must be a Prometheus duration such as 30s, 5m or 1h")
    return value


@check("min_replicas", "max_replicas", "scale_to_zero")
def _room_to_scale(args: dict) -> Problems:
    low, high = args["min_replicas"], args["max_replicas"]
    if low == 0 and not args["scale_to_zero"]:
        return {"min_replicas": "must be at least 1 unless scale_to_zero: at zero vLLM exports no metrics to wake it"}
    if high <= low:
        return {
            "max_replicas": f"must be greater than min_replicas ({low}): with both at {low} the autoscaler can never "
            "scale; raise it, or turn autoscaling off and set the replicas"
        }
    return {}


@check("signals")
def _signals(args: dict) -> Problems:
    names = [(s["kind"], s.get("histogram", SIGNAL_DEFAULTS["histogram"]) if s["kind"] == "latency" else "") for s in args["signals"]]
    if not names:
        return {"signals": "must name at least one signal"}
    if len(set(names)) < len(names):
        return {"signals": "name a signal once each (latency once per histogram)"}
    for index, signal in enumerate(args["signals"], start=1):
        low, high = TARGET_RANGES[signal["kind"]]
        if not low < signal["target"] <= high:
            return {"signals": f"item {index}: a {signal['kind']} target must be above {low} and at most {high}"}
        if signal["kind"] != "latency" and {"histogram", "quantile", "window"} & signal.keys():
            return {"signals": f"item {index}: histogram, quantile and window only apply to latency"}
    return {}


@check("engine", "fallback_replicas", "scale_to_zero", "activation_query", "signals", "polling_seconds")
def _engine_settings(args: dict) -> Problems:
    problems = {}
    if args["engine"] == "hpa":
        for field in ("fallback_replicas", "activation_query", "polling_seconds"):
            if args[field] is not None:
                problems[field] = "only applies with engine keda"
        if args["scale_to_zero"]:
            problems["scale_to_zero"] = "only applies with engine keda (an HPA keeps at least one replica)"
    if args["scale_to_zero"] and not args["activation_query"]:
        problems["activation_query"] = (
            "is required with scale_to_zero: at zero replicas vLLM exports nothing, so the wake-up signal must come "
            "from outside the pods (e.g. the ingress controller's request rate)"
        )
    if args["activation_query"] and not args["scale_to_zero"]:
        problems["activation_query"] = "has no effect without scale_to_zero; remove it"
    if args["polling_seconds"] is not None and args["engine"] == "keda" and not args["scale_to_zero"]:
        problems["polling_seconds"] = (
            "has no effect without scale_to_zero: from one replica up the HPA reads the metric every sync period of "
            "kube-controller-manager and KEDA does not poll; remove it"
        )
    if args["fallback_replicas"] is not None and any(s["kind"] == "cpu" for s in args["signals"]):
        problems["fallback_replicas"] = "KEDA's fallback does not apply to a cpu trigger; drop one of them"
    return problems


@check("pod_monitor", "pod_selector", "metrics_port_name", "pod_monitor_labels")
def _pod_monitor_needs_its_target(args: dict) -> Problems:
    if not args["pod_monitor"]:
        if args["pod_monitor_labels"]:
            return {"pod_monitor_labels": "has no effect without pod_monitor; remove it or create the PodMonitor"}
        return {}
    return {
        field: "is required to create the PodMonitor (or set pod_monitor to false)"
        for field in ("pod_selector", "metrics_port_name")
        if not args[field]
    }


SPEC = ArgsSpec(
    "Autoscaler",
    AutoscalerArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "deployment_name": DnsSubdomain,
        "served_model_name": Token,
        "target_kind": Literal["Deployment", "LeaderWorkerSet"],
        "engine": Literal["keda", "hpa"],
        "signals.kind": Literal["queue", "running", "kv_cache", "latency", "gpu", "cpu"],
        "signals.target": Annotated[float, Field(gt=0)],
        "signals.histogram": Literal["ttft", "e2e", "itl"],
        "signals.quantile": Annotated[float, Field(gt=0, lt=1)],
        "signals.window": rule(_prometheus_duration),
        "min_replicas": int_range(0),
        "max_replicas": int_range(1),
        "prometheus_address": HttpUrl,
        "scale_up_pods": int_range(1, 100),
        "scale_up_period_seconds": int_range(1, MAX_PERIOD_SECONDS),
        "scale_down_stabilization_seconds": int_range(0, MAX_STABILIZATION_SECONDS),
        "scale_down_period_seconds": int_range(1, MAX_PERIOD_SECONDS),
        "not_ready_alert_minutes": int_range(1, 7 * 24 * 60),
        "fallback_replicas": int_range(1),
        "polling_seconds": int_range(1, MAX_POLLING_SECONDS),
        "activation_query": rule(grammar.single_line),
        "pod_selector": Labels,
        "metrics_port_name": rule(grammar.port_name),
        "pod_monitor_labels": Labels,
    },
    checks=(_room_to_scale, _signals, _engine_settings, _pod_monitor_needs_its_target),
    # KEDA labels the HPA it makes with the ScaledObject's name, so it must fit a label value.
    name_rule=grammar.dns_label,
)


def autoscaler_problems(args: AutoscalerArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def scope_of(args: AutoscalerArgs) -> queries.Scope:
    args = with_defaults(args, DEFAULTS)
    return queries.Scope(namespace=args["namespace"], model_name=args["served_model_name"])


def signal_query(signal: SignalArgs, scope: queries.Scope) -> Optional[str]:
    """The PromQL of a signal; None for cpu, which the autoscaler reads from the resource metrics."""
    signal = with_defaults(signal, SIGNAL_DEFAULTS)
    return {
        "queue": lambda: queries.queue_depth(scope),
        "running": lambda: queries.running_requests(scope),
        "kv_cache": lambda: queries.kv_cache_usage(scope),
        "latency": lambda: queries.latency(scope, signal["histogram"], signal["quantile"], signal["window"]),
        "gpu": lambda: queries.gpu_utilization(scope),
        "cpu": lambda: None,
    }[signal["kind"]]()


def signal_queries(args: AutoscalerArgs) -> list[str]:
    args = with_defaults(args, DEFAULTS)
    scope = scope_of(args)
    return [query for signal in args["signals"] if (query := signal_query(signal, scope)) is not None]


TARGET_API_VERSIONS = {"Deployment": "apps/v1", LWS_KIND: LWS_API_VERSION}


def scale_target(args: AutoscalerArgs, name: str) -> dict:
    args = with_defaults(args, DEFAULTS)
    return {"apiVersion": TARGET_API_VERSIONS[args["target_kind"]], "kind": args["target_kind"], "name": name}


def scaling_behavior(args: AutoscalerArgs) -> dict:
    """HPA behaviour for pods that take minutes to start: small steps up, one at a time down.

    Up: at most scale_up_pods per scale_up_period_seconds, so a burst does not claim every free
    GPU before the first new replica has loaded. Down: only after load has stayed low for the
    whole stabilisation window, one replica per period.
    """
    args = with_defaults(args, DEFAULTS)
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": args["scale_up_pods"], "periodSeconds": args["scale_up_period_seconds"]}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": args["scale_down_stabilization_seconds"],
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": args["scale_down_period_seconds"]}],
        },
    }


def _value(target: float) -> str:
    return format(target, "g")


def keda_trigger(signal: SignalArgs, scope: queries.Scope, prometheus: str) -> dict:
    if signal["kind"] == "cpu":
        return {"type": "cpu", "metricType": "Utilization", "metadata": {"value": _value(signal["target"])}}
    return {
        "type": "prometheus",
        "metricType": "AverageValue" if signal["kind"] in AVERAGE_VALUE else "Value",
        "metadata": {
            "serverAddress": prometheus,
            "query": signal_query(signal, scope),
            "threshold": _value(signal["target"]),
            # KEDA reads an empty result as 0 by default, so a metric Prometheus never
            # scrapes looks like an idle server; this makes it an error on the ScaledObject.
            "ignoreNullValues": "false",
        },
    }


def scaled_object_spec(args: AutoscalerArgs, deployment: str) -> dict:
    args = with_defaults(args, DEFAULTS)
    scope = scope_of(args)
    triggers = [keda_trigger(signal, scope, args["prometheus_address"]) for signal in args["signals"]]
    spec: dict = {
        "scaleTargetRef": scale_target(args, deployment),
        "minReplicaCount": args["min_replicas"],
        "maxReplicaCount": args["max_replicas"],
        "pollingInterval": KEDA_POLLING_SECONDS if args["polling_seconds"] is None else args["polling_seconds"],
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": scaling_behavior(args)}},
        "triggers": triggers,
    }
    if args["scale_to_zero"]:
        # The wake-up comes from outside the pods: at zero replicas vLLM exports nothing. Any value
        # above 0 activates the target; the huge threshold keeps this trigger out of the count.
        spec["triggers"].append(
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": args["prometheus_address"],
                    "query": args["activation_query"],
                    "threshold": "1000000",
                    "activationThreshold": "0",
                    "ignoreNullValues": "true",
                },
            }
        )
    if args["fallback_replicas"] is not None:
        spec["fallback"] = {"failureThreshold": 3, "replicas": args["fallback_replicas"]}
    return spec


def signal_metric(signal: SignalArgs) -> str:
    """The series a signal is computed from."""
    signal = with_defaults(signal, SIGNAL_DEFAULTS)
    histogram = f"{queries.LATENCY_HISTOGRAMS[signal['histogram']]}_bucket"
    return {
        "queue": queries.QUEUE,
        "running": queries.RUNNING,
        "kv_cache": queries.KV_CACHE,
        "latency": histogram,
        "gpu": queries.GPU_UTILIZATION,
    }[signal["kind"]]


def external_metric_name(signal: SignalArgs) -> str:
    signal = with_defaults(signal, SIGNAL_DEFAULTS)
    suffix = f"_{signal['histogram']}" if signal["kind"] == "latency" else ""
    return f"vllm_{signal['kind']}{suffix}"


def hpa_spec(args: AutoscalerArgs, deployment: str) -> dict:
    """An autoscaling/v2 HPA on prometheus-adapter's external metrics (adapter_rules)."""
    args = with_defaults(args, DEFAULTS)
    metrics = []
    for signal in args["signals"]:
        if signal["kind"] == "cpu":
            target = {"type": "Utilization", "averageUtilization": int(signal["target"])}
            metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
            continue
        kind = "AverageValue" if signal["kind"] in AVERAGE_VALUE else "Value"
        key = "averageValue" if kind == "AverageValue" else "value"
        metric = {"name": external_metric_name(signal)}
        metrics.append({"type": "External", "external": {"metric": metric, "target": {"type": kind, key: _value(signal["target"])}}})
    return {
        "scaleTargetRef": scale_target(args, deployment),
        "minReplicas": args["min_replicas"],
        "maxReplicas": args["max_replicas"],
        "metrics": metrics,
        "behavior": scaling_behavior(args),
    }


def adapter_rules(args: AutoscalerArgs) -> str:
    """prometheus-adapter externalRules serving the HPA's metrics: each answers with the signal's
    own query, which carries its namespace and model filters."""
    args = with_defaults(args, DEFAULTS)
    scope = scope_of(args)
    rules = [
        {
            "seriesQuery": f"{signal_metric(signal)}{{namespace!=\"\"}}",
            "resources": {"overrides": {"namespace": {"resource": "namespace"}}},
            "name": {"as": external_metric_name(signal)},
            "metricsQuery": signal_query(signal, scope),
        }
        for signal in args["signals"]
        if signal["kind"] != "cpu"
    ]
    return yaml.safe_dump({"externalRules": rules}, sort_keys=False)


class Autoscaler(pulumi.ComponentResource):
    """Scales the server on its serving signals; PodMonitor, alerts and dashboard beside it."""

    scaler_name: pulumi.Output[str]
    """Name of the ScaledObject or HorizontalPodAutoscaler."""
    queries: pulumi.Output[list[str]]
    """The PromQL queries the autoscaler scales on (cpu has none)."""
    adapter_rules: pulumi.Output[str]
    """With engine hpa, the prometheus-adapter externalRules the HPA needs (YAML); else empty."""

    def __init__(self, name: str, args: AutoscalerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:Autoscaler", name, None, opts)
        labels = object_labels(name, COMPONENT)
        namespace = args["namespace"]
        child = pulumi.ResourceOptions(parent=self)
        deployment = pulumi.Output.from_input(args["deployment_name"])
        if args["engine"] == "keda":
            scaler = k8s.apiextensions.CustomResource(
                name,
                api_version="keda.sh/v1alpha1",
                kind="ScaledObject",
                # Ready once KEDA has built its scaler and can read the trigger's metric.
                metadata={"name": name, "namespace": namespace, "labels": labels, "annotations": condition_true("Ready")},
                spec=deployment.apply(lambda target: scaled_object_spec(args, target)),
                opts=pulumi.ResourceOptions(parent=self, custom_timeouts=CUSTOM_RESOURCE_WAIT),
            )
            self.adapter_rules = pulumi.Output.from_input("")
        else:
            scaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
                name,
                metadata={"name": name, "namespace": namespace, "labels": labels},
                spec=deployment.apply(lambda target: hpa_spec(args, target)),
                opts=child,
            )
            self.adapter_rules = pulumi.Output.from_input(adapter_rules(args))
        selected = {**labels, **args["pod_monitor_labels"]}
        if args["pod_monitor"]:
            k8s.apiextensions.CustomResource(
                f"{name}-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={"name": f"{name}-metrics", "namespace": namespace, "labels": selected},
                spec={
                    "selector": {"matchLabels": args["pod_selector"]},
                    "podMetricsEndpoints": [{"port": args["metrics_port_name"], "path": "/metrics", "interval": "15s"}],
                },
                opts=child,
            )
        queue = next((s["target"] for s in args["signals"] if s["kind"] == "queue"), 5)
        if args["alerts"]:
            k8s.apiextensions.CustomResource(
                f"{name}-alerts",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata={"name": f"{name}-alerts", "namespace": namespace, "labels": selected},
                spec=deployment.apply(
                    lambda target: {
                        "groups": [
                            {
                                "name": f"vllm-{name}",
                                "rules": queries.alert_rules(
                                    scope_of(args), target, queue, args["not_ready_alert_minutes"], args["target_kind"]
                                ),
                            }
                        ]
                    }
                ),
                opts=child,
            )
        if args["dashboard"]:
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata={"name": f"{name}-dashboard", "namespace": namespace, "labels": {**labels, **GRAFANA_DASHBOARD_LABEL}},
                data=deployment.apply(
                    lambda target: {
                        f"{name}.json": queries.dashboard_json(
                            scope_of(args), target, f"vLLM {args['served_model_name']}", args["target_kind"]
                        )
                    }
                ),
                opts=child,
            )
        self.scaler_name = scaler.metadata.apply(lambda metadata: metadata["name"])
        self.queries = pulumi.Output.from_input(signal_queries(args))
        self.register_outputs({"scalerName": self.scaler_name, "queries": self.queries, "adapterRules": self.adapter_rules})
