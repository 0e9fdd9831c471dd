"""Pulumi.dev.yaml and Pulumi.prod.yaml rendered through the real program and checked whole."""

import pytest
from conftest import project_with_stack
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors

from vllm_serving_components.model_store import MARKER_NAME
from stack.render import render_stack

STACKS = ("dev", "prod")


def server_of(rendering):
    deployment = rendering.find("Deployment", rendering.outputs["deploymentName"])
    return deployment, deployment["spec"]["template"]["spec"]


def container(pod_spec, name, key="containers"):
    return next(c for c in pod_spec[key] if c["name"] == name)


def volume_claim(pod_spec, volume_name):
    return next(v for v in pod_spec["volumes"] if v["name"] == volume_name)["persistentVolumeClaim"]["claimName"]


def mount_path(container_spec, volume_name):
    return next(m for m in container_spec["volumeMounts"] if m["name"] == volume_name)["mountPath"]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
@pytest.mark.parametrize("stack", STACKS)
def test_every_object_validates_against_kubernetes_and_crd_schemas(rendered, stack, version):
    objects = rendered[stack].objects
    assert objects
    errors = {f"{o.kind}/{o.name}": schema_errors(o.manifest, version) for o in objects}
    assert {name: found for name, found in errors.items() if found} == {}


def test_dev_creates_exactly_the_in_cluster_objects(rendered):
    kinds = sorted((o.kind, o.name) for o in rendered["dev"].objects)
    assert kinds == sorted(
        [
            ("Namespace", "ai-serving-dev"),
            ("ConfigMap", "vllm-qwen3-0-6b-stage-script"),
            ("PersistentVolumeClaim", "vllm-qwen3-0-6b-models"),
            ("Job", rendered["dev"].only("Job")["metadata"]["name"]),
            ("Deployment", "vllm-qwen3-0-6b"),
            ("Service", "vllm-qwen3-0-6b"),
            ("ServiceAccount", "vllm-qwen3-0-6b"),
            ("ServiceAccount", "vllm-qwen3-0-6b-stage"),
            ("NetworkPolicy", "vllm-qwen3-0-6b"),
            ("NetworkPolicy", "vllm-qwen3-0-6b-egress"),
            ("NetworkPolicy", "vllm-qwen3-0-6b-stage"),
            ("PodDisruptionBudget", "vllm-qwen3-0-6b-min-available"),
        ]
    )


def test_prod_adds_ingress_and_autoscaling(rendered):
    kinds = {o.kind for o in rendered["prod"].objects}
    assert kinds == {
        "Namespace", "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service", "Ingress",
        "ScaledObject", "PodMonitor", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget", "ResourceQuota",
        "PrometheusRule",
        # The node cache and the image pre-pull.
        "PersistentVolume", "DaemonSet", "Role", "RoleBinding", "PriorityClass",
    }


def test_outputs(rendered):
    assert rendered["prod"].outputs == {
        "endpoint": "https://vllm.ai-serving.company.com/v1",
        "inClusterEndpoint": "http://vllm-qwen3-235b.ai-serving.svc.cluster.local:8000/v1",
        "servedModelName": "qwen3-235b",
        "namespace": "ai-serving",
        "modelPath": "/models/Qwen/Qwen3-235B-A22B-Instruct-2507/master",
        "claimName": "vllm-qwen3-235b-models",
        "deploymentName": "vllm-qwen3-235b",
        "gpuCapacity": {"weightsGBPerGpu": 58.75, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 17.49, "kvCacheTokens": 363315},
        "gpuCost": {
            "gpusPerReplica": 8, "replicas": {"min": 1, "max": 2}, "gpus": {"min": 8, "max": 16},
            "gpuHoursPerMonth": {"min": 5840, "max": 11680}, "costPerMonth": {"min": 18688.0, "max": 37376.0}, "currency": "USD",
            "pricedAs": "NVIDIA-H200 at 3.20 USD per GPU-hour, the dearest of the 3 products the pods may run on",
        },
        "timeToReady": "28 min: image pull 15 min + read 470 GB from node-local disk at 1000 MB/s 8 min + engine start 5 min",
    }
    dev = rendered["dev"].outputs
    assert dev["endpoint"] == dev["inClusterEndpoint"] == "http://vllm-qwen3-0-6b.ai-serving-dev.svc.cluster.local:8000/v1"
    assert dev["modelPath"] == "/models/Qwen/Qwen3-0.6B/master"


@pytest.mark.parametrize("stack", STACKS)
def test_every_namespaced_object_is_in_the_stack_namespace(rendered, stack):
    """Or in the node cache's own, for the pods that prepare each node's directory."""
    namespace = rendered[stack].outputs["namespace"]
    own = {obj.name for obj in rendered[stack].objects if obj.kind == "Namespace"} - {namespace}
    assert own == ({f"{namespace}-node-cache"} if stack == "prod" else set())
    for obj in rendered[stack].objects:
        if obj.kind not in ("Namespace", "PersistentVolume", "PriorityClass"):
            assert obj.namespace == namespace or (obj.namespace in own and obj.kind in ("DaemonSet", "NetworkPolicy")), obj.name


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_selector_matches_its_pod_labels(rendered, stack):
    deployment, _ = server_of(rendered[stack])
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("stack", STACKS)
def test_service_selects_the_server_pods_and_targets_the_container_port(rendered, stack):
    rendering = rendered[stack]
    deployment, pod_spec = server_of(rendering)
    service = rendering.find("Service", deployment["metadata"]["name"])
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in container(pod_spec, "vllm")["ports"]}
    assert port["targetPort"] in container_ports
    assert port["port"] == container_ports[port["targetPort"]] == 8000


