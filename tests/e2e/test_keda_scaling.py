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

The scenarios, in order, on the prod-like stack: below the threshold nothing scales; the queue
rises and the server scales 1 -> 2; the metric disappears and nothing scales down; it comes back
low and the server returns to 1 only once the scale-down stabilization window has passed. Then a
multinode stack, its LeaderWorkerSet made by the stand-in controller (which maintains the status
the scale subresource reads), scales 1 -> 2 groups the same way. The replica counts over time are
printed with the test log.

KEDA's activation threshold only decides scaling from and to zero replicas (from one replica up
the HPA alone decides, so "below the threshold" above is the HPA's target). A third prod-like
stack may scale to zero, woken by its host's request rate at a fake ingress controller: without
requests it stays at zero, its ScaledObject inactive and Ready; requests wake it to one replica,
KEDA's own loop deciding every POLLING_SECONDS."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fake_vllm_metrics import Engine, MetricsEndpoint, Pod, release_metrics, vllm_exposition
from tests.prometheus_server import Prometheus

from .cluster import wait_for
from .conftest import kubectl_json
from .keda import Keda
from .pulumi_cli import ROOT
from .standins import LeaderWorkerSetController, Poller

pytestmark = pytest.mark.e2e

STACK = "scaling"
NAMESPACE = "ai-serving-scaling"
NAME = "vllm-qwen3-235b"
MN_STACK = "scaling-multinode"
MN_NAMESPACE = "ai-serving-scaling-mn"
MN_NAME = "vllm-qwen3-235b-mn"
ZERO_STACK = "scaling-zero"
ZERO_NAMESPACE = "ai-serving-scaling-zero"
ZERO_HOST = "zero.ai-serving.company.com"
POLLING_SECONDS = 5
"""autoscalingPollingSeconds of the stack that scales to zero: KEDA's own loop decides 0 <-> 1."""
INGRESS_SCRAPE = "5s"
ACTIVATION_QUERY = f'sum(rate(nginx_ingress_controller_requests{{host="{ZERO_HOST}"}}[30s]))'
"""What wakes the server at zero replicas: the ingress controller's request rate for its host, the
example of docs/operations.md on a shorter window."""
MODEL = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["vllm-serving:servedModelName"]
"""The served model name of prod (and multinode): the vLLM model_name label the queries select."""
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
SLACK_SECONDS = 30
"""Beyond the settings: Prometheus's query, KEDA's metrics server and the API calls in between."""
WAITING_HIGH = 16
"""Requests waiting that ask for more than two replicas (16 / 5, rounded up); 8 per replica at two."""


def seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


