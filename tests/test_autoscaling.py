"""Scaling on what vLLM is doing: every signal and both engines render, target the server and
validate; the config's signal syntax; the source document's GPU numbers."""

import pytest
import yaml
from conftest import project_with_stack
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors

from stack.config import ConfigError
from stack.render import render_stack

NEWEST = SUPPORTED_KUBERNETES_VERSIONS[-1]
PROD_SIGNALS = ["queue=5", "running=16", "kv_cache=0.8", "latency:ttft:p95:5m=2.5", "latency:e2e=30", "gpu", "cpu=80"]


def render_prod(tmp_path, **settings):
    return render_stack(project_with_stack(tmp_path, settings, base="prod"), tmp_path)


def assert_valid(rendering):
    errors = {f"{o.kind}/{o.name}": schema_errors(o.manifest, NEWEST) for o in rendering.objects}
    assert {name: found for name, found in errors.items() if found} == {}


def test_every_signal_through_keda(tmp_path):
    rendering = render_prod(tmp_path, autoscalingSignals=PROD_SIGNALS)
    assert_valid(rendering)
    spec = rendering.only("ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["name"] == rendering.outputs["deploymentName"]
    triggers = spec["triggers"]
    assert [(t["type"], t["metricType"]) for t in triggers] == [
        ("prometheus", "AverageValue"), ("prometheus", "AverageValue"), ("prometheus", "Value"),
        ("prometheus", "Value"), ("prometheus", "Value"), ("prometheus", "Value"), ("cpu", "Utilization"),
    ]
    queries = [t["metadata"].get("query", "") for t in triggers]
    model = '{namespace="ai-serving",model_name="qwen3-235b"}'
    # An idle window gives 0, not NaN (tests/test_prometheus.py runs it on a real Prometheus).
    assert queries[3] == (
        f'(histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{model}[5m]))) >= 0)'
        f' or (sum(rate(vllm:time_to_first_token_seconds_count{model}[5m])) == 0)'
    )
    assert 'vllm:e2e_request_latency_seconds_bucket' in queries[4]
    # The GPUs of the pods that export this model's metrics.
    assert queries[5] == f'avg(DCGM_FI_DEV_GPU_UTIL{{namespace="ai-serving"}} and on (namespace, pod) vllm:num_requests_waiting{model})'
    assert triggers[5]["metadata"]["threshold"] == "70"  # the source document's target
    assert all(t["metadata"]["ignoreNullValues"] == "false" for t in triggers if t["type"] == "prometheus")
    assert all('namespace="ai-serving"' in q for q in queries[:6])
    assert all('model_name="qwen3-235b"' in q for q in queries[:5])


def test_every_signal_through_an_hpa_and_prometheus_adapter(tmp_path, tmp_path_factory):
    rendering = render_prod(tmp_path, autoscalingSignals=PROD_SIGNALS, autoscalingEngine="hpa")
    assert_valid(rendering)
    assert "ScaledObject" not in {o.kind for o in rendering.objects}
    hpa = rendering.only("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": rendering.outputs["deploymentName"]}
    assert [m["type"] for m in spec["metrics"]] == ["External"] * 6 + ["Resource"]
    assert spec["metrics"][0]["external"] == {"metric": {"name": "vllm_queue"}, "target": {"type": "AverageValue", "averageValue": "5"}}
    assert spec["metrics"][-1]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    rules = yaml.safe_load(rendering.outputs["adapterRules"])["externalRules"]
    assert [rule["name"]["as"] for rule in rules] == [m["external"]["metric"]["name"] for m in spec["metrics"][:6]]
    keda = render_prod(tmp_path_factory.mktemp("keda"), autoscalingSignals=PROD_SIGNALS)
    triggers = keda.only("ScaledObject")["spec"]["triggers"]
    assert [rule["metricsQuery"] for rule in rules] == [t["metadata"]["query"] for t in triggers[:6]]


def test_slow_pods_scale_up_one_at_a_time_and_down_after_a_quiet_window(rendered):
    behavior = rendered["prod"].only("ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # One replica per load budget up (prod loads its node's copy in 13 minutes; the HPA allows at
    # most 1800 s), one per 5 minutes down, and only after 10 minutes of low load.
    assert behavior == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 780}]},
        "scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
    }


def test_a_fallback_only_when_configured_and_scale_to_zero_with_an_outside_signal(tmp_path):
    rendering = render_prod(
        tmp_path,
        autoscalingFallbackReplicas=1,
        autoscalingScaleToZero=True,
        autoscalingMinReplicas=0,
        autoscalingActivationQuery='sum(rate(nginx_ingress_controller_requests{host="vllm.ai-serving.company.com"}[2m]))',
    )
    assert_valid(rendering)
    spec = rendering.only("ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 1}
    assert spec["minReplicaCount"] == 0
    assert spec["pollingInterval"] == 30  # KEDA's default, unless autoscalingPollingSeconds says otherwise
    wake = spec["triggers"][-1]["metadata"]
    assert wake["activationThreshold"] == "0" and "nginx_ingress_controller_requests" in wake["query"]


def test_the_polling_interval_of_a_server_that_scales_to_zero_is_a_setting(tmp_path):
    rendering = render_prod(
        tmp_path,
        autoscalingScaleToZero=True,
        autoscalingMinReplicas=0,
        autoscalingActivationQuery='sum(rate(nginx_ingress_controller_requests{host="vllm.ai-serving.company.com"}[2m]))',
        autoscalingPollingSeconds=5,
    )
    assert_valid(rendering)
    assert rendering.only("ScaledObject")["spec"]["pollingInterval"] == 5


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"autoscalingSignals": ["queue"]}, "autoscalingSignals", "has no target"),
        ({"autoscalingSignals": ["queue=lots"]}, "autoscalingSignals", "must be a number"),
        ({"autoscalingSignals": ["tokens=5"]}, "autoscalingSignals", "queue, running, kv_cache, latency, gpu or cpu"),
        ({"autoscalingSignals": ["latency:ttft:5m=2", "latency:ttft:5m=3", "queue=5", "queue=6"]}, "autoscalingSignals", "once each"),
        ({"autoscalingEngine": "hpa", "autoscalingFallbackReplicas": 1}, "autoscalingFallbackReplicas", "engine keda"),
        ({"autoscalingMinReplicas": 0}, "autoscalingMinReplicas", "autoscalingScaleToZero"),
        ({"autoscalingScaleToZero": True, "autoscalingMinReplicas": 0}, "autoscalingActivationQuery", "outside the pods"),
        ({"autoscalingScaleUpPeriodSeconds": 3600}, "autoscalingScaleUpPeriodSeconds", "at most 1800"),
        # From one replica up the HPA reads the metric itself; KEDA 2.21 does not poll then.
        ({"autoscalingPollingSeconds": 5}, "autoscalingPollingSeconds", "has no effect without autoscalingScaleToZero"),
        ({"autoscalingEngine": "hpa", "autoscalingPollingSeconds": 5}, "autoscalingPollingSeconds", "engine keda"),
        (
            {"autoscalingScaleToZero": True, "autoscalingMinReplicas": 0, "autoscalingPollingSeconds": 7200,
             "autoscalingActivationQuery": "sum(rate(nginx_ingress_controller_requests[2m]))"},
            "autoscalingPollingSeconds", "at most 3600",
        ),
    ],
)
def test_autoscaling_mistakes(tmp_path, settings, key, words):
    with pytest.raises(ConfigError) as raised:
        render_prod(tmp_path, **settings)
    assert [(p.key, words in p.message) for p in raised.value.problems] == [(key, True)]