def test_ingress_routes_the_host_to_the_service_with_tls(rendered):
    rendering = rendered["prod"]
    ingress = rendering.find("Ingress", "vllm-qwen3-235b")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "vllm.ai-serving.company.com"
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = rendering.find("Service", backend["name"])
    assert backend["port"]["number"] == service["spec"]["ports"][0]["port"]
    assert ingress["spec"]["tls"] == [{"hosts": ["vllm.ai-serving.company.com"], "secretName": "vllm-qwen3-235b-tls"}]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not any(key.endswith("rewrite-target") for key in annotations)


@pytest.mark.parametrize("stack", STACKS)
def test_job_and_server_share_the_claim_and_the_server_loads_the_staged_path(rendered, stack):
    rendering = rendered[stack]
    _, pod_spec = server_of(rendering)
    job = rendering.only("Job")
    job_pod = job["spec"]["template"]["spec"]
    stage = container(job_pod, "stage-model")
    server = container(pod_spec, "vllm")

    claim = rendering.outputs["claimName"]
    assert volume_claim(job_pod, "models") == volume_claim(pod_spec, "models") == claim
    assert mount_path(stage, "models") == mount_path(server, "models") == "/models"
    target = stage["args"][stage["args"].index("--target") + 1]
    assert target == rendering.outputs["modelPath"]
    assert target.startswith(mount_path(server, "models") + "/")

    check = container(pod_spec, "check-model-store", key="initContainers")
    env = {e["name"]: e["value"] for e in check["env"]}
    assert mount_path(check, "models") == "/models"
    if stack == "prod":
        # The node's copy, through the link the init container points at it (or, without a copy, at the staged path).
        assert env == {"MODEL_PATH": target, "MARKER": MARKER_NAME, "MODEL_LINK": server["args"][0],
                       "CACHED_PATH": "/node-cache/Qwen--Qwen3-235B-A22B-Instruct-2507--master"}
    else:
        assert env == {"MODEL_PATH": target, "MARKER": MARKER_NAME}
        assert server["args"][0] == target


@pytest.mark.parametrize("stack", STACKS)
def test_job_runs_the_shipped_stage_script(rendered, stack):
    rendering = rendered[stack]
    job_pod = rendering.only("Job")["spec"]["template"]["spec"]
    script_volume = next(v for v in job_pod["volumes"] if v["name"] == "script")
    config_map = rendering.find("ConfigMap", script_volume["configMap"]["name"])
    stage = container(job_pod, "stage-model")
    script_path = stage["args"][0]
    script_name = script_path.rsplit("/", 1)[1]
    assert script_path == f"{mount_path(stage, 'script')}/{script_name}"
    assert "def main(" in config_map["data"][script_name]


def test_prod_server_matches_the_reference_case(rendered):
    deployment, pod_spec = server_of(rendered["prod"])
    server = container(pod_spec, "vllm")
    args = server["args"]

    def flag(name):
        return args[args.index(name) + 1]

    assert server["image"] == "vllm/vllm-openai:v0.34.0"
    assert flag("--tensor-parallel-size") == "8"
    assert flag("--gpu-memory-utilization") == "0.9"
    assert flag("--max-model-len") == "32768"
    assert flag("--served-model-name") == "qwen3-235b"
    assert flag("--port") == "8000"
    assert flag("--host") == "0.0.0.0"
    assert server["resources"]["limits"] == {"cpu": "32", "memory": "160Gi", "nvidia.com/gpu": "8"}
    assert server["resources"]["requests"] == server["resources"]["limits"]
    shm = next(v for v in pod_spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "20Gi"}
    # 470 GB from the node's copy at 1000 MB/s and the engine's start (tests/test_cold_start.py).
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] == 13 * 60
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    # A new replica starts before an old one stops; at two, one old one stops first.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "50%"}


def test_prod_volume_is_shared_nfs(rendered):
    claim = rendered["prod"].find("PersistentVolumeClaim", "vllm-qwen3-235b-models")
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Ti"}},
        "storageClassName": "nfs-client",
    }


def test_dev_server_uses_a_hami_slice(rendered):
    deployment, pod_spec = server_of(rendered["dev"])
    server = container(pod_spec, "vllm")
    assert server["resources"]["limits"] == {
        "cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "50",
    }
    assert pod_spec["schedulerName"] == "hami-scheduler"
    assert "--enforce-eager" in server["args"]
    assert deployment["spec"]["replicas"] == 1


