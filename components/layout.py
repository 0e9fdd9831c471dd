"""How one replica's GPUs serve the model: VLLMServer's ``layout``.

* ``tensor``: one engine on one pod, tensor parallel over its GPUs (pipeline stages inside the
  pod allowed). The KV heads split over the tensor ranks, replicated when there are fewer heads
  than ranks (Qwen3-235B-A22B has 4: at tensor 8 each is held twice).
* ``pipeline``: one engine over a LeaderWorkerSet group, tensor parallel inside each node and
  pipeline parallel across the nodes (``multinode``).
* ``data-expert``: data-parallel attention with expert-parallel experts, vLLM's layout for MoE
  models (docs serving/data_parallel_deployment.md and expert_parallel_deployment.md; llm-d's
  wide-EP path): ``--data-parallel-size`` engines, each tensor parallel over its own GPUs and
  with its own KV cache, the routed experts spread over all of them (``--enable-expert-parallel``).
  One API server, on the leader, balances requests over the engines by their queues (internal
  load balancing). Across the nodes of a group each pod runs one ``vllm serve`` with its local
  engines; the workers are ``--headless`` and start at rank worker index x local engines.

Across nodes, data-expert uses vLLM's own multiprocess data-parallel backend, not Ray. The
leader's front end waits, with no deadline, until every engine of the group has connected to its
handshake socket and reported ready (vllm/v1/engine/utils.py wait_for_engine_startup), so its
readiness (/health) already means the whole group serves, and nothing has to start a Ray cluster
first. With ``--data-parallel-backend ray`` vLLM would place the remote engines itself on a Ray
cluster the pods must first form (docs: "Remote DP ranks will be allocated based on node
resources of the Ray cluster"), which adds the Ray start and its wait for no gain here.

``pipeline`` across nodes uses the same multiprocess path on releases that have it (``--nnodes``,
``--node-rank``, ``--master-addr``, ``--headless``: 0.33.0 and later), and Ray only on releases that
have no other multi-node executor (0.11.0). A 0.34.0 image cannot be relied on to hold Ray: the
0.34.0 wheel requires none (its METADATA; 0.11.0's requires ray[cgraph]>=2.48.0). The leader's
executor waits for the other nodes' workers before its engine reports ready, so here too the
leader's /health speaks for the group, and the workers probe it.
"""

from dataclasses import dataclass
from typing import Optional

LAYOUTS = ("tensor", "pipeline", "data-expert")
DATA_EXPERT = "data-expert"
DATA_PARALLEL_RPC_PORT = 29550
"""vLLM's default port of the leader's data-parallel handshake (vllm/config/parallel.py
data_parallel_rpc_port, 0.11.0 and 0.34.0), passed explicitly so every pod of a group agrees."""
LEADER_ADDRESS_ENV = "LWS_LEADER_ADDRESS"
"""The leader pod's DNS name, which LeaderWorkerSet injects into every container of a group (lws
api/leaderworkerset/v1 LwsLeaderAddress); its headless Service publishes not-ready addresses (lws
pkg/utils/controller CreateHeadlessServiceIfNotExists), so the name resolves while pods start."""


def default_layout(nodes: int) -> str:
    """tensor on one node, pipeline across nodes: what the server did before it had a choice."""
    return "tensor" if nodes == 1 else "pipeline"


def layout_problems(
    *,
    layout: str,
    tensor: int,
    pipeline: int,
    data: int,
    per_pod: int,
    nodes: int,
    backend: str,
    expert_fraction: Optional[float],
) -> dict[str, str]:
    """What makes a layout impossible on these GPUs, keyed by the argument to change."""
    gpus = per_pod * nodes
    where = f"GPUs per pod, gpu.devices ({per_pod})" if nodes == 1 else f"GPUs of the replica ({nodes} nodes x {per_pod})"
    if layout != DATA_EXPERT and data != 1:
        return {"data_parallel_size": f"({data}) is for layout data-expert; layout {layout} runs one engine per replica"}
    if layout == "tensor" and nodes > 1:
        return {"layout": f"tensor keeps a replica on one node, but it spans {nodes}; use pipeline or data-expert"}
    if layout == "pipeline" and nodes == 1 and pipeline == 1:
        return {"layout": "pipeline needs pipeline_parallel_size above 1, or a replica across nodes"}
    if layout == DATA_EXPERT:
        return _data_expert_problems(tensor, pipeline, data, per_pod, nodes, backend, expert_fraction, where)
    if tensor * pipeline != gpus:
        return {"tensor_parallel_size": f"x pipeline_parallel_size ({tensor} x {pipeline}) must equal the {where}"}
    if backend == "mig" and per_pod > 1:
        return {"tensor_parallel_size": "must be 1 on MIG: vLLM cannot spread a model over MIG instances"}
    if nodes > 1 and (tensor, pipeline) != (per_pod, nodes):
        return {
            "tensor_parallel_size": f"({tensor}) and pipeline_parallel_size ({pipeline}) must be the GPUs per node "
            f"({per_pod}) and the nodes ({nodes}) across nodes: tensor parallelism stays inside a node, pipeline "
            "parallelism spans the nodes"
        }
    return {}


