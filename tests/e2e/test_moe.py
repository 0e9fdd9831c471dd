"""The moe stack with the real CLI and provider: a data-expert LeaderWorkerSet group over two kwok
80 GB GPU nodes, the leader serving the API over 16 engines, the worker headless, under the stand-in
LeaderWorkerSet controller."""

from __future__ import annotations

import pytest

from .cluster import namespace_with_key
from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .standins import LeaderWorkerSetController, StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "moe"
NAMESPACE = "ai-serving-ep"
NAME = "vllm-qwen3-235b-ep"


@pytest.fixture(scope="module")
def moe(project, cluster):
    # The namespace and the API key's Secret made first, as the docs have prod's made.
    cluster.apply(namespace_with_key(NAMESPACE, "vllm-api-key"))
    project.run("stack", "init", STACK)
    return project


def test_moe_up_runs_one_group_of_local_engines_per_node(moe, cluster):
    with LeaderWorkerSetController(cluster, NAMESPACE) as lws, StatusPublisher(cluster, NAMESPACE):
        moe.up(STACK, timeout=300)
        assert_next_run_creates_nothing_that_exists(moe, STACK, cluster)
    assert lws.errors == []

    pods = {p["metadata"]["name"]: p for p in kubectl_json(
        cluster, "get", "pods", "-n", NAMESPACE, "-l", f"leaderworkerset.sigs.k8s.io/name={NAME}")["items"]}
    assert sorted(pods) == [f"{NAME}-0", f"{NAME}-0-1"]
    assert len({p["spec"]["nodeName"] for p in pods.values()}) == 2, "one group spans two nodes"
    leader, worker = pods[f"{NAME}-0"]["spec"]["containers"][0], pods[f"{NAME}-0-1"]["spec"]["containers"][0]
    # What the API server admitted: 8 GPUs and the offload buffers' memory on every pod; the
    # worker headless from rank 8, without the API key.
    for container in (leader, worker):
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["resources"]["limits"]["memory"] == "224Gi"
        assert container["args"][container["args"].index("--data-parallel-size") + 1] == "16"
    assert "--headless --data-parallel-start-rank" in worker["command"][2]
    assert "VLLM_API_KEY" not in {e["name"] for e in worker["env"]}
    assert moe.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "https://vllm-ep.ai-serving.company.com/v1"