def test_scaled_object_targets_the_deployment_on_queue_depth(rendered):
    rendering = rendered["prod"]
    deployment, _ = server_of(rendering)
    scaled = rendering.find("ScaledObject", "vllm-qwen3-235b")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 2)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'sum(vllm:num_requests_waiting{namespace="ai-serving",model_name="qwen3-235b"})'
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_pod_monitor_scrapes_the_server_pods(rendered):
    rendering = rendered["prod"]
    deployment, pod_spec = server_of(rendering)
    monitor = rendering.find("PodMonitor", "vllm-qwen3-235b-metrics")["spec"]
    assert monitor["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container(pod_spec, "vllm")["ports"]}
    assert endpoint["path"] == "/metrics"


VARIANTS = {
    "existing-namespace-and-claim": {"createNamespace": False, "existingClaim": "shared-models"},
    "gateway-with-tls-and-api-key": {
        "host": "chat.example.com", "exposureRoute": "gateway", "gatewayName": "public", "gatewayNamespace": "gateways",
        "tls": True, "apiKeySecretName": "vllm-api-key",
    },
    "inference-routing-with-api-key": {
        "host": "chat.example.com", "exposureRoute": "inference", "gatewayName": "public", "gatewayNamespace": "gateways",
        "tls": True, "apiKeySecretName": "vllm-api-key", "allowedClientNamespaces": ["gateways", "monitoring"],
    },
    "lora-adapters-on-the-inference-route": {
        "host": "chat.example.com", "exposureRoute": "inference", "gatewayName": "public", "gatewayNamespace": "gateways",
        "tls": True, "apiKeySecretName": "vllm-api-key", "allowedClientNamespaces": ["gateways", "monitoring"],
        "loraAdapters": ["sql=acme/qwen3-0.6b-sql-lora@v1:16", "chat=acme/qwen3-0.6b-chat-lora:8"],
    },
    "whole-gpus-on-a-product": {
        "gpuBackend": "nvidia", "hamiMemoryMiB": 0, "hamiCores": 0, "gpuProducts": ["NVIDIA-A100-SXM4-80GB"],
        "gpuRuntimeClass": "nvidia", "gpuTolerateTaint": False,
    },
    "mig-instance": {
        "gpuBackend": "mig", "gpuMigProfile": "3g.40gb", "hamiMemoryMiB": 0, "hamiCores": 0, "modelSizeGB": 2,
    },
    "dra-on-kubernetes-1-34": {
        "gpuBackend": "dra", "kubernetesVersion": "1.34", "hamiMemoryMiB": 0, "hamiCores": 0,
        "gpuProducts": ["NVIDIA-L40S"], "draMinMemoryGiB": 40, "gpuQuota": 2,
    },
    "autoscaled-on-a-shared-volume": {
        "autoscalingEnabled": True, "autoscalingMaxReplicas": 4, "storageAccessMode": "ReadWriteMany",
        "autoscalingPodMonitorLabels": ["release=kube-prometheus-stack"], "downloaderInstallClient": False,
    },
}


VARIANT_DROPS = {"existing-namespace-and-claim": ("storageSize",)}
"""Dev settings a variant leaves out (a claim's size means nothing on an existing claim)."""


def render_variant(tmp_path, variant):
    return render_stack(project_with_stack(tmp_path, VARIANTS[variant], VARIANT_DROPS.get(variant, ())), tmp_path)


VARIANT_FIRST_VERSION = {"dra-on-kubernetes-1-34": "1.34.0"}
"""Variants that need a newer cluster than the oldest supported (resource.k8s.io/v1 is 1.34's)."""


@pytest.mark.parametrize("variant", VARIANTS)
def test_stack_variants_render_valid_objects(tmp_path, variant):
    rendering = render_variant(tmp_path, variant)
    first = VARIANT_FIRST_VERSION.get(variant, SUPPORTED_KUBERNETES_VERSIONS[0])
    for version in SUPPORTED_KUBERNETES_VERSIONS[SUPPORTED_KUBERNETES_VERSIONS.index(first):]:
        errors = {f"{o.kind}/{o.name}": schema_errors(o.manifest, version) for o in rendering.objects}
        assert {name: found for name, found in errors.items() if found} == {}, version


def test_existing_namespace_and_claim_are_used_not_created(tmp_path):
    rendering = render_variant(tmp_path, "existing-namespace-and-claim")
    kinds = {o.kind for o in rendering.objects}
    assert "Namespace" not in kinds and "PersistentVolumeClaim" not in kinds
    _, pod_spec = server_of(rendering)
    assert volume_claim(pod_spec, "models") == rendering.outputs["claimName"] == "shared-models"
    assert rendering.outputs["namespace"] == "ai-serving-dev"


def test_gateway_variant_routes_the_host_and_guards_the_api(tmp_path):
    rendering = render_variant(tmp_path, "gateway-with-tls-and-api-key")
    assert "Ingress" not in {o.kind for o in rendering.objects}
    route = rendering.only("HTTPRoute")["spec"]
    assert route["hostnames"] == ["chat.example.com"]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert rendering.outputs["endpoint"] == "https://chat.example.com/v1"
    _, pod_spec = server_of(rendering)
    env = container(pod_spec, "vllm")["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}} in env
