"""The prod stack's autoscaling at work: the real KEDA (operator and metrics server, e2e/keda.py)
turns the ScaledObject `up` renders into an HPA, kube-controller-manager's HPA controller reads
its metric through the aggregation layer, and scales the server's Deployment on the load fake
vLLM pods report.

The load: a fake vLLM /metrics (tests/fake_vllm_metrics.py) at each server pod's address (inside
the tests' network namespace), scraped by a real Prometheus (Debian's) that scrapes the pods the
rendered PodMonitor selects, at its port and interval (a stand-in for the Prometheus Operator
gives it the job and the targets), and that the ScaledObject's trigger queries.

The stack is prod with its own namespace, no node cache or image pre-pull (they do not bear on
scaling), and the scaling windows shortened through the stack's settings, not by editing objects.
Each wait's deadline derives from those settings, the PodMonitor's scrape interval and the HPA
controller's sync period (kube-controller-manager's default, 15 s).

The scenarios, in order, on one stack: below the threshold nothing scales; the queue rises and the
server scales 1 -> 2; the metric disappears and nothing scales down; it comes back low and the
server returns to 1 only once the scale-down stabilization window has passed. The replica counts
over time are printed with the test log."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.fake_vllm_metrics import Engine, MetricsEndpoint, Pod, release_metrics, vllm_exposition
from tests.prometheus_server import Prometheus

from .cluster import wait_for
from .conftest import kubectl_json
from .keda import Keda
from .pulumi_cli import ROOT
from .standins import Poller

pytestmark = pytest.mark.e2e

STACK = "scaling"
NAMESPACE = "ai-serving-scaling"
NAME = "vllm-qwen3-235b"
SECRET = "vllm-api-key"
SERVER_SELECTOR = "app.kubernetes.io/component=server"
PORT_NAME = "http"
"""The server's port (VLLMServer.port_name), where its /metrics is and the PodMonitor scrapes."""
QUEUE_TARGET = 5
"""Requests waiting per replica: prod's signal (queue=5, the default)."""
STABILIZATION_SECONDS = 45
SCALE_DOWN_PERIOD_SECONDS = 15
SCALE_UP_PERIOD_SECONDS = 15
HPA_SYNC_SECONDS = 15
"""kube-controller-manager's --horizontal-pod-autoscaler-sync-period, left at its default."""
HPA = f"keda-hpa-{NAME}"
"""The HPA KEDA makes for the ScaledObject (keda-hpa-<name>, its default)."""
SLACK_SECONDS = 30
"""Beyond the settings: Prometheus's query, KEDA's metrics server and the API calls in between."""
WAITING_HIGH = 16
"""Requests waiting that ask for more than two replicas (16 / 5, rounded up); 8 per replica at two."""


def seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


class FakeServers(Poller):
    """A fake vLLM /metrics at each running server pod's address, on the port the server's
    container names ``port_name``, started as pods appear (during `up` too, as a real server
    answers once ready) and stopped as they go. The first pod reports the requests waiting the test
    sets, the others none; ``serving = False`` stops them all (the metric disappears)."""

    def __init__(self, cluster, namespace: str, port_name: str, model: str):
        super().__init__(cluster, namespace)
        self.port_name, self.model = port_name, model
        self.port: int | None = None
        self.metrics = None
        self.started = time.time() - 3600
        self.endpoints: dict[str, MetricsEndpoint] = {}
        self.waiting = 0.0
        self.loaded: str | None = None
        """The pod that reports the requests waiting: the first one up, while it runs."""
        self.serving = True

    def _render(self, name: str, first: bool) -> str:
        pod = Pod(self.namespace, name, self.model, (Engine(waiting=self.waiting if first else 0),))
        return vllm_exposition(pod, time.time() - self.started, self.started, self.metrics)

    def _server(self) -> bool:
        """The port and vLLM release (its image's tag) of the server's container, once it exists."""
        found = kubectl_json(self.cluster, "get", "deployments", "-n", self.namespace, "-l", SERVER_SELECTOR)["items"]
        if not found:
            return False
        (deployment,) = found
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                if port.get("name") == self.port_name:
                    self.port, self.metrics = port["containerPort"], release_metrics(container["image"].rsplit(":v", 1)[1])
        return self.port is not None

    def step(self):
        if self.port is None and not self._server():
            return
        pods = kubectl_json(self.cluster, "get", "pods", "-n", self.namespace, "-l", SERVER_SELECTOR)["items"]
        running = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods
                   if "deletionTimestamp" not in p["metadata"] and p["status"].get("phase") == "Running"}
        for name in [n for n in self.endpoints if n not in running or not self.serving]:
            self.endpoints.pop(name).stop()
        if not self.serving or not running:
            return
        if self.loaded not in running:
            self.loaded = min(running)
        for name, ip in running.items():
            if ip and name not in self.endpoints:
                endpoint = MetricsEndpoint(lambda name=name: self._render(name, name == self.loaded), bind=(ip, self.port))
                endpoint.start()
                self.endpoints[name] = endpoint

    def set_waiting(self, total: float) -> None:
        """Requests waiting over the whole server, all on its first pod."""
        self.waiting = total

    def __exit__(self, *exc):
        super().__exit__(*exc)
        for endpoint in self.endpoints.values():
            endpoint.stop()


