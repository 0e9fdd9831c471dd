"""What to ask Prometheus about a vLLM server: scaling signals, alert rules and a dashboard.

Every expression is built here, from vLLM 0.11.0's metric names (vllm/v1/metrics/loggers.py:
labels model_name and engine; counters carry prometheus_client's _total suffix), filtered on
the namespace and the served model name, with label values escaped, never spliced. The
autoscaler, the alert rules and the dashboard use these same functions, so what is tested on
a real Prometheus is what runs.
"""

import json
import re
from dataclasses import dataclass

from .escaping import promql_selector, promql_string

QUEUE = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE = "vllm:kv_cache_usage_perc"
PREEMPTIONS = "vllm:num_preemptions_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
LATENCY_HISTOGRAMS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}
GPU_UTILIZATION = "DCGM_FI_DEV_GPU_UTIL"
"""The DCGM exporter's duty cycle (percent of time a kernel ran): a weak signal for serving load."""


@dataclass(frozen=True)
class Scope:
    """Which series belong to one deployment's server."""

    namespace: str
    model_name: str
    """The served model name, vLLM's model_name label."""
    pod_prefix: str
    """What the server pods' names start with (the Deployment's name and '-')."""

    def model(self) -> dict[str, str]:
        return {"namespace": self.namespace, "model_name": self.model_name}

    def pods(self) -> str:
        """A matcher for series labelled with the server pods' names (DCGM, cAdvisor)."""
        return f"namespace={promql_string(self.namespace)},pod=~{promql_string(re.escape(self.pod_prefix) + '.+')}"


def queue_depth(scope: Scope) -> str:
    """Requests waiting across the server's pods (divide by replicas for a per-replica value)."""
    return f"sum({promql_selector(QUEUE, scope.model())})"


def running_requests(scope: Scope) -> str:
    return f"sum({promql_selector(RUNNING, scope.model())})"


def kv_cache_usage(scope: Scope) -> str:
    """The KV cache's mean fill across the pods, 0 to 1."""
    return f"avg({promql_selector(KV_CACHE, scope.model())})"


def latency(scope: Scope, histogram: str, quantile: float, window: str) -> str:
    """A latency quantile over a window, from one of vLLM's histograms, in seconds."""
    buckets = promql_selector(f"{LATENCY_HISTOGRAMS[histogram]}_bucket", scope.model())
    return f"histogram_quantile({quantile:g}, sum by (le) (rate({buckets}[{window}])))"


def gpu_utilization(scope: Scope) -> str:
    """Mean GPU duty cycle of the server's pods, in percent (DCGM exporter, pod-labelled)."""
    return f"avg({GPU_UTILIZATION}{{{scope.pods()}}})"


def preemptions(scope: Scope, window: str = "5m") -> str:
    return f"sum(rate({promql_selector(PREEMPTIONS, scope.model())}[{window}]))"


def tokens_per_second(scope: Scope, window: str = "1m") -> str:
    counters = " or ".join(
        f"rate({promql_selector(metric, scope.model())}[{window}])" for metric in (PROMPT_TOKENS, GENERATION_TOKENS)
    )
    return f"sum({counters})"


REPLICA_SERIES = {
    # kube-state-metrics. A LeaderWorkerSet runs its leaders as a StatefulSet of its own name, one
    # leader per group, so its replicas are the groups.
    "Deployment": ("deployment", "kube_deployment_status_replicas_ready", "kube_deployment_spec_replicas"),
    "LeaderWorkerSet": ("statefulset", "kube_statefulset_status_replicas_ready", "kube_statefulset_replicas"),
}


def replicas_ready(namespace: str, deployment: str, kind: str = "Deployment") -> str:
    """Ready replicas (groups, for a LeaderWorkerSet) of the server (kube-state-metrics)."""
    label, ready, _ = REPLICA_SERIES[kind]
    return f"sum({promql_selector(ready, {'namespace': namespace, label: deployment})})"


def replicas_wanted(namespace: str, deployment: str, kind: str = "Deployment") -> str:
    label, _, wanted = REPLICA_SERIES[kind]
    return f"sum({promql_selector(wanted, {'namespace': namespace, label: deployment})})"


def alert_rules(scope: Scope, deployment: str, queue_per_replica: float, kind: str = "Deployment") -> list[dict]:
    """Alerts for a server that degrades: PrometheusRule rules, each with its meaning."""
    labels = {"severity": "warning", "namespace": scope.namespace, "model_name": scope.model_name}

    def rule(name: str, expr: str, minutes: int, summary: str, severity: str = "warning") -> dict:
        return {
            "alert": name,
            "expr": expr,
            "for": f"{minutes}m",
            "labels": {**labels, "severity": severity},
            "annotations": {"summary": summary},
        }

    ready, wanted = replicas_ready(scope.namespace, deployment, kind), replicas_wanted(scope.namespace, deployment, kind)
    return [
        rule("VLLMPodsNotReady", f"{ready} < {wanted}", 15,
             f"{deployment}: fewer replicas ready than wanted for 15 minutes (loading, crashing or unschedulable)"),
        rule("VLLMQueueHigh", f"{queue_depth(scope)} / clamp_min({ready}, 1) > {queue_per_replica * 2:g}", 10,
             f"{scope.model_name}: more than {queue_per_replica * 2:g} requests waiting per ready replica for 10 minutes"),
        rule("VLLMKVCacheNearlyFull", f"{kv_cache_usage(scope)} > 0.9", 10,
             f"{scope.model_name}: KV cache above 90 % for 10 minutes; requests queue and get preempted"),
        rule("VLLMPreemptions", f"{preemptions(scope)} > 0", 10,
             f"{scope.model_name}: requests preempted for lack of KV cache for 10 minutes"),
        rule("VLLMScalingMetricMissing", f"absent({promql_selector(QUEUE, scope.model())})", 10,
             f"{scope.model_name}: Prometheus has no {QUEUE}; the autoscaler cannot see load (is the PodMonitor selected?)",
             severity="critical"),
    ]


def dashboard(scope: Scope, deployment: str, title: str, kind: str = "Deployment") -> dict:
    """A Grafana dashboard of one server, from the same expressions."""
    panels: list[tuple[str, str, str]] = [
        ("Requests waiting", queue_depth(scope), "short"),
        ("Requests running", running_requests(scope), "short"),
        ("KV cache usage", kv_cache_usage(scope), "percentunit"),
        ("Time to first token p95", latency(scope, "ttft", 0.95, "5m"), "s"),
        ("Inter-token latency p95", latency(scope, "itl", 0.95, "5m"), "s"),
        ("Tokens per second", tokens_per_second(scope), "short"),
        ("Replicas ready", replicas_ready(scope.namespace, deployment, kind), "short"),
        ("Preemptions per second", preemptions(scope), "short"),
    ]
    return {
        "title": title,
        "uid": re.sub(r"[^a-zA-Z0-9-]", "-", f"vllm-{scope.namespace}-{deployment}")[:40],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["vllm", scope.namespace],
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": name,
                "gridPos": {"x": (index % 2) * 12, "y": (index // 2) * 8, "w": 12, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": name}],
            }
            for index, (name, expr, unit) in enumerate(panels)
        ],
    }


def dashboard_json(scope: Scope, deployment: str, title: str, kind: str = "Deployment") -> str:
    return json.dumps(dashboard(scope, deployment, title, kind), indent=2, sort_keys=True)
