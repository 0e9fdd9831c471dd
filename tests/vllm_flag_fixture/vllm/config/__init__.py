from vllm.config.cache import CacheConfig
from vllm.config.compilation import CompilationConfig
from vllm.config.model import ModelConfig
from vllm.config.parallel import ParallelConfig
from vllm.config.scheduler import SchedulerConfig
from vllm.config.utils import config
from vllm.config.vllm import VllmConfig

__all__ = [
    "CacheConfig", "CompilationConfig", "ModelConfig", "ParallelConfig", "SchedulerConfig", "VllmConfig",
    "config",
]
