from pydantic import Field

from vllm.config.utils import config


@config
class PassConfig:
    """Compilation passes."""

    enable_fusion: bool = False
    """Fuse operations."""


@config
class CompilationConfig:
    """Configuration for compilation."""

    level: int | None = None
    """The compilation level."""
    cudagraph_capture_sizes: list[int] | None = None
    """Sizes to capture cudagraphs for."""
    pass_config: PassConfig = Field(default_factory=PassConfig)
    """Custom passes."""
