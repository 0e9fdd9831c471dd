"""A replica larger than one node: the multinode stack's LeaderWorkerSet group, its wiring,
and the layout rules."""

import pytest
from conftest import ROOT, project_with_stack
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors

from vllm_serving_components.multinode import LWS_NAME_LABEL, RAY_NODE_CHECK, leader_script, worker_script
from vllm_serving_components.readiness import rolled_out
from stack.config import ConfigError
from stack.render import render_stack


@pytest.fixture(scope="module")
def multinode():
    return render_stack("multinode", ROOT)


def templates(rendering):
    group = rendering.only("LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    return group, group["leaderTemplate"], group["workerTemplate"]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_every_object_validates_against_kubernetes_and_the_lws_crd(multinode, version):
    errors = {f"{o.kind}/{o.name}": schema_errors(o.manifest, version) for o in multinode.objects}
    assert {name: found for name, found in errors.items() if found} == {}


def test_one_replica_is_a_group_of_two_nodes_restarted_as_a_unit_once_started(multinode):
    lws = multinode.only("LeaderWorkerSet")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert "Deployment" not in {o.kind for o in multinode.objects}
    group, _, _ = templates(multinode)
    # A pod still Pending (a node scaling up, an image pulling) does not recreate the group.
    assert group["size"] == 2 and group["restartPolicy"] == "RecreateGroupAfterStart"
    # One to two groups under a 32-GPU quota: a new group starts beside the old one at one group;
    # at two, one old group stops first (50% of 2 rounds down to 1) and the other keeps serving.
    assert lws["spec"]["rolloutStrategy"] == {"type": "RollingUpdate", "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": "50%"}}
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    assert "replicas" not in lws["spec"], "the autoscaler owns the groups"


def test_the_leader_runs_the_engine_and_the_api_and_the_headless_worker_joins_it(multinode):
    """vLLM's own multi-node executor (0.34.0): every pod runs vllm serve with --nnodes, the leader
    as node 0 and the master, the worker headless as node LWS_WORKER_INDEX."""
    _, leader, worker = templates(multinode)
    (server,) = leader["spec"]["containers"]
    (joiner,) = worker["spec"]["containers"]
    for container in (server, joiner):
        assert container["command"][:2] == ["sh", "-c"] and container["command"][3:] == ["vllm"]
        flags = container["args"]
        assert flags[:2] == ["serve", "/models/Qwen/Qwen3-235B-A22B-Instruct-2507/master"]
        for flag, value in [("--tensor-parallel-size", "8"), ("--pipeline-parallel-size", "2"),
                            ("--distributed-executor-backend", "mp"), ("--nnodes", "2")]:
            assert flags[flags.index(flag) + 1] == value
    assert server["command"][2] == 'exec "$0" "$@" --master-addr "$LWS_LEADER_ADDRESS" --node-rank 0'
    assert joiner["command"][2] == 'exec "$0" "$@" --master-addr "$LWS_LEADER_ADDRESS" --node-rank "$LWS_WORKER_INDEX" --headless'
    assert "multi-node-serving.sh" not in server["command"][2] + joiner["command"][2]
    # The leader's startup budget covers the wait for its group (a pull, 15 min, and 5), then the load (60 min).
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] == (20 + 60) * 60
    # The worker has no API: it probes the leader's, on the leader's timing, and has no key.
    assert "ports" not in joiner and "VLLM_API_KEY" not in {e["name"] for e in joiner["env"]}
    assert "os.environ['LWS_LEADER_ADDRESS']" in joiner["readinessProbe"]["exec"]["command"][2]
    assert joiner["startupProbe"]["failureThreshold"] == server["startupProbe"]["failureThreshold"]


@pytest.fixture(scope="module")
def over_ray(tmp_path_factory):
    """The multinode stack on 0.11.0, which has no multi-node executor of its own (no --nnodes)."""
    tmp = tmp_path_factory.mktemp("ray")
    return render_stack(project_with_stack(tmp, {"image": "vllm/vllm-openai:v0.11.0"}, base="multinode"), tmp)


def test_on_0_11_the_leader_runs_the_ray_head_and_the_api_and_the_workers_join_it(over_ray):
    _, leader, worker = templates(over_ray)
    (server,) = leader["spec"]["containers"]
    # The group's pods wait for each other one image pull (15 min) and the margin (5 min).
    assert server["command"] == ["sh", "-c", leader_script(1200), "vllm"]
    assert "--ray_init_timeout=1200 &&" in server["command"][2]
    assert server["args"][:2] == ["serve", "/models/Qwen/Qwen3-235B-A22B-Instruct-2507/master"]
    flags = server["args"]
    for flag, value in [("--tensor-parallel-size", "8"), ("--pipeline-parallel-size", "2"), ("--distributed-executor-backend", "ray")]:
        assert flags[flags.index(flag) + 1] == value
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= server.keys()
    # The leader's startup budget covers the wait for its group, then the model's load (60 min).
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] == (20 + 60) * 60
    (joiner,) = worker["spec"]["containers"]
    assert joiner["command"] == ["sh", "-c", worker_script(1200)]
    assert joiner["command"][2].endswith('--ray_address="$LWS_LEADER_ADDRESS" --ray_init_timeout=1200')
    assert "ports" not in joiner
    # The worker's probes: its own Ray node alive in the group's cluster, within the helper's join time.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert joiner[probe]["exec"]["command"] == ["python3", "-c", RAY_NODE_CHECK]
    assert joiner["startupProbe"]["failureThreshold"] * joiner["startupProbe"]["periodSeconds"] == 1200 + 60
    assert "n['NodeManagerAddress'] == me" in RAY_NODE_CHECK


