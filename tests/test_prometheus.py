"""The scaling queries, alert rules and dashboard of components/monitoring.py, run by a real
Prometheus (Debian's package; .ci/run installs it) and promtool.

A Prometheus on loopback scrapes, every second, fake vLLM pods (tests/fake_vllm_metrics.py), once
per release with a metric table (0.11.0 and 0.34.0: each serves its release's names and buckets),
of two served models in one namespace and of a model with A's served name and deployment name
in another namespace, beside a DCGM exporter and kube-state-metrics, all under a known load.
Every scaling query must return model A's value (and, the second model's name needing
escaping, model B's), nobody else's. The alert rules go through ``promtool check rules`` and
``promtool test rules``.
"""

import math
from pathlib import Path

import pytest
import yaml
from fake_vllm_metrics import (
    RELEASES,
    Cluster,
    Deployment,
    Engine,
    Gpu,
    Latency,
    Pod,
    release_metrics,
)
from prometheus_server import Prometheus, QueryError, binary, promtool, version

from vllm_serving_components import autoscaler
from vllm_serving_components import monitoring as queries
from vllm_serving_components.escaping import promql_selector

NAMESPACE = "ai-serving"
MODEL_A = "qwen3"
DEPLOYMENT_A = "vllm-qwen3"
MODEL_B = 'acme/coder"}\\v2'
"""A served model name with a double quote, a closing brace and a backslash: only escaping
keeps a query on it well-formed and on this model alone."""
DEPLOYMENT_B = "vllm-qwen3-coder"
"""Its Deployment's name begins with A's: ``vllm-qwen3-`` is a prefix of B's pod names too."""
OTHER_NAMESPACE = "ai-serving-staging"
IDLE_NAMESPACE = "ai-serving-dev"
QUEUE_PER_REPLICA = 5
NOT_READY_MINUTES = 15
"""How long a replica may take to pull and load before VLLMPodsNotReady fires, in these cases."""
RATE_WINDOW = "10s"
"""Window of the rate-based values checked to a tolerance: the samples cover it well before the
test reads them (see the ``prometheus`` fixture)."""
RATE_TOLERANCE = 0.03
SCRAPE_TIMEOUT = 45


def shares(*pairs: tuple[float, float]) -> dict[float, float]:
    return dict(pairs)


# Model A. Per request: 50 % of first tokens within (0.06, 0.08] s, 40 % within (0.08, 0.1],
# 10 % within (0.1, 0.25]; p95 is halfway into the last bucket: 0.1 + 0.15 * 0.5 = 0.175 s.
A_TTFT = shares((0.08, 0.5), (0.1, 0.4), (0.25, 0.1))
# Inter-token: 60 % (0.01, 0.025], 30 % (0.025, 0.05], 10 % (0.05, 0.075]; p95 = 0.05 + 0.025 * 0.5.
A_ITL = shares((0.025, 0.6), (0.05, 0.3), (0.075, 0.1))
# Whole request: 70 % (2.5, 5], 30 % (5, 10]; p95 = 5 + 5 * (0.25 / 0.3).
A_E2E = shares((5.0, 0.7), (10.0, 0.3))
# Model B: slower. p95: 0.75 + 0.25 * (0.15 / 0.2), 0.075 + 0.025 * (0.45 / 0.5), 15 + 5 * (0.45 / 0.5).
B_TTFT = shares((0.75, 0.8), (1.0, 0.2))
B_ITL = shares((0.075, 0.5), (0.1, 0.5))
B_E2E = shares((15.0, 0.5), (20.0, 0.5))
# The other namespace's "qwen3": slower still, so any of it in A's quantiles would show.
STAGING_TTFT, STAGING_ITL, STAGING_E2E = shares((5.0, 1.0)), shares((0.3, 1.0)), shares((40.0, 1.0))


