"""A stack published through an inference route, and its Endpoint Picker at work.

`up` goes through the real provider and API server: the InferencePool (validated against the
extension's v1.5.0 CRD), the picker's Deployment under Pod Security restricted with a Role that
reads pools and pods and not Secrets, and the HTTPRoute to the pool, awaited until a stand-in
Gateway accepts it.

Then the picker, the real one (gateway-api-inference-extension v1.5.0's
cmd/epp, built with the tools), run with the args and config file of its rendered Deployment
and ConfigMap, as its ServiceAccount, against the local control plane: it watches the
InferencePool `up` created and the server's pods kwok runs, and scrapes fake vLLM servers at the
pods' addresses (inside the tests' network namespace). The stack serves two LoRA adapters, so
the config has the LoRA affinity scorer, and turns flow control on. The test plays Envoy:
each request goes to the picker over ext_proc, and the pod it names is counted.

The spread of requests over the pods in each case is printed with the test log."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from tests.fake_vllm_metrics import Engine, Lora

from .cluster import namespace_with_key, wait_for
from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .inference_extension import (
    Envoy,
    FakeVllmPods,
    completion,
    container_of,
    process,
    service_account_kubeconfig,
    spread,
    with_local_files,
)
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "picker"
NAMESPACE = "ai-serving-picker"
NAME = "vllm-qwen3-0-6b"
MODEL = "qwen3-0.6b"
REPLICAS = 3
SERVER_SELECTOR = "app.kubernetes.io/component=server"
ADAPTERS = ("sql", "poems")


def show(capsys, case: str, counts) -> None:
    with capsys.disabled():
        print(f"\n  picker spread, {case}: " + ", ".join(f"{pod[-5:]}={n}" for pod, n in sorted(counts.items())))


@pytest.fixture(scope="module")
def stack(project, cluster):
    cluster.apply(namespace_with_key(NAMESPACE, "chat-api-key"))
    project.init_stack_like(STACK, "dev", {
        "namespace": NAMESPACE, "host": "chat.example.com", "replicas": REPLICAS,
        "storageAccessMode": "ReadWriteMany", "storageClass": "nfs-client",
        "exposureRoute": "inference", "gatewayName": "public", "gatewayNamespace": "gateways",
        "apiKeySecretName": "chat-api-key", "routeWaitMinutes": 2,
        "loraAdapters": [f"{name}=acme/qwen3-0.6b-{name}-lora:16" for name in ADAPTERS],
        "endpointPickerFlowControl": True,
    })
    with StatusPublisher(cluster, NAMESPACE):
        project.up(STACK, timeout=300)
        assert_next_run_creates_nothing_that_exists(project, STACK, cluster)
    return project


def test_up_creates_the_pool_its_picker_and_the_route_to_it(stack, cluster):
    pool = kubectl_json(cluster, "get", "inferencepools.inference.networking.k8s.io", NAME, "-n", NAMESPACE)
    ref = pool["spec"]["endpointPickerRef"]
    assert {key: ref[key] for key in ("kind", "name", "port", "failureMode")} == {
        "kind": "Service", "name": f"{NAME}-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
    picker = kubectl_json(cluster, "get", "deployment", f"{NAME}-epp", "-n", NAMESPACE)
    assert picker["status"].get("readyReplicas") == 1
    route = kubectl_json(cluster, "get", "httproutes", NAME, "-n", NAMESPACE)
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    # The pool selects every server pod, which the picker's Role may read.
    servers = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", SERVER_SELECTOR)["items"]
    assert len(servers) == REPLICAS
    assert all(pool["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items() for pod in servers)
    account = f"--as=system:serviceaccount:{NAMESPACE}:{NAME}-epp"
    can = lambda *what: cluster.kubectl("auth", "can-i", *what, "-n", NAMESPACE, account, check=False).stdout.strip()  # noqa: E731
    assert can("list", "inferencepools.inference.networking.k8s.io") == "yes" and can("list", "secrets") == "no"
    assert stack.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "http://chat.example.com/v1"


@pytest.fixture(scope="module")
def pods(stack, cluster):
    """The server's pods, by name, with the fake vLLM at each one's address and port."""
    pool = kubectl_json(cluster, "get", "inferencepools.inference.networking.k8s.io", NAME, "-n", NAMESPACE)
    (port,) = [p["number"] for p in pool["spec"]["targetPorts"]]
    items = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", SERVER_SELECTOR)["items"]
    addresses = {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in items}
    assert len(addresses) == REPLICAS and all(addresses.values()), addresses
    with FakeVllmPods(addresses, port, MODEL, NAMESPACE, "0.34.0") as fakes:
        yield fakes


@pytest.fixture(scope="module")
def envoy(stack, pods, cluster, e2e_bin, tmp_path_factory):
    """The picker, as rendered, serving ext_proc; Envoy's side of it."""
    work = tmp_path_factory.mktemp("epp")
    container = container_of(kubectl_json(cluster, "get", "deployment", f"{NAME}-epp", "-n", NAMESPACE))
    config = kubectl_json(cluster, "get", "configmap", f"{NAME}-epp", "-n", NAMESPACE)["data"]
    for file, text in config.items():
        (work / file).write_text(text)
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config"]
    args = with_local_files(container["args"], {mount: work})
    kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, f"{NAME}-epp", work / "kubeconfig")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    log = work / "epp.log"
    with process(e2e_bin / "epp", args, {"KUBECONFIG": str(kubeconfig), "NAMESPACE": NAMESPACE}, log) as epp:
        # TLS: the picker serves ext_proc with a self-signed certificate unless told otherwise.
        envoy = Envoy(e2e_bin, f"127.0.0.1:{ports['grpc']}", tls="--secure-serving=false" not in args,
                      metrics=f"http://127.0.0.1:{ports['metrics']}/metrics")
        try:
            wait_for("the picker seeing every pod of the pool",
                     lambda: epp.poll() is None and envoy.ready_pods() == REPLICAS, 60)
            pods.wait_scraped()
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{log.read_text()[-4000:]}") from None
        yield envoy
        assert epp.poll() is None, log.read_text()[-4000:]


