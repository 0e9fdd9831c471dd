"""VLLMServer: vLLM's OpenAI-compatible server on a staged model.

A Deployment when one replica fits one node; a LeaderWorkerSet of groups when it spans
several (``nodes``; see ``multinode``).
"""

import posixpath
import re
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from . import grammar
from .arguments import (
    ArgsSpec,
    ByteQuantity,
    CpuQuantity,
    DnsLabel,
    DnsSubdomain,
    Image,
    Problems,
    CommandWord,
    Token,
    check,
    int_range,
    rule,
    with_defaults,
    worded,
)
from .escaping import container_text
from .capacity import Architecture, Layout, capacity
from .lora import ADAPTER_CHECK, LoraAdapterArgs, adapter_check_env, adapters_problems, lora_flags, lora_slots
from .lora import RULES as LORA_RULES
from .load_time import LoadPath, TimeToReady, derived_startup_minutes
from .gpu_claim import GpuPodFragment
from .labels import HOSTNAME_LABEL, object_labels, selector_labels
from .layout import (
    DATA_EXPERT,
    LAYOUTS,
    data_expert_flags,
    default_layout,
    group_scripts,
    layout_problems,
    multiprocess_pipeline_flags,
)
from .multinode import (
    LWS_API_VERSION,
    LWS_KIND,
    LWS_NAME_LABEL,
    RAY_EXECUTOR_FLAGS,
    multiprocess_group,
    group_traffic,
    lws_spec,
    ray_group,
)
from .network import egress_dns_only
from .node_cache import NodeCacheMount
from .ordering import value_only, waits_for
from .readiness import rolled_out
from .pods import (
    RULES as POD_RULES,
    SCRATCH_ENV,
    SECRET_KEY_RULES,
    EnvName,
    PodSettingsArgs,
    SecretKeyArgs,
    apply_pod_settings,
    env_list,
    locked_down,
    one_secret_source,
    plain_env_name,
    rules_under,
    secret_of,
    tolerations_problems,
)
from .probes import MAX_STARTUP_MINUTES, health_probes
from .rollout import (
    disruption_budget,
    group_wait_seconds,
    rolling_update,
    rollout_stops_the_last,
    rollout_timeouts,
    termination_grace_seconds,
    wave_minutes,
)
from .vllm_args import (
    SERVE_COMMAND,
    extra_args_problems,
    flag_table,
    release_of,
    release_problem,
    serve_flags,
    unknown_flags,
)

COMPONENT = "server"
WORKER_COMPONENT = "server-worker"
"""The workers of a multi-node group: labelled apart, so the Service selects leaders alone."""
PORT = 8000
PORT_NAME = "http"
PARALLEL_SHM_SIZE = "20Gi"
SINGLE_GPU_SHM_SIZE = "2Gi"
DEFAULT_IMAGE = "vllm/vllm-openai:v0.34.0"
"""The release this project's facts were checked against (API key scope, loading options, flags)."""


class ArchitectureArgs(TypedDict):
    """What sizes a model's KV cache, from its config.json."""

    layers: int
    """num_hidden_layers"""
    kv_heads: int
    """num_key_value_heads"""
    head_dim: int
    """head_dim"""
    expert_fraction: NotRequired[Optional[float]]
    """The share of the weights in routed experts, in [0, 1): 0 for a dense model, about 0.97 for
    Qwen3-235B-A22B; None when unknown (a data-expert layout then counts every weight as dense)."""


