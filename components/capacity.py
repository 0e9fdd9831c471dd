"""Will the model fit the GPUs it is given, and how much KV cache is left?

A 235B model on too little GPU memory fails only after an hour of loading; this arithmetic
refuses it before anything is created. vLLM gives each GPU ``gpu_memory_utilization`` of its
memory for weights, activations and the KV cache (vllm/config/cache.py); the rest, less an
activation allowance, holds the KV cache, whose size per token follows from the architecture.

How the weights and the KV cache spread over a replica's GPUs depends on its layout:

* tensor x pipeline (one engine): every weight is split over all tensor x pipeline GPUs; the
  KV heads over the tensor ranks (replicated when there are fewer heads than ranks), the layers
  over the pipeline stages. One KV cache for the replica.
* data-expert (data-parallel attention, expert-parallel experts): each of the ``data`` engines
  holds the attention and the other dense weights split over its own tensor ranks, while the
  routed experts are split over all data x tensor GPUs (vLLM docs serving/
  data_parallel_deployment.md: "expert layers form a group of size DP x TP"; vllm/config/
  parallel.py data_parallel_size: "MoE layers will be sharded according to the product of the
  tensor, prefill-context, and data parallel sizes"). Each engine has its own KV cache (the
  same docs: "Each DP engine has an independent KV cache"): no replication across engines, and
  a sequence lives in one engine's cache.
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
    expert_fraction: Optional[float] = None
    """The share of the weights in routed experts (0 for a dense model; None when unknown): from
    config.json, num_experts x 3 x hidden_size x moe_intermediate_size x num_hidden_layers over
    all parameters."""


QWEN3_235B_EXPERT_FRACTION = 0.966
"""Qwen3-235B-A22B (config.json: hidden_size 4096, moe_intermediate_size 1536, num_experts 128,
94 layers): 128 x 3 x 4096 x 1536 x 94 = 227.1B expert parameters of 235B (the model card's
total; its 234B non-embedding parameters leave 1.2B of embeddings, 151936 x 4096 x 2)."""

PRESETS = {
    # From the models' cards and config.json on Hugging Face and ModelScope.
    "qwen/qwen3-235b-a22b-instruct-2507": Architecture(94, 4, 128, QWEN3_235B_EXPERT_FRACTION),
    "qwen/qwen3-235b-a22b": Architecture(94, 4, 128, QWEN3_235B_EXPERT_FRACTION),
    "qwen/qwen3-235b-a22b-instruct-2507-fp8": Architecture(94, 4, 128, QWEN3_235B_EXPERT_FRACTION),
    "qwen/qwen3-32b": Architecture(layers=64, kv_heads=8, head_dim=128, expert_fraction=0.0),
    "qwen/qwen3-8b": Architecture(layers=36, kv_heads=8, head_dim=128, expert_fraction=0.0),
    "qwen/qwen3-0.6b": Architecture(layers=28, kv_heads=8, head_dim=128, expert_fraction=0.0),
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
class Layout:
    """How one replica's GPUs are used: ``data`` engines, each over tensor x pipeline GPUs."""

    tensor: int
    pipeline: int = 1
    data: int = 1
    """Data-parallel engines (attention data-parallel, experts expert-parallel when above 1)."""

    @property
    def gpus(self) -> int:
        return self.data * self.tensor * self.pipeline


@dataclass(frozen=True)
class Capacity:
    weights_gb_per_gpu: float
    budget_gb_per_gpu: float
    """gpu_memory_utilization of the device's memory."""
    kv_cache_gb_per_gpu: float
    """What is left for the KV cache; negative when the weights do not fit."""
    kv_cache_tokens: Optional[int]
    """Tokens of KV cache of one engine (the most one sequence can use), when the architecture is known."""
    engines: int = 1
    """Engines of the replica, each with its own KV cache."""
    offload_tokens: Optional[int] = None
    """Tokens of KV cache the replica's CPU offload buffers hold, when offloading and the architecture is known."""
    lora_gb_per_gpu: float = 0.0
    """The LoRA adapters' preallocated weights on each GPU (lora_gb_per_gpu), taken from the KV cache."""

    @property
    def fits(self) -> bool:
        return self.kv_cache_gb_per_gpu > 0

    @property
    def replica_kv_cache_tokens(self) -> Optional[int]:
        return None if self.kv_cache_tokens is None else self.kv_cache_tokens * self.engines

    def summary(self) -> dict:
        figures = {
            "weightsGBPerGpu": round(self.weights_gb_per_gpu, 2),
            **({"loraGBPerGpu": round(self.lora_gb_per_gpu, 2)} if self.lora_gb_per_gpu else {}),
            "budgetGBPerGpu": round(self.budget_gb_per_gpu, 2),
            "kvCacheGBPerGpu": round(self.kv_cache_gb_per_gpu, 2),
            "kvCacheTokens": self.kv_cache_tokens,
        }
        if self.engines > 1:
            figures |= {"engines": self.engines, "kvCacheTokensPerReplica": self.replica_kv_cache_tokens}
        if self.offload_tokens is not None:
            figures["offloadTokensPerReplica"] = self.offload_tokens
        return figures


MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM's --max-lora-rank takes (vLLM 0.34.0 and 0.11.0 vllm/config/lora.py MaxLoRARanks)."""
NARROWEST_WIDTH_WITHOUT_ARCHITECTURE = 512
"""The narrowest weight matrix assumed when the architecture is unknown: the K and V projections of
Qwen3-235B-A22B (4 KV heads x 128), the narrowest of the presets."""


@dataclass(frozen=True)
class LoraSlots:
    """The LoRA weights vLLM preallocates: ``slots`` adapters (--max-loras) at ``rank`` (--max-lora-rank)."""

    slots: int
    rank: int


def lora_gb_per_gpu(weights_gb_per_gpu: float, lora: LoraSlots, tensor: int, architecture: Optional[Architecture]) -> float:
    """An upper bound of the LoRA buffers on each GPU, from the weights on it.

    vLLM wraps every supported linear layer of the model (all of them unless --lora-target-modules
    narrows them) and allocates, for each, max_loras slots of A (rank x its input) and B (its output
    x rank) in the model's dtype, whether or not an adapter uses them (vLLM 0.34.0
    vllm/lora/layers/base_linear.py create_lora_weights; fused_moe.py likewise per local expert).
    Beside an in x out weight split over ``tensor`` ranks, one factor stays whole on every rank
    (column parallel: A over the whole input; row parallel: B over the whole output, without
    --fully-sharded-loras), so a slot takes rank x (in + out / tensor) values against the
    weight's in x out / tensor: at most rank x (tensor + 1) / min(in, out) of it. The narrowest
    matrix of a transformer is its K or V projection, kv_heads x head_dim wide. The bound takes the
    weights at 2 bytes per parameter, as the buffers are (BF16; an FP8 checkpoint's are twice this).
    """
    narrowest = architecture.kv_heads * architecture.head_dim if architecture else NARROWEST_WIDTH_WITHOUT_ARCHITECTURE
    return lora.slots * weights_gb_per_gpu * lora.rank * (tensor + 1) / narrowest


def kv_bytes_per_token_per_gpu(arch: Architecture, tensor: int, pipeline: int, dtype_bytes: int) -> int:
    """Key and value of every layer on one GPU of an engine: layers split over the pipeline, KV
    heads over tensor ranks (replicated when there are fewer heads than ranks)."""
    return 2 * math.ceil(arch.layers / pipeline) * math.ceil(arch.kv_heads / tensor) * arch.head_dim * dtype_bytes


def weights_gb_per_gpu(model_size_gb: float, layout: Layout, expert_fraction: Optional[float]) -> float:
    """Weights on each GPU: all split over the GPUs of one engine; with several engines, the routed
    experts over every GPU of the replica and the rest over each engine's tensor ranks. An unknown
    expert share of a data-parallel layout counts every weight as dense: the most it can be."""
    if layout.data == 1:
        return model_size_gb / layout.gpus
    experts = expert_fraction or 0.0
    return model_size_gb * (1 - experts) / (layout.tensor * layout.pipeline) + model_size_gb * experts / layout.gpus


def capacity(
    *,
    model_size_gb: float,
    device_memory_gib: float,
    layout: Layout,
    gpu_memory_utilization: float,
    architecture: Optional[Architecture] = None,
    kv_dtype_bytes: int = 2,
    offload_gib_per_engine: float = 0,
    lora: Optional[LoraSlots] = None,
) -> Capacity:
    expert_fraction = architecture.expert_fraction if architecture else None
    weights = weights_gb_per_gpu(model_size_gb, layout, expert_fraction) * GB
    adapters = lora_gb_per_gpu(weights / GB, lora, layout.tensor, architecture) * GB if lora else 0.0
    budget = device_memory_gib * GIB * gpu_memory_utilization
    kv = budget - weights - adapters - ACTIVATION_GIB_PER_GPU * GIB
    tokens = offloaded = None
    if architecture is not None:
        per_gpu = kv_bytes_per_token_per_gpu(architecture, layout.tensor, layout.pipeline, kv_dtype_bytes)
        tokens = int(kv // per_gpu) if kv > 0 else None
        if offload_gib_per_engine:
            # vLLM's CPU offload buffer holds every worker's share of a token (vllm/v1/kv_offload/
            # cpu/spec.py: the blocks of all world_size workers, each with its own KV heads).
            engine_bytes_per_token = per_gpu * layout.tensor * layout.pipeline
            offloaded = int(offload_gib_per_engine * GIB // engine_bytes_per_token) * layout.data
    return Capacity(weights / GB, budget / GB, kv / GB, tokens, layout.data, offloaded, adapters / GB)