def engine_a(waiting, running, kv_cache, preemptions, prompt, generation, requests) -> Engine:
    return Engine(
        waiting=waiting,
        running=running,
        kv_cache=kv_cache,
        preemptions_per_second=preemptions,
        prompt_tokens_per_second=prompt,
        generation_tokens_per_second=generation,
        ttft=Latency(requests, A_TTFT),
        itl=Latency(generation, A_ITL),
        e2e=Latency(requests, A_E2E),
    )


def engine_b(waiting, running, kv_cache, preemptions, prompt, generation, requests) -> Engine:
    return Engine(
        waiting=waiting,
        running=running,
        kv_cache=kv_cache,
        preemptions_per_second=preemptions,
        prompt_tokens_per_second=prompt,
        generation_tokens_per_second=generation,
        ttft=Latency(requests, B_TTFT),
        itl=Latency(generation, B_ITL),
        e2e=Latency(requests, B_E2E),
    )


PODS = [
    # Model A: three pods serving (the first with two data-parallel engines), a fourth loading.
    Pod(NAMESPACE, "vllm-qwen3-7c9d8b6f5-k2x4p", MODEL_A, (
        engine_a(waiting=4, running=12, kv_cache=0.50, preemptions=0.5, prompt=1000, generation=300, requests=3),
        engine_a(waiting=2, running=10, kv_cache=0.70, preemptions=0.25, prompt=800, generation=200, requests=2),
    )),
    Pod(NAMESPACE, "vllm-qwen3-7c9d8b6f5-m8q7z", MODEL_A, (
        engine_a(waiting=6, running=14, kv_cache=0.60, preemptions=0.25, prompt=1200, generation=400, requests=4),
    )),
    Pod(NAMESPACE, "vllm-qwen3-7c9d8b6f5-t5w2r", MODEL_A, (
        engine_a(waiting=0, running=8, kv_cache=0.40, preemptions=0.0, prompt=500, generation=100, requests=1),
    )),
    Pod(NAMESPACE, "vllm-qwen3-7c9d8b6f5-b9n3c", MODEL_A, (Engine(),), up=False),
    # Model B, same namespace.
    Pod(NAMESPACE, "vllm-qwen3-coder-5f6d7c8b9-h4j6k", MODEL_B, (
        engine_b(waiting=30, running=20, kv_cache=0.95, preemptions=2, prompt=5000, generation=1000, requests=10),
    )),
    Pod(NAMESPACE, "vllm-qwen3-coder-5f6d7c8b9-r2s8v", MODEL_B, (
        engine_b(waiting=50, running=26, kv_cache=0.99, preemptions=2, prompt=5000, generation=1000, requests=10),
    )),
    # A's served model name and Deployment name, in another namespace.
    Pod(OTHER_NAMESPACE, "vllm-qwen3-6b5c4d3f2-x7y8z", MODEL_A, (
        Engine(waiting=100, running=3, kv_cache=0.10, preemptions_per_second=10, prompt_tokens_per_second=9000,
               generation_tokens_per_second=3000, ttft=Latency(20, STAGING_TTFT), itl=Latency(3000, STAGING_ITL),
               e2e=Latency(20, STAGING_E2E)),
    )),
    # A server that served earlier and has had no request since.
    Pod(IDLE_NAMESPACE, "vllm-qwen3-dev-8d7c6b5f4-p3l9m", MODEL_A, (
        Engine(ttft=Latency(2, A_TTFT), itl=Latency(100, A_ITL), e2e=Latency(2, A_E2E), prompt_tokens_per_second=300,
               generation_tokens_per_second=100),
    ), frozen_at=600.0),
]
GPUS = [
    Gpu(0, "gpu-node-1", 80, NAMESPACE, "vllm-qwen3-7c9d8b6f5-k2x4p"),
    Gpu(1, "gpu-node-1", 90, NAMESPACE, "vllm-qwen3-7c9d8b6f5-k2x4p"),
    Gpu(2, "gpu-node-1", 70, NAMESPACE, "vllm-qwen3-7c9d8b6f5-m8q7z"),
    Gpu(3, "gpu-node-1", 40, NAMESPACE, "vllm-qwen3-7c9d8b6f5-t5w2r"),
    Gpu(0, "gpu-node-2", 99, NAMESPACE, "vllm-qwen3-coder-5f6d7c8b9-h4j6k"),
    Gpu(1, "gpu-node-2", 97, NAMESPACE, "vllm-qwen3-coder-5f6d7c8b9-r2s8v"),
    Gpu(2, "gpu-node-2", 5, OTHER_NAMESPACE, "vllm-qwen3-6b5c4d3f2-x7y8z"),
    Gpu(3, "gpu-node-2", 0, IDLE_NAMESPACE, "vllm-qwen3-dev-8d7c6b5f4-p3l9m"),
    Gpu(4, "gpu-node-2", 0),  # held by no pod
]
DEPLOYMENTS = [
    Deployment(NAMESPACE, DEPLOYMENT_A, wanted=4, ready=3),
    Deployment(NAMESPACE, DEPLOYMENT_B, wanted=2, ready=2),
    Deployment(OTHER_NAMESPACE, DEPLOYMENT_A, wanted=1, ready=1),
    Deployment(IDLE_NAMESPACE, "vllm-qwen3-dev", wanted=1, ready=1),
]