class FakeServers(Poller):
    """A fake vLLM /metrics at each running server pod's address, on the port its container names
    ``port_name``, of the release its image's tag names, started as pods appear (during `up` too,
    as a real server answers once ready) and stopped as they go. The first pod reports the requests
    waiting the test sets, the others none; ``serving = False`` stops them all (the metric
    disappears)."""

    def __init__(self, cluster, namespace: str, port_name: str, model: str):
        super().__init__(cluster, namespace)
        self.port_name, self.model = port_name, model
        self.started = time.time() - 3600
        self.endpoints: dict[str, MetricsEndpoint] = {}
        self.waiting = 0.0
        self.loaded: str | None = None
        """The pod that reports the requests waiting: the first one up, while it runs."""
        self.serving = True
        self.scrape_seconds = 0

    def _render(self, name: str, metrics) -> str:
        pod = Pod(self.namespace, name, self.model, (Engine(waiting=self.waiting if name == self.loaded else 0),))
        return vllm_exposition(pod, time.time() - self.started, self.started, metrics)

    def _served(self, pod: dict) -> tuple[int, str] | None:
        """The port and vLLM release of the pod's server container, if it has the named port."""
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                if port.get("name") == self.port_name:
                    return port["containerPort"], container["image"].rsplit(":v", 1)[1]
        return None

    def step(self):
        pods = kubectl_json(self.cluster, "get", "pods", "-n", self.namespace, "-l", SERVER_SELECTOR)["items"]
        running = {p["metadata"]["name"]: p for p in pods if "deletionTimestamp" not in p["metadata"]
                   and p["status"].get("phase") == "Running" and p["status"].get("podIP") and self._served(p)}
        for name in [n for n in self.endpoints if n not in running or not self.serving]:
            self.endpoints.pop(name).stop()
        if not self.serving or not running:
            return
        if self.loaded not in running:
            self.loaded = min(running)
        for name, pod in running.items():
            if name not in self.endpoints:
                port, release = self._served(pod)
                metrics = release_metrics(release)
                endpoint = MetricsEndpoint(lambda name=name, metrics=metrics: self._render(name, metrics),
                                           bind=(pod["status"]["podIP"], port))
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
    """Stands in for the Prometheus Operator: once a PodMonitor exists in one of ``namespaces``,
    gives the Prometheus the scrape job the operator would generate from it, and keeps its targets
    to the pods the PodMonitor selects, at their address and the named port, labelled with their
    namespace, pod and container. Debian's Prometheus has no Kubernetes service discovery, so the
    targets go through a file per job (file_sd), which Prometheus watches."""

    def __init__(self, cluster, namespaces: list[str], prometheus: Prometheus):
        super().__init__(cluster, namespaces[0])
        self.namespaces, self.prometheus = namespaces, prometheus
        self.lock = threading.RLock()
        self.monitors: dict[str, dict] = {}
        self.targets: dict[str, list[dict]] = {}
        self.static_jobs: list[dict] = []

    def add_job(self, job: dict) -> None:
        """A scrape job of something outside the stacks (an ingress controller's metrics)."""
        with self.lock:
            self.static_jobs.append(job)
            self._reload()

    def _reload(self) -> None:
        with self.lock:
            self.prometheus.reload([*(pod_monitor_scrape_config(monitor, self.targets_file(ns))
                                      for ns, monitor in self.monitors.items()), *self.static_jobs], "15s")

    def targets_file(self, namespace: str) -> Path:
        return self.prometheus.directory / f"targets-{namespace}.json"

    def step(self):
        for namespace in self.namespaces:
            if namespace not in self.monitors:
                monitors = kubectl_json(self.cluster, "get", "podmonitors", "-n", namespace)["items"]
                if not monitors:
                    continue
                self._write_targets(namespace, [])
                with self.lock:
                    (self.monitors[namespace],) = monitors
                    self._reload()
            self._write_targets(namespace, pod_monitor_targets(self.cluster, self.monitors[namespace]))

    def _write_targets(self, namespace: str, targets: list[dict]) -> None:
        if targets != self.targets.get(namespace):
            staged = self.targets_file(namespace).with_suffix(".new")
            staged.write_text(json.dumps(targets))
            staged.rename(self.targets_file(namespace))
            self.targets[namespace] = targets

    def scrape_seconds(self, namespace: str) -> int:
        wait_for(f"the PodMonitor of {namespace} in Prometheus's configuration", lambda: namespace in self.monitors, 30)
        return seconds(self.monitors[namespace]["spec"]["podMetricsEndpoints"][0]["interval"])


@dataclass(frozen=True)
class Target:
    """A scaled workload, and the HPA KEDA makes for its ScaledObject (keda-hpa-<name>, KEDA's default)."""

    namespace: str
    resource: str
    name: str

    @property
    def hpa(self) -> str:
        return f"keda-hpa-{self.name}"

    def replicas(self, cluster) -> int:
        return kubectl_json(cluster, "get", self.resource, self.name, "-n", self.namespace)["spec"]["replicas"]

    def hpa_status(self, cluster) -> dict:
        return kubectl_json(cluster, "get", "hpa", self.hpa, "-n", self.namespace).get("status", {})

    def condition(self, cluster, kind: str) -> dict:
        return next((c for c in self.hpa_status(cluster).get("conditions", []) if c["type"] == kind), {})


PROD = Target(NAMESPACE, "deployment", NAME)
ZERO = Target(ZERO_NAMESPACE, "deployment", NAME)
MULTINODE = Target(MN_NAMESPACE, "leaderworkerset", MN_NAME)


