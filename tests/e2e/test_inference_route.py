"""A stack published through an inference route: the real provider and API server take the
InferencePool (validated against the extension's v1.5.0 CRD), the Endpoint Picker's Deployment
under Pod Security restricted, and the HTTPRoute to the pool, which `up` awaits until the Gateway
(a stand-in) accepts it. kwok runs no container: the picker's routing itself is not exercised."""

from __future__ import annotations

import pytest

from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "inference"
NAMESPACE = "ai-serving-inference"
NAME = "vllm-qwen3-0-6b"


@pytest.fixture(scope="module")
def inference(project):
    project.init_stack_like(STACK, "dev", {
        "namespace": NAMESPACE, "host": "chat.example.com",
        "exposureRoute": "inference", "gatewayName": "public",
        "gatewayNamespace": "gateways", "apiKeySecretName": "chat-api-key",
        "routeWaitMinutes": 2,
    })
    return project


def test_up_creates_the_pool_its_picker_and_the_route_to_it(inference, cluster):
    with StatusPublisher(cluster, NAMESPACE):
        inference.up(STACK, timeout=300)
        assert_next_run_creates_nothing_that_exists(inference, STACK, cluster)
    pool = kubectl_json(cluster, "get", "inferencepools.inference.networking.k8s.io", NAME, "-n", NAMESPACE)
    ref = pool["spec"]["endpointPickerRef"]
    assert {key: ref[key] for key in ("kind", "name", "port", "failureMode")} == {
        "kind": "Service", "name": f"{NAME}-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
    picker = kubectl_json(cluster, "get", "deployment", f"{NAME}-epp", "-n", NAMESPACE)
    assert picker["status"].get("readyReplicas") == 1
    route = kubectl_json(cluster, "get", "httproutes", NAME, "-n", NAMESPACE)
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    # The pool selects the server's pods, which the picker's Role may read.
    (server,) = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= server["metadata"]["labels"].items()
    allowed = cluster.kubectl("auth", "can-i", "list", "inferencepools.inference.networking.k8s.io", "-n", NAMESPACE,
                              f"--as=system:serviceaccount:{NAMESPACE}:{NAME}-epp", check=False)
    assert allowed.stdout.strip() == "yes"
    denied = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", NAMESPACE,
                             f"--as=system:serviceaccount:{NAMESPACE}:{NAME}-epp", check=False)
    assert denied.stdout.strip() == "no"
    assert inference.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "http://chat.example.com/v1"
