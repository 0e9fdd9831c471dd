"""From stack config to each component's arguments, and back from an argument to its config key.

The same builders serve the program (with the components' real outputs) and the config
checks (with placeholders), so the rules a component enforces are checked once, up front,
and reported against the config keys that fed them. Arguments that only matter in some
modes (a HAMi slice, the Ingress's class, a Gateway's name) are passed only when the stack
sets them, so a component can tell a setting that has no effect from Pulumi.yaml's default.
"""

from dataclasses import asdict
from typing import Any, Optional, Sequence, TypedDict

import pulumi

from vllm_serving_components import (
    AutoscalerArgs,
    ExposureArgs,
    GpuClaimArgs,
    GpuPodFragment,
    ImagePrePullArgs,
    ModelStoreArgs,
    NodeCacheArgs,
    NodeCacheMount,
    VLLMServerArgs,
)
from vllm_serving_components.autoscaler import MAX_PERIOD_SECONDS
from vllm_serving_components.capacity import preset_for
from vllm_serving_components.grammar import with_registry
from vllm_serving_components.labels import selector_labels
from vllm_serving_components.rollout import ready_within_minutes
from vllm_serving_components.vllm_server import COMPONENT as SERVER_COMPONENT
from vllm_serving_components.vllm_server import workload_kind

from .config import INVALID, StackConfig


class StoreOutputs(TypedDict):
    """What the server needs from the model store."""

    claim_name: pulumi.Input[str]
    mount_path: pulumi.Input[str]
    model_path: pulumi.Input[str]
    marker_name: pulumi.Input[str]
    adapter_paths: pulumi.Input[dict[str, str]]