class Replicas(Poller):
    """Records, when it changes, the workload's wanted and ready replicas and what the HPA reads
    and wants: the replica counts over time."""

    interval = 1.0

    def __init__(self, cluster, target: Target):
        super().__init__(cluster, target.namespace)
        self.target = target
        self.t0 = time.monotonic()
        self.history: list[tuple[float, str]] = []

    def step(self):
        workload = kubectl_json(self.cluster, "get", self.target.resource, self.target.name, "-n", self.namespace)
        status = self.target.hpa_status(self.cluster)
        metric = next((m["external"]["current"].get("averageValue") for m in status.get("currentMetrics") or []
                       if m.get("type") == "External"), None)
        line = (f"replicas {workload['spec']['replicas']} (ready {workload.get('status', {}).get('readyReplicas', 0)}),"
                f" HPA desired {status.get('desiredReplicas')} on {metric if metric is not None else 'no metric'}")
        if not self.history or self.history[-1][1] != line:
            self.history.append((time.monotonic() - self.t0, line))

    def show(self, capsys, case: str) -> None:
        try:
            self.step()  # the state the test ended on, which the last poll may not have seen
        except Exception:  # noqa: BLE001 - the record is for the log only
            pass
        with capsys.disabled():
            print(f"\n  {self.target.resource} replicas over time, {case}:")
            for at, line in self.history:
                print(f"    {at:6.1f}s  {line}")
        self.history.clear()


@pytest.fixture(scope="module")
def keda(cluster, e2e_bin, tmp_path_factory):
    with Keda(cluster, e2e_bin, tmp_path_factory.mktemp("keda"), [NAMESPACE, MN_NAMESPACE, ZERO_NAMESPACE]) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(cluster, tmp_path_factory):
    """Prometheus on loopback, started before `up` so that the stack's trigger can name its
    address; it scrapes what the PodMonitors select (configured once `up` made them)."""
    directory = tmp_path_factory.mktemp("prometheus")
    server = Prometheus(directory, [], lifetime=1800)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator(cluster, prometheus):
    with PrometheusOperator(cluster, [NAMESPACE, MN_NAMESPACE, ZERO_NAMESPACE], prometheus) as running:
        yield running


def pod_monitor_scrape_config(monitor: dict, targets_file: Path) -> dict:
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


def scaled_stack(project, cluster, keda, prometheus, operator, servers, stack: str, base: str, namespace: str,
                 settings: dict, serving: bool = True):
    """A stack like ``base`` in ``namespace``, made as the docs say (the namespace and the API key's
    Secret first), scaling on the test's Prometheus with the windows shortened. `up` waits for the
    ScaledObject's Ready condition, which the real KEDA operator reports: no stand-in does here."""
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", namespace, "--from-literal=api-key=e2e-key")
    project.init_stack_like(stack, base, {
        "namespace": namespace,
        # Destroyed at the end, so that the later tests have the GPU nodes: no protected claim.
        "protectModelVolume": False,
        "autoscalingPrometheusAddress": prometheus.url,
        "autoscalingScaleUpPeriodSeconds": SCALE_UP_PERIOD_SECONDS,
        "autoscalingScaleDownStabilizationSeconds": STABILIZATION_SECONDS,
        "autoscalingScaleDownPeriodSeconds": SCALE_DOWN_PERIOD_SECONDS,
        **settings,
    })
    try:
        project.up(stack, timeout=600)
    except Exception as error:
        raise AssertionError(f"{error}\n{keda.log_tails()}") from None
    servers.scrape_seconds = operator.scrape_seconds(namespace)
    if not serving:
        return
    scaled = kubectl_json(cluster, "get", "scaledobjects", "-n", namespace)["items"][0]
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    prometheus.wait_for(f"the queue of {namespace}'s server in Prometheus", lambda: prometheus.query(query) != [],
                        timeout=servers.scrape_seconds * 2 + SLACK_SECONDS)


