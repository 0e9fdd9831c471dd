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

from .escaping import promql_selector

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
    """Which series belong to one server: its namespace and served model name."""

    namespace: str
    model_name: str
    """The served model name, vLLM's model_name label."""

    def model(self) -> dict[str, str]:
        return {"namespace": self.namespace, "model_name": self.model_name}


def queue_depth(scope: Scope) -> str:
    """Requests waiting across the server's pods (divide by replicas for a per-replica value)."""
    return f"sum({promql_selector(QUEUE, scope.model())})"


def running_requests(scope: Scope) -> str:
    return f"sum({promql_selector(RUNNING, scope.model())})"


def kv_cache_usage(scope: Scope) -> str:
    """The KV cache's mean fill across the pods, 0 to 1."""
    return f"avg({promql_selector(KV_CACHE, scope.model())})"


def latency(scope: Scope, histogram: str, quantile: float, window: str) -> str:
    """A latency quantile over a window, from one of vLLM's histograms, in seconds; 0 when the
    server answered nothing in the window.

    histogram_quantile over a window without observations is NaN, which KEDA's prometheus scaler
    reports as an error (ignoreNullValues false), so an idle server would never scale down: the
    NaN (which fails `>= 0`) gives way to 0 when the request count did not grow. A model nobody
    serves still gives no value at all.
    """
    name = LATENCY_HISTOGRAMS[histogram]
    buckets = promql_selector(f"{name}_bucket", scope.model())
    count = promql_selector(f"{name}_count", scope.model())
    quantile_expr = f"histogram_quantile({quantile:g}, sum by (le) (rate({buckets}[{window}])))"
    return f"({quantile_expr} >= 0) or (sum(rate({count}[{window}])) == 0)"


def gpu_utilization(scope: Scope) -> str:
    """Mean GPU duty cycle of the server's pods, in percent (DCGM exporter with pod labels, i.e.
    scraped with honorLabels).

    The pods are those exporting the model's vLLM metrics, matched on (namespace, pod): a name
    prefix would also take in another Deployment whose name starts with this one's, and pods
    still loading (no metrics yet) stay out.
    """
    gpus = promql_selector(GPU_UTILIZATION, {"namespace": scope.namespace})
    return f"avg({gpus} and on (namespace, pod) {promql_selector(QUEUE, scope.model())})"


def preemptions(scope: Scope, window: str = "5m") -> str:
    return f"sum(rate({promql_selector(PREEMPTIONS, scope.model())}[{window}]))"


def tokens_per_second(scope: Scope, window: str = "1m") -> str:
    """Prompt and generated tokens per second. Summed apart: rate() drops the metric name, so
    `or` between the two rates would keep only the prompt series (same label sets)."""
    return " + ".join(
        f"sum(rate({promql_selector(metric, scope.model())}[{window}]))" for metric in (PROMPT_TOKENS, GENERATION_TOKENS)
    )


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


def alert_rules(
    scope: Scope, deployment: str, queue_per_replica: float, not_ready_minutes: int, kind: str = "Deployment"
) -> list[dict]:
    """Alerts for a server that degrades: PrometheusRule rules, each with its meaning.

    not_ready_minutes: how long a replica may legitimately stay not ready (image pull and model
    load), so a rollout or a scale-up does not raise VLLMPodsNotReady.
    """
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
        rule("VLLMPodsNotReady", f"{ready} < {wanted}", not_ready_minutes,
             f"{deployment}: fewer replicas ready than wanted for {not_ready_minutes} minutes, longer than a "
             "replica takes to pull and load (crashing or unschedulable)"),
        rule("VLLMQueueHigh", f"{queue_depth(scope)} / clamp_min({ready}, 1) > {queue_per_replica * 2:g}", 10,
             f"{scope.model_name}: more than {queue_per_replica * 2:g} requests waiting per ready replica for 10 minutes"),
        rule("VLLMKVCacheNearlyFull", f"{kv_cache_usage(scope)} > 0.9", 10,
             f"{scope.model_name}: KV cache above 90 % for 10 minutes; requests queue and get preempted"),
        rule("VLLMPreemptions", f"{preemptions(scope)} > 0", 10,
             f"{scope.model_name}: requests preempted for lack of KV cache for 10 minutes"),
        # At zero replicas vLLM exports nothing by design: not missing then.
        rule("VLLMScalingMetricMissing", f"absent({promql_selector(QUEUE, scope.model())}) unless on () ({wanted} == 0)", 10,
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