GPU_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "backend": "gpuBackend",
    "count": "gpuCount",
    "products": "gpuProducts",
    "memory_gib": "gpuMemoryGiB",
    "mig_profile": "gpuMigProfile",
    "dra.device_class": "draDeviceClass",
    "dra.min_memory_gib": "draMinMemoryGiB",
    "dra.selectors": "draSelectors",
    "kubernetes_version": "kubernetesVersion",
    "quota.gpus": "gpuQuota",
    "quota.gpu_memory_mib": "gpuMemoryQuotaMiB",
    "hami.enforce_eager": "hamiEnforceEager",
    "hami.disable_custom_all_reduce": "hamiDisableCustomAllReduce",
    "runtime_class_name": "gpuRuntimeClass",
    "tolerate_gpu_taint": "gpuTolerateTaint",
    "hami.memory_mib": "hamiMemoryMiB",
    "hami.memory_percent": "hamiMemoryPercent",
    "hami.cores": "hamiCores",
    "hami.gpu_types": "hamiGpuTypes",
    "hami.exclude_gpu_types": "hamiExcludeGpuTypes",
    "hami.node_policy": "hamiNodePolicy",
    "hami.gpu_policy": "hamiGpuPolicy",
}
STORE_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "model_id": "modelId",
    "server_pods": "tolerations",
    "server_pods.labels": "name",
    "server_pods.tolerations": "tolerations",
    "revision": "modelRevision",
    "endpoint": "modelEndpoint",
    "allow_patterns": "modelAllowPatterns",
    "source": "modelSource",
    "ignore_patterns": "modelIgnorePatterns",
    "verify": "modelVerify",
    "stall_timeout_seconds": "downloadStallTimeoutSeconds",
    "token": "hubToken",
    "token_secret": "hubTokenSecretName",
    "token_secret.name": "hubTokenSecretName",
    "token_secret.key": "hubTokenSecretKey",
    "image": "downloaderImage",
    "install_client": "downloaderInstallClient",
    "size": "storageSize",
    "storage_class": "storageClass",
    "access_mode": "storageAccessMode",
    "existing_claim": "existingClaim",
    "timeout_minutes": "downloadTimeoutMinutes",
    "max_workers": "downloadMaxWorkers",
    "package_index": "downloaderPackageIndex",
    "model_size_gb": "modelSizeGB",
    "revisions_to_keep": "modelRevisionsToKeep",
    "protect_claim": "protectModelVolume",
    "pod.image_pull_secrets": "imagePullSecrets",
    "pod.priority_class_name": "priorityClassName",
    "network_policy": "networkPolicies",
    "adapters": "loraAdapters",
    "adapters.name": "loraAdapters",
    "adapters.model_id": "loraAdapters",
    "adapters.revision": "loraAdapters",
}
SERVER_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "image": "image",
    "vllm_release": "vllmRelease",
    "served_model_name": "servedModelName",
    "layout": "layout",
    "tensor_parallel_size": "tensorParallelSize",
    "pipeline_parallel_size": "pipelineParallelSize",
    "data_parallel_size": "dataParallelSize",
    "kv_offload_gib": "kvOffloadGiB",
    "gpu_memory_utilization": "gpuMemoryUtilization",
    "model_architecture.layers": "modelLayers",
    "model_architecture.kv_heads": "modelKvHeads",
    "model_architecture.head_dim": "modelHeadDim",
    "model_architecture.expert_fraction": "modelExpertFraction",
    "max_model_len": "maxModelLen",
    "extra_args": "extraArgs",
    "lora_adapters": "loraAdapters",
    "lora_adapters.name": "loraAdapters",
    "lora_adapters.path": "loraAdapters",
    "lora_adapters.rank": "loraAdapters",
    "gpu": "gpuCount",
    "gpu.devices": "gpuCount",
    "nodes": "gpusPerNode",
    "nccl_socket_ifname": "ncclSocketIfname",
    "nccl_ib_hca": "ncclIbHca",
    "cpu": "cpu",
    "memory": "memory",
    "shm_size": "shmSize",
    "replicas": "replicas",
    "api_key": "apiKey",
    "api_key_secret": "apiKeySecretName",
    "api_key_secret.name": "apiKeySecretName",
    "api_key_secret.key": "apiKeySecretKey",
    "startup_timeout_minutes": "startupTimeoutMinutes",
    "max_replicas": "autoscalingMaxReplicas",
    "image_pull_minutes": "imagePullMinutes",
    "model_size_gb": "modelSizeGB",
    "min_read_mb_per_s": "modelLoadMinReadMBps",
    "parallel_read_mb_per_s": "modelLoadParallelReadMBps",
    "node_cache": "nodeCache",
    "node_cache.read_mb_per_s": "nodeCacheReadMBps",
    "network_volume": "modelVolumeIsNetwork",
    "load_strategy": "safetensorsLoadStrategy",
    "prefetch_threads": "safetensorsPrefetchThreads",
    "drain_seconds": "drainSeconds",
    "min_replicas": "autoscalingMinReplicas",
    "max_surge": "maxSurge",
    "accept_service_gap": "acceptServiceGap",
    "env": "serverEnv",
    "secret_env": "serverSecretEnv",
    "secret_env.name": "serverSecretEnv",
    "secret_env.key": "serverSecretEnv",
    "pod.image_pull_secrets": "imagePullSecrets",
    "pod.priority_class_name": "priorityClassName",
    "pod.node_selector": "nodeSelector",
    "pod.tolerations": "tolerations",
    "network_policy": "networkPolicies",
}
EXPOSURE_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "host": "host",
    "route": "exposureRoute",
    "picker_image": "endpointPickerImage",
    "failure_mode": "endpointPickerFailureMode",
    "flow_control": "endpointPickerFlowControl",
    "adapter_names": "loraAdapters",
    "ingress_class": "ingressClass",
    "gateway_name": "gatewayName",
    "gateway_namespace": "gatewayNamespace",
    "gateway_listener": "gatewayListener",
    "path_prefix": "pathPrefix",
    "tls": "tls",
    "tls_secret_name": "tlsSecretName",
    "cluster_issuer": "tlsClusterIssuer",
    "stream_timeout_seconds": "streamTimeoutSeconds",
    "route_wait_minutes": "routeWaitMinutes",
    "max_body_size": "maxRequestBodySize",
    "wait_for_address": "ingressWaitForAddress",
    "allowed_namespaces": "allowedClientNamespaces",
    "network_policy": "networkPolicies",
    "server_takes_api_key": "apiKey",
    "allow_without_api_key": "allowPublicWithoutApiKey",
    # Arguments of the server that Exposure's messages name.
    "api_key": "apiKey",
    "api_key_secret": "apiKeySecretName",
}
AUTOSCALER_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "served_model_name": "servedModelName",
    "min_replicas": "autoscalingMinReplicas",
    "max_replicas": "autoscalingMaxReplicas",
    "engine": "autoscalingEngine",
    "signals": "autoscalingSignals",
    "signals.kind": "autoscalingSignals",
    "signals.target": "autoscalingSignals",
    "signals.histogram": "autoscalingSignals",
    "signals.quantile": "autoscalingSignals",
    "signals.window": "autoscalingSignals",
    "scale_up_pods": "autoscalingScaleUpPods",
    "scale_up_period_seconds": "autoscalingScaleUpPeriodSeconds",
    "scale_down_period_seconds": "autoscalingScaleDownPeriodSeconds",
    "fallback_replicas": "autoscalingFallbackReplicas",
    "scale_to_zero": "autoscalingScaleToZero",
    "activation_query": "autoscalingActivationQuery",
    "polling_seconds": "autoscalingPollingSeconds",
    "alerts": "monitoringAlerts",
    "not_ready_alert_minutes": "startupTimeoutMinutes",
    "dashboard": "monitoringDashboard",
    "prometheus_address": "autoscalingPrometheusAddress",
    "scale_down_stabilization_seconds": "autoscalingScaleDownStabilizationSeconds",
    "pod_monitor": "autoscalingPodMonitor",
    "pod_monitor_labels": "autoscalingPodMonitorLabels",
}