ARGS_A = {"namespace": NAMESPACE, "served_model_name": MODEL_A, "max_replicas": 4, "prometheus_address": "http://prometheus:9090"}
ARGS_B = {**ARGS_A, "served_model_name": MODEL_B}
SCOPE_A = autoscaler.scope_of(ARGS_A)
SCOPE_B = autoscaler.scope_of(ARGS_B)
IDLE_SCOPE = autoscaler.scope_of({**ARGS_A, "namespace": IDLE_NAMESPACE})

# What each signal must read, derived by hand from the load above.
EXPECTED = {
    MODEL_A: {
        "queue": 4 + 2 + 6 + 0,
        "running": 12 + 10 + 14 + 8,
        "kv_cache": (0.50 + 0.70 + 0.60 + 0.40) / 4,
        "ttft": 0.1 + 0.15 * 0.5,
        "itl": 0.05 + 0.025 * 0.5,
        "e2e": 5 + 5 * (0.25 / 0.3),
        "gpu": (80 + 90 + 70 + 40) / 4,
        "replicas_ready": 3,
        "replicas_wanted": 4,
        "preemptions": 0.5 + 0.25 + 0.25 + 0,
        "tokens_per_second": (1000 + 800 + 1200 + 500) + (300 + 200 + 400 + 100),
    },
    MODEL_B: {
        "queue": 30 + 50,
        "running": 20 + 26,
        "kv_cache": (0.95 + 0.99) / 2,
        "ttft": 0.75 + 0.25 * (0.15 / 0.2),
        "itl": 0.075 + 0.025 * (0.45 / 0.5),
        "e2e": 15 + 5 * (0.45 / 0.5),
        "gpu": (99 + 97) / 2,
        "replicas_ready": 2,
        "replicas_wanted": 2,
        "preemptions": 2 + 2,
        "tokens_per_second": 2 * 5000 + 2 * 1000,
    },
}
SCOPES = {MODEL_A: SCOPE_A, MODEL_B: SCOPE_B}
DEPLOYMENT_OF = {MODEL_A: DEPLOYMENT_A, MODEL_B: DEPLOYMENT_B}
SIGNALS = {
    "queue": {"kind": "queue", "target": 5},
    "running": {"kind": "running", "target": 16},
    "kv_cache": {"kind": "kv_cache", "target": 0.8},
    "ttft": {"kind": "latency", "target": 0.5, "histogram": "ttft"},
    "itl": {"kind": "latency", "target": 0.05, "histogram": "itl"},
    "e2e": {"kind": "latency", "target": 20, "histogram": "e2e"},
    "gpu": {"kind": "gpu", "target": 80},
}



