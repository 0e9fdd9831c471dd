"""Reusable Pulumi components that put an OpenAI-compatible vLLM service onto Kubernetes.

Installed as ``vllm_serving_components`` (from the repository's ``components/`` folder). Each
component checks its arguments before it creates anything and raises ComponentArgsError naming
every bad one; the ``*_problems`` functions run the same checks without creating anything.
"""

from .arguments import ComponentArgsError
from .autoscaler import Autoscaler, AutoscalerArgs, autoscaler_problems
from .body_router import BodyRouter, BodyRouterArgs, body_router_problems
from .exposure import Exposure, ExposureArgs, exposure_problems
from .gpu_claim import GpuClaim, GpuClaimArgs, GpuPodFragment, HamiSliceArgs, gpu_claim_problems
from .image_pre_pull import ImagePrePull, ImagePrePullArgs, image_pre_pull_problems
from .lora import LoraAdapterArgs
from .model_store import AdapterRepoArgs, ModelStore, ModelStoreArgs, model_store_problems
from .node_cache import NodeCache, NodeCacheArgs, NodeCacheMount, node_cache_problems
from .pods import PodSettingsArgs, SecretKeyArgs, TolerationArgs
from .vllm_server import PORT, PORT_NAME, VLLMServer, VLLMServerArgs, vllm_server_problems

__all__ = [
    "AdapterRepoArgs",
    "Autoscaler",
    "AutoscalerArgs",
    "BodyRouter",
    "BodyRouterArgs",
    "ComponentArgsError",
    "Exposure",
    "ExposureArgs",
    "GpuClaim",
    "GpuClaimArgs",
    "GpuPodFragment",
    "HamiSliceArgs",
    "ImagePrePull",
    "ImagePrePullArgs",
    "LoraAdapterArgs",
    "PORT",
    "PORT_NAME",
    "ModelStore",
    "ModelStoreArgs",
    "NodeCache",
    "NodeCacheArgs",
    "NodeCacheMount",
    "PodSettingsArgs",
    "SecretKeyArgs",
    "TolerationArgs",
    "VLLMServer",
    "VLLMServerArgs",
    "autoscaler_problems",
    "body_router_problems",
    "exposure_problems",
    "gpu_claim_problems",
    "image_pre_pull_problems",
    "model_store_problems",
    "node_cache_problems",
    "vllm_server_problems",
]
