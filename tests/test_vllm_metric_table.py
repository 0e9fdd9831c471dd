"""The per-release Prometheus metric tables: the reader on a synthetic wheel, the checked-in
tables, and the names components/monitoring.py queries, which every release must register."""

import importlib.util
import json
import re
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from test_vllm_flag_table import checked_table

from vllm_serving_components import autoscaler
from vllm_serving_components import monitoring as queries

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "components" / "vllm_metrics"
CHECKED_IN = sorted(TABLES.glob("v*.json"))


def _load_tool():
    spec = importlib.util.spec_from_file_location("vllm_metric_table", ROOT / "tools" / "vllm_metric_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

LOGGERS = '''
import prometheus_client
from vllm.v1.metrics.buckets import histogram_buckets
from vllm.v1.metrics.perf import PerfProm


class PrometheusStatLogger:
    _gauge_cls = prometheus_client.Gauge
    _counter_cls = prometheus_client.Counter
    _histogram_cls = prometheus_client.Histogram

    def __init__(self, vllm_config):
        labelnames = ["model_name", "engine"]
        self.perf = PerfProm(labelnames)
        self._gauge_cls(name="vllm:num_requests_waiting", documentation="Waiting.", labelnames=labelnames)
        if self.show_hidden_metrics:
            self._gauge_cls(name="vllm:gpu_cache_usage_perc", documentation="Old.", labelnames=labelnames)
        else:
            self._counter_cls(name="vllm:prompt_tokens", documentation="Prompt.", labelnames=labelnames + ["source"])
        ttft_buckets = histogram_buckets("time_to_first_token", overrides=None)
        for reason in ("a", "b"):
            self._histogram_cls(name="vllm:time_to_first_token_seconds", documentation="TTFT.",
                                buckets=ttft_buckets, labelnames=labelnames)
        self._histogram_cls(name="vllm:request_params_n", documentation="n.", buckets=[1, 2, 5],
                            labelnames=labelnames)
        self._histogram_cls(name="vllm:request_max_tokens", documentation="max.",
                            buckets=build_1_2_5_buckets(max_model_len), labelnames=labelnames)

    def log_metrics_info(self, type, config_obj):
        name = None
        if type == "cache_config":
            name = "vllm:cache_config_info"
        info = config_obj.metrics_info()
        self._gauge_cls(name=name, documentation="Info.", labelnames=info.keys())


class RayLogger(PrometheusStatLogger):
    _gauge_cls = RayGaugeWrapper
'''
PERF = '''
from prometheus_client import Counter as PromCounter


class PerfProm:
    def __init__(self, labelnames):
        PromCounter(name="vllm:estimated_flops_per_gpu_total", documentation="Flops.", labelnames=labelnames)
'''
READER = '''
class Gauge:
    pass


def read():
    return Gauge(name="vllm:not_a_registration")
'''
BUCKETS = '''
TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (0.001, 0.5, 2.0)
_STATIC_FAMILY_DEFAULTS: dict[str, tuple[float, ...]] = {"time_to_first_token": TIME_TO_FIRST_TOKEN_BUCKETS}
'''


def wheel(tmp_path: Path, modules: dict[str, str]) -> Path:
    path = tmp_path / "vllm-9.9.9-cp38-abi3-manylinux1_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in modules.items():
            zf.writestr(f"vllm/v1/metrics/{name}", textwrap.dedent(text))
        zf.writestr("vllm/v1/spec_decode/metrics.py", 'import prometheus_client\nprometheus_client.Gauge(name="vllm:x")\n')
    return path


def test_the_reader_finds_each_registration_with_its_labels_buckets_and_condition(tmp_path):
    modules = {"loggers.py": LOGGERS, "perf.py": PERF, "reader.py": READER, "buckets.py": BUCKETS}
    document = tool.table_document(wheel(tmp_path, modules), "9.9.9")
    metrics = document["metrics"]
    assert document["read"] == [f"vllm/v1/metrics/{name}" for name in sorted(modules)]
    assert sorted(metrics) == [
        "vllm:cache_config_info", "vllm:estimated_flops_per_gpu_total", "vllm:gpu_cache_usage_perc",
        "vllm:num_requests_waiting", "vllm:prompt_tokens", "vllm:request_max_tokens", "vllm:request_params_n",
        "vllm:time_to_first_token_seconds",
    ]  # fmt: skip
    waiting = metrics["vllm:num_requests_waiting"]
    assert waiting == {
        "type": "gauge", "labels": ["model_name", "engine"], "series": ["vllm:num_requests_waiting"],
        "documentation": "Waiting.", "condition": None, "where": waiting["where"],
    }  # fmt: skip
    assert re.fullmatch(r"vllm/v1/metrics/loggers\.py:\d+", waiting["where"])
    assert metrics["vllm:gpu_cache_usage_perc"]["condition"] == "self.show_hidden_metrics"
    prompt = metrics["vllm:prompt_tokens"]
    assert prompt["condition"] == "not (self.show_hidden_metrics)"
    assert (prompt["labels"], prompt["series"]) == (["model_name", "engine", "source"], ["vllm:prompt_tokens_total"])
    ttft = metrics["vllm:time_to_first_token_seconds"]
    assert (ttft["buckets"], ttft["condition"]) == ([0.001, 0.5, 2.0], None)
    assert ttft["series"] == [f"vllm:time_to_first_token_seconds_{s}" for s in ("bucket", "count", "sum")]
    assert metrics["vllm:request_params_n"]["buckets"] == [1, 2, 5]
    assert metrics["vllm:request_max_tokens"]["buckets"] is None
    assert metrics["vllm:cache_config_info"]["labels"] is None
    flops = metrics["vllm:estimated_flops_per_gpu_total"]
    assert (flops["labels"], flops["series"]) == (["model_name", "engine"], ["vllm:estimated_flops_per_gpu_total"])


@pytest.mark.parametrize(
    "line, words",
    [
        ('self._gauge_cls(name=f"vllm:{x}", labelnames=labelnames)', "metric name"),
        ('self._gauge_cls(name="vllm:y", labelnames=some_function())', "label names"),
        ('self._histogram_cls(name="vllm:z", buckets=compute(), labelnames=labelnames)', "buckets"),
        ('self._gauge_cls(documentation="no name")', "without name="),
    ],
)
def test_what_the_reader_cannot_work_out_is_an_error_naming_the_line(tmp_path, line, words):
    source = LOGGERS.replace('        self._gauge_cls(name="vllm:num_requests_waiting"', f"        {line}\n        self._gauge_cls(name=\"vllm:num_requests_waiting\"")
    with pytest.raises(tool.MetricTableError, match=rf"vllm/v1/metrics/loggers\.py:\d+: .*{words}"):
        tool.table_document(wheel(tmp_path, {"loggers.py": source, "buckets.py": BUCKETS}), "9.9.9")


def test_a_name_registered_twice_is_an_error(tmp_path):
    source = LOGGERS + '\n\ndef again():\n    prometheus_client.Gauge(name="vllm:num_requests_waiting", labelnames=[])\n'
    with pytest.raises(tool.MetricTableError, match="registered again"):
        tool.table_document(wheel(tmp_path, {"loggers.py": source, "buckets.py": BUCKETS}), "9.9.9")


def test_the_releases_the_project_relies_on_are_checked_in():
    assert {p.name for p in CHECKED_IN} >= {"v0.11.0.json", "v0.34.0.json"}


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: p.name)
def test_checked_in_table_is_well_formed(path):
    document = checked_table(path, {"read", "metrics"})
    assert "vllm/v1/metrics/loggers.py" in document["read"]
    for name, metric in document["metrics"].items():
        assert re.fullmatch(r"vllm:[a-z0-9_]+", name)
        assert metric["series"] == tool.series(metric["type"], name)
        assert metric["where"].split(":")[0] in document["read"]
        assert ("buckets" in metric) == (metric["type"] == "histogram")


