"""A replica larger than one node: a LeaderWorkerSet group.

One group is one replica, every pod with its GPU fragment and the same read-only model claim.
The layout (``components.layout``) decides what the pods run. On vLLM's own multi-node path
(``multiprocess_group``: a data-expert group, or a pipeline on releases with ``--nnodes``) every
pod runs ``vllm serve``, the leader with the API, the workers headless and joining it. On releases
without it (0.11.0), a pipeline runs over Ray: a leader pod running the Ray head and the API
server, and workers joining its Ray cluster (``ray_group``).

Over Ray: vLLM spreads the model with tensor parallelism inside a node and pipeline parallelism
across nodes (docs: serving/parallelism_scaling; deployment/frameworks/lws), through the Ray
executor. Ray must be in the image: vLLM 0.11.0's wheel requires ray[cgraph]>=2.48.0. The Ray
cluster is started by vLLM's own helper in the image (examples/online_serving/multi-node-serving.sh,
copied to /vllm-workspace/examples by vLLM's Dockerfile), which waits for the whole group.
LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) injects LWS_LEADER_ADDRESS, LWS_GROUP_SIZE and
LWS_WORKER_INDEX, restarts the group as a unit, and rolls out and scales whole groups.
"""

import math

from .layout import LEADER_ADDRESS_ENV, GroupScripts
from .probes import HEALTH_PATH, probes_with

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_KIND = "LeaderWorkerSet"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
"""The label LWS puts on every pod of a set (api/leaderworkerset/v1 SetNameLabelKey)."""
RAY_HELPER = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"
RAY_EXECUTOR_FLAGS = ["--distributed-executor-backend", "ray"]
RESTART_POLICY = "RecreateGroupAfterStart"
"""Recreate a group when one of its pods restarts, but only once every pod has started (none is
Pending: api/leaderworkerset/v1/leaderworkerset_types.go). RecreateGroupOnPodRestart would also
recreate it while one pod still waits for a node or its image, possibly on fresh nodes."""


def leader_script(wait_seconds: int) -> str:
    """Start the Ray head, wait up to wait_seconds for the group, then run the vLLM command.

    The helper's leader and worker both take --ray_init_timeout (default 300 s; vLLM
    examples/online_serving/multi-node-serving.sh). The vLLM command arrives as "$0" "$@": no
    value from configuration is spliced into shell text, only this whole number.
    """
    return f'bash {RAY_HELPER} leader --ray_cluster_size="$LWS_GROUP_SIZE" --ray_init_timeout={int(wait_seconds)} && exec "$0" "$@"'


def worker_script(wait_seconds: int) -> str:
    """Join the leader's Ray head, retrying for up to wait_seconds."""
    return f'exec bash {RAY_HELPER} worker --ray_address="$LWS_LEADER_ADDRESS" --ray_init_timeout={int(wait_seconds)}'
# A worker is alive and ready while its own Ray node is registered and alive in the group's Ray
# cluster, as KServe's multi-node runtime probes its workers (huggingfaceserver health_check.py,
# registered_node). A worker whose raylet dies also ends `ray start --block`, so the pod restarts
# and LeaderWorkerSet recreates the group.
RAY_NODE_CHECK = (
    "import ray\n"
    "ray.init(address='auto', logging_level='ERROR', log_to_driver=False)\n"
    "me = ray.util.get_node_ip_address()\n"
    "raise SystemExit(0 if any(n['Alive'] and n['NodeManagerAddress'] == me for n in ray.nodes()) else 1)\n"
)
SUBDOMAIN_POLICY = "UniquePerReplica"
"""How LWS names the groups' headless Services (api/leaderworkerset/v1 SubdomainPolicy)."""


def in_shell(container: dict, script: str) -> dict:
    """The container running script with its command and args as "$0" "$@"."""
    return {**container, "command": ["sh", "-c", script, *container["command"][:1]], "args": [*container["command"][1:], *container["args"]]}


def leader_container(server: dict, wait_seconds: int) -> dict:
    """The server container (already with the Ray executor's flags, its startup probe covering the
    wait) as the group's leader: start the Ray head, wait for the workers, then run vllm serve."""
    return in_shell(server, leader_script(wait_seconds))


def ray_node_probes(wait_seconds: int) -> dict[str, dict]:
    """A worker's probes: its Ray node registered in the group's cluster, within the time the
    helper retries joining it, and a minute more."""
    check = {"exec": {"command": ["python3", "-c", RAY_NODE_CHECK]}}
    period = 10
    return {
        "startupProbe": {**check, "periodSeconds": period, "timeoutSeconds": 20, "failureThreshold": math.ceil(wait_seconds / period) + 6},
        "readinessProbe": {**check, "periodSeconds": 30, "timeoutSeconds": 20, "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": 30, "timeoutSeconds": 20, "failureThreshold": 4},
    }