class PrometheusOperator(Poller):
    """Stands in for the Prometheus Operator: once the stack's PodMonitor exists, gives the
    Prometheus the scrape job the operator would generate from it, and keeps its targets to the
    pods the PodMonitor selects, at their address and the named port, labelled with their
    namespace, pod and container. Debian's Prometheus has no Kubernetes service discovery, so the
    targets go through a file (file_sd), which Prometheus watches."""

    def __init__(self, cluster, namespace: str, prometheus: Prometheus):
        super().__init__(cluster, namespace)
        self.prometheus = prometheus
        self.targets_file = prometheus.directory / "targets.json"
        self.monitor: dict | None = None
        self.targets: list[dict] | None = None

    def step(self):
        if self.monitor is None:
            monitors = kubectl_json(self.cluster, "get", "podmonitors", "-n", self.namespace)["items"]
            if not monitors:
                return
            (monitor,) = monitors
            self._write_targets([])
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
            self.prometheus.reload([pod_monitor_scrape_config(monitor, self.targets_file)], endpoint["interval"])
            self.monitor = monitor
        self._write_targets(pod_monitor_targets(self.cluster, self.monitor))

    def _write_targets(self, targets: list[dict]) -> None:
        if targets != self.targets:
            staged = self.targets_file.with_suffix(".new")
            staged.write_text(json.dumps(targets))
            staged.rename(self.targets_file)
            self.targets = targets

    @property
    def scrape_seconds(self) -> int:
        assert self.monitor is not None, "no PodMonitor yet"
        return seconds(self.monitor["spec"]["podMetricsEndpoints"][0]["interval"])


class Replicas(Poller):
    """Records, when it changes, the Deployment's wanted and ready replicas and what the HPA
    reads and wants: the replica counts over time."""

    interval = 1.0

    def __init__(self, cluster, namespace: str):
        super().__init__(cluster, namespace)
        self.t0 = time.monotonic()
        self.history: list[tuple[float, str]] = []

    def state(self) -> dict:
        deployment = kubectl_json(self.cluster, "get", "deployment", NAME, "-n", self.namespace)
        hpa = kubectl_json(self.cluster, "get", "hpa", HPA, "-n", self.namespace)
        return {"deployment": deployment, "hpa": hpa}

    def step(self):
        s = self.state()
        status = s["hpa"].get("status", {})
        metric = next((m["external"]["current"].get("averageValue") for m in status.get("currentMetrics") or []
                       if m.get("type") == "External"), None)
        line = (f"replicas {s['deployment']['spec']['replicas']} (ready {s['deployment']['status'].get('readyReplicas', 0)}),"
                f" HPA desired {status.get('desiredReplicas')} on {metric if metric is not None else 'no metric'}")
        if not self.history or self.history[-1][1] != line:
            self.history.append((time.monotonic() - self.t0, line))

    def show(self, capsys, case: str) -> None:
        with capsys.disabled():
            print(f"\n  replicas over time, {case}:")
            for at, line in self.history:
                print(f"    {at:6.1f}s  {line}")
        self.history.clear()