@pytest.fixture(scope="module", params=RELEASES)
def release(request) -> str:
    """The vLLM release whose metrics the fake pods serve: every test on the scraped values runs
    once per release."""
    return request.param


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, release):
    """Prometheus scraping the synthetic cluster every second, once every target has been scraped
    long enough for a RATE_WINDOW rate; stopped (and the targets closed) whatever happens."""
    binary("promtool")
    cluster = Cluster(PODS, GPUS, DEPLOYMENTS, release)
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), cluster.scrape_configs())
    try:
        cluster.start()
        server.start()
        targets = len(cluster.all_endpoints()) + len(cluster.down)
        server.wait_for(
            f"{targets} targets, each scraped for 12 s",
            lambda: server.query("count(count_over_time(up[1m]) >= 12)") == [{"metric": {}, "value": targets}],
            timeout=SCRAPE_TIMEOUT,
        )
        yield server
    finally:
        server.stop()
        cluster.stop()


def test_the_releases_are_those_of_the_metric_tables():
    assert {"0.11.0", "0.34.0"} <= set(RELEASES)


def test_the_fake_targets_are_scraped_as_vllm_exposes_them(prometheus, release):
    up = {item["metric"]["pod"]: item["value"] for item in prometheus.query("up")}
    assert up.pop("vllm-qwen3-7c9d8b6f5-b9n3c") == 0, "the loading pod's target is down"
    assert set(up.values()) == {1}
    # The label value that needs escaping arrived intact, on B's pods only.
    served = prometheus.query('count by (namespace, pod, model_name, engine) (vllm:num_requests_waiting)')
    assert sorted((s["metric"]["namespace"], s["metric"]["pod"], s["metric"]["model_name"], s["metric"]["engine"]) for s in served) == sorted(
        (pod.namespace, pod.name, pod.model_name, str(index)) for pod in PODS if pod.up for index in range(len(pod.engines))
    )
    # Counters are exported with _total, histograms with every bucket of the release and +Inf.
    histograms = release_metrics(release).histograms
    assert sorted(h.name for h in histograms) == sorted(queries.LATENCY_HISTOGRAMS.values())
    for histogram in histograms:
        bounds = prometheus.query(f'count by (le) ({histogram.name}_bucket{{pod="vllm-qwen3-7c9d8b6f5-m8q7z"}})')
        assert sorted(float(s["metric"]["le"]) for s in bounds) == [*histogram.buckets, math.inf]
    for counter in (queries.PREEMPTIONS, queries.PROMPT_TOKENS, queries.GENERATION_TOKENS):
        assert prometheus.query(f"count({counter})")[0]["value"] == 8
    # The exporters' series keep the workloads' namespace and pod (honor_labels); a GPU no pod
    # holds gets the exporter's own.
    gpu_pods = prometheus.query("count by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL)")
    assert {(s["metric"]["namespace"], s["metric"]["pod"]) for s in gpu_pods} == {
        *((gpu.namespace, gpu.pod) for gpu in GPUS if gpu.pod),
        ("gpu-operator", "nvidia-dcgm-exporter-x7k2p"),
    }


def signal_cases():
    for model in (MODEL_A, MODEL_B):
        for name in SIGNALS:
            yield pytest.param(model, name, id=f"{'A' if model == MODEL_A else 'B'}-{name}")


@pytest.mark.parametrize("model, name", list(signal_cases()))
def test_each_scaling_signal_reads_its_served_model_only(prometheus, model, name):
    query = autoscaler.signal_query(SIGNALS[name], SCOPES[model])
    measured = prometheus.value(query)
    # Fixed gauges and ratios of proportional counters: exact up to floating point.
    assert measured == pytest.approx(EXPECTED[model][name], rel=1e-6), query


@pytest.mark.parametrize("quantile, expected", [(0.75, 0.08 + 0.02 * (0.25 / 0.4)), (0.99, 0.1 + 0.15 * (0.09 / 0.1))])
@pytest.mark.parametrize("window", ["1m", "5m"])
def test_latency_quantile_and_window_are_what_the_signal_says(prometheus, quantile, expected, window):
    signal = {"kind": "latency", "target": 1, "histogram": "ttft", "quantile": quantile, "window": window}
    assert prometheus.value(autoscaler.signal_query(signal, SCOPE_A)) == pytest.approx(expected, rel=1e-6)


