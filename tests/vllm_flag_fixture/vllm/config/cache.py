from dataclasses import InitVar, dataclass
from typing import ClassVar, Literal, Optional

CacheDType = Literal["auto", "fp8"]
BlockSize = Literal[8, 16, 32]


@dataclass
class CacheConfig:
    """Configuration for the KV cache."""

    block_size: Optional[BlockSize] = None
    """Size of a cache block."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory to use."""
    swap_space: float = 4
    """CPU swap space per GPU (GiB)."""
    cache_dtype: CacheDType = "auto"
    """Data type for the KV cache."""
    enable_prefix_caching: Optional[bool] = None
    """Whether to enable prefix caching."""
    cpu_offload_gb: float = 0
    """Space in GiB to offload to CPU."""
    num_cpu_blocks: ClassVar[int] = 0
    mamba_block: InitVar[int | None] = None