def hpa_condition(cluster, kind: str) -> dict:
    hpa = kubectl_json(cluster, "get", "hpa", HPA, "-n", NAMESPACE)
    return next((c for c in hpa.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def replicas(cluster) -> int:
    return kubectl_json(cluster, "get", "deployment", NAME, "-n", NAMESPACE)["spec"]["replicas"]


@pytest.fixture(scope="module")
def keda(cluster, e2e_bin, tmp_path_factory):
    with Keda(cluster, e2e_bin, tmp_path_factory.mktemp("keda"), [NAMESPACE]) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(cluster, tmp_path_factory):
    """Prometheus on loopback, started before `up` so that the stack's trigger can name its
    address; it scrapes what the PodMonitor selects (configured once `up` made it)."""
    directory = tmp_path_factory.mktemp("prometheus")
    server = Prometheus(directory, [], lifetime=1800)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pod_monitor_scrape_config(monitor: dict, targets_file) -> dict:
    """The scrape job the Prometheus Operator generates for a PodMonitor's endpoint: its interval
    and path, one target per selected pod (pod_monitor_targets)."""
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    return {
        "job_name": f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/0",
        "scrape_interval": endpoint["interval"], "scrape_timeout": "5s", "metrics_path": endpoint["path"],
        "file_sd_configs": [{"files": [str(targets_file)]}],
    }


def pod_monitor_targets(cluster, monitor: dict) -> list[dict]:
    """The pods of the PodMonitor's namespace its selector picks, not finished, at the container
    port its endpoint names, with the labels the operator's relabelling gives (namespace, pod,
    container)."""
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    namespace = monitor["metadata"]["namespace"]
    selector = ",".join(f"{key}={value}" for key, value in monitor["spec"]["selector"]["matchLabels"].items())
    targets = []
    for pod in kubectl_json(cluster, "get", "pods", "-n", namespace, "-l", selector)["items"]:
        ip = pod["status"].get("podIP")
        if not ip or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                if port.get("name") == endpoint["port"]:
                    targets.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                        "namespace": namespace, "pod": pod["metadata"]["name"], "container": container["name"],
                        "endpoint": endpoint["port"]}})
    return sorted(targets, key=lambda target: target["labels"]["pod"])


@pytest.fixture(scope="module")
def servers(cluster):
    """The fake servers, for whatever server pods the stack runs (from before its `up`)."""
    model = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["vllm-serving:servedModelName"]
    with FakeServers(cluster, NAMESPACE, PORT_NAME, model) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def stack(project, cluster, keda, prometheus, servers):
    """prod in a namespace of its own, made as the docs say (the namespace and the API key's
    Secret first). `up` waits for the ScaledObject's Ready condition, which the real KEDA operator
    reports: no stand-in does here."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", NAMESPACE, "--from-literal=api-key=e2e-key")
    project.init_stack_like(STACK, "prod", {
        "namespace": NAMESPACE, "nodeCache": False, "imagePrePull": False, "host": "scaling.ai-serving.company.com",
        # Destroyed at the end, so that the later tests have the GPU nodes: no protected claim.
        "protectModelVolume": False,
        # No ingress controller here publishes the Ingress's address; `up` does not wait for one.
        "ingressWaitForAddress": False,
        "autoscalingPrometheusAddress": prometheus.url,
        "autoscalingScaleUpPeriodSeconds": SCALE_UP_PERIOD_SECONDS,
        "autoscalingScaleDownStabilizationSeconds": STABILIZATION_SECONDS,
        "autoscalingScaleDownPeriodSeconds": SCALE_DOWN_PERIOD_SECONDS,
    })
    with PrometheusOperator(cluster, NAMESPACE, prometheus) as operator:
        try:
            project.up(STACK, timeout=600)
        except Exception as error:
            raise AssertionError(f"{error}\n{keda.log_tails()}") from None
        wait_for("the PodMonitor's scrape job", lambda: operator.monitor is not None, 30)
        query = kubectl_json(cluster, "get", "scaledobject", NAME, "-n", NAMESPACE)["spec"]["triggers"][0]["metadata"]["query"]
        prometheus.wait_for("the server's queue in Prometheus", lambda: prometheus.query(query) != [],
                            timeout=operator.scrape_seconds * 2 + SLACK_SECONDS)
        servers.scrape_seconds = operator.scrape_seconds
        yield project
        project.run("destroy", "--yes", "--skip-preview", stack=STACK, timeout=600, check=False)


@pytest.fixture(scope="module")
def history(stack, cluster):
    with Replicas(cluster, NAMESPACE) as recorded:
        yield recorded


def metric_deadline(servers: FakeServers) -> float:
    """From a change of load to the HPA acting on it: a scrape, then the HPA's next sync."""
    return servers.scrape_seconds + 2 * HPA_SYNC_SECONDS + SLACK_SECONDS


def wait_hpa_reads(cluster, servers, value: str) -> None:
    def reads() -> bool:
        metrics = kubectl_json(cluster, "get", "hpa", HPA, "-n", NAMESPACE).get("status", {}).get("currentMetrics") or []
        return any(m.get("external", {}).get("current", {}).get("averageValue") == value for m in metrics)
    wait_for(f"the HPA reading {value} requests waiting per replica", reads, metric_deadline(servers), interval=1)