def test_the_scalers_run_the_queries_tested_here():
    """What the ScaledObject and prometheus-adapter ask Prometheus is signal_query's text."""
    args = {**ARGS_A, "signals": list(SIGNALS.values())}
    expected = [autoscaler.signal_query(signal, SCOPE_A) for signal in SIGNALS.values()]
    triggers = autoscaler.scaled_object_spec(args, DEPLOYMENT_A)["triggers"]
    assert [trigger["metadata"]["query"] for trigger in triggers] == expected
    rules = yaml.safe_load(autoscaler.adapter_rules({**args, "engine": "hpa"}))["externalRules"]
    assert [rule["metricsQuery"] for rule in rules] == expected


@pytest.mark.parametrize("model", [MODEL_A, MODEL_B], ids=["A", "B"])
@pytest.mark.parametrize(
    "name, build",
    [
        pytest.param(
            "replicas_ready", lambda scope, deployment: queries.replicas_ready(scope.namespace, deployment), id="replicas_ready"
        ),
        pytest.param(
            "replicas_wanted", lambda scope, deployment: queries.replicas_wanted(scope.namespace, deployment), id="replicas_wanted"
        ),
        pytest.param("preemptions", lambda scope, deployment: queries.preemptions(scope, RATE_WINDOW), id="preemptions"),
        pytest.param(
            "tokens_per_second",
            lambda scope, deployment: queries.tokens_per_second(scope, RATE_WINDOW),
            id="tokens_per_second",
        ),
    ],
)
def test_monitoring_values_read_their_served_model_only(prometheus, model, name, build):
    query = build(SCOPES[model], DEPLOYMENT_OF[model])
    assert prometheus.value(query) == pytest.approx(EXPECTED[model][name], rel=RATE_TOLERANCE), query


def test_an_idle_servers_latency_signal_is_a_number(prometheus):
    value = prometheus.value(autoscaler.signal_query(SIGNALS["ttft"], IDLE_SCOPE))
    assert not math.isnan(value)


def test_a_model_nobody_serves_gives_no_value_not_zero(prometheus):
    """Empty results, which the ScaledObject reports as an error (ignoreNullValues false)."""
    nobody = autoscaler.scope_of({**ARGS_A, "served_model_name": "qwen3-typo"})
    for signal in SIGNALS.values():
        if signal["kind"] != "gpu":  # which selects the Deployment's pods by name, not the model
            assert prometheus.query(autoscaler.signal_query(signal, nobody)) == [], signal


def test_an_unescaped_name_would_not_even_parse(prometheus):
    """The control for model B: spliced into the selector, its name breaks the query."""
    with pytest.raises(QueryError, match="parse error"):
        prometheus.query(f'sum({queries.QUEUE}{{namespace="{NAMESPACE}",model_name="{MODEL_B}"}})')


@pytest.mark.parametrize("model", [MODEL_A, MODEL_B], ids=["A", "B"])
def test_every_dashboard_query_returns_data_for_its_model(prometheus, model):
    dashboard = queries.dashboard(SCOPES[model], DEPLOYMENT_OF[model], f"vLLM {model}")
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) == len(dashboard["panels"]) == 8
    for expr in exprs:
        value = prometheus.value(expr)
        assert math.isfinite(value), expr
    by_title = {panel["title"]: prometheus.value(panel["targets"][0]["expr"]) for panel in dashboard["panels"]}
    assert by_title["Requests waiting"] == EXPECTED[model]["queue"]
    assert by_title["Requests running"] == EXPECTED[model]["running"]
    assert by_title["KV cache usage"] == pytest.approx(EXPECTED[model]["kv_cache"])
    assert by_title["Time to first token p95"] == pytest.approx(EXPECTED[model]["ttft"])
    assert by_title["Inter-token latency p95"] == pytest.approx(EXPECTED[model]["itl"])
    assert by_title["Replicas ready"] == EXPECTED[model]["replicas_ready"]


