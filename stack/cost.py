"""The stack's GPUs and their monthly cost, from its settings (components.cost does the arithmetic)."""

from vllm_serving_components.cost import GpuCost, gpu_cost

from .config import StackConfig


def fewest_replicas(config: StackConfig) -> int:
    """The fewest replicas that run: the autoscaler's minimum when it scales (0 with scale to zero), else replicas."""
    return config.autoscaling_min_replicas if config.autoscaling_enabled else config.replicas


def stack_cost(config: StackConfig) -> GpuCost:
    """gpuCount is a replica's GPUs in every layout: one pod's, or a multi-node group's over all its
    nodes (gpusPerNode each); HAMi slices, MIG instances and DRA devices count as GPUs."""
    most = config.autoscaling_max_replicas if config.autoscaling_enabled else config.replicas
    return gpu_cost(
        config.gpu_count, fewest_replicas(config), most, config.gpu_products, config.gpu_hourly_price, config.gpu_price_currency
    )
