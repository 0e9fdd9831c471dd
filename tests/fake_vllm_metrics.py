"""Scrape targets that expose what a vLLM server of a given release, the DCGM exporter and
kube-state-metrics expose, under a synthetic load whose rates and quantiles are known in advance.

vLLM registers prometheus_client metrics with the labels ``model_name`` (the served model name)
and ``engine`` (the engine index, one per data-parallel rank), and serves them in
prometheus_client's text format. The names, help texts and histogram buckets served are those
of the release's metric table (components/vllm_metrics/v<release>.json, read from the release's
wheel by tools/vllm_metric_table.py); a name the release does not register unconditionally is
not served:

* gauges ``vllm:num_requests_waiting``, ``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``;
* counters ``vllm:num_preemptions``, ``vllm:prompt_tokens``, ``vllm:generation_tokens``, exposed
  as ``<name>_total`` with a ``<name>_created`` gauge;
* histograms ``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds`` and
  ``vllm:e2e_request_latency_seconds``;
* the info gauges the Endpoint Picker reads (its core metrics extractor, gateway-api-inference-
  extension v1.5.0 pkg/epp/framework/plugins/datalayer/extractor/metrics): ``vllm:cache_config_info``,
  one series per engine whose labels are the engine's CacheConfig (vllm/v1/metrics/loggers.py
  log_metrics_info: labels from ``CacheConfig.metrics_info()`` plus ``engine``, value 1), and, for
  a pod serving LoRA adapters only, ``vllm:lora_requests_info`` with the labels ``max_lora``,
  ``waiting_lora_adapters`` and ``running_lora_adapters`` (adapter names joined by commas), whose
  value is the time it was last set (``set_to_current_time``): the picker reads the newest series.

The load: gauges hold fixed values; every counter (histogram buckets, sums and counts included)
is its per-second rate times the seconds since the process "started", an hour before the
targets were created. A counter then grows by exactly its rate per second between any two
scrapes, so ``rate()`` over a window that the samples cover returns that rate; and since all
buckets of a histogram grow in proportion, ``histogram_quantile`` over any window returns the
quantile of the configured distribution, whatever the extrapolation at the window's edges.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

UPTIME_AT_START = 3600.0
"""Seconds the fake processes claim to have run when the targets are created."""

METRIC_TABLES = Path(__file__).resolve().parent.parent / "components" / "vllm_metrics"
RELEASES = sorted(path.stem.removeprefix("v") for path in METRIC_TABLES.glob("v*.json"))
"""Every release with a metric table."""

# What the fake serves, by metric name: the Engine attribute that holds its value (its rate, for
# counters; its Latency, for histograms).
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache",
}
COUNTERS = {
    "vllm:num_preemptions": "preemptions_per_second",
    "vllm:prompt_tokens": "prompt_tokens_per_second",
    "vllm:generation_tokens": "generation_tokens_per_second",
}
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:inter_token_latency_seconds": "itl",
    "vllm:e2e_request_latency_seconds": "e2e",
}


@dataclass(frozen=True)
class Served:
    """One metric as a release serves it."""

    name: str
    help: str
    attribute: str
    buckets: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReleaseMetrics:
    """The served metrics of one vLLM release, from its metric table."""

    release: str
    gauges: tuple[Served, ...]
    counters: tuple[Served, ...]
    histograms: tuple[Served, ...]

    def buckets(self, attribute: str) -> tuple[float, ...]:
        """The bucket bounds of the histogram held in an Engine attribute (ttft, itl, e2e)."""
        (histogram,) = [h for h in self.histograms if h.attribute == attribute]
        return histogram.buckets


def release_metrics(release: str) -> ReleaseMetrics:
    table = json.loads((METRIC_TABLES / f"v{release}.json").read_text())["metrics"]

    def served(names: dict[str, str]) -> tuple[Served, ...]:
        return tuple(
            Served(name, table[name]["documentation"], attribute, tuple(table[name].get("buckets") or ()))
            for name, attribute in names.items()
            if name in table and table[name]["condition"] is None
        )

    return ReleaseMetrics(release, served(GAUGES), served(COUNTERS), served(HISTOGRAMS))


def go_float(value: float) -> str:
    """A sample value or ``le`` as prometheus_client writes it (utils.floatToGoString)."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def label_value(value: str) -> str:
    """A label value in the text exposition format (backslash, double quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, str], value: float | str) -> str:
    """One sample line; a float is written as prometheus_client writes it, a str as it is."""
    rendered = ",".join(f'{key}="{label_value(text)}"' for key, text in labels.items())
    return f"{name}{{{rendered}}} {value if isinstance(value, str) else go_float(value)}\n"


@dataclass(frozen=True)
class Latency:
    """Observations of one histogram: how many per second, and how they fall into its buckets."""

    per_second: float
    shares: dict[float, float]
    """Upper bound of a bucket -> the share of observations in that bucket (above the bound before it)."""

    def check(self, buckets: tuple[float, ...]) -> None:
        assert set(self.shares) <= set(buckets), f"{sorted(self.shares)} are not all bucket bounds of {buckets}"
        assert math.isclose(sum(self.shares.values()), 1.0) or not (self.shares or self.per_second), self.shares

    def cumulative(self, buckets: tuple[float, ...]) -> list[float]:
        """The share of observations at or below each bound, then +Inf."""
        total, out = 0.0, []
        for bound in buckets:
            total += self.shares.get(bound, 0.0)
            out.append(total)
        return [*out, total]

    def mean(self, buckets: tuple[float, ...]) -> float:
        """Observations sit mid-bucket, as far as _sum is concerned."""
        lower = dict(zip(buckets, (0.0, *buckets)))
        return sum(share * (lower[bound] + bound) / 2 for bound, share in self.shares.items())


@dataclass(frozen=True)
class Engine:
    """One vLLM engine (one data-parallel rank) and its load."""

    waiting: float = 0
    running: float = 0
    kv_cache: float = 0.0
    preemptions_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    generation_tokens_per_second: float = 0.0
    ttft: Latency = field(default_factory=lambda: Latency(0.0, {}))
    itl: Latency = field(default_factory=lambda: Latency(0.0, {}))
    e2e: Latency = field(default_factory=lambda: Latency(0.0, {}))
    """Latencies: none observed, by default."""
    num_gpu_blocks: int = 4096
    block_size: int = 16
    """The engine's KV cache: blocks of block_size tokens (vllm:cache_config_info)."""