# ---------------------------------------------------------------------------------------------
# Alert rules, with promtool.

def rule_groups() -> dict:
    return {
        "groups": [
            {"name": "vllm-a", "rules": queries.alert_rules(SCOPE_A, DEPLOYMENT_A, QUEUE_PER_REPLICA, NOT_READY_MINUTES)},
            {"name": "vllm-b", "rules": queries.alert_rules(SCOPE_B, DEPLOYMENT_B, QUEUE_PER_REPLICA, NOT_READY_MINUTES)},
        ]
    }


def alert(scope, name: str, extra: dict | None = None) -> dict:
    """The alert promtool must see firing: the rule's labels and annotations."""
    rule = next(r for r in queries.alert_rules(scope, DEPLOYMENT_OF[scope.model_name], QUEUE_PER_REPLICA, NOT_READY_MINUTES) if r["alert"] == name)
    return {"exp_labels": {**rule["labels"], **(extra or {})}, "exp_annotations": rule["annotations"]}


def series(metric: str, values: str, **labels: str) -> dict:
    return {"series": promql_selector(metric, labels), "values": values}


def vllm(metric: str, scope, pod: str, values: str, engine: str = "0") -> dict:
    return series(metric, values, namespace=scope.namespace, pod=pod, model_name=scope.model_name, engine=engine)


def replicas(namespace: str, deployment: str, wanted: str, ready: str) -> list[dict]:
    return [
        series("kube_deployment_spec_replicas", wanted, namespace=namespace, deployment=deployment),
        series("kube_deployment_status_replicas_ready", ready, namespace=namespace, deployment=deployment),
    ]


def healthy(scope, pod: str, queue: str = "0x40") -> list[dict]:
    """A pod that alerts nothing: queue reported, KV cache half full, no preemption."""
    return [
        vllm(queries.QUEUE, scope, pod, queue),
        vllm(queries.KV_CACHE, scope, pod, "0.5x40"),
        vllm(queries.PREEMPTIONS, scope, pod, "3x40"),
    ]


A1, A2, B1 = "vllm-qwen3-7c9d8b6f5-k2x4p", "vllm-qwen3-7c9d8b6f5-m8q7z", "vllm-qwen3-coder-5f6d7c8b9-h4j6k"
ALERTS = ("VLLMPodsNotReady", "VLLMQueueHigh", "VLLMKVCacheNearlyFull", "VLLMPreemptions", "VLLMScalingMetricMissing")


def silent(at: str, *names: str) -> list[dict]:
    return [{"eval_time": at, "alertname": name, "exp_alerts": []} for name in names]


def firing(at: str, scope, name: str) -> dict:
    """promtool's expectation that one server's alert fires at a time."""
    return {"eval_time": at, "alertname": name, "exp_alerts": [alert(scope, name)]}