NODE_CACHE_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "cache_namespace": "nodeCacheNamespace",
    "image": "image",
    "host_path": "nodeCacheHostPath",
    "model_size_gb": "modelSizeGB",
    "copy_read_mb_per_s": "modelLoadMinReadMBps",
    "read_mb_per_s": "nodeCacheReadMBps",
    "reserve_gb": "nodeCacheReserveGB",
    "image_pull_minutes": "imagePullMinutes",
    "tolerations": "gpuProducts",
    "node_affinity": "gpuProducts",
    "pod.image_pull_secrets": "imagePullSecrets",
    "pod.priority_class_name": "priorityClassName",
    "pod.node_selector": "nodeSelector",
    "pod.tolerations": "tolerations",
    "network_policy": "networkPolicies",
}
PRE_PULL_KEYS = {
    "name": "name",
    "namespace": "namespace",
    "image": "image",
    "priority_class_name": "imagePrePullPriorityClass",
    "tolerations": "gpuProducts",
    "node_affinity": "gpuProducts",
    "pod.image_pull_secrets": "imagePullSecrets",
    "pod.node_selector": "nodeSelector",
    "pod.tolerations": "tolerations",
    "network_policy": "networkPolicies",
}


def store_keys(config: StackConfig) -> dict[str, str]:
    """STORE_KEYS, with the Job's image fed by the server's image unless downloaderImage is set."""
    return {**STORE_KEYS, "image": "downloaderImage" if config.downloader_image else "image"}


def most_replicas(config: StackConfig) -> Any:
    """The most replicas that may run: the autoscaler's maximum when it scales, else replicas."""
    return config.autoscaling_max_replicas if config.autoscaling_enabled else config.replicas


def nodes(config: StackConfig) -> int:
    """Nodes per replica: several when a replica needs more GPUs than one node has."""
    per_node, count = config.gpus_per_node, config.gpu_count
    if INVALID in (per_node, count) or not per_node or count <= per_node or count % per_node:
        return 1
    return count // per_node


def gpus_per_pod(config: StackConfig) -> Any:
    return config.gpu_count if nodes(config) == 1 else config.gpus_per_node


def scale_up_period(config: StackConfig, ready: Any) -> Any:
    """As set, or the load budget: the next replica waits for the last one to load (the HPA allows
    at most 1800 s). ``ready`` is the server's TimeToReady, INVALID while its settings are wrong."""
    if config.autoscaling_scale_up_period_seconds or ready is INVALID:
        return config.autoscaling_scale_up_period_seconds
    return min(MAX_PERIOD_SECONDS, ready.startup_minutes * 60)


def not_ready_alert_minutes(ready: Any) -> Any:
    """How long replicas may stay not ready before an alert: as long as a new one may take to be ready."""
    if ready is INVALID:
        return INVALID
    return ready_within_minutes(ready.startup_minutes, ready.image_pull_minutes)


def model_architecture(config: StackConfig) -> Optional[dict]:
    """The architecture given in config, or the preset of a well-known model; None if neither. An
    expert share given alone refines the preset."""
    given = {"layers": config.model_layers, "kv_heads": config.model_kv_heads, "head_dim": config.model_head_dim}
    preset = preset_for(config.model_id) if isinstance(config.model_id, str) else None
    architecture = given if any(value not in (0, INVALID) for value in given.values()) else asdict(preset) if preset else None
    if architecture is None or config.model_expert_fraction in (0, INVALID):
        return architecture
    return {**architecture, "expert_fraction": config.model_expert_fraction}


