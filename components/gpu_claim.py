"""GpuClaim: how a server pod gets its GPUs, as a pod-spec fragment and the objects it needs.

Backends:
- ``nvidia``: whole GPUs through the NVIDIA device plugin (``nvidia.com/gpu``).
- ``hami``: HAMi vGPU slices: GPU memory and core shares per GPU, GPU-type selection and
  scheduling policies, scheduled by ``hami-scheduler``. HAMi defines no custom resources; it
  works through extended resources and annotations only.
- ``mig``: a MIG instance of a profile (``nvidia.com/mig-<profile>``, the device plugin's mixed
  strategy). vLLM cannot spread tensor parallelism over MIG instances.
- ``dra``: Dynamic Resource Allocation (``resource.k8s.io/v1``, GA in Kubernetes 1.34): a
  ResourceClaimTemplate asking a device class for exactly ``count`` devices, optionally
  narrowed by CEL selectors on the NVIDIA DRA driver's attributes (``productName``) and
  capacity (``memory``).

With a quota, a namespace ResourceQuota caps the GPUs (and, under HAMi, the GPU memory) every
pod in the namespace may take together: the elastic bound of the deployment.
"""

import re
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from . import grammar
from .arguments import ArgsSpec, DnsLabel, DnsSubdomain, Problems, check, int_range, rule, with_defaults, worded
from .capacity import GPU_MEMORY_GIB, mig_profile_gib, smallest_product_gib
from .grammar import label_value, token
from .labels import object_labels

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HAMI_SCHEDULER = "hami-scheduler"
HAMI_MEMORY = "nvidia.com/gpumem"
DRA_CLAIM = "gpus"
DRA_DRIVER = "gpu.nvidia.com"
DRA_MIN_VERSION = (1, 34)
COMPONENT = "gpus"
MIB = 2**20
GIB = 2**30


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
    enforce_eager: NotRequired[Optional[bool]]
    """vllm --enforce-eager. None: on with a memory cap, since vLLM sizes CUDA graphs from the whole
    card's memory, not HAMi's cap (vllm #40937)."""
    disable_custom_all_reduce: NotRequired[Optional[bool]]
    """vllm --disable-custom-all-reduce. None: on when a slice spans more than one GPU, since custom
    all-reduce is fragile across slices (HAMi examples/nvidia/vllm_cross_vgpu.yaml)."""


class DraArgs(TypedDict):
    """How the ResourceClaimTemplate asks for devices (backend dra)."""

    device_class: NotRequired[str]
    """The DeviceClass to ask. Default gpu.nvidia.com (the NVIDIA DRA driver's)."""
    min_memory_gib: NotRequired[Optional[int]]
    """Only devices with at least this much memory (a CEL selector on their memory capacity)."""
    selectors: NotRequired[list[str]]
    """Further CEL expressions every device must satisfy."""


class GpuQuotaArgs(TypedDict):
    """A namespace ResourceQuota on GPUs: what all the deployment's pods may take together."""

    gpus: int
    """GPUs (devices of the backend) in the namespace, at most."""
    gpu_memory_mib: NotRequired[Optional[int]]
    """HAMi only: GPU memory in MiB (nvidia.com/gpumem) in the namespace, at most."""


class GpuClaimArgs(TypedDict):
    """Arguments of GpuClaim."""

    backend: NotRequired[str]
    """How pods get GPUs: nvidia (whole GPUs), hami (vGPU slices), mig (MIG instances) or dra
    (Dynamic Resource Allocation). Default nvidia."""
    count: int
    """GPUs per pod (whole GPUs, the GPUs a HAMi slice spans, MIG instances or DRA devices), at least 1."""
    products: NotRequired[list[str]]
    """Require nodes whose nvidia.com/gpu.product label (GPU Feature Discovery) is one of these, e.g.
    ["NVIDIA-H100-80GB-HBM3"]; with dra, devices whose productName is. Empty allows any GPU."""
    memory_gib: NotRequired[Optional[float]]
    """Memory per device in GiB, for the capacity check, when products, a MIG profile or a HAMi cap
    do not tell it."""
    runtime_class_name: NotRequired[Optional[str]]
    """runtimeClassName for the pod, e.g. nvidia on GPU Operator clusters."""
    tolerate_gpu_taint: NotRequired[bool]
    """Tolerate the nvidia.com/gpu NoSchedule taint of GPU nodes. Default true."""
    hami: NotRequired[HamiSliceArgs]
    """The slice of each GPU, for the hami backend only."""
    mig_profile: NotRequired[Optional[str]]
    """The MIG profile, e.g. 3g.40gb, for the mig backend only."""
    dra: NotRequired[DraArgs]
    """How devices are asked for, for the dra backend only."""
    namespace: NotRequired[Optional[pulumi.Input[str]]]
    """Namespace of the objects the claim creates (the DRA template, the quota)."""
    kubernetes_version: NotRequired[Optional[str]]
    """The cluster's Kubernetes version, e.g. 1.34; dra needs 1.34 or later."""
    quota: NotRequired[Optional[GpuQuotaArgs]]
    """A ResourceQuota capping the GPUs of the namespace; None creates none."""