def distinct_prompts(n: int) -> list[str]:
    return [f"{uuid.uuid4().hex} {uuid.uuid4().hex} tell me about request {i}" for i in range(n)]


def test_requests_sharing_a_long_prefix_go_to_the_same_pod(envoy, pods, capsys):
    system = "You are a careful assistant for the accounts team. " * 80  # about 4 kB: many prefix blocks
    answers = envoy.send([completion(MODEL, f"{system}\nQuestion {i}: what is {i} + {i}?") for i in range(12)])
    counts = spread(answers, pods)
    show(capsys, "12 requests sharing a 4 kB prefix", counts)
    assert sorted(counts.values()) == [0, 0, 12], counts


def test_requests_without_a_shared_prefix_spread_over_idle_pods(envoy, pods, capsys):
    counts = spread(envoy.send([completion(MODEL, p) for p in distinct_prompts(30)]), pods)
    show(capsys, "30 distinct prompts, idle pods", counts)
    # Ties between equal pods are the picker's to break; what matters is that it spreads.
    assert sum(1 for n in counts.values() if n) >= 2, counts


def test_a_pod_with_a_long_queue_and_a_full_kv_cache_receives_none(envoy, pods, capsys):
    """10 waiting and 90% of the KV cache: that pod's saturation is 2 (10/5), the pool's mean 2/3,
    so flow control lets requests through, and the scorers keep them off that pod."""
    busy = sorted(pods.pods)[0]
    pods.set(busy, Engine(waiting=10, running=16, kv_cache=0.9))
    try:
        pods.wait_scraped()
        counts = spread(envoy.send([completion(MODEL, p) for p in distinct_prompts(30)]), pods)
        show(capsys, "30 distinct prompts, one pod with 10 waiting and 90% KV cache", counts)
        assert counts[busy] == 0 and sum(counts.values()) == 30, counts
    finally:
        pods.set(busy, Engine())
        pods.wait_scraped()


