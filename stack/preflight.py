"""The stack's preflight: what its configuration needs of the cluster, checked during `pulumi preview`
and `pulumi up` before any resource is registered (never in the offline render or under mocks).

The setting ``preflight`` decides what a finding does: ``error`` fails the run on any problem
(unchecked reads and warnings are warnings), ``warn`` turns every finding into a warning, ``off``
reads nothing (for a cluster the preview cannot read).
"""

from typing import Callable, Optional

import pulumi
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_monitor

from vllm_serving_components.gpu_claim import pod_fragment
from vllm_serving_components.labels import selector_labels
from vllm_serving_components.preflight import (
    ApiNeed,
    ClusterReader,
    Finding,
    GpuNeed,
    KubeReader,
    NamespaceNeed,
    Needs,
    ObjectNeed,
    SecretNeed,
    ServiceNeed,
    StorageNeed,
    VersionNeed,
    preflight,
)
from vllm_serving_components.vllm_server import server_capabilities

from .component_args import gpu_claim_args, nodes
from .config import StackConfig
from .cost import fewest_replicas

PROVIDER_SETTINGS = ("kubeconfig", "context", "cluster")
"""The Kubernetes provider's settings that choose the cluster and credentials (kubernetes:<name>)."""
EXTERNAL_METRICS = "v1beta1.external.metrics.k8s.io"
HAMI_REGISTRATION = "hami.io/node-nvidia-register"
"""The node annotation in which HAMi's device plugin registers the node's GPUs for its scheduler."""


class PreflightError(pulumi.RunError):
    """The cluster lacks what the stack needs; nothing has been created."""

    def __init__(self, stack: str, where: str, problems: list[Finding]):
        self.problems = problems
        lines = [f"the cluster ({where}) lacks what {stack} needs, nothing was created ({len(problems)} problem(s)):"]
        lines += [f"  {finding.subject}: {finding.message}" for finding in problems]
        lines.append("(preflight: warn reports these without failing; preflight: off reads nothing)")
        super().__init__("\n".join(lines))


def plan_apis(config: StackConfig) -> tuple[ApiNeed, ...]:
    """The APIs the plan's objects use that a cluster may not serve: custom resources and DRA."""
    apis = []
    if config.gpu_backend == "dra":
        apis.append(ApiNeed("resource.k8s.io/v1", "ResourceClaimTemplate", "gpuBackend",
                            "DRA needs Kubernetes 1.34 or later (resource.k8s.io/v1); use another gpuBackend on older clusters"))
    if nodes(config) > 1:
        apis.append(ApiNeed("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "gpuCount",
                            "a replica over several nodes runs as a LeaderWorkerSet; install LeaderWorkerSet (lws.sigs.k8s.io)"))
    if config.host and config.exposure_route in ("gateway", "inference"):
        apis.append(ApiNeed("gateway.networking.k8s.io/v1", "HTTPRoute", "exposureRoute",
                            "install the Gateway API CRDs and a Gateway controller, or use exposureRoute ingress"))
    if config.host and config.exposure_route == "inference":
        apis.append(ApiNeed("inference.networking.k8s.io/v1", "InferencePool", "exposureRoute",
                            "install the Gateway API Inference Extension's CRDs (v1.x), or use exposureRoute gateway"))
    if config.host and config.exposure_route == "ingress" and config.tls and config.tls_cluster_issuer:
        apis.append(ApiNeed("cert-manager.io/v1", "ClusterIssuer", "tlsClusterIssuer",
                            "install cert-manager, or give the certificate's Secret with tlsSecretName instead"))
    if config.autoscaling_enabled:
        if config.autoscaling_engine == "keda":
            apis.append(ApiNeed("keda.sh/v1alpha1", "ScaledObject", "autoscalingEngine",
                                "install KEDA (keda.sh), or set autoscalingEngine hpa"))
        if config.autoscaling_pod_monitor:
            apis.append(ApiNeed("monitoring.coreos.com/v1", "PodMonitor", "autoscalingPodMonitor",
                                "install the Prometheus Operator's CRDs, or set autoscalingPodMonitor false and scrape the pods yourself"))
        if config.monitoring_alerts:
            apis.append(ApiNeed("monitoring.coreos.com/v1", "PrometheusRule", "monitoringAlerts",
                                "install the Prometheus Operator's CRDs, or set monitoringAlerts false"))
    return tuple(apis)


def plan_objects(config: StackConfig) -> tuple[ObjectNeed, ...]:
    """Objects the plan names and does not create."""
    objects = []
    if config.host and config.exposure_route == "ingress":
        objects.append(ObjectNeed(f"/apis/networking.k8s.io/v1/ingressclasses/{config.ingress_class}",
                                  f"IngressClass {config.ingress_class}", "ingressClass",
                                  "install that ingress controller, or set ingressClass to one of kubectl get ingressclass"))
        if config.tls and config.tls_cluster_issuer:
            objects.append(ObjectNeed(f"/apis/cert-manager.io/v1/clusterissuers/{config.tls_cluster_issuer}",
                                      f"ClusterIssuer {config.tls_cluster_issuer}", "tlsClusterIssuer",
                                      "create it, or set tlsClusterIssuer to one of kubectl get clusterissuer"))
    if config.host and config.exposure_route in ("gateway", "inference") and config.gateway_name:
        namespace = config.gateway_namespace or config.namespace
        objects.append(ObjectNeed(f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/gateways/{config.gateway_name}",
                                  f"Gateway {namespace}/{config.gateway_name}", "gatewayName",
                                  "create it, or set gatewayName and gatewayNamespace to one of kubectl get gateway -A"))
    if config.gpu_backend == "dra":
        objects.append(ObjectNeed(f"/apis/resource.k8s.io/v1/deviceclasses/{config.dra_device_class}",
                                  f"DeviceClass {config.dra_device_class}", "draDeviceClass",
                                  "install the GPU's DRA driver (it creates the class), or set draDeviceClass to one of kubectl get deviceclass"))
    for key, name in (("priorityClassName", config.priority_class_name),
                      ("imagePrePullPriorityClass", config.image_pre_pull_priority_class if config.image_pre_pull else None)):
        if name:
            objects.append(ObjectNeed(f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}", f"PriorityClass {name}", key,
                                      "create it, or name one of kubectl get priorityclass"))
    if config.gpu_runtime_class:
        objects.append(ObjectNeed(f"/apis/node.k8s.io/v1/runtimeclasses/{config.gpu_runtime_class}",
                                  f"RuntimeClass {config.gpu_runtime_class}", "gpuRuntimeClass",
                                  "install the GPU Operator's runtime class, or leave gpuRuntimeClass empty"))
    return tuple(objects)