def alert_cases() -> dict[str, dict]:
    """Scenario name -> input series (one sample a minute) and what must fire when."""
    steady = [*replicas(NAMESPACE, DEPLOYMENT_A, "3x40", "3x40"), *replicas(NAMESPACE, DEPLOYMENT_B, "1x40", "1x40")]
    b_healthy = healthy(SCOPE_B, B1)
    return {
        "queue above twice the target per ready replica": {
            # 40 waiting over 3 ready replicas: 13.3 > 2 x 5; B, beside it, queues nothing.
            "input_series": [*steady, *healthy(SCOPE_A, A1, "30x40"), *healthy(SCOPE_A, A2, "10x40"), *b_healthy],
            "alert_rule_test": [
                *silent("9m", "VLLMQueueHigh"),  # pending: not 10 minutes yet
                firing("12m", SCOPE_A, "VLLMQueueHigh"),
                *silent("12m", "VLLMPodsNotReady", "VLLMKVCacheNearlyFull", "VLLMPreemptions", "VLLMScalingMetricMissing"),
            ],
        },
        "queue within bounds, and B's queue is B's": {
            # A: 25 over 3 ready = 8.3. B: 500 on its one replica fires B's alert, not A's.
            "input_series": [*steady, *healthy(SCOPE_A, A1, "15x40"), *healthy(SCOPE_A, A2, "10x40"), *healthy(SCOPE_B, B1, "500x40")],
            "alert_rule_test": [
                firing("30m", SCOPE_B, "VLLMQueueHigh"),
            ],
        },
        "queue with no ready replica counts as one": {
            "input_series": [
                *replicas(NAMESPACE, DEPLOYMENT_A, "2x40", "0x40"),
                *replicas(NAMESPACE, DEPLOYMENT_B, "1x40", "1x40"),
                *healthy(SCOPE_A, A1, "11x40"),
                *b_healthy,
            ],
            "alert_rule_test": [
                firing("12m", SCOPE_A, "VLLMQueueHigh"),
            ],
        },
        "KV cache nearly full": {
            "input_series": [
                *steady,
                vllm(queries.QUEUE, SCOPE_A, A1, "0x40"),
                vllm(queries.KV_CACHE, SCOPE_A, A1, "0.95x40"),
                vllm(queries.KV_CACHE, SCOPE_A, A2, "0.93x40"),
                *b_healthy,
            ],
            "alert_rule_test": [
                *silent("9m", "VLLMKVCacheNearlyFull"),
                firing("12m", SCOPE_A, "VLLMKVCacheNearlyFull"),
            ],
        },
        "KV cache high on one pod, not on average": {
            # (0.95 + 0.80) / 2 = 0.875; B's 0.99 is B's.
            "input_series": [
                *steady,
                vllm(queries.QUEUE, SCOPE_A, A1, "0x40"),
                vllm(queries.KV_CACHE, SCOPE_A, A1, "0.95x40"),
                vllm(queries.KV_CACHE, SCOPE_A, A2, "0.80x40"),
                vllm(queries.QUEUE, SCOPE_B, B1, "0x40"),
                vllm(queries.KV_CACHE, SCOPE_B, B1, "0.99x40"),
            ],
            "alert_rule_test": [
                firing("30m", SCOPE_B, "VLLMKVCacheNearlyFull"),
            ],
        },
        "preemptions going on": {
            "input_series": [
                *steady,
                vllm(queries.QUEUE, SCOPE_A, A1, "0x40"),
                vllm(queries.PREEMPTIONS, SCOPE_A, A1, "0+2x40"),
                vllm(queries.PREEMPTIONS, SCOPE_A, A2, "5x40"),
                *b_healthy,
            ],
            "alert_rule_test": [
                *silent("8m", "VLLMPreemptions"),
                firing("15m", SCOPE_A, "VLLMPreemptions"),
            ],
        },
        "preemptions long past": {
            # 20 preemptions in the first 10 minutes, none since: quiet again by 30 minutes.
            "input_series": [
                *steady,
                vllm(queries.QUEUE, SCOPE_A, A1, "0x40"),
                vllm(queries.PREEMPTIONS, SCOPE_A, A1, "0+2x10 20x30"),
                *b_healthy,
            ],
            "alert_rule_test": [
                firing("12m", SCOPE_A, "VLLMPreemptions"),
                *silent("30m", "VLLMPreemptions"),
            ],
        },
        "scaling metric missing": {
            # Prometheus has A's KV cache but not its queue (and B's queue, which is not A's).
            "input_series": [*steady, vllm(queries.KV_CACHE, SCOPE_A, A1, "0.5x40"), *b_healthy],
            "alert_rule_test": [
                *silent("9m", "VLLMScalingMetricMissing"),
                firing("12m", SCOPE_A, "VLLMScalingMetricMissing"),
            ],
        },
        "scaling metric back": {
            "input_series": [*steady, vllm(queries.QUEUE, SCOPE_A, A1, "_x5 0x35"), *b_healthy],
            "alert_rule_test": [
                *silent("4m", "VLLMScalingMetricMissing"),  # missing, pending
                *silent("30m", "VLLMScalingMetricMissing"),
            ],
        },
        "pods not ready": {
            # A wants 3 and has 2 for 30 minutes; the other namespace's vllm-qwen3 is A's name only.
            "input_series": [
                *replicas(NAMESPACE, DEPLOYMENT_A, "3x40", "2x40"),
                *replicas(NAMESPACE, DEPLOYMENT_B, "1x40", "1x40"),
                *replicas(OTHER_NAMESPACE, DEPLOYMENT_A, "3x40", "3x40"),
                *healthy(SCOPE_A, A1),
                *b_healthy,
            ],
            "alert_rule_test": [
                *silent("14m", "VLLMPodsNotReady"),
                firing("16m", SCOPE_A, "VLLMPodsNotReady"),
                *silent("16m", "VLLMQueueHigh", "VLLMKVCacheNearlyFull", "VLLMPreemptions", "VLLMScalingMetricMissing"),
            ],
        },
        "pods ready, and another namespace's same-named Deployment is not": {
            "input_series": [
                *steady,
                *replicas(OTHER_NAMESPACE, DEPLOYMENT_A, "3x40", "0x40"),
                *healthy(SCOPE_A, A1),
                *b_healthy,
            ],
            "alert_rule_test": [*silent("30m", *ALERTS)],
        },
    }