def test_keda_made_the_hpa_from_the_scaled_object(stack, cluster, keda):
    scaled = kubectl_json(cluster, "get", "scaledobject", NAME, "-n", NAMESPACE)
    assert {c["type"]: c["status"] for c in scaled["status"]["conditions"]}["Ready"] == "True"
    hpa = kubectl_json(cluster, "get", "hpa", HPA, "-n", NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == STABILIZATION_SECONDS
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External" and metric["external"]["target"] == {"type": "AverageValue", "averageValue": str(QUEUE_TARGET)}
    # The metrics API the HPA reads is served through the aggregation layer by KEDA's metrics server.
    assert keda.available()


def test_below_the_threshold_nothing_scales(stack, cluster, servers, history, capsys):
    servers.set_waiting(QUEUE_TARGET - 1)
    wait_hpa_reads(cluster, servers, str(QUEUE_TARGET - 1))
    # The HPA's decision on that reading is in the same status: one replica is enough.
    assert kubectl_json(cluster, "get", "hpa", HPA, "-n", NAMESPACE)["status"]["desiredReplicas"] == 1
    assert replicas(cluster) == 1
    history.show(capsys, f"{QUEUE_TARGET - 1} requests waiting on one replica")


def test_the_queue_rises_and_the_server_scales_to_two(stack, cluster, servers, history, capsys):
    servers.set_waiting(WAITING_HIGH)
    wait_for("the Deployment scaled to 2 replicas", lambda: replicas(cluster) == 2,
             metric_deadline(servers), interval=1, diagnose=lambda: json.dumps(hpa_condition(cluster, "AbleToScale")))
    wait_for("both replicas ready", lambda: kubectl_json(cluster, "get", "deployment", NAME, "-n", NAMESPACE)
             ["status"].get("readyReplicas") == 2, 120, interval=1)
    # At most two (autoscalingMaxReplicas), though 16 waiting ask for four.
    wait_hpa_reads(cluster, servers, str(WAITING_HIGH // 2))
    assert kubectl_json(cluster, "get", "hpa", HPA, "-n", NAMESPACE)["status"]["desiredReplicas"] == 2
    history.show(capsys, f"{WAITING_HIGH} requests waiting")


def test_the_metric_disappears_and_nothing_scales_down(stack, cluster, servers, prometheus, history, capsys):
    assert replicas(cluster) == 2
    servers.serving = False
    # KEDA's trigger refuses an empty result (ignoreNullValues false): the HPA cannot read the metric.
    wait_for("the HPA failing to read the metric", lambda: hpa_condition(cluster, "ScalingActive").get("reason")
             == "FailedGetExternalMetric", metric_deadline(servers) + servers.scrape_seconds * 4, interval=1)
    # Longer than a scale-down would take on a low metric: still two.
    deadline = time.monotonic() + STABILIZATION_SECONDS + 2 * HPA_SYNC_SECONDS
    while time.monotonic() < deadline:
        assert replicas(cluster) == 2
        time.sleep(1)
    # The missing-metric alert's expression, as `up` applied it, holds on this Prometheus.
    rule = kubectl_json(cluster, "get", "prometheusrules", f"{NAME}-alerts", "-n", NAMESPACE)
    (missing,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "VLLMScalingMetricMissing"]
    assert prometheus.query(missing["expr"]) != [], missing["expr"]
    history.show(capsys, "the metric gone")


def test_back_to_one_replica_only_after_the_stabilization_window(stack, cluster, servers, history, capsys):
    assert replicas(cluster) == 2
    # The load back first: the HPA keeps no recommendation while it cannot read the metric, so the
    # window must start from a reading that wants two.
    servers.serving = True
    wait_hpa_reads(cluster, servers, str(WAITING_HIGH // 2))
    servers.set_waiting(0)
    wait_hpa_reads(cluster, servers, "0")
    # The HPA wants one replica now, but holds two: the window remembers the higher recommendation.
    able = hpa_condition(cluster, "AbleToScale")
    assert replicas(cluster) == 2 and able.get("reason") == "ScaleDownStabilized", able
    wait_for("the Deployment back to 1 replica", lambda: replicas(cluster) == 1,
             STABILIZATION_SECONDS + metric_deadline(servers), interval=1)
    history.show(capsys, "the load gone")