@dataclass(frozen=True)
class Lora:
    """The adapters of a pod serving LoRA (vllm:lora_requests_info)."""

    max_lora: int
    running: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pod:
    """A vLLM server pod: its namespace and name (the scrape target's labels), the served model
    name, and one Engine per data-parallel rank (the ``engine`` label is its index). ``up=False``:
    a pod still loading, whose /metrics does not answer yet."""

    namespace: str
    name: str
    model_name: str
    engines: tuple[Engine, ...]
    up: bool = True
    frozen_at: Optional[float] = None
    """Seconds of uptime at which the counters stopped (an idle server that served earlier);
    None: they keep growing."""
    lora: Optional[Lora] = None
    """Its LoRA adapters; None: the server serves none, and has no vllm:lora_requests_info."""


def vllm_exposition(pod: Pod, uptime: float, started: float, metrics: ReleaseMetrics) -> str:
    """/metrics of a vLLM server of the release, as prometheus_client writes it (text format
    0.0.4, labels in name order)."""
    if pod.frozen_at is not None:
        uptime = min(uptime, pod.frozen_at)
    per_engine = [({"engine": str(index), "model_name": pod.model_name}, engine) for index, engine in enumerate(pod.engines)]

    def sample(name: str, labels: dict[str, str], value: float) -> str:
        return _sample(name, dict(sorted(labels.items())), value)

    out: list[str] = []
    for gauge in metrics.gauges:
        out += [f"# HELP {gauge.name} {gauge.help}\n", f"# TYPE {gauge.name} gauge\n"]
        out += [sample(gauge.name, labels, getattr(engine, gauge.attribute)) for labels, engine in per_engine]
    for counter in metrics.counters:
        name = counter.name
        out += [f"# HELP {name}_total {counter.help}\n", f"# TYPE {name}_total counter\n"]
        out += [sample(f"{name}_total", labels, getattr(engine, counter.attribute) * uptime) for labels, engine in per_engine]
        out += [f"# HELP {name}_created {counter.help}\n", f"# TYPE {name}_created gauge\n"]
        out += [sample(f"{name}_created", labels, started) for labels, _ in per_engine]
    for histogram in metrics.histograms:
        name, buckets = histogram.name, histogram.buckets
        out += [f"# HELP {name} {histogram.help}\n", f"# TYPE {name} histogram\n"]
        for labels, engine in per_engine:
            latency: Latency = getattr(engine, histogram.attribute)
            observed = latency.per_second * uptime
            for bound, share in zip((*buckets, math.inf), latency.cumulative(buckets)):
                out.append(sample(f"{name}_bucket", {**labels, "le": go_float(bound)}, share * observed))
            out.append(sample(f"{name}_count", labels, observed))
            out.append(sample(f"{name}_sum", labels, latency.mean(buckets) * observed))
        out += [f"# HELP {name}_created {histogram.help}\n", f"# TYPE {name}_created gauge\n"]
        out += [sample(f"{name}_created", labels, started) for labels, _ in per_engine]
    out += ["# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n",
            "# TYPE vllm:cache_config_info gauge\n"]
    out += [
        sample("vllm:cache_config_info", {
            "block_size": str(engine.block_size), "cache_dtype": "auto", "enable_prefix_caching": "True",
            "engine": str(index), "gpu_memory_utilization": "0.9", "num_gpu_blocks": str(engine.num_gpu_blocks),
        }, 1.0)
        for index, engine in enumerate(pod.engines)
    ]
    if pod.lora is not None:
        out += ["# HELP vllm:lora_requests_info Running stats on lora requests.\n",
                "# TYPE vllm:lora_requests_info gauge\n"]
        out.append(_sample("vllm:lora_requests_info", {
            "max_lora": str(pod.lora.max_lora), "running_lora_adapters": ",".join(pod.lora.running),
            "waiting_lora_adapters": ",".join(pod.lora.waiting),
        }, time.time()))
    return "".join(out)