DEFAULTS: dict[str, Any] = {
    "backend": "nvidia",
    "products": [],
    "memory_gib": None,
    "runtime_class_name": None,
    "tolerate_gpu_taint": True,
    "hami": {},
    "mig_profile": None,
    "dra": {},
    "namespace": None,
    "kubernetes_version": None,
    "quota": None,
}
DRA_DEFAULTS = {"device_class": DRA_DRIVER, "min_memory_gib": None, "selectors": []}


class GpuPodFragment(TypedDict):
    """What a pod spec needs to get the claimed GPUs; VLLMServer merges it."""

    backend: str
    """The backend that hands out the devices."""
    devices: int
    """Devices the server sees (tensor x pipeline parallel must equal it)."""
    device_memory_gib: Optional[float]
    """Memory of each device, when known (for the capacity check)."""
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
    resource_claims: list[dict[str, str]]
    """The pod's resourceClaims (dra)."""
    container_claims: list[dict[str, str]]
    """The server container's resources.claims (dra)."""
    vllm_args: list[str]
    """vllm serve flags this way of sharing GPUs needs."""


def _gpu_type(value: str) -> str:
    if "," in token(value):
        raise ValueError("must be one GPU type without commas (HAMi joins the list with commas)")
    return value


def _kubernetes_version(value: str) -> str:
    if not kubernetes_minor(value):
        raise ValueError("must be a Kubernetes minor version such as 1.34")
    return value


def kubernetes_minor(value: str) -> Optional[tuple[int, int]]:
    """(major, minor) of 1.34 or v1.34.2; None if it is not a version."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", value)
    return (int(match[1]), int(match[2])) if match else None


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


@check("backend", "hami", "mig_profile", "dra")
def _settings_need_their_backend(args: dict) -> Problems:
    owned = {"hami": args["hami"], "mig": {"mig_profile": args["mig_profile"]}, "dra": args["dra"]}
    problems = {}
    for backend, settings in owned.items():
        if args["backend"] == backend:
            continue
        for field, value in settings.items():
            if value not in (None, [], {}):
                path = f"{backend}.{field}" if backend != "mig" else field
                problems[path] = f"is a {backend} setting but the backend is {args['backend']}; remove it or set the backend to {backend}"
    if args["backend"] == "mig" and not args["mig_profile"]:
        problems["mig_profile"] = "is required with backend mig, e.g. 3g.40gb"
    return problems


@check("hami")
def _one_memory_limit(args: dict) -> Problems:
    if args["hami"].get("memory_mib") and args["hami"].get("memory_percent"):
        return {"hami.memory_percent": "cannot be combined with hami.memory_mib; set one of them"}
    return {}


@check("backend", "hami", "memory_gib", "products")
def _slice_fits_a_gpu(args: dict) -> Problems:
    """A HAMi memory slice no GPU can give would leave every pod Pending."""
    wanted = args["hami"].get("memory_mib")
    if args["backend"] != "hami" or not wanted:
        return {}
    card = args["memory_gib"] or smallest_product_gib(args["products"])
    if card is None:
        card, which = max(GPU_MEMORY_GIB.values()), "the largest GPU this library knows"
    else:
        which = "memory_gib" if args["memory_gib"] else "the smallest GPU of products"
    if wanted > card * GIB / MIB:
        return {
            "hami.memory_mib": f"({wanted} MiB) is more than one GPU has: {which} has {card:g} GiB "
            f"({card * GIB / MIB:.0f} MiB); lower it, or give memory_gib if the cluster's GPUs are larger"
        }
    return {}


@check("backend", "kubernetes_version", "namespace")
def _dra_needs_a_recent_cluster(args: dict) -> Problems:
    if args["backend"] != "dra":
        return {}
    problems = {}
    version = kubernetes_minor(args["kubernetes_version"] or "")
    if version is None or version < DRA_MIN_VERSION:
        problems["kubernetes_version"] = (
            "must be 1.34 or later for backend dra (resource.k8s.io/v1 is GA from 1.34); give the cluster's version"
        )
    if args["namespace"] is None:
        problems["namespace"] = "is required with backend dra: the ResourceClaimTemplate lives in the pods' namespace"
    return problems


@check("quota", "namespace", "backend", "count")
def _quota(args: dict) -> Problems:
    quota = args["quota"]
    if not quota:
        return {}
    problems = {}
    if args["namespace"] is None:
        problems["namespace"] = "is required with a quota: the ResourceQuota caps a namespace"
    if quota["gpus"] < args["count"]:
        problems["quota.gpus"] = f"({quota['gpus']}) is fewer than one pod's GPUs ({args['count']}); no pod could start"
    if quota.get("gpu_memory_mib") and args["backend"] != "hami":
        problems["quota.gpu_memory_mib"] = "only applies with backend hami"
    return problems


SPEC = ArgsSpec(
    "GpuClaim",
    GpuClaimArgs,
    DEFAULTS,
    rules={
        "backend": Literal["nvidia", "hami", "mig", "dra"],
        "count": int_range(1, 1024),
        "products": list[rule(lambda value: label_value(token(value)))],  # type: ignore[misc]
        "memory_gib": Annotated[float, Field(gt=0, le=4096)],
        "runtime_class_name": DnsSubdomain,
        **HAMI_RULES,
        "mig_profile": rule(grammar.mig_profile),
        "dra.device_class": DnsSubdomain,
        "dra.min_memory_gib": int_range(1, 4096),
        "dra.selectors": list[rule(grammar.single_line)],  # type: ignore[misc]
        "namespace": DnsLabel,
        "kubernetes_version": rule(_kubernetes_version),
        "quota.gpus": int_range(1),
        "quota.gpu_memory_mib": int_range(1),
    },
    checks=(_settings_need_their_backend, _one_memory_limit, _slice_fits_a_gpu, _dra_needs_a_recent_cluster, _quota),
    name_rule=lambda name: grammar.dns_label(name, grammar.DNS_LABEL_MAX - len("-gpus")),
)


def gpu_claim_problems(args: GpuClaimArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments, keyed by argument path (e.g. ``hami.cores``)."""
    return SPEC.problems(args, name)