def _data_expert_problems(
    tensor: int, pipeline: int, data: int, per_pod: int, nodes: int, backend: str, expert_fraction: Optional[float], where: str
) -> dict[str, str]:
    if expert_fraction == 0:
        return {
            "layout": "data-expert spreads a MoE model's experts, but model_architecture.expert_fraction is 0 (a "
            "dense model); serve a dense model with layout tensor and more replicas"
        }
    if backend in ("hami", "mig"):
        return {"layout": f"data-expert cannot run on {backend}: its engines need whole GPUs (nvidia or dra)"}
    if pipeline != 1:
        return {"pipeline_parallel_size": f"({pipeline}) must be 1 with layout data-expert: its engines are data parallel"}
    if data < 2:
        return {
            "data_parallel_size": f"({data}) must be at least 2 with layout data-expert; one engine is layout tensor"
        }
    if data * tensor != per_pod * nodes:
        return {"data_parallel_size": f"x tensor_parallel_size ({data} x {tensor}) must equal the {where}"}
    if data % nodes:
        return {
            "data_parallel_size": f"({data}) must be a multiple of the nodes ({nodes}): each node runs the same number "
            "of engines, each within the node"
        }
    return {}


def data_expert_flags(data: int, nodes: int) -> list[str]:
    """The data-parallel and expert-parallel flags every pod runs with. Across nodes each pod names
    its local engines and the leader's handshake port; what differs by pod is added at start
    (group_scripts)."""
    flags = ["--data-parallel-size", str(data), "--enable-expert-parallel"]
    if nodes > 1:
        flags += ["--data-parallel-size-local", str(data // nodes), "--data-parallel-rpc-port", str(DATA_PARALLEL_RPC_PORT)]
    return flags


def multiprocess_pipeline_flags(nodes: int) -> list[str]:
    """One engine over the nodes through vLLM's multiprocess executor (docs serving/
    parallelism_scaling.md, "Running vLLM with MultiProcessing": --nnodes, --node-rank and
    --master-addr on every node, --headless on all but the first; vllm/config/parallel.py)."""
    return ["--distributed-executor-backend", "mp", "--nnodes", str(nodes)]


@dataclass(frozen=True)
class GroupScripts:
    """What the leader's and a worker's shell add to the vLLM command ("$0" "$@") at start, from
    the group's environment. No value from configuration is spliced into shell text, only whole
    numbers."""

    leader: str
    worker: str
    worker_flags: tuple[str, ...]
    """The flags the worker's script adds, with sample values: to check the release has them."""


def group_scripts(layout: str, local_engines: int) -> GroupScripts:
    """data-expert: every pod names the leader's address; a worker runs headless from its first
    engine's rank, the worker index (LWS_WORKER_INDEX, 1 and up) x its local engines.
    pipeline: every pod names the leader as the master and its own node rank; a worker is headless."""
    run = 'exec "$0" "$@"'
    if layout == DATA_EXPERT:
        address = f'--data-parallel-address "${LEADER_ADDRESS_ENV}"'
        start = f'"$((LWS_WORKER_INDEX * {int(local_engines)}))"'
        return GroupScripts(
            leader=f"{run} {address}",
            worker=f"{run} {address} --headless --data-parallel-start-rank {start}",
            worker_flags=("--data-parallel-address", "leader", "--headless", "--data-parallel-start-rank", "1"),
        )
    master = f'--master-addr "${LEADER_ADDRESS_ENV}"'
    return GroupScripts(
        leader=f"{run} {master} --node-rank 0",
        worker=f'{run} {master} --node-rank "$LWS_WORKER_INDEX" --headless',
        worker_flags=("--master-addr", "leader", "--node-rank", "1", "--headless"),
    )