class VLLMServerArgs(TypedDict):
    """Arguments of VLLMServer."""

    namespace: pulumi.Input[str]
    """Namespace of the Deployment."""
    image: NotRequired[str]
    """vLLM OpenAI server image, pinned by tag or digest. Default vllm/vllm-openai:v0.34.0."""
    vllm_release: NotRequired[Optional[str]]
    """The vLLM release the image runs, e.g. 0.11.0, whose flag table checks the server's flags;
    None reads it from a v<release> image tag."""
    claim_name: pulumi.Input[str]
    """PersistentVolumeClaim holding the model (ModelStore.claim_name)."""
    mount_path: pulumi.Input[str]
    """Where the claim is mounted (ModelStore.mount_path)."""
    model_path: pulumi.Input[str]
    """The model directory to serve (ModelStore.model_path)."""
    marker_name: pulumi.Input[str]
    """File in model_path that marks the store complete (ModelStore.marker_name)."""
    served_model_name: str
    """The name clients pass as `model`."""
    layout: NotRequired[Optional[str]]
    """How a replica's GPUs serve the model (components.layout): tensor (one engine on one pod),
    pipeline (one engine, tensor parallel inside each node and pipeline parallel across nodes), or
    data-expert (data_parallel_size engines with their own KV caches, the experts of a MoE
    model spread over all of them). None: tensor on one node, pipeline across nodes."""
    tensor_parallel_size: NotRequired[int]
    """vllm --tensor-parallel-size: GPUs of one engine (of one node's share of it, across nodes). Default 1."""
    pipeline_parallel_size: NotRequired[int]
    """vllm --pipeline-parallel-size. Default 1."""
    data_parallel_size: NotRequired[int]
    """vllm --data-parallel-size: engines per replica, with layout data-expert; data_parallel_size x
    tensor_parallel_size is the replica's GPUs. Default 1."""
    kv_offload_gib: NotRequired[Optional[int]]
    """CPU memory per engine, in GiB, that holds KV cache moved out of GPU memory (vllm
    --kv-offloading-size, native backend), for prefixes reused across turns; added to the pods'
    memory request and limit. None: no offload."""
    gpu_memory_utilization: NotRequired[float]
    """vllm --gpu-memory-utilization, in (0, 1]. Default 0.9."""
    model_architecture: NotRequired[Optional[ArchitectureArgs]]
    """Layers, KV heads and head size of the model (its config.json), to size the KV cache; None
    skips the estimate (components.capacity has presets of well-known models)."""
    max_model_len: int
    """vllm --max-model-len."""
    extra_args: NotRequired[list[str]]
    """Further vllm serve arguments."""
    lora_adapters: NotRequired[list[LoraAdapterArgs]]
    """LoRA adapters loaded at start beside the model (vllm --enable-lora --lora-modules, with
    --max-lora-rank the smallest of vLLM's values that holds their ranks); a request uses one by
    passing its name as `model`. The pods start only once each adapter's directory holds the
    store's marker. Default none."""
    max_loras: NotRequired[Optional[int]]
    """vllm --max-loras: adapters one batch may use, each slot preallocated in GPU memory at
    --max-lora-rank (components.capacity counts them). None: one per adapter."""
    gpu: GpuPodFragment
    """How each pod gets GPUs (GpuClaim.pod_fragment)."""
    nodes: NotRequired[int]
    """Pods (nodes) per replica. Above 1, a LeaderWorkerSet group runs one replica: its leader serves
    the API, its workers join it (vLLM's own multi-node executor; Ray on 0.11.0). Default 1."""
    nccl_socket_ifname: NotRequired[Optional[str]]
    """The network interface NCCL and Gloo use between nodes (NCCL_SOCKET_IFNAME), e.g. eth0."""
    nccl_ib_hca: NotRequired[Optional[str]]
    """InfiniBand adapters NCCL uses (NCCL_IB_HCA), e.g. mlx5; the pods then get IPC_LOCK, which
    RDMA needs to pin memory, and nothing more."""
    cpu: str
    """CPU request and limit."""
    memory: str
    """Memory request and limit; includes /dev/shm."""
    shm_size: NotRequired[Optional[str]]
    """Size of the memory-backed /dev/shm; None picks one from the parallelism."""
    replicas: NotRequired[Optional[int]]
    """Replica count; None leaves it to an autoscaler."""
    max_replicas: NotRequired[Optional[int]]
    """The most replicas that may run (an autoscaler's maximum); sizes the rollout's timeout. None: replicas."""
    min_replicas: NotRequired[Optional[int]]
    """The fewest replicas that may run (an autoscaler's minimum; 0 counts as 1); at one, a rollout
    or drain could stop the only replica. None: replicas."""
    api_key_secret: NotRequired[Optional[SecretKeyArgs]]
    """An existing Secret's key holding the API key clients must send. Exclusive with api_key."""
    api_key: NotRequired[Optional[pulumi.Input[str]]]
    """The API key itself (a Pulumi secret), stored in a Secret the component creates. Without it
    and api_key_secret the server takes no key."""
    startup_timeout_minutes: NotRequired[Optional[int]]
    """How long a pod may take to load the model (the startup probe's budget). None derives it:
    model_size_gb read at the rate of the path the pods load from, plus the engine's start (30
    minutes when the size is unknown; components.load_time). Set, it overrides the derived figure,
    which it must cover."""
    image_pull_minutes: NotRequired[int]
    """Time allowed to pull the image on a fresh node (about 10 GB), per pod of a rollout. Default 15."""
    model_size_gb: NotRequired[Optional[float]]
    """Size of the model's weights in GB; with it, a startup budget too short to read them is refused."""
    min_read_mb_per_s: NotRequired[int]
    """The slowest rate, in MB/s, the model volume is expected to deliver to one loader. Default 200."""
    parallel_read_mb_per_s: NotRequired[Optional[int]]
    """The slowest rate, in MB/s, the model volume is expected to deliver to the parallel loader
    (load_strategy prefetch), which a network file system serves faster than one reader. None:
    min_read_mb_per_s."""
    node_cache: NotRequired[Optional[NodeCacheMount]]
    """The node-local copy of the weights (NodeCache.mount): the pods load it, at its read rate, and
    fall back to model_path, with a warning in the log, on a node that has no copy. None: the pods
    load model_path."""
    network_volume: NotRequired[bool]
    """The model volume is a network file system (NFS, Lustre): load the weights eagerly. Default false."""
    load_strategy: NotRequired[Optional[str]]
    """vllm --safetensors-load-strategy: lazy, eager, or (vLLM 0.34.0 and later) prefetch. None, on a
    network volume without node_cache: prefetch where the release has it and the weights fit in 90 %
    of the pod's memory, else eager; otherwise vLLM's default."""
    prefetch_threads: NotRequired[Optional[int]]
    """vllm --safetensors-prefetch-num-threads: readers per rank of the prefetch (vLLM's default 8);
    only with the prefetch strategy. None: vLLM's default."""
    drain_seconds: NotRequired[int]
    """How long a stopping pod keeps serving its open streams after it leaves the Service. Default 120."""
    max_surge: NotRequired[int]
    """Replicas a rollout starts above the count before it stops old ones; each needs its GPUs free
    (and room under a GPU quota). Default 1. 0 when no GPUs are ever spare: then a rollout at one
    replica stops it before its successor is ready (docs/rollouts.md)."""
    accept_service_gap: NotRequired[bool]
    """Accept that a rollout without a surge (max_surge 0) or a node drain may stop the only
    replica: the plan does not warn, and the disruption budget lets a drain evict one pod at a
    time even at one replica. Default false: a drain waits while one replica is all there is."""
    single_node_claim: NotRequired[bool]
    """The model claim attaches to one node at a time (ReadWriteOnce): every server pod, a
    rollout's new one included, must run on the node of the running ones. Default false."""
    env: NotRequired[dict[str, str]]
    """Extra environment variables of the server (NCCL, hub settings); never secrets."""
    secret_env: NotRequired[dict[str, SecretKeyArgs]]
    """Extra environment variables of the server taken from Secrets."""
    pod: NotRequired[PodSettingsArgs]
    """Pull secrets, priority class, extra node selector and tolerations of the server's pods."""
    network_policy: NotRequired[bool]
    """Create a NetworkPolicy that lets the server's pods call nothing but DNS. Default true."""


DEFAULTS: dict[str, Any] = {
    "image": DEFAULT_IMAGE,
    "vllm_release": None,
    "layout": None,
    "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1,
    "data_parallel_size": 1,
    "kv_offload_gib": None,
    "gpu_memory_utilization": 0.9,
    "model_architecture": None,
    "extra_args": [],
    "lora_adapters": [],
    "max_loras": None,
    "shm_size": None,
    "replicas": None,
    "max_replicas": None,
    "api_key_secret": None,
    "api_key": None,
    "startup_timeout_minutes": None,
    "image_pull_minutes": 15,
    "model_size_gb": None,
    "min_read_mb_per_s": 200,
    "parallel_read_mb_per_s": None,
    "prefetch_threads": None,
    "node_cache": None,
    "network_volume": False,
    "load_strategy": None,
    "drain_seconds": 120,
    "min_replicas": None,
    "max_surge": 1,
    "accept_service_gap": False,
    "single_node_claim": False,
    "env": {},
    "secret_env": {},
    "pod": {},
    "network_policy": True,
    "nodes": 1,
    "nccl_socket_ifname": None,
    "nccl_ib_hca": None,
}
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", **SCRATCH_ENV}
"""Environment the server always gets: serve only the staged files, send no usage reports, keep
every cache in the scratch directory."""
ENGINE_READY_TIMEOUT_ENV = "VLLM_ENGINE_READY_TIMEOUT_S"
"""How long an API server process waits for its engines to report ready, which is after they
have loaded the weights and profiled the KV cache (vLLM 0.34.0 v1/engine/core_client.py
MPClient.__init__: "often caused by slow weight loading"; v1/engine/core.py sends the ready
message after EngineCore.__init__). Default 600 s (vllm/envs.py). It bounds the load whenever
the API servers run in processes of their own (--api-server-count > 1, the default with
--data-parallel-size > 1: entrypoints/cli/serve.py run_multi_api_server starts them before it
waits for the engines); a lone in-process API server polls only after wait_for_engine_startup
returned (v1/engine/utils.py launch_core_engines). Not read by 0.11.0 (absent from its
vllm/envs.py; added by vllm PR #27444, merged after 0.11.0), and ignored by a release that
does not read it. The server sets it to its startup budget, so vLLM never gives up before the
startup probe does."""
ENGINE_READY_TIMEOUT_SINCE = (0, 11, 1)
"""The first release that may read ENGINE_READY_TIMEOUT_ENV: every one after 0.11.0."""
PREFETCH_SINCE = (0, 34, 0)
"""--safetensors-load-strategy prefetch: absent from 0.11.0 (vllm/config/load.py, a str whose
docstring names lazy and eager), a SafetensorsLoadStrategy value in 0.34.0 (vllm/config/load.py:
"Checkpoint files are read into the OS page cache before workers load them ... Useful on network
or high-latency storage"); the releases between were not read, so they are not offered it."""
PREFETCH_MEMORY_SHARE = 0.9
"""The share of the pod's memory the weights may fill for a prefetch (vLLM's own threshold)."""
API_KEY_ENV = "VLLM_API_KEY"
API_KEY_SECRET_KEY = "api-key"