def quota_resource(args: GpuClaimArgs) -> str:
    """The ResourceQuota key that counts this backend's devices."""
    args = with_defaults(args, DEFAULTS)
    if args["backend"] == "mig":
        return f"requests.nvidia.com/mig-{args['mig_profile']}"
    if args["backend"] == "dra":
        # core/v1 ResourceClaimsPerClass: <device class>.deviceclass.resource.k8s.io/devices
        return f"{dra_settings(args)['device_class']}.deviceclass.resource.k8s.io/devices"
    return f"requests.{GPU_RESOURCE}"


def dra_settings(args: GpuClaimArgs) -> DraArgs:
    return with_defaults(with_defaults(args, DEFAULTS)["dra"], DRA_DEFAULTS)  # type: ignore[return-value]


def device_memory_gib(args: GpuClaimArgs) -> Optional[float]:
    """Memory of each device: the HAMi cap, the MIG profile's, the DRA minimum, the smallest
    allowed product's, or the memory_gib given."""
    args = with_defaults(args, DEFAULTS)
    card = args["memory_gib"] or smallest_product_gib(args["products"])
    hami = args["hami"]
    if args["backend"] == "hami" and hami.get("memory_mib"):
        return hami["memory_mib"] * MIB / GIB
    if args["backend"] == "hami" and hami.get("memory_percent"):
        return card * hami["memory_percent"] / 100 if card else None
    if args["backend"] == "mig":
        return mig_profile_gib(args["mig_profile"])
    if args["backend"] == "dra" and dra_settings(args)["min_memory_gib"] and not card:
        return float(dra_settings(args)["min_memory_gib"])
    return card


