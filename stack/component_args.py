"""From validated stack config to each component's arguments.

The same builders serve the program (with the components' real outputs) and the config
checks (with placeholders), so the rules a component enforces are checked once, up front,
and reported against config keys.
"""

from typing import Optional, TypedDict

import pulumi

from components import (
    AutoscalerArgs,
    ExposureArgs,
    GpuClaimArgs,
    GpuPodFragment,
    ModelStoreArgs,
    VLLMServerArgs,
)

from .config import StackConfig


class StoreOutputs(TypedDict):
    """What the server needs from the model store."""

    claim_name: pulumi.Input[str]
    mount_path: pulumi.Input[str]
    model_path: pulumi.Input[str]
    marker_name: pulumi.Input[str]


def gpu_claim_args(config: StackConfig) -> GpuClaimArgs:
    return {
        "backend": config.gpu_backend,
        "count": config.gpu_count,
        "product": config.gpu_product,
        "runtime_class_name": config.gpu_runtime_class,
        "tolerate_gpu_taint": config.gpu_tolerate_taint,
        "hami": {
            "memory_mib": config.hami_memory_mib,
            "memory_percent": config.hami_memory_percent,
            "cores": config.hami_cores,
            "gpu_types": config.hami_gpu_types,
            "exclude_gpu_types": config.hami_exclude_gpu_types,
            "node_policy": config.hami_node_policy,
            "gpu_policy": config.hami_gpu_policy,
        },
    }


def model_store_args(config: StackConfig, namespace: pulumi.Input[str]) -> ModelStoreArgs:
    return {
        "namespace": namespace,
        "model_id": config.model_id,
        "revision": config.model_revision,
        "endpoint": config.model_endpoint,
        "allow_patterns": config.model_allow_patterns,
        "image": config.downloader_image or config.image,
        "install_client": config.downloader_install_client,
        "size": None if config.existing_claim else config.storage_size,
        "storage_class": config.storage_class,
        "access_mode": config.storage_access_mode,
        "existing_claim": config.existing_claim,
        "timeout_minutes": config.download_timeout_minutes,
        "max_workers": config.download_max_workers,
    }


def vllm_server_args(
    config: StackConfig, namespace: pulumi.Input[str], gpu: GpuPodFragment, store: StoreOutputs
) -> VLLMServerArgs:
    secret = config.api_key_secret_name
    return {
        "namespace": namespace,
        "image": config.image,
        **store,
        "served_model_name": config.served_model_name,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "extra_args": config.extra_args,
        "gpu": gpu,
        "cpu": config.cpu,
        "memory": config.memory,
        "shm_size": config.shm_size,
        "replicas": None if config.autoscaling_enabled else config.replicas,
        "api_key_secret": {"name": secret, "key": config.api_key_secret_key} if secret else None,
        "startup_timeout_minutes": config.startup_timeout_minutes,
        "max_surge": config.max_surge,
        "max_unavailable": config.max_unavailable,
    }


def exposure_args(
    config: StackConfig, namespace: pulumi.Input[str], selector: pulumi.Input[dict], port: int, port_name: str
) -> ExposureArgs:
    return {
        "namespace": namespace,
        "selector": selector,
        "port": port,
        "target_port_name": port_name,
        "host": config.host,
        "route": config.exposure_route,
        "ingress_class": config.ingress_class,
        "gateway_name": config.gateway_name,
        "gateway_namespace": config.gateway_namespace,
        "gateway_listener": config.gateway_listener,
        "tls": config.tls,
        "tls_secret_name": config.tls_secret_name,
        "cluster_issuer": config.tls_cluster_issuer,
        "stream_timeout_seconds": config.stream_timeout_seconds,
        "max_body_size": config.max_request_body_size,
    }


def autoscaler_args(
    config: StackConfig,
    deployment_name: pulumi.Input[str],
    selector: pulumi.Input[dict],
    port_name: str,
) -> Optional[AutoscalerArgs]:
    """The autoscaler's arguments, or None when autoscaling is off."""
    if not config.autoscaling_enabled:
        return None
    return {
        "namespace": config.namespace,
        "deployment_name": deployment_name,
        "served_model_name": config.served_model_name,
        "min_replicas": config.autoscaling_min_replicas,
        "max_replicas": config.autoscaling_max_replicas,
        "queue_depth_target": config.autoscaling_queue_depth_target,
        "prometheus_address": config.autoscaling_prometheus_address,
        "scale_down_stabilization_seconds": config.autoscaling_scale_down_stabilization_seconds,
        "pod_monitor": config.autoscaling_pod_monitor,
        "pod_selector": selector,
        "metrics_port_name": port_name,
        "pod_monitor_labels": config.pod_monitor_labels(),
    }