@pytest.fixture(scope="module")
def servers(cluster):
    """The fake servers, for whatever server pods the stack runs (from before its `up`)."""
    with FakeServers(cluster, NAMESPACE, PORT_NAME, MODEL) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def stack(project, cluster, keda, prometheus, operator, servers):
    """prod, without node cache or image pre-pull (they do not bear on scaling), nor an ingress
    controller's address to wait for."""
    scaled_stack(project, cluster, keda, prometheus, operator, servers, STACK, "prod", NAMESPACE, {
        "nodeCache": False, "imagePrePull": False, "host": "scaling.ai-serving.company.com",
        "ingressWaitForAddress": False,
    })
    yield project
    project.run("destroy", "--yes", "--skip-preview", stack=STACK, timeout=600, check=False)


@pytest.fixture(scope="module")
def history(stack, cluster):
    with Replicas(cluster, PROD) as recorded:
        yield recorded


def metric_deadline(servers: FakeServers) -> float:
    """From a change of load to the HPA acting on it: a scrape, then the HPA's next sync."""
    return servers.scrape_seconds + 2 * HPA_SYNC_SECONDS + SLACK_SECONDS


def wait_hpa_reads(cluster, target: Target, servers: FakeServers, value: str) -> None:
    def reads() -> bool:
        metrics = target.hpa_status(cluster).get("currentMetrics") or []
        return any(m.get("external", {}).get("current", {}).get("averageValue") == value for m in metrics)
    wait_for(f"the HPA reading {value} requests waiting per replica", reads, metric_deadline(servers), interval=1)


