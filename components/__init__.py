"""Reusable Pulumi components that put an OpenAI-compatible vLLM service onto Kubernetes."""

from .arguments import ComponentArgsError
from .autoscaler import Autoscaler, AutoscalerArgs
from .exposure import Exposure, ExposureArgs
from .gpu_claim import GpuClaim, GpuClaimArgs, GpuPodFragment, HamiSliceArgs
from .model_store import ModelStore, ModelStoreArgs
from .vllm_server import ApiKeySecretArgs, VLLMServer, VLLMServerArgs

__all__ = [
    "ApiKeySecretArgs",
    "Autoscaler",
    "AutoscalerArgs",
    "ComponentArgsError",
    "Exposure",
    "ExposureArgs",
    "GpuClaim",
    "GpuClaimArgs",
    "GpuPodFragment",
    "HamiSliceArgs",
    "ModelStore",
    "ModelStoreArgs",
    "VLLMServer",
    "VLLMServerArgs",
]
