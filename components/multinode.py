"""A replica larger than one node: a LeaderWorkerSet group running vLLM over Ray.

One group is one replica: a leader pod running the Ray head and the OpenAI API server, and
workers joining its Ray cluster, every pod with its GPU fragment and the same read-only model
claim. vLLM spreads the model with tensor parallelism inside a node and pipeline parallelism
across nodes (docs: serving/parallelism_scaling; deployment/frameworks/lws), through the
Ray executor; vLLM 0.11.0 has no other multi-node executor (no --nnodes). Ray must be in the
image: vLLM 0.11.0's wheel requires ray[cgraph]>=2.48.0, 0.34.0's requires no Ray at all (its
METADATA; dropped from vLLM's requirements by 0.19.1, ai-dynamo/dynamo PR #8515), so a 0.34.0
image runs this only if its Dockerfile installs Ray separately (not verified here). The Ray cluster is
started by vLLM's own helper in the image (examples/online_serving/multi-node-serving.sh,
copied to /vllm-workspace/examples by vLLM's Dockerfile), which waits for the whole group; its
arguments read the same at vllm-project/vllm 2584e94bc2b500b84af054a71559f04e60c4aec2 (the copy
available here; the v0.34.0 tag's could not be read).
LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) injects LWS_LEADER_ADDRESS, LWS_GROUP_SIZE and
LWS_WORKER_INDEX, restarts the group as a unit, and rolls out and scales whole groups.
"""

import math

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


def leader_container(server: dict, wait_seconds: int) -> dict:
    """The server container (already with the Ray executor's flags, its startup probe covering the
    wait) as the group's leader: start the Ray head, wait for the workers, then run vllm serve."""
    script = leader_script(wait_seconds)
    return {**server, "command": ["sh", "-c", script, *server["command"][:1]], "args": [*server["command"][1:], *server["args"]]}


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


def worker_container(server: dict, wait_seconds: int) -> dict:
    """A worker: a Ray node with the same GPUs, model volume and environment, and no API."""
    kept = ("image", "env", "resources", "volumeMounts", "securityContext")
    return {
        "name": "ray-worker",
        "command": ["sh", "-c", worker_script(wait_seconds)],
        **{key: server[key] for key in kept if key in server},
        **ray_node_probes(wait_seconds),
    }


def lws_spec(
    *,
    leader_pod: dict,
    leader_labels: dict,
    worker_labels: dict,
    annotations: dict,
    nodes: int,
    replicas: int | None,
    rolling: dict,
    wait_seconds: int,
) -> dict:
    """The LeaderWorkerSet: groups of `nodes` pods, recreated together, rolled out group by group;
    `rolling` is its maxSurge and maxUnavailable, `wait_seconds` how long a group's pods wait for
    each other to start."""
    (server,) = [c for c in leader_pod["containers"] if c["name"] == "vllm"]
    worker_pod = {**leader_pod, "containers": [worker_container(server, wait_seconds)]}
    leader = {**leader_pod, "containers": [leader_container(server, wait_seconds)]}
    metadata = {"annotations": annotations} if annotations else {}
    spec: dict = {
        "leaderWorkerTemplate": {
            "size": nodes,
            "restartPolicy": RESTART_POLICY,
            "leaderTemplate": {"metadata": {"labels": leader_labels, **metadata}, "spec": leader},
            "workerTemplate": {"metadata": {"labels": worker_labels, **metadata}, "spec": worker_pod},
        },
        "rolloutStrategy": {
            "type": "RollingUpdate",
            "rollingUpdateConfiguration": rolling,
        },
        # Workers start with the leader: its readiness waits for them (the Ray cluster), so
        # LeaderReady would never start them.
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