def test_every_pod_has_its_gpus_the_same_model_claim_and_memory_backed_shm(multinode):
    _, leader, worker = templates(multinode)
    for pod in (leader["spec"], worker["spec"]):
        (main,) = pod["containers"]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"name": "models", "persistentVolumeClaim": {"claimName": "vllm-qwen3-235b-mn-models", "readOnly": True}} in pod["volumes"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}} in pod["volumes"]
        (check,) = pod["initContainers"]
        assert {"name": "MODEL_PATH", "value": "/models/Qwen/Qwen3-235B-A22B-Instruct-2507/master"} in check["env"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "eth0"
        assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchExpressions"][0]["values"] == ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"]


def test_the_service_selects_the_leaders_alone(multinode):
    selector = multinode.only("Service")["spec"]["selector"]
    _, leader, worker = templates(multinode)
    assert selector.items() <= leader["metadata"]["labels"].items()
    assert not selector.items() <= worker["metadata"]["labels"].items()
    assert multinode.options("Service").depends_on >= {"LeaderWorkerSet/vllm-qwen3-235b-mn"}


def test_pulumi_waits_for_the_groups_within_timeouts_for_groups(multinode):
    lws = multinode.only("LeaderWorkerSet")
    # Not LWS's Available (every group ready, which counts groups an autoscaler added): the
    # promised group on the current template (components/readiness.py).
    assert lws["metadata"]["annotations"] == rolled_out(1)
    # Create: a pull (15), the group's wait (20), the load (60) and the margin (5). Update: two
    # groups at most, one at a time, each also draining (3).
    assert multinode.options("LeaderWorkerSet").timeouts == {"create": "100m", "update": "206m"}


def test_scaling_disruption_and_traffic_count_whole_groups(multinode):
    target = multinode.only("ScaledObject")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "vllm-qwen3-235b-mn"}
    # Down to one group of two pods: both must stay (75% of 2 rounds up to 2); of two groups, one
    # pod may go (75% of 4 is 3), which stops one group while the other serves.
    assert multinode.only("PodDisruptionBudget")["spec"] == {"minAvailable": "75%", "selector": {"matchLabels": {LWS_NAME_LABEL: "vllm-qwen3-235b-mn"}}}
    group = multinode.find("NetworkPolicy", "vllm-qwen3-235b-mn-group")["spec"]
    peers = {"podSelector": {"matchLabels": {LWS_NAME_LABEL: "vllm-qwen3-235b-mn"}}}
    assert group["ingress"] == [{"from": [peers]}] and group["egress"] == [{"to": [peers]}]
    assert multinode.only("ResourceQuota")["spec"]["hard"] == {"requests.nvidia.com/gpu": "32"}
    rules = multinode.only("PrometheusRule")["spec"]["groups"][0]["rules"]
    ready = next(r for r in rules if r["alert"] == "VLLMPodsNotReady")["expr"]
    assert 'kube_statefulset_status_replicas_ready{namespace="ai-serving-mn",statefulset="vllm-qwen3-235b-mn"}' in ready


def test_capacity_counts_the_whole_group(multinode):
    assert multinode.outputs["gpuCapacity"]["weightsGBPerGpu"] == 29.38


def test_infiniband_gets_ipc_lock_and_nothing_more(tmp_path):
    rendering = render_stack(project_with_stack(tmp_path, {"ncclIbHca": "mlx5"}, base="multinode"), tmp_path)
    _, leader, worker = templates(rendering)
    for pod in (leader["spec"], worker["spec"]):
        assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
        assert pod["initContainers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "NCCL_IB_HCA", "value": "mlx5"} in pod["containers"][0]["env"]
    labels = rendering.only("Namespace")["metadata"]["labels"]
    assert labels == {"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}


def test_pipeline_parallelism_inside_one_node_stays_a_deployment(tmp_path):
    settings = {"tensorParallelSize": 1, "pipelineParallelSize": 2, "gpuCount": 2, "hamiMemoryMiB": 0, "hamiCores": 0,
                "gpuBackend": "nvidia", "memory": "64Gi"}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    assert "LeaderWorkerSet" not in {o.kind for o in rendering.objects}


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"pipelineParallelSize": 1}, "tensorParallelSize", "(8 x 1) must equal the GPUs of the replica (2 nodes x 8)"),
        ({"tensorParallelSize": 16, "pipelineParallelSize": 1}, "tensorParallelSize", "tensor parallelism stays inside a node"),
        ({"gpuCount": 20, "tensorParallelSize": 4, "pipelineParallelSize": 5, "gpuQuota": 40}, "gpuCount", "not a whole number of nodes"),
        ({"gpuBackend": "hami", "hamiMemoryMiB": 40000}, "gpusPerNode", "whole GPUs"),
        ({"storageAccessMode": "ReadWriteOnce"}, "storageAccessMode", "up to 4 server pods"),
        ({"autoscalingMaxReplicas": 3}, "autoscalingMaxReplicas", "(3 x 16 = 48 GPUs) is above gpuQuota (32)"),
        # A GPU mistake alone: the server's rules still see a pod's GPUs (8), not the replica's (16).
        ({"gpuMigProfile": "3g.40gb"}, "gpuMigProfile", "is a mig setting but the backend is nvidia"),
    ],
)
def test_layout_mistakes(tmp_path, settings, key, words):
    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, settings, base="multinode"), tmp_path)
    assert [(p.key, words in p.message) for p in raised.value.problems] == [(key, True)]