def test_keda_made_the_hpa_from_the_scaled_object(stack, cluster, keda):
    scaled = kubectl_json(cluster, "get", "scaledobject", NAME, "-n", NAMESPACE)
    assert {c["type"]: c["status"] for c in scaled["status"]["conditions"]}["Ready"] == "True"
    hpa = kubectl_json(cluster, "get", "hpa", PROD.hpa, "-n", NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == STABILIZATION_SECONDS
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External" and metric["external"]["target"] == {"type": "AverageValue", "averageValue": str(QUEUE_TARGET)}
    # The metrics API the HPA reads is served through the aggregation layer by KEDA's metrics server.
    assert keda.available()


def test_below_the_threshold_nothing_scales(stack, cluster, servers, history, capsys):
    servers.set_waiting(QUEUE_TARGET - 1)
    wait_hpa_reads(cluster, PROD, servers, str(QUEUE_TARGET - 1))
    # The HPA's decision on that reading is in the same status: one replica is enough.
    assert PROD.hpa_status(cluster)["desiredReplicas"] == 1
    assert PROD.replicas(cluster) == 1
    history.show(capsys, f"{QUEUE_TARGET - 1} requests waiting on one replica")


def test_the_queue_rises_and_the_server_scales_to_two(stack, cluster, servers, history, capsys):
    servers.set_waiting(WAITING_HIGH)
    wait_for("the Deployment scaled to 2 replicas", lambda: PROD.replicas(cluster) == 2,
             metric_deadline(servers), interval=1, diagnose=lambda: json.dumps(PROD.condition(cluster, "AbleToScale")))
    wait_for("both replicas ready", lambda: kubectl_json(cluster, "get", "deployment", NAME, "-n", NAMESPACE)
             ["status"].get("readyReplicas") == 2, 120, interval=1)
    # At most two (autoscalingMaxReplicas), though 16 waiting ask for four.
    wait_hpa_reads(cluster, PROD, servers, str(WAITING_HIGH // 2))
    assert PROD.hpa_status(cluster)["desiredReplicas"] == 2
    history.show(capsys, f"{WAITING_HIGH} requests waiting")


def test_the_metric_disappears_and_nothing_scales_down(stack, cluster, servers, prometheus, history, capsys):
    assert PROD.replicas(cluster) == 2
    servers.serving = False
    # KEDA's trigger refuses an empty result (ignoreNullValues false): the HPA cannot read the metric.
    wait_for("the HPA failing to read the metric", lambda: PROD.condition(cluster, "ScalingActive").get("reason")
             == "FailedGetExternalMetric", metric_deadline(servers) + servers.scrape_seconds * 4, interval=1)
    # Longer than a scale-down would take on a low metric: still two.
    deadline = time.monotonic() + STABILIZATION_SECONDS + 2 * HPA_SYNC_SECONDS
    while time.monotonic() < deadline:
        assert PROD.replicas(cluster) == 2
        time.sleep(1)
    # The missing-metric alert's expression, as `up` applied it, holds on this Prometheus.
    rule = kubectl_json(cluster, "get", "prometheusrules", f"{NAME}-alerts", "-n", NAMESPACE)
    (missing,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "VLLMScalingMetricMissing"]
    assert prometheus.query(missing["expr"]) != [], missing["expr"]
    history.show(capsys, "the metric gone")


def test_back_to_one_replica_only_after_the_stabilization_window(stack, cluster, servers, history, capsys):
    assert PROD.replicas(cluster) == 2
    # The load back first: the HPA keeps no recommendation while it cannot read the metric, so the
    # window must start from a reading that wants two.
    servers.serving = True
    wait_hpa_reads(cluster, PROD, servers, str(WAITING_HIGH // 2))
    servers.set_waiting(0)
    wait_hpa_reads(cluster, PROD, servers, "0")
    # The HPA wants one replica now, but holds two: the window remembers the higher recommendation.
    able = PROD.condition(cluster, "AbleToScale")
    assert PROD.replicas(cluster) == 2 and able.get("reason") == "ScaleDownStabilized", able
    wait_for("the Deployment back to 1 replica", lambda: PROD.replicas(cluster) == 1,
             STABILIZATION_SECONDS + metric_deadline(servers), interval=1)
    history.show(capsys, "the load gone")


@pytest.fixture(scope="module")
def multinode_servers(cluster):
    with FakeServers(cluster, MN_NAMESPACE, PORT_NAME, MODEL) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def multinode_stack(project, cluster, keda, prometheus, operator, multinode_servers):
    """multinode, its groups made by the LeaderWorkerSet stand-in, which maintains the status the
    scale subresource reads (replicas and hpaPodSelector, the leaders)."""
    with LeaderWorkerSetController(cluster, MN_NAMESPACE) as lws:
        scaled_stack(project, cluster, keda, prometheus, operator, multinode_servers, MN_STACK, "multinode", MN_NAMESPACE,
                     {"host": "scaling-mn.ai-serving.company.com", "ingressWaitForAddress": False})
        yield project
        project.run("destroy", "--yes", "--skip-preview", stack=MN_STACK, timeout=600, check=False)
    assert lws.errors == []


def test_a_multinode_server_scales_its_leader_worker_set_through_the_scale_subresource(
        multinode_stack, cluster, multinode_servers, capsys):
    hpa = kubectl_json(cluster, "get", "hpa", MULTINODE.hpa, "-n", MN_NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
                                             "name": MN_NAME}
    with Replicas(cluster, MULTINODE) as history:
        multinode_servers.set_waiting(WAITING_HIGH)
        wait_for("the LeaderWorkerSet scaled to 2 groups", lambda: MULTINODE.replicas(cluster) == 2,
                 metric_deadline(multinode_servers), interval=1,
                 diagnose=lambda: json.dumps(MULTINODE.hpa_status(cluster)))
        # The HPA reads the groups from the scale subresource's status: 16 waiting over 2 groups.
        wait_hpa_reads(cluster, MULTINODE, multinode_servers, str(WAITING_HIGH // 2))
        assert MULTINODE.hpa_status(cluster)["desiredReplicas"] == 2
        history.show(capsys, f"{WAITING_HIGH} requests waiting on a multinode server")


class FakeIngress:
    """An ingress controller's /metrics (ingress-nginx's request counter), for one host, counting
    the requests at the rate the test sets."""

    def __init__(self, host: str):
        self.host, self.rate, self.count, self.since = host, 0.0, 0.0, time.monotonic()
        self.endpoint = MetricsEndpoint(self._render)

    def set_rate(self, per_second: float) -> None:
        now = time.monotonic()
        self.count += self.rate * (now - self.since)
        self.rate, self.since = per_second, now

    def _render(self) -> str:
        count = self.count + self.rate * (time.monotonic() - self.since)
        return ("# HELP nginx_ingress_controller_requests The total number of client requests\n"
                "# TYPE nginx_ingress_controller_requests counter\n"
                f'nginx_ingress_controller_requests{{host="{self.host}",status="200"}} {count}\n')

    def __enter__(self):
        self.endpoint.start()
        return self

    def __exit__(self, *exc):
        self.endpoint.stop()


@pytest.fixture(scope="module")
def ingress(operator):
    with FakeIngress(ZERO_HOST) as fake:
        operator.add_job({"job_name": "serviceMonitor/ingress-nginx/ingress-nginx-controller/0", "honor_labels": True,
                          "scrape_interval": INGRESS_SCRAPE, "scrape_timeout": INGRESS_SCRAPE,
                          "static_configs": [{"targets": [fake.endpoint.address]}]})
        yield fake


@pytest.fixture(scope="module")
def zero_servers(cluster):
    with FakeServers(cluster, ZERO_NAMESPACE, PORT_NAME, MODEL) as fakes:
        yield fakes


@pytest.fixture(scope="module")
def zero_stack(project, cluster, keda, prometheus, operator, zero_servers, ingress):
    """prod as before, allowed to scale to zero, woken by its host's request rate at the ingress
    controller, KEDA polling every POLLING_SECONDS."""
    scaled_stack(project, cluster, keda, prometheus, operator, zero_servers, ZERO_STACK, "prod", ZERO_NAMESPACE, {
        "nodeCache": False, "imagePrePull": False, "host": ZERO_HOST, "ingressWaitForAddress": False,
        "autoscalingMinReplicas": 0, "autoscalingScaleToZero": True, "autoscalingActivationQuery": ACTIVATION_QUERY,
        "autoscalingPollingSeconds": POLLING_SECONDS,
    }, serving=False)
    yield project
    project.run("destroy", "--yes", "--skip-preview", stack=ZERO_STACK, timeout=600, check=False)


def activation_deadline() -> float:
    """From a change of requests at the ingress to KEDA acting on it: two scrapes (a rate), then
    KEDA's next poll."""
    return 2 * seconds(INGRESS_SCRAPE) + 2 * POLLING_SECONDS + SLACK_SECONDS


def test_below_the_activation_threshold_a_server_that_may_scale_to_zero_stays_at_zero(zero_stack, cluster, capsys):
    with Replicas(cluster, ZERO) as history:
        wait_for("the server at zero replicas", lambda: ZERO.replicas(cluster) == 0, activation_deadline(), interval=1)
        scaled = kubectl_json(cluster, "get", "scaledobject", NAME, "-n", ZERO_NAMESPACE)
        active = {c["type"]: c for c in scaled["status"]["conditions"]}["Active"]
        assert active["status"] == "False", active
        # No request at the ingress for longer than KEDA takes to act on one: still none.
        deadline = time.monotonic() + activation_deadline()
        while time.monotonic() < deadline:
            assert ZERO.replicas(cluster) == 0
            time.sleep(1)
        # Idle, not broken: at zero replicas vLLM exports nothing by design, which the
        # ScaledObject must not report as an error (a later `up` waits for its Ready condition).
        scaled = kubectl_json(cluster, "get", "scaledobject", NAME, "-n", ZERO_NAMESPACE)
        ready = {c["type"]: c for c in scaled["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True", ready
        history.show(capsys, "no requests at the ingress")


def test_a_request_at_the_ingress_wakes_the_server(zero_stack, cluster, ingress, capsys):
    with Replicas(cluster, ZERO) as history:
        ingress.set_rate(2)
        wait_for("the server woken to one replica", lambda: ZERO.replicas(cluster) == 1, activation_deadline(),
                 interval=1, diagnose=lambda: json.dumps(kubectl_json(cluster, "get", "scaledobject", NAME, "-n",
                                                                      ZERO_NAMESPACE)["status"]))
        history.show(capsys, "2 requests per second at the ingress")