def image(config: StackConfig, reference: str) -> str:
    """An image as the stack pulls it: from imageRegistry, a mirror, when one is set."""
    try:
        return with_registry(reference, config.image_registry) if config.image_registry else reference
    except (TypeError, ValueError):  # the image's or the registry's own rule reports it
        return reference


def gpu_claim_args(config: StackConfig, namespace: pulumi.Input[str]) -> GpuClaimArgs:
    quota = config.gpu_quota
    return {
        "namespace": namespace,
        "backend": config.gpu_backend,
        "count": gpus_per_pod(config),
        "products": config.gpu_products,
        "memory_gib": config.gpu_memory_gi_b or None,
        "runtime_class_name": config.gpu_runtime_class,
        "tolerate_gpu_taint": config.gpu_tolerate_taint,
        "mig_profile": config.gpu_mig_profile,
        "dra": {
            "device_class": config.set_or_none("draDeviceClass"),
            "min_memory_gib": config.dra_min_memory_gi_b or None,
            "selectors": config.dra_selectors,
        },
        "kubernetes_version": config.kubernetes_version,
        "quota": {"gpus": quota, "gpu_memory_mib": config.gpu_memory_quota_mi_b or None} if quota else None,
        "hami": {
            "memory_mib": config.set_or_none("hamiMemoryMiB"),
            "memory_percent": config.set_or_none("hamiMemoryPercent"),
            "cores": config.set_or_none("hamiCores"),
            "gpu_types": config.set_or_none("hamiGpuTypes"),
            "exclude_gpu_types": config.set_or_none("hamiExcludeGpuTypes"),
            "node_policy": config.set_or_none("hamiNodePolicy"),
            "gpu_policy": config.set_or_none("hamiGpuPolicy"),
            "enforce_eager": config.hami_enforce_eager,
            "disable_custom_all_reduce": config.hami_disable_custom_all_reduce,
        },
    }


def model_store_args(
    config: StackConfig, namespace: pulumi.Input[str], gpu_tolerations: Sequence[dict] = ()
) -> ModelStoreArgs:
    """The store's arguments; gpu_tolerations are the GPU fragment's, which the server's pods carry."""
    tolerations = config.tolerations if isinstance(config.tolerations, list) else []
    on_existing_claim = config.existing_claim is not None
    claim_setting = config.set_or_none if on_existing_claim else config.value
    token_secret = config.hub_token_secret_name
    return {
        "namespace": namespace,
        "model_id": config.model_id,
        "source": config.model_source,
        "revision": config.model_revision,
        "endpoint": config.model_endpoint,
        "allow_patterns": config.model_allow_patterns,
        "ignore_patterns": config.model_ignore_patterns,
        "verify": config.model_verify,
        "stall_timeout_seconds": config.download_stall_timeout_seconds,
        "token_secret": {"name": token_secret, "key": config.hub_token_secret_key} if token_secret else None,
        # The component keeps it in a Secret, as a Pulumi secret; it is never in a plain value.
        "token": config.hub_token,
        "image": image(config, config.downloader_image or config.image),
        "install_client": config.downloader_install_client,
        "size": claim_setting("storageSize"),
        "storage_class": claim_setting("storageClass"),
        "access_mode": claim_setting("storageAccessMode"),
        "existing_claim": config.existing_claim,
        "server_pods": {"labels": selector_labels(config.name, SERVER_COMPONENT), "tolerations": [*gpu_tolerations, *tolerations]},
        "timeout_minutes": config.download_timeout_minutes,
        "max_workers": config.download_max_workers,
        "package_index": config.downloader_package_index,
        "model_size_gb": config.model_size_gb or None,
        "revisions_to_keep": config.model_revisions_to_keep,
        "protect_claim": claim_setting("protectModelVolume"),
        "pod": {"image_pull_secrets": config.image_pull_secrets, "priority_class_name": config.priority_class_name},
        "network_policy": config.network_policies,
        "adapters": [
            {"name": a["name"], "model_id": a["model_id"], "revision": a["revision"]} for a in lora_adapters(config)
        ],
    }


def lora_adapters(config: StackConfig) -> list[dict[str, Any]]:
    """The adapters of loraAdapters; none while it cannot be read (its problem is reported)."""
    return config.lora_adapters if isinstance(config.lora_adapters, list) else []


def adapter_path(store: StoreOutputs, name: str) -> pulumi.Input[str]:
    """Where the store staged an adapter: its adapter_paths entry, known now or once the Job completes."""
    paths = store["adapter_paths"]
    return paths.apply(lambda known: known[name]) if isinstance(paths, pulumi.Output) else paths[name]


