from dataclasses import dataclass


@dataclass
class SchedulerConfig:
    """Scheduler configuration."""

    max_num_seqs: int = 256
    """Maximum number of sequences per iteration."""
    enable_chunked_prefill: bool = True
    """Chunk prefill requests."""
    cuda_graph_sizes: tuple[int, ...] = ()
    """Batch sizes to capture CUDA graphs for."""
