"""Rules between config keys, checked before any resource is registered.

Most rules belong to the components and are run here on the arguments the stack would pass
them, with each argument mapped back to the config key a user sets. The rest are rules only
the stack can see (how its settings combine across components).
"""

import re

from components.autoscaler import autoscaler_problems
from components.exposure import exposure_problems
from components.gpu_claim import gpu_claim_problems, pod_fragment
from components.model_store import model_store_problems
from components.vllm_server import (
    PORT,
    PORT_NAME,
    default_shm_size,
    vllm_server_problems,
)

from .component_args import (
    StoreOutputs,
    autoscaler_args,
    exposure_args,
    gpu_claim_args,
    model_store_args,
    vllm_server_args,
)
from .config import Problem, StackConfig
from .quantity import parse_quantity

GPU_KEYS = {
    "backend": "gpuBackend",
    "count": "gpuCount",
    "product": "gpuProduct",
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
    "model_id": "modelId",
    "revision": "modelRevision",
    "endpoint": "modelEndpoint",
    "allow_patterns": "modelAllowPatterns",
    "image": "downloaderImage",
    "size": "storageSize",
    "storage_class": "storageClass",
    "access_mode": "storageAccessMode",
    "existing_claim": "existingClaim",
    "timeout_minutes": "downloadTimeoutMinutes",
    "max_workers": "downloadMaxWorkers",
}
SERVER_KEYS = {
    "image": "image",
    "served_model_name": "servedModelName",
    "tensor_parallel_size": "tensorParallelSize",
    "pipeline_parallel_size": "pipelineParallelSize",
    "gpu_memory_utilization": "gpuMemoryUtilization",
    "max_model_len": "maxModelLen",
    "extra_args": "extraArgs",
    "cpu": "cpu",
    "memory": "memory",
    "shm_size": "shmSize",
    "replicas": "replicas",
    "startup_timeout_minutes": "startupTimeoutMinutes",
    "max_surge": "maxSurge",
    "max_unavailable": "maxUnavailable",
}
EXPOSURE_KEYS = {
    "host": "host",
    "route": "exposureRoute",
    "ingress_class": "ingressClass",
    "gateway_name": "gatewayName",
    "tls": "tls",
    "tls_secret_name": "tlsSecretName",
    "cluster_issuer": "tlsClusterIssuer",
    "stream_timeout_seconds": "streamTimeoutSeconds",
    "max_body_size": "maxRequestBodySize",
}
AUTOSCALER_KEYS = {
    "min_replicas": "autoscalingMinReplicas",
    "max_replicas": "autoscalingMaxReplicas",
    "queue_depth_target": "autoscalingQueueDepthTarget",
    "prometheus_address": "autoscalingPrometheusAddress",
    "scale_down_stabilization_seconds": "autoscalingScaleDownStabilizationSeconds",
    "pod_monitor_labels": "autoscalingPodMonitorLabels",
}
PLACEHOLDER_STORE = StoreOutputs(claim_name="claim", mount_path="/models", model_path="/models/m", marker_name="m")


def as_config_problems(problems: dict[str, str], keys: dict[str, str]) -> list[Problem]:
    """A component's problems, keyed and worded by the config keys that set each argument."""

    def config_words(text: str) -> str:
        return re.sub(r"[a-z_.]+", lambda word: keys.get(word.group(0), word.group(0)), text)

    return [Problem(key=keys[arg], message=config_words(message)) for arg, message in problems.items()]


def component_problems(config: StackConfig) -> list[Problem]:
    """Each component's own rules, applied to the arguments this stack would give it."""
    gpu_args = gpu_claim_args(config)
    problems = as_config_problems(gpu_claim_problems(gpu_args), GPU_KEYS)
    if not problems:  # the server's rules need a valid GPU fragment
        server = vllm_server_args(config, config.namespace, pod_fragment(gpu_args), PLACEHOLDER_STORE)
        problems += as_config_problems(vllm_server_problems(server), SERVER_KEYS)
    problems += as_config_problems(model_store_problems(model_store_args(config, config.namespace)), STORE_KEYS)
    problems += as_config_problems(
        exposure_problems(exposure_args(config, config.namespace, {}, PORT, PORT_NAME)), EXPOSURE_KEYS
    )
    if scaler := autoscaler_args(config, "deployment", {"placeholder": "selector"}, PORT_NAME):
        problems += as_config_problems(autoscaler_problems(scaler), AUTOSCALER_KEYS)
    return problems


def stack_problems(config: StackConfig) -> list[Problem]:
    """Rules about how settings of different components combine."""
    problems = []
    most_replicas = config.autoscaling_max_replicas if config.autoscaling_enabled else config.replicas
    if most_replicas > 1 and not config.existing_claim and config.storage_access_mode != "ReadWriteMany":
        problems.append(
            Problem(
                key="storageAccessMode",
                message=(
                    f"is {config.storage_access_mode} but up to {most_replicas} replicas must mount the model "
                    "volume, possibly on different nodes; use ReadWriteMany (e.g. storageClass nfs-client) "
                    "or an existingClaim every node can mount"
                ),
            )
        )
    if config.autoscaling_enabled and config.replicas != 1:
        problems.append(
            Problem(
                key="replicas",
                message="is owned by the autoscaler when autoscalingEnabled is true; "
                "set autoscalingMinReplicas and autoscalingMaxReplicas instead",
            )
        )
    shm = config.shm_size or default_shm_size(config.tensor_parallel_size, config.pipeline_parallel_size)
    if parse_quantity(shm) >= parse_quantity(config.memory):
        problems.append(
            Problem(
                key="shmSize" if config.shm_size else "memory",
                message=f"/dev/shm ({shm}) counts against the pod's memory ({config.memory}) and must be "
                "smaller than it; raise memory or lower shmSize",
            )
        )
    return problems


def cross_field_problems(config: StackConfig) -> list[Problem]:
    return component_problems(config) + stack_problems(config)