def vllm_server_args(
    config: StackConfig,
    namespace: pulumi.Input[str],
    gpu: GpuPodFragment,
    store: StoreOutputs,
    node_cache: Optional[NodeCacheMount] = None,
) -> VLLMServerArgs:
    secret = config.api_key_secret_name
    scaling = config.autoscaling_enabled is True
    shared_volume = config.existing_claim is None and config.storage_access_mode == "ReadWriteMany"
    return {
        "namespace": namespace,
        "image": image(config, config.image),
        "vllm_release": config.vllm_release,
        **{key: value for key, value in store.items() if key != "adapter_paths"},
        "served_model_name": config.served_model_name,
        "layout": config.layout,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "data_parallel_size": config.data_parallel_size,
        "kv_offload_gib": config.kv_offload_gi_b or None,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "model_architecture": model_architecture(config),
        "max_model_len": config.max_model_len,
        "extra_args": config.extra_args,
        "lora_adapters": [
            {"name": a["name"], "path": adapter_path(store, a["name"]), "rank": a["rank"]} for a in lora_adapters(config)
        ],
        "gpu": gpu,
        "nodes": nodes(config),
        "nccl_socket_ifname": config.nccl_socket_ifname,
        "nccl_ib_hca": config.nccl_ib_hca,
        "cpu": config.cpu,
        "memory": config.memory,
        "shm_size": config.shm_size,
        "replicas": None if scaling else config.replicas,
        # Without autoscaling the server counts its replicas.
        "max_replicas": config.autoscaling_max_replicas if scaling else None,
        "min_replicas": config.autoscaling_min_replicas if scaling else None,
        "api_key_secret": {"name": secret, "key": config.api_key_secret_key} if secret else None,
        # The component keeps it in a Secret, as a Pulumi secret; it is never in a plain value.
        "api_key": config.api_key,
        "startup_timeout_minutes": config.startup_timeout_minutes or None,
        "image_pull_minutes": config.image_pull_minutes,
        "model_size_gb": config.model_size_gb or None,
        "min_read_mb_per_s": config.model_load_min_read_m_bps,
        "parallel_read_mb_per_s": config.model_load_parallel_read_m_bps or None,
        "node_cache": node_cache,
        "network_volume": config.model_volume_is_network is True or shared_volume,
        "load_strategy": config.safetensors_load_strategy,
        "prefetch_threads": config.safetensors_prefetch_threads or None,
        "drain_seconds": config.drain_seconds,
        "max_surge": config.max_surge,
        "accept_service_gap": config.accept_service_gap,
        "single_node_claim": config.existing_claim is None and not shared_volume,
        "env": config.server_env,
        "secret_env": config.server_secret_env,
        "pod": {
            "image_pull_secrets": config.image_pull_secrets,
            "priority_class_name": config.priority_class_name,
            "node_selector": config.node_selector,
            "tolerations": config.tolerations,
        },
        "network_policy": config.network_policies,
    }


def node_cache_namespace(config: StackConfig) -> Any:
    """As set, or <namespace>-node-cache."""
    if config.node_cache_namespace or config.namespace is INVALID:
        return config.node_cache_namespace
    return f"{config.namespace}-node-cache"


def gpu_node_pods(config: StackConfig) -> dict:
    """Pod settings of what runs beside the server on its nodes: the same nodes and pull secrets."""
    return {
        "image_pull_secrets": config.image_pull_secrets,
        "node_selector": config.node_selector,
        "tolerations": config.tolerations,
    }


def node_cache_args(
    config: StackConfig, namespace: pulumi.Input[str], gpu: GpuPodFragment, store: StoreOutputs
) -> Optional[NodeCacheArgs]:
    """The node cache's arguments, or None when it is off."""
    if config.node_cache is not True:
        return None
    return {
        "namespace": namespace,
        "cache_namespace": node_cache_namespace(config),
        "image": image(config, config.image),
        "claim_name": store["claim_name"],
        "mount_path": store["mount_path"],
        "model_path": store["model_path"],
        "marker_name": store["marker_name"],
        "host_path": config.node_cache_host_path,
        "model_size_gb": config.model_size_gb or None,
        "copy_read_mb_per_s": config.model_load_min_read_m_bps,
        "read_mb_per_s": config.node_cache_read_m_bps,
        "reserve_gb": config.node_cache_reserve_g_b,
        "image_pull_minutes": config.image_pull_minutes,
        "tolerations": gpu["tolerations"],
        "node_affinity": gpu["affinity"],
        "pod": {**gpu_node_pods(config), "priority_class_name": config.priority_class_name},
        "network_policy": config.network_policies,
    }