@dataclass(frozen=True)
class Gpu:
    """One GPU as the DCGM exporter reports it; namespace/pod/container when a pod holds it."""

    index: int
    hostname: str
    utilization: int
    namespace: Optional[str] = None
    pod: Optional[str] = None
    container: str = "vllm"


def dcgm_exposition(gpus: list[Gpu]) -> str:
    """/metrics of dcgm-exporter with its Kubernetes pod mapping on (pod-resources API)."""
    out = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"]
    for gpu in gpus:
        labels = {
            "gpu": str(gpu.index),
            "UUID": f"GPU-{gpu.hostname}-{gpu.index:04d}",
            "pci_bus_id": f"00000000:{gpu.index + 0x18:02X}:00.0",
            "device": f"nvidia{gpu.index}",
            "modelName": "NVIDIA H100 80GB HBM3",
            "Hostname": gpu.hostname,
            "DCGM_FI_DRIVER_VERSION": "550.90.07",
        }
        if gpu.pod is not None:
            labels.update({"container": gpu.container, "namespace": gpu.namespace, "pod": gpu.pod})
        out.append(_sample("DCGM_FI_DEV_GPU_UTIL", labels, str(gpu.utilization)))
    return "".join(out)


@dataclass(frozen=True)
class Deployment:
    namespace: str
    name: str
    wanted: int
    ready: int


def kube_state_metrics_exposition(deployments: list[Deployment]) -> str:
    out = [
        "# HELP kube_deployment_spec_replicas Number of desired pods for a deployment.\n",
        "# TYPE kube_deployment_spec_replicas gauge\n",
    ]
    out += [f'kube_deployment_spec_replicas{{namespace="{d.namespace}",deployment="{d.name}"}} {d.wanted}\n' for d in deployments]
    out += [
        "# HELP kube_deployment_status_replicas_ready [STABLE] The number of ready replicas per deployment.\n",
        "# TYPE kube_deployment_status_replicas_ready gauge\n",
    ]
    out += [f'kube_deployment_status_replicas_ready{{namespace="{d.namespace}",deployment="{d.name}"}} {d.ready}\n' for d in deployments]
    return "".join(out)