def test_a_pod_that_is_not_ready_receives_none(envoy, pods, cluster, capsys):
    unready = sorted(pods.pods)[-1]
    condition = {"type": "Ready", "status": "False", "reason": "e2e", "lastTransitionTime": None}

    def set_ready(status: str):
        pod = kubectl_json(cluster, "get", "pod", unready, "-n", NAMESPACE)
        conditions = [c for c in pod["status"]["conditions"] if c["type"] != "Ready"]
        conditions.append({**condition, "status": status})
        cluster.kubectl("patch", "pod", unready, "-n", NAMESPACE, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"conditions": conditions}}))

    set_ready("False")
    try:
        wait_for("the picker dropping the pod", lambda: envoy.ready_pods() == REPLICAS - 1, 30)
        counts = spread(envoy.send([completion(MODEL, p) for p in distinct_prompts(30)]), pods)
        show(capsys, "30 distinct prompts, one pod not Ready", counts)
        assert counts[unready] == 0 and sum(counts.values()) == 30, counts
    finally:
        set_ready("True")
        wait_for("the picker taking the pod back", lambda: envoy.ready_pods() == REPLICAS, 30)


def test_an_adapters_requests_go_to_the_pod_that_has_it_loaded(envoy, pods, capsys):
    """One slot per pod (max_lora 1): the first pod runs sql, the second poems (full), the third
    none (a free slot)."""
    loaded, full, free = sorted(pods.pods)
    pods.set(loaded, lora=Lora(max_lora=1, running=("sql",)))
    pods.set(full, lora=Lora(max_lora=1, running=("poems",)))
    pods.set(free, lora=Lora(max_lora=1))
    try:
        pods.wait_scraped()
        counts = spread(envoy.send([completion("sql", p) for p in distinct_prompts(20)]), pods)
        show(capsys, "20 requests for adapter sql, loaded on one pod, another pod's slot taken", counts)
        assert counts == {loaded: 20, full: 0, free: 0}, counts
        counts = spread(envoy.send([completion("poems", p) for p in distinct_prompts(20)]), pods)
        show(capsys, "20 requests for adapter poems", counts)
        assert counts == {loaded: 0, full: 20, free: 0}, counts
    finally:
        for pod in pods.pods:
            pods.set(pod, lora=None)
        pods.wait_scraped()


def test_a_request_without_a_body_goes_to_a_ready_pod(envoy, pods):
    """GET /v1/models: no body, no model to score by; the picker sends it to any ready pod (the
    model's own list, which the Gateway reached by the X-Gateway-Model-Name the client set)."""
    listing = {"headers": {":method": "GET", ":path": "/v1/models", ":authority": "chat.example.com",
                           "authorization": "Bearer test-key", "x-gateway-model-name": MODEL}}
    counts = spread(envoy.send([listing] * 6), pods)
    assert sum(counts.values()) == 6, counts


def test_flow_control_holds_requests_while_the_pool_is_saturated_and_sends_them_when_it_is_not(envoy, pods, capsys):
    """Every pod at 10 waiting (saturation 2 each): a request waits in the picker's queue, and goes
    out when two pods have drained (mean 2/3), to one of them."""
    busy = Engine(waiting=10, running=16, kv_cache=0.5)
    for pod in pods.pods:
        pods.set(pod, busy)
    answers: list[dict] = []
    try:
        pods.wait_scraped()
        waiting = threading.Thread(target=lambda: answers.extend(envoy.send([completion(MODEL, "held")], deadline_seconds=60)))
        waiting.start()
        wait_for("the request held in the picker's queue",
                 lambda: (envoy.gauge("inference_extension_flow_control_queue_size") or 0) >= 1, 30)
        assert not answers
        drained = sorted(pods.pods)[:2]
        for pod in drained:
            pods.set(pod, Engine())
        waiting.join(60)
        counts = spread(answers, pods)
        show(capsys, "1 request held while every pod had 10 waiting, sent when two drained", counts)
        assert sum(counts[pod] for pod in drained) == 1, counts
    finally:
        for pod in pods.pods:
            pods.set(pod, Engine())
        pods.wait_scraped()