def pod_fragment(args: GpuClaimArgs, template_name: str = "") -> GpuPodFragment:
    """The pod-spec fragment for valid arguments (template_name: the DRA ResourceClaimTemplate)."""
    args = with_defaults(args, DEFAULTS)
    count, backend = args["count"], args["backend"]
    fragment = GpuPodFragment(
        backend=backend,
        devices=count,
        device_memory_gib=device_memory_gib(args),
        limits={},
        annotations={},
        scheduler_name=None,
        tolerations=(
            [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
            if args["tolerate_gpu_taint"]
            else []
        ),
        affinity=_product_affinity(args["products"]) if args["products"] and backend != "dra" else None,
        runtime_class_name=args["runtime_class_name"],
        resource_claims=[],
        container_claims=[],
        vllm_args=[],
    )
    if backend == "mig":
        fragment["limits"][f"nvidia.com/mig-{args['mig_profile']}"] = str(count)
    elif backend == "dra":
        fragment["resource_claims"].append({"name": DRA_CLAIM, "resourceClaimTemplateName": template_name})
        fragment["container_claims"].append({"name": DRA_CLAIM})
    else:
        fragment["limits"][GPU_RESOURCE] = str(count)
    if backend == "hami":
        _add_hami_slice(fragment, count, args["hami"])
    return fragment


def claim_template_spec(args: GpuClaimArgs) -> dict:
    """The ResourceClaimTemplate's spec: exactly count devices of the class, narrowed by selectors."""
    args = with_defaults(args, DEFAULTS)
    dra = dra_settings(args)
    attribute = f"device.attributes['{DRA_DRIVER}']"
    expressions = []
    if args["products"]:
        # The driver's productName is the device name ("NVIDIA H100 80GB HBM3"); GPU Feature
        # Discovery's label is the same with '-' for spaces, which is how products are given.
        names = ", ".join(f"'{product}'" for product in args["products"])
        expressions.append(f"{attribute}.productName.replace(' ', '-') in [{names}]")
    if dra["min_memory_gib"]:
        expressions.append(
            f"device.capacity['{DRA_DRIVER}'].memory.compareTo(quantity('{dra['min_memory_gib']}Gi')) >= 0"
        )
    expressions += dra["selectors"]
    exactly: dict = {"deviceClassName": dra["device_class"], "allocationMode": "ExactCount", "count": args["count"]}
    if expressions:
        exactly["selectors"] = [{"cel": {"expression": expression}} for expression in expressions]
    return {"spec": {"devices": {"requests": [{"name": DRA_CLAIM, "exactly": exactly}]}}}


def quota_spec(args: GpuClaimArgs) -> dict:
    args = with_defaults(args, DEFAULTS)
    quota = args["quota"]
    hard = {quota_resource(args): str(quota["gpus"])}
    if quota.get("gpu_memory_mib"):
        hard[f"requests.{HAMI_MEMORY}"] = str(quota["gpu_memory_mib"])
    return {"hard": hard}


def _product_affinity(products: list[str]) -> dict:
    term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": products}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _add_hami_slice(fragment: GpuPodFragment, count: int, hami: HamiSliceArgs) -> None:
    limit_of = {
        "memory_mib": HAMI_MEMORY,
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
    fragment["vllm_args"] += [flag for flag, on in hami_flags(count, hami).items() if on]


def hami_flags(count: int, hami: HamiSliceArgs) -> dict[str, bool]:
    """The vLLM flags HAMi slices need, each as given or as the slice implies."""
    capped = bool(hami.get("memory_mib") or hami.get("memory_percent"))
    eager, all_reduce = hami.get("enforce_eager"), hami.get("disable_custom_all_reduce")
    return {
        "--enforce-eager": capped if eager is None else eager,
        "--disable-custom-all-reduce": count > 1 if all_reduce is None else all_reduce,
    }


class GpuClaim(pulumi.ComponentResource):
    """How server pods get GPUs: ``pod_fragment``, and the DRA template and quota it needs."""

    pod_fragment: GpuPodFragment
    """The pod-spec fragment for VLLMServer (plain values, known at construction)."""
    gpu_count: pulumi.Output[int]
    """GPUs per pod."""
    backend: pulumi.Output[str]
    """The backend in use."""

    def __init__(self, name: str, args: GpuClaimArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:GpuClaim", name, None, opts)
        labels = object_labels(name, COMPONENT)
        template = f"{name}-gpus"
        if args["backend"] == "dra":
            k8s.resource.v1.ResourceClaimTemplate(
                template,
                metadata={"name": template, "namespace": args["namespace"], "labels": labels},
                spec=claim_template_spec(args),
                opts=pulumi.ResourceOptions(parent=self),
            )
        if args["quota"]:
            k8s.core.v1.ResourceQuota(
                template,
                metadata={"name": template, "namespace": args["namespace"], "labels": labels},
                spec=quota_spec(args),
                opts=pulumi.ResourceOptions(parent=self),
            )
        hami = args["hami"]
        if args["backend"] == "hami" and any(hami_flags(args["count"], hami).values()):
            applied = [flag for flag, on in hami_flags(args["count"], hami).items() if on]
            pulumi.log.warn(
                worded(
                    "GpuClaim",
                    f"GpuClaim {name}: HAMi slices add vllm {' '.join(applied)} (CUDA graphs ignore HAMi's memory "
                    "cap; custom all-reduce is fragile across slices); set hami.enforce_eager or "
                    "hami.disable_custom_all_reduce to override",
                ),
                resource=self,
            )
        self.pod_fragment = pod_fragment(args, template)
        self.gpu_count = pulumi.Output.from_input(args["count"])
        self.backend = pulumi.Output.from_input(args["backend"])
        self.register_outputs({"gpuCount": self.gpu_count, "backend": self.backend})