WORKER_KEPT = ("image", "env", "resources", "volumeMounts", "securityContext")
"""What a worker keeps of the server container: the same GPUs, model volume and environment."""


def worker_container(server: dict, wait_seconds: int) -> dict:
    """A worker: a Ray node with the same GPUs, model volume and environment, and no API."""
    return {
        "name": "ray-worker",
        "command": ["sh", "-c", worker_script(wait_seconds)],
        **{key: server[key] for key in WORKER_KEPT if key in server},
        **ray_node_probes(wait_seconds),
    }


def server_of(pod: dict) -> dict:
    (server,) = [c for c in pod["containers"] if c["name"] == "vllm"]
    return server


def ray_group(leader_pod: dict, wait_seconds: int) -> tuple[dict, dict]:
    """The leader's and the workers' pod specs of a pipeline group, from the server's pod (its
    server already with the Ray executor's flags, its startup probe covering the wait)."""
    server = server_of(leader_pod)
    leader = {**leader_pod, "containers": [leader_container(server, wait_seconds)]}
    return leader, {**leader_pod, "containers": [worker_container(server, wait_seconds)]}


def leader_health_check(port: int) -> str:
    """Python that exits 0 when the group's leader answers /health on its API port."""
    return (
        "import os, urllib.request\n"
        f"urllib.request.urlopen('http://%s:{int(port)}{HEALTH_PATH}' % os.environ['{LEADER_ADDRESS_ENV}'], timeout=4)\n"
    )


def multiprocess_group(
    leader_pod: dict, scripts: GroupScripts, port: int, startup_minutes: int, leader_env: tuple[str, ...]
) -> tuple[dict, dict]:
    """The leader's and the workers' pod specs of a group that runs vLLM's own multi-node path (a
    data-expert group, or a pipeline on releases with --nnodes), from the server's pod (its server
    already with the layout's flags, its startup probe covering the group's start).

    A worker runs the same ``vllm serve``, headless: no API, no port, none of leader_env (the API
    key). Its share of the engine is ready when the leader's front end is, which serves only once
    every worker of the group has reported ready; so its probes ask the leader's /health, on the
    leader's own timing: a group whose API stays down after it started is recreated through any of
    its pods.
    """
    server = server_of(leader_pod)
    worker = {
        "name": "vllm-worker",
        **{key: server[key] for key in ("command", "args", *WORKER_KEPT) if key in server},
        "env": [variable for variable in server.get("env", []) if variable["name"] not in leader_env],
        **probes_with({"exec": {"command": ["python3", "-c", leader_health_check(port)]}}, startup_minutes),
    }
    return (
        {**leader_pod, "containers": [in_shell(server, scripts.leader)]},
        {**leader_pod, "containers": [in_shell(worker, scripts.worker)]},
    )


def lws_spec(
    *,
    leader_pod: dict,
    worker_pod: dict,
    leader_labels: dict,
    worker_labels: dict,
    annotations: dict,
    nodes: int,
    replicas: int | None,
    rolling: dict,
) -> dict:
    """The LeaderWorkerSet: groups of `nodes` pods, recreated together, rolled out group by group;
    `rolling` is its maxSurge and maxUnavailable."""
    metadata = {"annotations": annotations} if annotations else {}
    spec: dict = {
        "leaderWorkerTemplate": {
            "size": nodes,
            "restartPolicy": RESTART_POLICY,
            "leaderTemplate": {"metadata": {"labels": leader_labels, **metadata}, "spec": leader_pod},
            "workerTemplate": {"metadata": {"labels": worker_labels, **metadata}, "spec": worker_pod},
        },
        "rolloutStrategy": {
            "type": "RollingUpdate",
            "rollingUpdateConfiguration": rolling,
        },
        # Workers start with the leader: its readiness waits for them (the Ray cluster, or the
        # engines' handshake), so LeaderReady would never start them.
        "startupPolicy": "LeaderCreated",
        # A headless Service per group, named after its leader pod (<set>-<group>), for the
        # group's DNS. The default, Shared, names one Service after the set itself, which is the
        # name of the API Service in front of the leaders (lws pkg/controllers:
        # CreateHeadlessServiceIfNotExists with lws.Name, or with the leader pod's name here).
        "networkConfig": {"subdomainPolicy": SUBDOMAIN_POLICY},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return spec


def group_traffic(name: str) -> dict:
    """Pods of one LeaderWorkerSet talk to each other on every port (Ray, NCCL)."""
    group = {"podSelector": {"matchLabels": {LWS_NAME_LABEL: name}}}
    return {
        "podSelector": {"matchLabels": {LWS_NAME_LABEL: name}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [group]}],
        "egress": [{"to": [group]}],
    }