def default_shm_size(gpus_per_pod: int) -> str:
    """NCCL between GPUs of one pod needs far more than the container's 64 MB /dev/shm."""
    return PARALLEL_SHM_SIZE if gpus_per_pod > 1 else SINGLE_GPU_SHM_SIZE


@check("mount_path", "model_path")
def _within_mount(args: dict) -> Problems:
    mount, path = args["mount_path"], args["model_path"]
    if posixpath.commonpath([mount, path]) != mount or path == mount:
        return {"model_path": f"must be a directory inside mount_path ({mount})"}
    return {}


@check("layout", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu", "nodes", "model_architecture")
def _layout_uses_every_gpu(args: dict) -> Problems:
    architecture = args["model_architecture"] or {}
    return layout_problems(
        layout=layout_name(args),
        tensor=args["tensor_parallel_size"],
        pipeline=args["pipeline_parallel_size"],
        data=args["data_parallel_size"],
        per_pod=args["gpu"]["devices"],
        nodes=args["nodes"],
        backend=args["gpu"]["backend"],
        expert_fraction=architecture.get("expert_fraction"),
    )


@check("nodes", "gpu")
def _groups_need_whole_devices(args: dict) -> Problems:
    if args["nodes"] > 1 and args["gpu"]["backend"] in ("hami", "mig"):
        return {"nodes": f"above 1 cannot run on {args['gpu']['backend']}: a multi-node replica needs whole GPUs (nvidia or dra)"}
    return {}


@check("model_size_gb", "gpu", "layout", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
       "gpu_memory_utilization", "model_architecture", "lora_adapters", "max_loras")
def _weights_fit(args: dict) -> Problems:
    estimate = server_capacity(args, kv_cache=False, lora=False)
    if estimate is None:
        return {}
    if estimate.fits:
        with_lora = server_capacity(args, kv_cache=False)
        if with_lora is None or with_lora.fits:
            return {}
        return {
            "lora_adapters": f"preallocate about {with_lora.lora_gb_per_gpu:.1f} GB per GPU (max_loras slots at "
            f"--max-lora-rank, components.capacity), more than the {estimate.kv_cache_gb_per_gpu:.1f} GB the weights "
            "leave: lower max_loras or the adapters' rank, or use more or larger GPUs"
        }
    layout = replica_layout(args)
    engines = f" in {layout.data} engines" if layout.data > 1 else ""
    return {
        "model_size_gb": f"({args['model_size_gb']:g} GB) does not fit: {estimate.weights_gb_per_gpu:.1f} GB of weights "
        f"per GPU over {layout.gpus} GPUs{engines}, but gpu_memory_utilization leaves {estimate.budget_gb_per_gpu:.1f} GB "
        f"of each {args['gpu']['device_memory_gib']:g} GiB device, less about 1 GiB for activations; use more or larger "
        "GPUs, fewer engines, or a quantized checkpoint"
    }


@check("min_replicas", "replicas", "max_replicas")
def _fewest_within_most(args: dict) -> Problems:
    if args["min_replicas"] is not None and args["min_replicas"] > most_replicas(args):
        return {"min_replicas": f"({args['min_replicas']}) is above the most replicas ({most_replicas(args)})"}
    return {}


@check("shm_size", "memory", "gpu", "nodes")
def _shm_fits_in_memory(args: dict) -> Problems:
    shm = shm_size(args)
    if grammar.parse_quantity(shm) >= grammar.parse_quantity(args["memory"]):
        where = "shm_size" if args["shm_size"] else "memory"
        return {
            where: f"/dev/shm ({shm}) counts against the pod's memory ({args['memory']}) and must be smaller than "
            "it; raise memory or lower shm_size"
        }
    return {}


@check("image", "vllm_release", "extra_args")
def _extra_args_exist_in_the_release(args: dict) -> Problems:
    if problem := release_problem(args["image"], args["vllm_release"]):
        return {"vllm_release" if args["vllm_release"] else "image": problem}
    table = flag_table(release_of(args["image"], args["vllm_release"]))
    if problems := extra_args_problems(args["extra_args"], table):
        return {"extra_args": "\n".join(problems)}
    return {}


LOAD_STRATEGY_READS = ("load_strategy", "node_cache", "network_volume", "image", "vllm_release", "model_size_gb",
                       "memory", "kv_offload_gib", "layout", "data_parallel_size", "nodes")
"""What the load strategy (load_strategy(), and so the load path and flags) is derived from."""


@check("startup_timeout_minutes", "min_read_mb_per_s", "parallel_read_mb_per_s", *LOAD_STRATEGY_READS)
def _startup_budget_reads_the_weights(args: dict) -> Problems:
    given, path = args["startup_timeout_minutes"], load_path(args)
    if args["model_size_gb"] is None or given is None:
        return {}
    needed = derived_startup_minutes(args["model_size_gb"], path)
    if given < needed:
        return {
            "startup_timeout_minutes": f"({given}) is shorter than the {needed} minutes a {args['model_size_gb']:g} GB "
            f"model needs to load from {path.source} at {path.setting} ({path.read_mb_per_s} MB/s); leave it unset to "
            f"derive it, raise it, or raise {path.setting} if the path is faster"
        }
    return {}


@check("prefetch_threads", *LOAD_STRATEGY_READS)
def _prefetch_threads_prefetch(args: dict) -> Problems:
    if args["prefetch_threads"] and load_strategy(args) != "prefetch":
        return {
            "prefetch_threads": f"applies to the prefetch load strategy only, and the pods load with "
            f"{load_strategy(args) or 'vLLM default'}: set load_strategy prefetch, or leave it unset"
        }
    return {}


@check("load_strategy", "image", "vllm_release")
def _load_strategy_exists_in_the_release(args: dict) -> Problems:
    release = release_of(args["image"], args["vllm_release"])
    if release is not None and args["load_strategy"] == "prefetch" and not release_at_least(release, PREFETCH_SINCE):
        return {
            "load_strategy": f"prefetch is not a --safetensors-load-strategy of vLLM {release} (lazy or eager "
            "there; prefetch from 0.34.0 on): use eager, or an image of 0.34.0 or later"
        }
    return {}


@check("env", "secret_env", "api_key_secret", "api_key", "nccl_socket_ifname", "nccl_ib_hca", "image", "vllm_release")
def _env_names_are_free(args: dict) -> Problems:
    takes_key = args["api_key_secret"] or args["api_key"] is not None
    reads_timeout = reads_engine_ready_timeout(args["image"], args["vllm_release"])
    taken = {
        *SERVER_ENV,
        *([API_KEY_ENV] if takes_key else []),
        *nccl_env(args),
        *([ENGINE_READY_TIMEOUT_ENV] if reads_timeout else []),
    }
    problems = {}
    for argument in ("env", "secret_env"):
        if clash := sorted(taken & args[argument].keys()):
            problems[argument] = f"sets {', '.join(clash)}, which the server sets itself"
    if both := sorted(args["env"].keys() & args["secret_env"].keys()):
        problems["secret_env"] = f"and env both set {', '.join(both)}; keep one"
    return problems


def kv_dtype_bytes(extra_args: list[str]) -> int:
    """Bytes per KV cache element: 1 with an fp8 --kv-cache-dtype, else the model's 16 bits."""
    for index, item in enumerate(extra_args):
        name, _, value = item.partition("=")
        if name.replace("_", "-") == "--kv-cache-dtype":
            value = value or (extra_args[index + 1] if index + 1 < len(extra_args) else "")
            return 1 if value.startswith("fp8") else 2
    return 2


def layout_name(args: VLLMServerArgs) -> str:
    """The layout as given, or the one the nodes imply (components.layout.default_layout)."""
    args = with_defaults(args, DEFAULTS)
    return args["layout"] or default_layout(args["nodes"])


def replica_layout(args: VLLMServerArgs) -> Layout:
    args = with_defaults(args, DEFAULTS)
    return Layout(args["tensor_parallel_size"], args["pipeline_parallel_size"], args["data_parallel_size"])


def server_capacity(args: VLLMServerArgs, kv_cache: bool = True, lora: bool = True):
    """The capacity estimate, or None when the weights' size or the devices' memory is unknown;
    with the architecture, also the tokens the KV cache holds, with kv_cache, their data type
    (extra_args) and the CPU offload, and with lora, the adapters' preallocated weights."""
    args = with_defaults(args, DEFAULTS)
    memory = args["gpu"]["device_memory_gib"]
    if args["model_size_gb"] is None or not memory:
        return None
    arch = args["model_architecture"]
    return capacity(
        model_size_gb=args["model_size_gb"],
        device_memory_gib=memory,
        layout=replica_layout(args),
        gpu_memory_utilization=args["gpu_memory_utilization"],
        architecture=Architecture(**arch) if arch else None,
        kv_dtype_bytes=kv_dtype_bytes(args["extra_args"]) if kv_cache else 2,
        offload_gib_per_engine=(args["kv_offload_gib"] or 0) if kv_cache else 0,
        lora=lora_slots(args["lora_adapters"], args["max_loras"]) if lora else None,
    )


def offload_mib_per_pod(args: VLLMServerArgs) -> int:
    """CPU memory a pod's workers pin for offloaded KV cache: each engine's buffer is split over its
    workers (vllm/v1/kv_offload/cpu/spec.py: cpu_bytes_to_use over world_size), so a pod holds its
    local engines' buffers, or its share of an engine that spans the group's nodes."""
    args = with_defaults(args, DEFAULTS)
    if not args["kv_offload_gib"]:
        return 0
    if layout_name(args) == DATA_EXPERT:
        return args["kv_offload_gib"] * 1024 * args["data_parallel_size"] // args["nodes"]
    return -(-args["kv_offload_gib"] * 1024 // args["nodes"])


def kv_offload_flags(args: VLLMServerArgs) -> list[str]:
    """vLLM's own CPU offload (OffloadingConnector; vllm/config/vllm.py _post_init_kv_transfer_config):
    kv_offload_gib of CPU memory per engine."""
    args = with_defaults(args, DEFAULTS)
    if not args["kv_offload_gib"]:
        return []
    return ["--kv-offloading-size", str(args["kv_offload_gib"]), "--kv-offloading-backend", "native"]


def over_ray(args: VLLMServerArgs) -> bool:
    """Whether a replica runs over Ray: a pipeline across nodes on a release without vLLM's own
    multi-node executor (no --nnodes in its flag table: 0.11.0; components.layout)."""
    args = with_defaults(args, DEFAULTS)
    if args["nodes"] == 1 or layout_name(args) == DATA_EXPERT:
        return False
    table = flag_table(release_of(args["image"], args["vllm_release"]) or "")
    return table is not None and table.lookup("--nnodes")[1] is None


def layout_flags(args: VLLMServerArgs) -> list[str]:
    """The executor and data-parallel flags of the layout, alike on every pod."""
    args = with_defaults(args, DEFAULTS)
    if layout_name(args) == DATA_EXPERT:
        return data_expert_flags(args["data_parallel_size"], args["nodes"])
    if args["nodes"] == 1:
        return []
    return RAY_EXECUTOR_FLAGS if over_ray(args) else multiprocess_pipeline_flags(args["nodes"])


def scripts(args: VLLMServerArgs):
    """What each pod of a group on vLLM's own multi-node path adds at start (components.layout)."""
    args = with_defaults(args, DEFAULTS)
    return group_scripts(layout_name(args), args["data_parallel_size"] // args["nodes"])


def pod_memory(args: VLLMServerArgs) -> str:
    """The memory request and limit: memory, plus the KV offload buffers the pod pins."""
    args = with_defaults(args, DEFAULTS)
    extra = offload_mib_per_pod(args)
    if not extra:
        return args["memory"]
    total = int(grammar.parse_quantity(args["memory"]) // 2**20) + extra
    return f"{total // 1024}Gi" if total % 1024 == 0 else f"{total}Mi"


SAMPLE_SETTINGS = {
    "served_model_name": "m",
    "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1,
    "gpu_memory_utilization": 0.9,
    "model_architecture": None,
    "max_model_len": 1,
}
"""Values for the program's own flags when only their names matter."""


@check("gpu", "prefetch_threads", "lora_adapters", "max_loras", *LOAD_STRATEGY_READS)
def _own_flags_exist_in_the_release(args: dict) -> Problems:
    table = flag_table(release_of(args["image"], args["vllm_release"]) or "")
    if table is None:  # reported by _extra_args_exist_in_the_release
        return {}
    worker = list(scripts(args).worker_flags) if args["nodes"] > 1 and not over_ray(args) else []
    backend = [*args["gpu"]["vllm_args"], *load_flags(args), *layout_flags(args), *worker]
    problems = {}
    if missing := unknown_flags(serve_flags(**_serve_settings(SAMPLE_SETTINGS), backend_args=backend), table):
        problems["image"] = f"runs vLLM {table.release}, which has no {', '.join(missing)}; the server passes them"
    lora = [flag for flag in lora_flags(args["lora_adapters"], args["max_loras"]) if isinstance(flag, str)]
    if missing := unknown_flags(lora, table):
        problems["lora_adapters"] = f"need {', '.join(missing)}, which vLLM {table.release} (image) lacks; use a newer release"
    if missing := unknown_flags(kv_offload_flags(args), table):
        problems["kv_offload_gib"] = (
            f"needs {', '.join(missing)}, which vLLM {table.release} (image) lacks; use a newer release or leave it unset"
        )
    return problems


SPEC = ArgsSpec(
    "VLLMServer",
    VLLMServerArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "image": Image,
        "vllm_release": rule(grammar.token),
        "claim_name": DnsSubdomain,
        "mount_path": rule(grammar.absolute_path),
        "model_path": rule(grammar.absolute_path),
        "marker_name": rule(grammar.file_name),
        "served_model_name": CommandWord,
        "layout": Literal[LAYOUTS],
        "tensor_parallel_size": int_range(1),
        "pipeline_parallel_size": int_range(1),
        "data_parallel_size": int_range(1, 1024),
        "kv_offload_gib": int_range(1, 64 * 1024),
        "gpu_memory_utilization": Annotated[float, Field(gt=0, le=1)],
        "max_model_len": int_range(1),
        "nodes": int_range(1, 64),
        "nccl_socket_ifname": Token,
        "nccl_ib_hca": Token,
        "model_architecture.layers": int_range(1, 10**4),
        "model_architecture.kv_heads": int_range(1, 10**4),
        "model_architecture.head_dim": int_range(1, 10**5),
        "model_architecture.expert_fraction": Annotated[float, Field(ge=0, lt=1)],
        "cpu": CpuQuantity,
        "memory": ByteQuantity,
        "shm_size": ByteQuantity,
        "replicas": int_range(1),
        "max_replicas": int_range(1),
        **rules_under("api_key_secret", SECRET_KEY_RULES),
        "api_key": Token,
        "startup_timeout_minutes": Optional[int_range(1, MAX_STARTUP_MINUTES)],
        "image_pull_minutes": int_range(0, 24 * 60),
        "model_size_gb": Annotated[float, Field(gt=0, le=1e6)],
        "min_read_mb_per_s": int_range(1, 10**6),
        "parallel_read_mb_per_s": Optional[int_range(1, 10**6)],
        "prefetch_threads": Optional[int_range(1, 256)],
        "load_strategy": Literal["lazy", "eager", "prefetch"],
        "drain_seconds": int_range(0, 24 * 3600),
        "min_replicas": int_range(0),
        "max_surge": int_range(0, 64),
        "env[key]": rule(plain_env_name),
        "secret_env[key]": EnvName,
        **rules_under("secret_env", SECRET_KEY_RULES),
        **rules_under("pod", POD_RULES),
        **LORA_RULES,
    },
    checks=(
        _within_mount,
        adapters_problems,
        _layout_uses_every_gpu,
        _weights_fit,
        _groups_need_whole_devices,
        _fewest_within_most,
        _shm_fits_in_memory,
        _extra_args_exist_in_the_release,
        _load_strategy_exists_in_the_release,
        _own_flags_exist_in_the_release,
        _startup_budget_reads_the_weights,
        _prefetch_threads_prefetch,
        _env_names_are_free,
        one_secret_source("api_key", "api_key_secret", "the key"),
        tolerations_problems("pod"),
    ),
    name_rule=grammar.dns_label,
)


def vllm_server_problems(args: VLLMServerArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def shm_size(args: VLLMServerArgs) -> str:
    """The size of /dev/shm: as given, or one that fits the GPUs of a pod."""
    args = with_defaults(args, DEFAULTS)
    return args["shm_size"] or default_shm_size(args["gpu"]["devices"])


def _serve_settings(args: dict) -> dict:
    return {
        "served_model_name": args["served_model_name"],
        "port": PORT,
        "tensor_parallel_size": args["tensor_parallel_size"],
        "pipeline_parallel_size": args["pipeline_parallel_size"],
        "gpu_memory_utilization": args["gpu_memory_utilization"],
        "max_model_len": args["max_model_len"],
    }


def _container_input(value: pulumi.Input[str]) -> pulumi.Input[str]:
    """container_text of a value that may only be known later."""
    return pulumi.Output.from_input(value).apply(container_text) if isinstance(value, pulumi.Output) else container_text(value)


def api_key_ref(name: str, args: VLLMServerArgs) -> Optional[SecretKeyArgs]:
    """Where the server reads its API key: the given Secret, or the one made for api_key."""
    args = with_defaults(args, DEFAULTS)
    if args["api_key"] is not None:
        return {"name": f"{name}-api-key", "key": API_KEY_SECRET_KEY}
    return args["api_key_secret"]


def container_env(name: str, args: VLLMServerArgs) -> list[dict]:
    args = with_defaults(args, DEFAULTS)
    env = [{"name": key, "value": value} for key, value in {**SERVER_ENV, **engine_ready_env(args)}.items()]
    if secret := api_key_ref(name, args):
        env += env_list({}, {API_KEY_ENV: secret})
    return env + env_list({**nccl_env(args), **args["env"]}, args["secret_env"])


def release_at_least(release: Optional[str], first: tuple[int, int, int]) -> bool:
    """Whether a release (e.g. 0.34.0, 0.11.0.post1) is `first` or later; False when unknown."""
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", release or "")
    return numbers is not None and tuple(map(int, numbers.groups())) >= first


def reads_engine_ready_timeout(image: str, vllm_release: Optional[str]) -> bool:
    """Whether the image's vLLM release reads VLLM_ENGINE_READY_TIMEOUT_S."""
    return release_at_least(release_of(image, vllm_release), ENGINE_READY_TIMEOUT_SINCE)


def engine_ready_env(args: VLLMServerArgs) -> dict[str, str]:
    """VLLM_ENGINE_READY_TIMEOUT_S: the startup budget in seconds, on releases that read it."""
    args = with_defaults(args, DEFAULTS)
    if not reads_engine_ready_timeout(args["image"], args["vllm_release"]):
        return {}
    return {ENGINE_READY_TIMEOUT_ENV: str(60 * startup_budget_minutes(args))}


def nccl_env(args: VLLMServerArgs) -> dict[str, str]:
    args = with_defaults(args, DEFAULTS)
    env = {}
    if args["nccl_socket_ifname"]:
        env |= {"NCCL_SOCKET_IFNAME": args["nccl_socket_ifname"], "GLOO_SOCKET_IFNAME": args["nccl_socket_ifname"]}
    if args["nccl_ib_hca"]:
        env["NCCL_IB_HCA"] = args["nccl_ib_hca"]
    return env


def load_flags(args: VLLMServerArgs) -> list[str]:
    """Eager loading from network file systems: vLLM's lazy default memory-maps every file, and each
    rank reads it again (vllm/config/load.py recommends eager for NFS and Lustre). Values: lazy
    and eager in 0.11.0 (a str, default "lazy"); lazy, eager, prefetch and torchao in 0.34.0
    (SafetensorsLoadStrategy; default None, lazy with a page-cache prefetch when it detects NFS
    and the checkpoint fits in 90 % of RAM). The two passed here mean the same in both."""
    args = with_defaults(args, DEFAULTS)
    strategy = load_strategy(args)
    if not strategy:
        return []
    threads = ["--safetensors-prefetch-num-threads", str(args["prefetch_threads"])] if args["prefetch_threads"] else []
    return ["--safetensors-load-strategy", strategy, *threads]


def load_strategy(args: VLLMServerArgs) -> Optional[str]:
    """As given. Else, when the pods read a network volume (no node-local copy): prefetch where the
    release has it and the weights fit in PREFETCH_MEMORY_SHARE of the pod's memory, else eager.
    Else None, vLLM's default (memory-mapped files, which the ranks of a pod share)."""
    args = with_defaults(args, DEFAULTS)
    if args["load_strategy"] or args["node_cache"] or not args["network_volume"]:
        return args["load_strategy"]
    return "prefetch" if prefetch_fits(args) else "eager"


def prefetch_fits(args: VLLMServerArgs) -> bool:
    """Whether the release prefetches and the weights fit in the pod's page cache.

    vLLM 0.34.0's prefetch reads every checkpoint file once per node into the page cache, the
    files split over the ranks, each with safetensors_prefetch_num_threads readers (default 8),
    while the ranks load from the cache (model_loader/weight_utils.py _prefetch_all_checkpoints):
    many concurrent readers, which a network file system serves faster than one. The page cache
    is charged to the pod's memory, so weights that do not fit are evicted before they are loaded
    and read again: vLLM prefetches by itself only when they fit in 90 % of the available memory,
    cgroup limit included (safetensors_weights_iterator, ram_threshold_pct), and only on the mount
    types it recognises (nfs, nfs4, lustre in /proc/mounts). The plan applies the same share to
    the pod's memory limit, whatever the volume's mount type."""
    args = with_defaults(args, DEFAULTS)
    release = release_of(args["image"], args["vllm_release"])
    if not release_at_least(release, PREFETCH_SINCE) or args["model_size_gb"] is None:
        return False
    return args["model_size_gb"] * 1e9 <= PREFETCH_MEMORY_SHARE * float(grammar.parse_quantity(pod_memory(args)))


STORE_CHECK = (
    'if [ -f "$MODEL_PATH/$MARKER" ]; then echo "model store complete: $MODEL_PATH"; '
    'else echo "model store incomplete: $MODEL_PATH/$MARKER is missing; '
    'the model download Job has not completed" >&2; exit 1; fi'
)
"""The init container's check without a node cache."""
CACHE_CHOICE = (
    'if [ -f "$CACHED_PATH/$MARKER" ]; then ln -sfn "$CACHED_PATH" "$MODEL_LINK"; '
    'echo "loading the node-local copy: $CACHED_PATH"; '
    'elif [ -f "$MODEL_PATH/$MARKER" ]; then ln -sfn "$MODEL_PATH" "$MODEL_LINK"; '
    'echo "warning: this node has no complete copy at $CACHED_PATH; loading from the model volume at $MODEL_PATH, '
    'slower than the startup budget assumes: a load that outlasts it restarts, and finds the copy once the '
    'node cache has made it" >&2; '
    'else echo "model store incomplete: $MODEL_PATH/$MARKER is missing; '
    'the model download Job has not completed" >&2; exit 1; fi'
)
"""The init container's choice with a node cache: the node's copy when complete (its marker is
written last), else the model volume's, else refuse; the server serves what MODEL_LINK points to."""
MODEL_LINK_DIR = "/run/vllm-model"
MODEL_LINK = f"{MODEL_LINK_DIR}/current"


def store_check_container(args: VLLMServerArgs) -> dict:
    """An init container that refuses to start vLLM on an incomplete model store and, with a node
    cache, points the server at the node's copy or, failing that, the model volume's."""
    args = with_defaults(args, DEFAULTS)
    cache = args["node_cache"]
    env = [
        {"name": "MODEL_PATH", "value": _container_input(args["model_path"])},
        {"name": "MARKER", "value": _container_input(args["marker_name"])},
    ]
    mounts = [{"name": "models", "mountPath": args["mount_path"], "readOnly": True}]
    if cache:
        env += [
            {"name": "CACHED_PATH", "value": _container_input(cache["model_path"])},
            {"name": "MODEL_LINK", "value": MODEL_LINK},
        ]
        mounts += [
            {"name": "node-cache", "mountPath": cache["mount_path"], "readOnly": True},
            {"name": "model-link", "mountPath": MODEL_LINK_DIR},
        ]
    if args["lora_adapters"]:
        env += adapter_check_env(args["lora_adapters"])
    script = CACHE_CHOICE if cache else STORE_CHECK
    return {
        "name": "check-model-store",
        "image": args["image"],
        "command": ["sh", "-c", ADAPTER_CHECK + script if args["lora_adapters"] else script],
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": mounts,
    }


def served_path(args: VLLMServerArgs) -> pulumi.Input[str]:
    """What vllm serve loads: the store's path, or the link the init container set with a node cache."""
    args = with_defaults(args, DEFAULTS)
    return MODEL_LINK if args["node_cache"] else _container_input(args["model_path"])


def model_volumes(args: VLLMServerArgs) -> tuple[list[dict], list[dict]]:
    """(volumes, the server container's mounts) of the weights: the store's claim and, with a node
    cache, the node's copy and the link to the one chosen."""
    args = with_defaults(args, DEFAULTS)
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": args["claim_name"], "readOnly": True}}]
    mounts = [{"name": "models", "mountPath": args["mount_path"], "readOnly": True}]
    if cache := args["node_cache"]:
        volumes += [
            {"name": "node-cache", "persistentVolumeClaim": {"claimName": cache["claim_name"], "readOnly": True}},
            {"name": "model-link", "emptyDir": {"sizeLimit": "1Mi"}},
        ]
        mounts += [
            {"name": "node-cache", "mountPath": cache["mount_path"], "readOnly": True},
            {"name": "model-link", "mountPath": MODEL_LINK_DIR, "readOnly": True},
        ]
    return volumes, mounts


def server_container(name: str, args: VLLMServerArgs) -> dict:
    args = with_defaults(args, DEFAULTS)
    gpu = args["gpu"]
    limits = {"cpu": args["cpu"], "memory": pod_memory(args), **gpu["limits"]}
    resources: dict = {"requests": limits, "limits": limits}
    if gpu["container_claims"]:
        resources["claims"] = gpu["container_claims"]
    return {
        "name": "vllm",
        "image": args["image"],
        "command": SERVE_COMMAND,
        "args": [
            served_path(args),
            *map(
                _container_input,
                serve_flags(
                    **_serve_settings(args),
                    backend_args=[*gpu["vllm_args"], *load_flags(args), *layout_flags(args), *kv_offload_flags(args)],
                    lora_args=lora_flags(args["lora_adapters"], args["max_loras"]),
                    extra_args=args["extra_args"],
                ),
            ),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": container_env(name, args),
        "resources": resources,
        "volumeMounts": [*model_volumes(args)[1], {"name": "dshm", "mountPath": "/dev/shm"}],
        **health_probes(PORT_NAME, startup_budget_minutes(args)),
        **drain_hook(args["drain_seconds"]),
    }


def drain_hook(drain_seconds: int) -> dict:
    """A preStop delay: a stopping pod leaves the Service's endpoints at once and keeps serving
    its open streams this long. vLLM 0.11.0 stops its engine at SIGTERM before its HTTP server
    drains (entrypoints/openai/api_server.py run_server_worker), so what still runs then is cut;
    0.34.0 does the same with its default --shutdown-timeout 0, "abort" (entrypoints/launchers/
    launcher.py handle_shutdown, config/vllm.py shutdown_timeout)."""
    return {"lifecycle": {"preStop": {"sleep": {"seconds": drain_seconds}}}} if drain_seconds else {}


def pod_spec(name: str, args: VLLMServerArgs) -> dict:
    args = with_defaults(args, DEFAULTS)
    gpu = args["gpu"]
    shm = shm_size(args)
    spec: dict = {
        "initContainers": [store_check_container(args)],
        "containers": [server_container(name, args)],
        "volumes": [*model_volumes(args)[0], {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}],
        "tolerations": gpu["tolerations"],
    }
    optional = {
        "schedulerName": gpu["scheduler_name"],
        "affinity": server_affinity(name, args),
        "runtimeClassName": gpu["runtime_class_name"],
        "resourceClaims": gpu["resource_claims"],
    }
    spec.update({key: value for key, value in optional.items() if value})
    spec["terminationGracePeriodSeconds"] = termination_grace_seconds(args["drain_seconds"])
    capabilities = server_capabilities(args["nccl_ib_hca"])
    return locked_down(apply_pod_settings(spec, args["pod"]), service_account=name, capabilities=capabilities)


def server_affinity(name: str, args: VLLMServerArgs) -> Optional[dict]:
    """The GPU fragment's node affinity and, on a single-node claim, a required affinity to the
    server's own pods on their node. The scheduler lets the first pod of such a term schedule
    anywhere (kubernetes pkg/scheduler/framework/plugins/interpodaffinity/filtering.go
    satisfyPodAffinity: no pod matches yet, and the pod matches its own term), so a first `up`
    schedules, and a rollout's new pod lands where the claim is attached."""
    args = with_defaults(args, DEFAULTS)
    affinity = dict(args["gpu"]["affinity"] or {})
    if args["single_node_claim"]:
        affinity["podAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": selector_labels(name, COMPONENT)}, "topologyKey": HOSTNAME_LABEL}
            ]
        }
    return affinity or None


def server_capabilities(nccl_ib_hca: Optional[str]) -> tuple[str, ...]:
    """Capabilities the server container adds to none: IPC_LOCK with InfiniBand, as RDMA pins memory.

    Pod Security's restricted and baseline levels admit neither (baseline adds only AUDIT_WRITE,
    CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP,
    SETUID, SYS_CHROOT: kubernetes.io/docs/concepts/security/pod-security-standards).
    """
    return ("IPC_LOCK",) if nccl_ib_hca else ()


def workload_kind(nodes: int) -> str:
    """What runs the replicas: a Deployment, or a LeaderWorkerSet when a replica spans nodes."""
    return LWS_KIND if nodes > 1 else "Deployment"


def most_replicas(args: VLLMServerArgs) -> int:
    """The most replicas that may run: the autoscaler's maximum, else the replicas, else one."""
    args = with_defaults(args, DEFAULTS)
    return args["max_replicas"] or args["replicas"] or 1


def fewest_replicas(args: VLLMServerArgs) -> int:
    """The fewest replicas that may run: the autoscaler's minimum, else the replicas, else one."""
    args = with_defaults(args, DEFAULTS)
    return args["min_replicas"] or args["replicas"] or 1


def promised_replicas(args: VLLMServerArgs) -> int:
    """The replicas `pulumi up` waits for: the autoscaler's minimum (0 when it may scale to zero),
    else the replicas, else one. Not fewest_replicas, which plans rollouts and drains for one
    replica running even where the autoscaler may keep none."""
    args = with_defaults(args, DEFAULTS)
    if args["min_replicas"] is not None:
        return args["min_replicas"]
    return args["replicas"] or 1


def rolling(args: VLLMServerArgs) -> dict:
    """maxSurge and maxUnavailable of the Deployment or LeaderWorkerSet (components.rollout)."""
    args = with_defaults(args, DEFAULTS)
    return rolling_update(most_replicas=most_replicas(args), max_surge=args["max_surge"])


def service_gap(args: VLLMServerArgs) -> bool:
    """Whether a rollout at the fewest replicas stops the only one before its successor is ready."""
    args = with_defaults(args, DEFAULTS)
    return rollout_stops_the_last(fewest_replicas=fewest_replicas(args), max_surge=args["max_surge"])


def group_wait(args: VLLMServerArgs) -> int:
    """Seconds the pods of a multi-node group wait for each other; 0 for single-node replicas."""
    args = with_defaults(args, DEFAULTS)
    return group_wait_seconds(args["image_pull_minutes"]) if args["nodes"] > 1 else 0


def load_path(args: VLLMServerArgs) -> LoadPath:
    """Where the pods read the weights, and the slowest rate expected there (components.load_time)."""
    args = with_defaults(args, DEFAULTS)
    if args["node_cache"]:
        return LoadPath("node-local disk", args["node_cache"]["read_mb_per_s"], "node_cache.read_mb_per_s")
    if load_strategy(args) == "prefetch" and args["parallel_read_mb_per_s"]:
        return LoadPath("the model volume, parallel reads", args["parallel_read_mb_per_s"], "parallel_read_mb_per_s")
    return LoadPath("the model volume", args["min_read_mb_per_s"], "min_read_mb_per_s")


def time_to_ready(args: VLLMServerArgs) -> TimeToReady:
    """A new replica's time to ready: the image pull and the load budget (derived or as set)."""
    args = with_defaults(args, DEFAULTS)
    path = load_path(args)
    derived = derived_startup_minutes(args["model_size_gb"], path)
    given = args["startup_timeout_minutes"]
    return TimeToReady(
        image_pull_minutes=args["image_pull_minutes"],
        startup_minutes=derived if given is None else given,
        derived_minutes=derived,
        overridden=given is not None,
        path=path,
        model_size_gb=args["model_size_gb"],
    )


def startup_budget_minutes(args: VLLMServerArgs) -> int:
    """The startup probe's budget: the model's load, after a group's wait for its pods."""
    args = with_defaults(args, DEFAULTS)
    return time_to_ready(args).startup_minutes + group_wait(args) // 60


def server_timeouts(args: VLLMServerArgs) -> tuple[int, int]:
    """(create, update) minutes for Pulumi's wait on the Deployment."""
    args = with_defaults(args, DEFAULTS)
    return rollout_timeouts(
        max_replicas=most_replicas(args),
        rolling=rolling(args),
        startup_minutes=startup_budget_minutes(args),
        image_pull_minutes=args["image_pull_minutes"],
        drain_seconds=args["drain_seconds"],
    )


def progress_deadline_seconds(args: VLLMServerArgs) -> int:
    """One step of the rollout (components.rollout.wave_minutes), from the same budget as the probes."""
    args = with_defaults(args, DEFAULTS)
    return 60 * wave_minutes(startup_budget_minutes(args), args["image_pull_minutes"], args["drain_seconds"])


def pdb_name(name: str, spec: dict) -> str:
    """The budget's name, which says its form: a change from one form to the other replaces the
    budget rather than updating it in place. Objects are created client-side and taken over by
    server-side apply on their first update, which a preview does not do (pulumi-kubernetes
    pkg/await/await.go, fixCSAFieldManagers skips previews): the preview's dry-run apply would keep
    the other form's field, and the API server refuses a budget with both."""
    return name if "maxUnavailable" in spec else f"{name}-min-available"


def pdb_spec(name: str, args: VLLMServerArgs) -> dict:
    """The PodDisruptionBudget over every pod of the server (components.rollout.disruption_budget)."""
    args = with_defaults(args, DEFAULTS)
    pods = {LWS_NAME_LABEL: name} if args["nodes"] > 1 else selector_labels(name, COMPONENT)
    limit = disruption_budget(
        fewest_replicas=fewest_replicas(args), pods_per_replica=args["nodes"], accept_gap=args["accept_service_gap"]
    )
    return {**limit, "selector": {"matchLabels": pods}}


def gap_warning(name: str) -> str:
    """What the plan says when a rollout at one replica stops it (service_gap)."""
    return (
        f"VLLMServer {name}: with max_surge 0 and one replica, every rollout (a new image, model or "
        "setting) stops the only replica before its successor has loaded: the service is down for a "
        "pod's image pull and load. Keep at least 2 replicas (min_replicas or replicas), give max_surge "
        "room for one more replica, or set accept_service_gap"
    )


def group_spec(name: str, args: VLLMServerArgs) -> dict:
    """The LeaderWorkerSet spec of a replica spanning args["nodes"] nodes."""
    args = with_defaults(args, DEFAULTS)
    if over_ray(args):
        leader, worker = ray_group(pod_spec(name, args), group_wait(args))
    else:
        leader, worker = multiprocess_group(pod_spec(name, args), scripts(args), PORT, startup_budget_minutes(args), (API_KEY_ENV,))
    return lws_spec(
        leader_pod=leader,
        worker_pod=worker,
        leader_labels=object_labels(name, COMPONENT),
        worker_labels=object_labels(name, WORKER_COMPONENT),
        annotations=args["gpu"]["annotations"],
        nodes=args["nodes"],
        replicas=args["replicas"],
        rolling=rolling(args),
    )


def deployment_spec(name: str, args: VLLMServerArgs) -> dict:
    """The Deployment spec: a rollout that keeps a replica serving (components.rollout), reported
    stuck only after a step of it has had the time its pods are given."""
    args = with_defaults(args, DEFAULTS)
    spec: dict = {
        "selector": {"matchLabels": selector_labels(name, COMPONENT)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling(args)},
        "progressDeadlineSeconds": progress_deadline_seconds(args),
        "template": {
            "metadata": {
                "labels": object_labels(name, COMPONENT),
                **({"annotations": args["gpu"]["annotations"]} if args["gpu"]["annotations"] else {}),
            },
            "spec": pod_spec(name, args),
        },
    }
    if args["replicas"] is not None:
        spec["replicas"] = args["replicas"]
    return spec


class VLLMServer(pulumi.ComponentResource):
    """vLLM's OpenAI-compatible server as a Deployment, serving the staged model path."""

    deployment_name: pulumi.Output[str]
    """Name of the workload: the Deployment, or the LeaderWorkerSet of a multi-node replica."""
    workload_kind: pulumi.Output[str]
    """Deployment or LeaderWorkerSet."""
    workload_api_version: pulumi.Output[str]
    """apps/v1 or leaderworkerset.x-k8s.io/v1."""
    selector_labels: pulumi.Output[dict[str, str]]
    """Labels that select the server's pods."""
    port: pulumi.Output[int]
    """Container port of the OpenAI API and /metrics."""
    port_name: pulumi.Output[str]
    """Name of that container port."""
    takes_api_key: bool
    """Whether the server checks an API key on /v1 (a plain value, known at construction): pass it
    to Exposure's server_takes_api_key."""
    capacity: pulumi.Output[dict[str, Any]]
    """Per-GPU weights, memory budget and KV cache left, and KV cache tokens, when the weights'
    size and the devices' memory are known; else empty."""
    adapter_names: list[str]
    """The LoRA adapters' names (a plain value, known at construction): pass them to Exposure's
    adapter_names."""
    time_to_ready: pulumi.Output[dict[str, Any]]
    """A new replica's time to ready and its parts (components.load_time.TimeToReady.summary): the
    image pull, the load budget and what it is derived from, and whether it is overridden."""

    def __init__(self, name: str, args: VLLMServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:VLLMServer", name, None, opts)
        # The pods wait for the store's Job through depends_on only (components/ordering.py).
        staged = [waits_for(args["model_path"])]
        args = {**args, "model_path": value_only(args["model_path"])}
        if cache := args["node_cache"]:
            # Every node's copy complete before the pods start: an upgrade warms the caches first.
            staged.append(waits_for(cache["model_path"]))
            args["node_cache"] = {**cache, "model_path": value_only(cache["model_path"])}
        # Each adapter's Job, like the model's, through depends_on only.
        staged += [waits_for(adapter["path"]) for adapter in args["lora_adapters"]]
        args["lora_adapters"] = [{**adapter, "path": value_only(adapter["path"])} for adapter in args["lora_adapters"]]
        namespace, labels = args["namespace"], object_labels(name, COMPONENT)
        child = pulumi.ResourceOptions(parent=self)
        needs = [
            # Its own identity, with no API token: the server never calls the Kubernetes API.
            k8s.core.v1.ServiceAccount(
                name,
                metadata={"name": name, "namespace": namespace, "labels": labels},
                automount_service_account_token=False,
                opts=child,
            )
        ]
        if args["api_key"] is not None:
            needs.append(secret_of(f"{name}-api-key", namespace, labels, API_KEY_SECRET_KEY, args["api_key"], self))
        create, update = server_timeouts(args)
        timeouts = pulumi.CustomTimeouts(create=f"{create}m", update=f"{update}m")
        workload_opts = pulumi.ResourceOptions(parent=self, depends_on=[*needs, *staged], custom_timeouts=timeouts)
        kind = workload_kind(args["nodes"])
        # Ready when the promised replicas run the new template, whatever an autoscaler added.
        ready = rolled_out(promised_replicas(args))
        if kind == LWS_KIND:
            workload = k8s.apiextensions.CustomResource(
                name,
                api_version=LWS_API_VERSION,
                kind=LWS_KIND,
                metadata={"name": name, "namespace": namespace, "labels": labels, "annotations": ready},
                spec=group_spec(name, args),
                opts=workload_opts,
            )
            api_version, pods = LWS_API_VERSION, {LWS_NAME_LABEL: name}
        else:
            workload = k8s.apps.v1.Deployment(
                name,
                metadata={"name": name, "namespace": namespace, "labels": labels, "annotations": ready},
                spec=deployment_spec(name, args),
                opts=workload_opts,
            )
            api_version, pods = "apps/v1", selector_labels(name, COMPONENT)
        if args["network_policy"]:
            k8s.networking.v1.NetworkPolicy(
                f"{name}-egress",
                metadata={"name": f"{name}-egress", "namespace": namespace, "labels": labels},
                spec=egress_dns_only(pods),
                opts=child,
            )
            if args["nodes"] > 1:
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-group",
                    metadata={"name": f"{name}-group", "namespace": namespace, "labels": labels},
                    spec=group_traffic(name),
                    opts=child,
                )
        # Drains, like rollouts, keep a replica serving unless the gap is accepted (components.rollout).
        budget = pdb_spec(name, args)
        k8s.policy.v1.PodDisruptionBudget(
            pdb_name(name, budget),
            metadata={"name": pdb_name(name, budget), "namespace": namespace, "labels": labels},
            spec=budget,
            opts=child,
        )
        if service_gap(args) and not args["accept_service_gap"]:
            pulumi.log.warn(gap_warning(name), resource=self)
        self.deployment_name = workload.metadata.apply(lambda metadata: metadata["name"])
        self.workload_kind = pulumi.Output.from_input(kind)
        self.workload_api_version = pulumi.Output.from_input(api_version)
        # Resolved only once the rollout is complete, so whatever selects the pods (the Service)
        # is created after them rather than in parallel.
        leaders = selector_labels(name, COMPONENT)
        self.selector_labels = workload.metadata.apply(lambda _: leaders)
        self.port = pulumi.Output.from_input(PORT)
        self.port_name = pulumi.Output.from_input(PORT_NAME)
        self.takes_api_key = api_key_ref(name, args) is not None
        self.adapter_names = [adapter["name"] for adapter in args["lora_adapters"]]
        estimate = server_capacity(args)
        if estimate and estimate.kv_cache_tokens is not None and estimate.kv_cache_tokens < args["max_model_len"]:
            pulumi.log.warn(
                worded(
                    "VLLMServer",
                    f"VLLMServer {name}: the KV cache left after the weights holds about {estimate.kv_cache_tokens} "
                    f"tokens, less than one sequence of max_model_len ({args['max_model_len']}); vLLM refuses to "
                    "start so: lower max_model_len, raise gpu_memory_utilization, or use more GPUs",
                ),
                resource=self,
            )
        self.capacity = pulumi.Output.from_input(estimate.summary() if estimate else {})
        ready_in = time_to_ready(args)
        self.time_to_ready = pulumi.Output.from_input(ready_in.summary())
        self.register_outputs(
            {
                "deploymentName": self.deployment_name,
                "workloadKind": self.workload_kind,
                "workloadApiVersion": self.workload_api_version,
                "selectorLabels": self.selector_labels,
                "port": self.port,
                "portName": self.port_name,
                "takesApiKey": self.takes_api_key,
                "adapterNames": self.adapter_names,
                "capacity": self.capacity,
                "timeToReady": self.time_to_ready,
            }
        )