def image_pre_pull_args(config: StackConfig, namespace: pulumi.Input[str], gpu: GpuPodFragment) -> Optional[ImagePrePullArgs]:
    """The image pre-pull's arguments, or None when it is off."""
    if config.image_pre_pull is not True:
        return None
    return {
        "namespace": namespace,
        "image": image(config, config.image),
        "priority_class_name": config.image_pre_pull_priority_class,
        "tolerations": gpu["tolerations"],
        "node_affinity": gpu["affinity"],
        "pod": gpu_node_pods(config),
        "network_policy": config.network_policies,
    }


def takes_api_key(config: StackConfig) -> bool:
    """Whether the server gets an API key (VLLMServer.takes_api_key, before the server exists)."""
    return config.api_key is not None or config.api_key_secret_name is not None


def exposure_args(
    config: StackConfig,
    namespace: pulumi.Input[str],
    selector: pulumi.Input[dict],
    port: int,
    port_name: str,
    server_takes_api_key: bool,
) -> ExposureArgs:
    return {
        "namespace": namespace,
        "selector": selector,
        "port": port,
        "target_port_name": port_name,
        "host": config.host,
        "route": config.set_or_none("exposureRoute"),
        "picker_image": config.set_or_none("endpointPickerImage"),
        "failure_mode": config.set_or_none("endpointPickerFailureMode"),
        "flow_control": config.set_or_none("endpointPickerFlowControl"),
        "adapter_names": [adapter["name"] for adapter in lora_adapters(config)] or None,
        "ingress_class": config.set_or_none("ingressClass"),
        "gateway_name": config.gateway_name,
        "gateway_namespace": config.gateway_namespace,
        "gateway_listener": config.gateway_listener,
        "path_prefix": config.path_prefix,
        "tls": config.tls,
        "tls_secret_name": config.tls_secret_name,
        "cluster_issuer": config.tls_cluster_issuer,
        "stream_timeout_seconds": config.set_or_none("streamTimeoutSeconds"),
        "route_wait_minutes": config.set_or_none("routeWaitMinutes"),
        "max_body_size": config.set_or_none("maxRequestBodySize"),
        "wait_for_address": config.set_or_none("ingressWaitForAddress"),
        "allowed_namespaces": config.allowed_client_namespaces,
        "network_policy": config.network_policies,
        "server_takes_api_key": server_takes_api_key,
        "allow_without_api_key": config.set_or_none("allowPublicWithoutApiKey"),
    }


def autoscaler_args(
    config: StackConfig,
    deployment_name: pulumi.Input[str],
    selector: pulumi.Input[dict],
    port_name: str,
    ready: Any,
) -> Optional[AutoscalerArgs]:
    """The autoscaler's arguments, or None when autoscaling is off; ``ready`` is the server's
    TimeToReady (vllm_server.time_to_ready), or INVALID while the server's settings are wrong."""
    if config.autoscaling_enabled is not True:
        return None
    return {
        "namespace": config.namespace,
        "deployment_name": deployment_name,
        "target_kind": workload_kind(nodes(config)),
        "served_model_name": config.served_model_name,
        "min_replicas": config.autoscaling_min_replicas,
        "max_replicas": config.autoscaling_max_replicas,
        "engine": config.autoscaling_engine,
        "signals": config.autoscaling_signals,
        "scale_up_pods": config.autoscaling_scale_up_pods,
        "scale_up_period_seconds": scale_up_period(config, ready),
        "scale_down_period_seconds": config.autoscaling_scale_down_period_seconds,
        "fallback_replicas": config.autoscaling_fallback_replicas or None,
        "scale_to_zero": config.autoscaling_scale_to_zero,
        "activation_query": config.autoscaling_activation_query,
        "polling_seconds": config.autoscaling_polling_seconds or None,
        "alerts": config.monitoring_alerts,
        "not_ready_alert_minutes": not_ready_alert_minutes(ready),
        "dashboard": config.monitoring_dashboard,
        "prometheus_address": config.autoscaling_prometheus_address,
        "scale_down_stabilization_seconds": config.autoscaling_scale_down_stabilization_seconds,
        "pod_monitor": config.autoscaling_pod_monitor,
        "pod_selector": selector,
        "metrics_port_name": port_name,
        "pod_monitor_labels": config.autoscaling_pod_monitor_labels,
    }