def used_series() -> set[str]:
    """Every vLLM series the autoscaler's signals, the alert rules and the dashboard query."""
    scope = queries.Scope("ns", "model")
    signals = [{"kind": k, **autoscaler.SIGNAL_DEFAULTS} for k in ("queue", "running", "kv_cache", "gpu")]
    signals += [{"kind": "latency", **autoscaler.SIGNAL_DEFAULTS, "histogram": h} for h in queries.LATENCY_HISTOGRAMS]
    expressions = [autoscaler.signal_query(signal, scope) for signal in signals]
    expressions += [rule["expr"] for rule in queries.alert_rules(scope, "server", 5, 15)]
    expressions += [panel["targets"][0]["expr"] for panel in queries.dashboard(scope, "server", "t")["panels"]]
    return {name for expr in expressions for name in re.findall(r"vllm:[a-z0-9_]+", expr)}


def test_the_used_series_are_what_monitoring_names():
    assert used_series() == {
        queries.QUEUE, queries.RUNNING, queries.KV_CACHE, queries.PREEMPTIONS, queries.PROMPT_TOKENS,
        queries.GENERATION_TOKENS, *(f"{h}_{s}" for h in queries.LATENCY_HISTOGRAMS.values() for s in ("bucket", "count")),
    }  # fmt: skip


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: p.name)
def test_every_series_monitoring_queries_is_registered_unconditionally_with_its_labels(path):
    """Renamed or hidden in a release, a name would leave a signal, an alert or a panel empty."""
    metrics = json.loads(path.read_text())["metrics"]
    always = {s: (name, m) for name, m in metrics.items() if m["condition"] is None for s in m["series"]}
    missing = sorted(used_series() - set(always))
    assert missing == [], f"vLLM {path.stem}: not registered (or only under a condition): {missing}"
    for series in used_series():
        assert {"model_name", "engine"} <= set(always[series][1]["labels"]), series
