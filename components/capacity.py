"""Will the model fit the GPUs it is given, and how much KV cache is left?

A 235B model on too little GPU memory fails only after an hour of loading; this arithmetic
refuses it before anything is created. vLLM gives each GPU ``gpu_memory_utilization`` of its
memory for weights, activations and the KV cache (vllm/config/cache.py); the weights are split
over the tensor x pipeline parallel GPUs; the rest, less an activation allowance, holds the KV
cache, whose size per token follows from the architecture.
"""

import math
import re
from dataclasses import dataclass
from typing import Optional

GIB = 2**30
GB = 10**9
ACTIVATION_GIB_PER_GPU = 1.0
"""An allowance per GPU for activations, CUDA graphs and the CUDA context: an estimate."""

GPU_MEMORY_GIB = {
    # nvidia.com/gpu.product (GPU Feature Discovery: the device name, '-' for spaces) -> memory
    "NVIDIA-H200": 141,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-SXM5-80GB": 80,
    "NVIDIA-H100-PCIe": 80,
    "NVIDIA-H100-NVL": 94,
    "NVIDIA-H800": 80,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-A800-SXM4-80GB": 80,
    "NVIDIA-L40S": 48,
    "NVIDIA-L40": 48,
    "NVIDIA-A40": 48,
    "NVIDIA-L4": 24,
    "NVIDIA-A10": 24,
}
"""Memory of common data-centre GPUs, as marketed (GiB)."""


@dataclass(frozen=True)
class Architecture:
    """What sizes the KV cache: from the model's config.json."""

    layers: int
    """num_hidden_layers"""
    kv_heads: int
    """num_key_value_heads"""
    head_dim: int
    """head_dim (hidden_size / num_attention_heads when the config has none)"""


PRESETS = {
    # From the models' cards and config.json on Hugging Face and ModelScope.
    "qwen/qwen3-235b-a22b-instruct-2507": Architecture(layers=94, kv_heads=4, head_dim=128),
    "qwen/qwen3-235b-a22b": Architecture(layers=94, kv_heads=4, head_dim=128),
    "qwen/qwen3-235b-a22b-instruct-2507-fp8": Architecture(layers=94, kv_heads=4, head_dim=128),
    "qwen/qwen3-32b": Architecture(layers=64, kv_heads=8, head_dim=128),
    "qwen/qwen3-8b": Architecture(layers=36, kv_heads=8, head_dim=128),
    "qwen/qwen3-0.6b": Architecture(layers=28, kv_heads=8, head_dim=128),
}


def preset_for(model_id: str) -> Optional[Architecture]:
    return PRESETS.get(model_id.lower())


def mig_profile_gib(profile: str) -> Optional[float]:
    """The memory of a MIG profile, from its name (3g.40gb -> 40)."""
    match = re.fullmatch(r"\d+g\.(\d+)gb", profile)
    return float(match[1]) if match else None


def smallest_product_gib(products: list[str]) -> Optional[float]:
    """The memory of the smallest allowed GPU, if every one is known."""
    sizes = [GPU_MEMORY_GIB.get(product) for product in products]
    return float(min(sizes)) if sizes and None not in sizes else None


@dataclass(frozen=True)
class Capacity:
    weights_gb_per_gpu: float
    budget_gb_per_gpu: float
    """gpu_memory_utilization of the device's memory."""
    kv_cache_gb_per_gpu: float
    """What is left for the KV cache; negative when the weights do not fit."""
    kv_cache_tokens: Optional[int]
    """Tokens of KV cache, when the architecture is known."""

    @property
    def fits(self) -> bool:
        return self.kv_cache_gb_per_gpu > 0

    def summary(self) -> dict:
        return {
            "weightsGBPerGpu": round(self.weights_gb_per_gpu, 2),
            "budgetGBPerGpu": round(self.budget_gb_per_gpu, 2),
            "kvCacheGBPerGpu": round(self.kv_cache_gb_per_gpu, 2),
            "kvCacheTokens": self.kv_cache_tokens,
        }


def kv_bytes_per_token_per_gpu(arch: Architecture, tensor: int, pipeline: int, dtype_bytes: int) -> int:
    """Key and value of every layer on one GPU: layers split over the pipeline, KV heads over
    tensor ranks (replicated when there are fewer heads than ranks)."""
    return 2 * math.ceil(arch.layers / pipeline) * math.ceil(arch.kv_heads / tensor) * arch.head_dim * dtype_bytes


def capacity(
    *,
    model_size_gb: float,
    device_memory_gib: float,
    tensor: int,
    pipeline: int,
    gpu_memory_utilization: float,
    architecture: Optional[Architecture] = None,
    kv_dtype_bytes: int = 2,
) -> Capacity:
    weights = model_size_gb * GB / (tensor * pipeline)
    budget = device_memory_gib * GIB * gpu_memory_utilization
    kv = budget - weights - ACTIVATION_GIB_PER_GPU * GIB
    tokens = None
    if architecture is not None and kv > 0:
        tokens = int(kv // kv_bytes_per_token_per_gpu(architecture, tensor, pipeline, kv_dtype_bytes))
    return Capacity(weights / GB, budget / GB, kv / GB, tokens)
