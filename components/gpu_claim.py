"""GpuClaim: how a server pod gets its GPUs, as a pod-spec fragment.

Backends:
- ``nvidia``: whole GPUs through the NVIDIA device plugin (``nvidia.com/gpu``).
- ``hami``: HAMi vGPU slices: GPU memory and core shares per GPU, GPU-type selection and
  scheduling policies, scheduled by ``hami-scheduler``. HAMi defines no custom resources; it
  works through extended resources and annotations only.
"""

import re
from typing import Any, NotRequired, Optional, TypedDict

import pulumi

from .arguments import raise_for_problems, with_defaults

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HAMI_SCHEDULER = "hami-scheduler"
HAMI_POLICIES = ("binpack", "spread")
BACKENDS = ("nvidia", "hami")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$")


class HamiSliceArgs(TypedDict):
    """The share of each GPU a pod gets under HAMi."""

    memory_mib: NotRequired[int]
    """GPU memory per GPU in MiB (``nvidia.com/gpumem``). Exclusive with memory_percent."""
    memory_percent: NotRequired[int]
    """GPU memory per GPU in percent, 1-100 (``nvidia.com/gpumem-percentage``)."""
    cores: NotRequired[int]
    """Percent of each GPU's streaming multiprocessors, 1-100 (``nvidia.com/gpucores``)."""
    gpu_types: NotRequired[list[str]]
    """GPU types the pod may use (``nvidia.com/use-gputype``), e.g. ["A100"]."""
    exclude_gpu_types: NotRequired[list[str]]
    """GPU types the pod must avoid (``nvidia.com/nouse-gputype``)."""
    node_policy: NotRequired[str]
    """Node scheduling policy, binpack or spread (``hami.io/node-scheduler-policy``)."""
    gpu_policy: NotRequired[str]
    """GPU scheduling policy, binpack or spread (``hami.io/gpu-scheduler-policy``)."""


class GpuClaimArgs(TypedDict):
    """Arguments of GpuClaim."""

    backend: str
    """How pods get GPUs: nvidia (whole GPUs) or hami (vGPU slices)."""
    count: int
    """GPUs per pod (whole GPUs, or the GPUs a HAMi slice spans), at least 1."""
    product: NotRequired[Optional[str]]
    """Require nodes whose nvidia.com/gpu.product label has this value."""
    runtime_class_name: NotRequired[Optional[str]]
    """runtimeClassName for the pod, e.g. nvidia on GPU Operator clusters."""
    tolerate_gpu_taint: NotRequired[bool]
    """Tolerate the nvidia.com/gpu NoSchedule taint of GPU nodes. Default true."""
    hami: NotRequired[HamiSliceArgs]
    """The slice of each GPU, for the hami backend only."""


DEFAULTS: dict[str, Any] = {
    "product": None,
    "runtime_class_name": None,
    "tolerate_gpu_taint": True,
    "hami": {},
}


class GpuPodFragment(TypedDict):
    """What a pod spec needs to get the claimed GPUs; VLLMServer merges it."""

    limits: dict[str, str]
    """Extended-resource limits for the server container (requests default to them)."""
    annotations: dict[str, str]
    """Pod annotations."""
    scheduler_name: Optional[str]
    """schedulerName of the pod, or None for the default scheduler."""
    tolerations: list[dict[str, str]]
    """Pod tolerations."""
    affinity: Optional[dict[str, Any]]
    """Pod affinity, or None."""
    runtime_class_name: Optional[str]
    """runtimeClassName of the pod, or None."""
    vllm_args: list[str]
    """vllm serve flags this way of sharing GPUs needs."""


