from vllm.config.utils import config


@config
class ParallelConfig:
    """Configuration for distributed execution."""

    pipeline_parallel_size: int = 1
    """Number of pipeline parallel groups."""
    tensor_parallel_size: int = 1
    """Number of tensor parallel groups."""
    data_parallel_size: int = 1
    """Number of data parallel groups."""
    enable_expert_parallel: bool = False
    """Use expert parallelism for MoE layers."""
    disable_custom_all_reduce: bool = False
    """Disable the custom all-reduce kernel."""
    max_parallel_loading_workers: int | None = None
    """Maximum number of parallel loading workers."""
