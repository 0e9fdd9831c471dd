from dataclasses import field
from typing import Any, ClassVar, Literal, Optional, Union

from vllm.config.utils import config

ModelDType = Literal["auto", "half", "bfloat16"]
TaskOption = Literal["auto", "generate", "embed"]


@config
class ModelConfig:
    """Configuration for the model."""

    model: str = "Qwen/Qwen3-0.6B"
    """Name or path of the model."""
    task: TaskOption | None = None
    """[DEPRECATED] The task to use the model for."""
    dtype: ModelDType | str = "auto"
    """Data type for model weights."""
    max_model_len: int | None = None
    """Model context length."""
    enforce_eager: bool = False
    """Always use eager-mode PyTorch."""
    served_model_name: str | list[str] | None = None
    """The model name(s) used in the API."""
    hf_token: bool | str | None = None
    """The token for remote files; the bare flag uses the stored token."""
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    """RoPE scaling configuration."""
    hf_overrides: Union[dict[str, Any], str] = field(default_factory=dict)
    """Overrides for the Hugging Face config."""
    trust_remote_code: Optional[bool] = False
    """Trust remote code."""
    disable_cascade_attn: bool = False
    """Deprecated: cascade attention has been removed, so this has no effect."""
    registry: ClassVar[dict[str, Any]] = {}