def plan_secrets(config: StackConfig) -> tuple[SecretNeed, ...]:
    """Secrets the plan's pods read and the stack does not create."""
    secrets = []
    if config.api_key_secret_name:
        secrets.append(SecretNeed(config.namespace, config.api_key_secret_name, config.api_key_secret_key, "apiKeySecretName"))
    if config.hub_token_secret_name:
        secrets.append(SecretNeed(config.namespace, config.hub_token_secret_name, config.hub_token_secret_key, "hubTokenSecretName"))
    for ref in config.server_secret_env.values():
        secrets.append(SecretNeed(config.namespace, ref["name"], ref["key"], "serverSecretEnv"))
    for name in config.image_pull_secrets:
        secrets.append(SecretNeed(config.namespace, name, ".dockerconfigjson", "imagePullSecrets"))
    return tuple(secrets)


def gpu_need(config: StackConfig) -> Optional[GpuNeed]:
    """The server's GPU pods (DRA's devices are allocated by the scheduler from ResourceSlices, not counted here)."""
    if config.gpu_backend == "dra":
        return None
    fragment = pod_fragment(gpu_claim_args(config, config.namespace))
    pods_per_replica = nodes(config)
    keys = "gpuProducts, nodeSelector, tolerations, gpuCount" + (", gpusPerNode" if pods_per_replica > 1 else "")
    return GpuNeed(
        setting=keys,
        node_selector=config.node_selector,
        affinity=fragment["affinity"],
        tolerations=[*fragment["tolerations"], *config.tolerations],
        limits=fragment["limits"],
        pods=max(1, fewest_replicas(config)) * pods_per_replica,
        surge=config.max_surge * pods_per_replica,
        namespace=config.namespace,
        own_labels={"app.kubernetes.io/instance": config.name},
        registration=HAMI_REGISTRATION if config.gpu_backend == "hami" else None,
    )


def stack_needs(config: StackConfig) -> Needs:
    capabilities = server_capabilities(config.nccl_ib_hca)
    return Needs(
        version=VersionNeed(config.kubernetes_version, "kubernetesVersion") if config.kubernetes_version else None,
        apis=plan_apis(config),
        gpus=gpu_need(config),
        storage=StorageNeed(
            setting="existingClaim" if config.existing_claim else "storageClass, storageAccessMode",
            storage_class=config.storage_class,
            access_mode=config.storage_access_mode,
            size=f"{config.model_size_gb}G" if config.existing_claim else config.storage_size,
            namespace=config.namespace,
            existing_claim=config.existing_claim,
        ),
        namespace=NamespaceNeed(
            name=config.namespace,
            created=config.create_namespace,
            level="privileged" if capabilities else "restricted",
            why=f"the server adds {', '.join(capabilities)} for InfiniBand (ncclIbHca), which only privileged admits"
            if capabilities else "",
            setting="namespace",
        ),
        objects=plan_objects(config),
        secrets=plan_secrets(config),
        services=(ServiceNeed(EXTERNAL_METRICS, "KEDA's metrics server" if config.autoscaling_engine == "keda"
                              else "prometheus-adapter's external metrics", "autoscalingEngine",
                              "the autoscaler cannot read its metric until it is"),) if config.autoscaling_enabled else (),
    )


def provider_settings() -> dict[str, Optional[str]]:
    """The default Kubernetes provider's kubeconfig, context and cluster, as the stack configures it."""
    provider = pulumi.Config("kubernetes")
    return {name: provider.get(name) or None for name in PROVIDER_SETTINGS}


def under_mocks() -> bool:
    return isinstance(get_monitor(), MockMonitor)


def run_preflight(
    config: StackConfig,
    reader: Optional[ClusterReader] = None,
    warn: Callable[[str], None] = pulumi.log.warn,
) -> list[Finding]:
    """Check the cluster for the stack (unless preflight is off or the program runs under mocks):
    raise PreflightError on problems in error mode, warn of everything else. Returns the findings."""
    if config.preflight == "off" or (reader is None and under_mocks()):
        return []
    reader = reader or KubeReader(**provider_settings())
    findings = preflight(stack_needs(config), reader)
    problems = [f for f in findings if f.severity == "problem"]
    for finding in findings:
        if config.preflight == "warn" or finding.severity != "problem":
            label = "unchecked" if finding.severity == "unchecked" else "preflight"
            warn(f"{label}: {finding.subject}: {finding.message}")
    if problems and config.preflight == "error":
        raise PreflightError(config.name, reader.where, problems)
    return findings
