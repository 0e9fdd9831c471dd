"""Reusable Pulumi components that put an OpenAI-compatible vLLM service onto Kubernetes."""

from .arguments import ComponentArgsError
from .autoscaler import Autoscaler, AutoscalerArgs
from .exposure import Exposure, ExposureArgs
from .gpu_claim import GpuClaim, GpuClaimArgs, GpuPodFragment, HamiSliceArgs
from .model_store import ModelStore, ModelStoreArgs
from .pods import PodSettingsArgs, SecretKeyArgs, TolerationArgs
from .vllm_server import VLLMServer, VLLMServerArgs

__all__ = [
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
    "PodSettingsArgs",
    "SecretKeyArgs",
    "TolerationArgs",
    "VLLMServer",
    "VLLMServerArgs",
]
