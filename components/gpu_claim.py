"""GpuClaim: how a server pod gets its GPUs, as a pod-spec fragment.

Backends:
- ``nvidia``: whole GPUs through the NVIDIA device plugin (``nvidia.com/gpu``).
- ``hami``: HAMi vGPU slices: GPU memory and core shares per GPU, GPU-type selection and
  scheduling policies, scheduled by ``hami-scheduler``. HAMi defines no custom resources; it
  works through extended resources and annotations only.
"""

from typing import Any, Literal, NotRequired, Optional, TypedDict

import pulumi

from .arguments import ArgsSpec, DnsSubdomain, Problems, check, int_range, rule, with_defaults
from .grammar import label_value, token

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HAMI_SCHEDULER = "hami-scheduler"


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

    backend: NotRequired[str]
    """How pods get GPUs: nvidia (whole GPUs) or hami (vGPU slices). Default nvidia."""
    count: int
    """GPUs per pod (whole GPUs, or the GPUs a HAMi slice spans), at least 1."""
    products: NotRequired[list[str]]
    """Require nodes whose nvidia.com/gpu.product label (GPU Feature Discovery) is one of these, e.g.
    ["NVIDIA-H100-80GB-HBM3"]; empty allows any GPU."""
    runtime_class_name: NotRequired[Optional[str]]
    """runtimeClassName for the pod, e.g. nvidia on GPU Operator clusters."""
    tolerate_gpu_taint: NotRequired[bool]
    """Tolerate the nvidia.com/gpu NoSchedule taint of GPU nodes. Default true."""
    hami: NotRequired[HamiSliceArgs]
    """The slice of each GPU, for the hami backend only."""


DEFAULTS: dict[str, Any] = {
    "backend": "nvidia",
    "products": [],
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


def _gpu_type(value: str) -> str:
    if "," in token(value):
        raise ValueError("must be one GPU type without commas (HAMi joins the list with commas)")
    return value


GpuType = rule(_gpu_type)
HAMI_RULES: dict[str, Any] = {
    "hami.memory_mib": int_range(1),
    "hami.memory_percent": int_range(1, 100),
    "hami.cores": int_range(1, 100),
    "hami.gpu_types": list[GpuType],  # type: ignore[valid-type]
    "hami.exclude_gpu_types": list[GpuType],  # type: ignore[valid-type]
    "hami.node_policy": Literal["binpack", "spread"],
    "hami.gpu_policy": Literal["binpack", "spread"],
}


@check("backend", "hami")
def _hami_needs_its_backend(args: dict) -> Problems:
    if args["backend"] == "hami":
        return {}
    return {
        f"hami.{field}": "is a HAMi setting but the backend is not hami; remove it or set the backend to hami"
        for field, value in args["hami"].items()
        if value is not None
    }


@check("hami")
def _one_memory_limit(args: dict) -> Problems:
    if args["hami"].get("memory_mib") and args["hami"].get("memory_percent"):
        return {"hami.memory_percent": "cannot be combined with hami.memory_mib; set one of them"}
    return {}


SPEC = ArgsSpec(
    "GpuClaim",
    GpuClaimArgs,
    DEFAULTS,
    rules={
        "backend": Literal["nvidia", "hami"],
        "count": int_range(1),
        "products": list[rule(lambda value: label_value(token(value)))],  # type: ignore[misc]
        "runtime_class_name": DnsSubdomain,
        **HAMI_RULES,
    },
    checks=(_hami_needs_its_backend, _one_memory_limit),
)


def gpu_claim_problems(args: GpuClaimArgs) -> Problems:
    """What is wrong with the arguments, keyed by argument path (e.g. ``hami.cores``)."""
    return SPEC.problems(args)


def pod_fragment(args: GpuClaimArgs) -> GpuPodFragment:
    """The pod-spec fragment for valid arguments."""
    args = with_defaults(args, DEFAULTS)
    count = args["count"]
    products = args["products"]
    fragment = GpuPodFragment(
        limits={GPU_RESOURCE: str(count)},
        annotations={},
        scheduler_name=None,
        tolerations=(
            [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
            if args["tolerate_gpu_taint"]
            else []
        ),
        affinity=_product_affinity(products) if products else None,
        runtime_class_name=args["runtime_class_name"],
        vllm_args=[],
    )
    if args["backend"] == "hami":
        _add_hami_slice(fragment, count, args["hami"])
    return fragment


def _product_affinity(products: list[str]) -> dict:
    term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": products}]}
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
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:GpuClaim", name, None, opts)
        self.pod_fragment = pod_fragment(args)
        self.gpu_count = pulumi.Output.from_input(args["count"])
        self.backend = pulumi.Output.from_input(args["backend"])
        self.register_outputs({"gpuCount": self.gpu_count, "backend": self.backend})
