from enum import IntEnum

from pydantic import Field

from vllm.config.compilation import CompilationConfig
from vllm.config.utils import SupportsHash, config


class OptimizationLevel(IntEnum):
    O0 = 0
    O1 = 1
    O2 = 2
    O3 = 3


@config
class KVTransferConfig:
    """Configuration for KV transfer."""

    kv_connector: str | None = None
    """The connector."""


@config
class VllmConfig:
    """All the configuration of vLLM."""

    compilation_config: CompilationConfig = Field(default_factory=CompilationConfig)
    """Compilation configuration."""
    kv_transfer_config: KVTransferConfig | None = None
    """Distributed KV cache transfer configuration."""
    additional_config: dict | SupportsHash = Field(default_factory=dict)
    """Platform-specific configuration."""
    optimization_level: OptimizationLevel = OptimizationLevel.O2
    """The optimization level."""