def gpu_claim_problems(args: GpuClaimArgs) -> dict[str, str]:
    """What is wrong with the arguments, keyed by argument path (e.g. ``hami.cores``)."""
    args = with_defaults(args, DEFAULTS)
    problems: dict[str, str] = {}
    backend = args.get("backend")
    hami = args["hami"]
    if backend not in BACKENDS:
        return {"backend": f"must be one of {', '.join(BACKENDS)}"}
    if args.get("count", 0) < 1:
        problems["count"] = "must be at least 1"
    if args["product"] and not LABEL_VALUE.match(args["product"]):
        problems["product"] = "must be a node label value as GPU Feature Discovery sets it, e.g. NVIDIA-H100-80GB-HBM3"
    if backend != "hami":
        for field in (k for k, v in hami.items() if v):
            problems[f"hami.{field}"] = (
                "is a HAMi setting but the backend is not hami; remove it or set the backend to hami"
            )
        return problems
    if hami.get("memory_mib") and hami.get("memory_percent"):
        problems["hami.memory_percent"] = "cannot be combined with hami.memory_mib; set one of them"
    if hami.get("memory_mib", 0) < 0:
        problems["hami.memory_mib"] = "must be a positive number of MiB"
    for field in ("memory_percent", "cores"):
        if not 0 <= hami.get(field, 0) <= 100:
            problems[f"hami.{field}"] = "must be a percentage from 1 to 100"
    for field in ("node_policy", "gpu_policy"):
        if hami.get(field) and hami[field] not in HAMI_POLICIES:
            problems[f"hami.{field}"] = f"must be one of {', '.join(HAMI_POLICIES)}"
    return problems


def pod_fragment(args: GpuClaimArgs) -> GpuPodFragment:
    """The pod-spec fragment for valid arguments."""
    args = with_defaults(args, DEFAULTS)
    count = args["count"]
    product = args["product"]
    fragment = GpuPodFragment(
        limits={GPU_RESOURCE: str(count)},
        annotations={},
        scheduler_name=None,
        tolerations=(
            [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
            if args["tolerate_gpu_taint"]
            else []
        ),
        affinity=_product_affinity(product) if product else None,
        runtime_class_name=args["runtime_class_name"],
        vllm_args=[],
    )
    if args["backend"] == "hami":
        _add_hami_slice(fragment, count, args["hami"])
    return fragment


def _product_affinity(product: str) -> dict:
    term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [product]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _add_hami_slice(fragment: GpuPodFragment, count: int, hami: HamiSliceArgs) -> None:
    limit_of = {
        "memory_mib": "nvidia.com/gpumem",
        "memory_percent": "nvidia.com/gpumem-percentage",
        "cores": "nvidia.com/gpucores",
    }
    annotation_of = {
        "node_policy": "hami.io/node-scheduler-policy",
        "gpu_policy": "hami.io/gpu-scheduler-policy",
    }
    for field, resource in limit_of.items():
        if hami.get(field):
            fragment["limits"][resource] = str(hami[field])
    for field, annotation in annotation_of.items():
        if hami.get(field):
            fragment["annotations"][annotation] = hami[field]
    if hami.get("gpu_types"):
        fragment["annotations"]["nvidia.com/use-gputype"] = ",".join(hami["gpu_types"])
    if hami.get("exclude_gpu_types"):
        fragment["annotations"]["nvidia.com/nouse-gputype"] = ",".join(hami["exclude_gpu_types"])
    fragment["scheduler_name"] = HAMI_SCHEDULER
    # vLLM sizes CUDA graphs from the whole card's memory, not HAMi's cap (vllm #40937), and
    # custom all-reduce hangs across vGPU slices (HAMi examples/nvidia/vllm_cross_vgpu.yaml).
    if hami.get("memory_mib") or hami.get("memory_percent"):
        fragment["vllm_args"].append("--enforce-eager")
    if count > 1:
        fragment["vllm_args"].append("--disable-custom-all-reduce")


class GpuClaim(pulumi.ComponentResource):
    """How server pods get GPUs. Produces ``pod_fragment``; creates no objects of its own yet."""

    pod_fragment: GpuPodFragment
    """The pod-spec fragment for VLLMServer (plain values, known at construction)."""
    gpu_count: pulumi.Output[int]
    """GPUs per pod."""
    backend: pulumi.Output[str]
    """The backend in use."""

    def __init__(self, name: str, args: GpuClaimArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = with_defaults(args, DEFAULTS)
        raise_for_problems("GpuClaim", name, gpu_claim_problems(args))
        super().__init__("vllm-serving:index:GpuClaim", name, None, opts)
        self.pod_fragment = pod_fragment(args)
        self.gpu_count = pulumi.Output.from_input(args["count"])
        self.backend = pulumi.Output.from_input(args["backend"])
        self.register_outputs({"gpuCount": self.gpu_count, "backend": self.backend})