def promtool_tests(cases: dict[str, dict]) -> dict:
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"name": name, "interval": "1m", **case} for name, case in cases.items()],
    }


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    write(tmp_path / "rules.yaml", rule_groups())
    return tmp_path


def test_alert_rules_pass_promtool_check(rules_dir):
    checked = promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {2 * len(ALERTS)} rules found" in checked.stdout + checked.stderr


def test_every_alert_is_tested_firing_and_silent():
    """No case may pass by naming an alert that does not exist."""
    firing, quiet = set(), set()
    for case in alert_cases().values():
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert {rule["alert"] for rule in queries.alert_rules(SCOPE_A, DEPLOYMENT_A, QUEUE_PER_REPLICA, NOT_READY_MINUTES)} == set(ALERTS)
    assert firing == quiet == set(ALERTS)


def test_alerts_fire_when_they_should_and_only_then(rules_dir):
    write(rules_dir / "tests.yaml", promtool_tests(alert_cases()))
    tested = promtool("test", "rules", "tests.yaml", cwd=rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_promtool_reports_a_wrong_expectation(rules_dir):
    """The control: the same harness with one expectation wrong fails."""
    cases = alert_cases()
    cases["pods not ready"]["alert_rule_test"][0] = firing("14m", SCOPE_A, "VLLMPodsNotReady")
    write(rules_dir / "tests.yaml", promtool_tests(cases))
    tested = promtool("test", "rules", "tests.yaml", cwd=rules_dir)
    assert tested.returncode != 0
    assert "VLLMPodsNotReady" in tested.stdout + tested.stderr


def test_a_server_scaled_to_zero_is_not_missing_its_metric(rules_dir):
    cases = {
        "scaled to zero": {
            "input_series": [*replicas(NAMESPACE, DEPLOYMENT_A, "0x40", "0x40"), *replicas(NAMESPACE, DEPLOYMENT_B, "1x40", "1x40"), *healthy(SCOPE_B, B1)],
            "alert_rule_test": [*silent("30m", *ALERTS)],
        }
    }
    write(rules_dir / "tests.yaml", promtool_tests(cases))
    tested = promtool("test", "rules", "tests.yaml", cwd=rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_versions_used():
    """Which Prometheus the values above were measured with (shown with -rA)."""
    for name in ("prometheus", "promtool"):
        print(version(name))
        assert version(name).startswith(f"{name}, version ")
