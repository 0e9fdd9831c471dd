"""The multinode stack with the real CLI and provider: a LeaderWorkerSet group over two kwok GPU
nodes, with a stand-in for the LeaderWorkerSet controller (sigs.k8s.io/lws is not served as a Go
module) that, like the real one, makes the groups' headless Services, their pods and the status
the provider awaits."""

from __future__ import annotations

import json

import pytest

from .cluster import namespace_with_key
from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .standins import LeaderWorkerSetController, StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "multinode"
NAMESPACE = "ai-serving-mn"
NAME = "vllm-qwen3-235b-mn"


@pytest.fixture(scope="module")
def multinode(project, cluster):
    # The namespace and the API key's Secret made first, as the docs have prod's made.
    cluster.apply(namespace_with_key(NAMESPACE, "vllm-api-key"))
    project.run("stack", "init", STACK)
    return project


def test_multinode_up_leaves_the_set_its_services_and_serves_behind_its_own(multinode, cluster):
    with LeaderWorkerSetController(cluster, NAMESPACE) as lws, StatusPublisher(cluster, NAMESPACE):
        multinode.up(STACK, timeout=300)
        assert_next_run_creates_nothing_that_exists(multinode, STACK, cluster)
    assert lws.errors == []

    services = {s["metadata"]["name"]: s for s in kubectl_json(cluster, "get", "services", "-n", NAMESPACE)["items"]}
    # The API Service, the program's, in front of the leaders; the group's headless Service, the controller's.
    assert services[NAME]["spec"]["clusterIP"] != "None"
    assert services[NAME]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pulumi"
    assert services[f"{NAME}-0"]["spec"]["clusterIP"] == "None"
    assert services[f"{NAME}-0"]["metadata"]["ownerReferences"][0]["kind"] == "LeaderWorkerSet"

    pods = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", f"leaderworkerset.sigs.k8s.io/name={NAME}")["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == [f"{NAME}-0", f"{NAME}-0-1"]
    assert len({p["spec"]["nodeName"] for p in pods}) == 2, "one group spans two nodes"
    slices = kubectl_json(cluster, "get", "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={NAME}")
    addresses = [a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]]
    leader = next(p for p in pods if p["metadata"]["name"] == f"{NAME}-0")
    assert addresses == [leader["status"]["podIP"]], "the API Service selects the leader alone"

    # The scale subresource an autoscaler uses reads the status the controller maintains.
    scale = json.loads(cluster.kubectl(
        "get", "--raw", f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NAMESPACE}/leaderworkersets/{NAME}/scale").stdout)
    assert scale["status"]["replicas"] == 1
    assert scale["status"]["selector"] == f"leaderworkerset.sigs.k8s.io/name={NAME},leaderworkerset.sigs.k8s.io/worker-index=0"
    assert multinode.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "https://vllm-mn.ai-serving.company.com/v1"