class MetricsEndpoint:
    """An HTTP server on ``bind`` (default 127.0.0.1, a free port) answering GET /metrics with
    ``render()``.

    The socket is bound on creation, so the port can go into a scrape configuration before
    ``start`` serves it."""

    def __init__(self, render: Callable[[], str], bind: tuple[str, int] = ("127.0.0.1", 0)):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = endpoint.render().encode()
                endpoint.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.render = render
        self.scrapes = 0
        self._server = ThreadingHTTPServer(bind, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def closed_address() -> str:
    """A loopback address nothing listens on (a pod whose server is not up yet)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = server.server_address[:2]
    server.server_close()
    return f"{host}:{port}"


class Cluster:
    """The scrape targets of a namespace-spanning synthetic cluster: one endpoint per vLLM pod
    (none for a pod that is not up) serving the release's metrics, the DCGM exporter and
    kube-state-metrics."""

    def __init__(self, pods: list[Pod], gpus: list[Gpu], deployments: list[Deployment], release: str):
        self.started = time.time() - UPTIME_AT_START
        self.pods = pods
        self.metrics = release_metrics(release)
        for pod in pods:
            for engine in pod.engines:
                for histogram in self.metrics.histograms:
                    getattr(engine, histogram.attribute).check(histogram.buckets)
        self.endpoints: dict[str, MetricsEndpoint] = {}
        self.down: dict[str, str] = {}
        for pod in pods:
            if pod.up:
                self.endpoints[pod.name] = MetricsEndpoint(
                    lambda pod=pod: vllm_exposition(pod, self.uptime(), self.started, self.metrics)
                )
            else:
                self.down[pod.name] = closed_address()
        self.dcgm = MetricsEndpoint(lambda: dcgm_exposition(gpus))
        self.kube_state_metrics = MetricsEndpoint(lambda: kube_state_metrics_exposition(deployments))

    def uptime(self) -> float:
        return time.time() - self.started

    def all_endpoints(self) -> list[MetricsEndpoint]:
        return [*self.endpoints.values(), self.dcgm, self.kube_state_metrics]

    def scrape_configs(self) -> list[dict]:
        """Prometheus scrape_configs as the Prometheus Operator generates them: one job per
        PodMonitor, whose targets carry the pod's ``namespace`` and ``pod`` (and ``container``,
        ``endpoint``) labels; the DCGM exporter and kube-state-metrics with honor_labels, so the
        namespace and pod in their series are the workloads', not the exporters'."""
        monitors: dict[tuple[str, str], list[dict]] = {}
        for pod in self.pods:
            address = self.endpoints[pod.name].address if pod.up else self.down[pod.name]
            deployment = pod.name.rsplit("-", 2)[0]
            monitors.setdefault((pod.namespace, deployment), []).append(
                {"targets": [address], "labels": {"namespace": pod.namespace, "pod": pod.name, "container": "vllm", "endpoint": "http"}}
            )
        configs = [
            {"job_name": f"podMonitor/{namespace}/{deployment}-metrics/0", "static_configs": targets}
            for (namespace, deployment), targets in monitors.items()
        ]
        configs.append(
            {
                "job_name": "serviceMonitor/gpu-operator/nvidia-dcgm-exporter/0",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [self.dcgm.address], "labels": {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x7k2p"}}
                ],
            }
        )
        configs.append(
            {
                "job_name": "serviceMonitor/monitoring/kube-state-metrics/0",
                "honor_labels": True,
                "static_configs": [
                    {
                        "targets": [self.kube_state_metrics.address],
                        "labels": {"namespace": "monitoring", "pod": "kube-state-metrics-6d5f8b7c9-q4r8s"},
                    }
                ],
            }
        )
        return configs

    def start(self) -> None:
        for endpoint in self.all_endpoints():
            endpoint.start()

    def stop(self) -> None:
        for endpoint in self.all_endpoints():
            endpoint.stop()
