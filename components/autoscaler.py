"""Autoscaler: scales the server with KEDA on the queue depth vLLM itself reports."""

from typing import Any, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from . import grammar
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
from .escaping import promql_selector
from .labels import object_labels

COMPONENT = "autoscaler"
QUEUE_METRIC = "vllm:num_requests_waiting"
SCALE_STEP_PERIOD_SECONDS = 300
MAX_STABILIZATION_SECONDS = 3600


class AutoscalerArgs(TypedDict):
    """Arguments of Autoscaler."""

    namespace: str
    """Namespace of the server; also the Prometheus label that scopes the query."""
    deployment_name: pulumi.Input[str]
    """The Deployment to scale (VLLMServer.deployment_name)."""
    served_model_name: str
    """vLLM's model_name metric label, which scopes the query to this model."""
    min_replicas: NotRequired[int]
    """Fewest replicas, at least 1. Default 1."""
    max_replicas: int
    """Most replicas."""
    queue_depth_target: NotRequired[int]
    """Waiting requests per replica to aim for. Default 5."""
    prometheus_address: str
    """URL of the Prometheus that KEDA queries."""
    scale_down_stabilization_seconds: NotRequired[int]
    """How long load must stay low before a replica is removed. Default 600."""
    pod_monitor: NotRequired[bool]
    """Create a Prometheus Operator PodMonitor for the server's /metrics. Default true."""
    pod_selector: NotRequired[pulumi.Input[dict[str, str]]]
    """Labels of the server pods (VLLMServer.selector_labels); needed with pod_monitor."""
    metrics_port_name: NotRequired[str]
    """Name of the container port serving /metrics (VLLMServer.port_name); needed with pod_monitor."""
    pod_monitor_labels: NotRequired[dict[str, str]]
    """Labels the Prometheus podMonitorSelector wants on the PodMonitor."""


DEFAULTS: dict[str, Any] = {
    "min_replicas": 1,
    "queue_depth_target": 5,
    "scale_down_stabilization_seconds": 600,
    "pod_monitor": True,
    "pod_selector": None,
    "metrics_port_name": None,
    "pod_monitor_labels": {},
}


@check("min_replicas", "max_replicas")
def _room_to_scale(args: dict) -> Problems:
    low, high = args["min_replicas"], args["max_replicas"]
    if high <= low:
        return {
            "max_replicas": f"must be greater than min_replicas ({low}): with both at {low} the autoscaler can never "
            "scale; raise it, or turn autoscaling off and set the replicas"
        }
    return {}


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
        "min_replicas": int_range(1),
        "max_replicas": int_range(1),
        "queue_depth_target": int_range(1),
        "prometheus_address": HttpUrl,
        "scale_down_stabilization_seconds": int_range(0, MAX_STABILIZATION_SECONDS),
        "pod_selector": Labels,
        "metrics_port_name": rule(grammar.port_name),
        "pod_monitor_labels": Labels,
    },
    checks=(_room_to_scale, _pod_monitor_needs_its_target),
    # KEDA labels the HPA it makes with the ScaledObject's name, so it must fit a label value.
    name_rule=grammar.dns_label,
)


def autoscaler_problems(args: AutoscalerArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def queue_depth_query(namespace: str, served_model_name: str) -> str:
    """Requests waiting across the server's pods; KEDA divides it by the target per replica."""
    return f"sum({promql_selector(QUEUE_METRIC, {'namespace': namespace, 'model_name': served_model_name})})"


def scaling_behavior(scale_down_stabilization_seconds: int) -> dict:
    """HPA behaviour for pods that take minutes to start: one replica per step each way.

    Adding one replica at a time keeps a burst from claiming every free GPU before the first
    new replica has even loaded; removal waits for sustained low load.
    """
    one_at_a_time = [{"type": "Pods", "value": 1, "periodSeconds": SCALE_STEP_PERIOD_SECONDS}]
    return {
        "scaleUp": {"stabilizationWindowSeconds": 60, "policies": one_at_a_time},
        "scaleDown": {"stabilizationWindowSeconds": scale_down_stabilization_seconds, "policies": one_at_a_time},
    }


def scaled_object_spec(args: AutoscalerArgs) -> dict:
    args = with_defaults(args, DEFAULTS)
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args["deployment_name"]},
        "minReplicaCount": args["min_replicas"],
        "maxReplicaCount": args["max_replicas"],
        "pollingInterval": 30,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": scaling_behavior(args["scale_down_stabilization_seconds"])
            }
        },
        "triggers": [
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": args["prometheus_address"],
                    "query": queue_depth_query(args["namespace"], args["served_model_name"]),
                    "threshold": str(args["queue_depth_target"]),
                    # KEDA reads an empty result as 0 by default, so a metric Prometheus never
                    # scrapes looks like an idle server; this makes it an error on the ScaledObject.
                    "ignoreNullValues": "false",
                },
            }
        ],
    }


class Autoscaler(pulumi.ComponentResource):
    """A KEDA ScaledObject on vLLM's queue depth, and a PodMonitor so Prometheus has the metric."""

    scaled_object_name: pulumi.Output[str]
    """Name of the ScaledObject."""
    query: pulumi.Output[str]
    """The PromQL query KEDA scales on."""

    def __init__(self, name: str, args: AutoscalerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:Autoscaler", name, None, opts)
        labels = object_labels(name, COMPONENT)
        namespace = args["namespace"]
        scaled_object = k8s.apiextensions.CustomResource(
            name,
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata={"name": name, "namespace": namespace, "labels": labels},
            spec=scaled_object_spec(args),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args["pod_monitor"]:
            k8s.apiextensions.CustomResource(
                f"{name}-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={
                    "name": f"{name}-metrics",
                    "namespace": namespace,
                    "labels": {**labels, **args["pod_monitor_labels"]},
                },
                spec={
                    "selector": {"matchLabels": args["pod_selector"]},
                    "podMetricsEndpoints": [{"port": args["metrics_port_name"], "path": "/metrics", "interval": "15s"}],
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.scaled_object_name = scaled_object.metadata.apply(lambda metadata: metadata["name"])
        self.query = pulumi.Output.from_input(queue_depth_query(namespace, args["served_model_name"]))
        self.register_outputs({"scaledObjectName": self.scaled_object_name, "query": self.query})
