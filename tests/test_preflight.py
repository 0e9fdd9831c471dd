"""The preflight: what each stack needs of the cluster (stack/preflight.py), each check against a
cluster that lacks one prerequisite (components/preflight.py, through a reader of fixed objects), the
modes, and that the plan's APIs cover every object the stacks render."""

import copy

import pytest
from conftest import ROOT, SHIPPED_STACKS, project_with_stack

from stack.config import namespaced_values
from stack.loading import parse_stack_config
from stack.preflight import PreflightError, plan_apis, run_preflight, stack_needs
from stack.project import encode, read_project, stack_config
from stack.render import render_stack
from vllm_serving_components.preflight import (
    Forbidden,
    GpuNeed,
    Needs,
    NotFound,
    StorageNeed,
    Unreachable,
    node_matches,
    pods_fitting,
    preflight,
    quantity,
    tolerates,
)

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def config_of(stack: str, project_dir=ROOT, **settings):
    """A stack's validated config, with these settings (keys without the project prefix) changed."""
    project = read_project(project_dir)
    values = {**stack_config(project, stack).values, **{f"vllm-serving:{k}": encode(v) for k, v in settings.items()}}
    own, _ = namespaced_values(project.name, values)
    return parse_stack_config(project.name, own, project.defaults())


class FakeCluster:
    """A reader of fixed objects by API path; a path under ``forbidden`` answers 403."""

    where = "context fake (https://127.0.0.1:6443)"

    def __init__(self, objects: dict, forbidden=(), unreachable=False):
        self.objects, self.forbidden, self.unreachable = objects, forbidden, unreachable
        self.paths: list[str] = []

    def get(self, path: str) -> dict:
        self.paths.append(path)
        if self.unreachable:
            raise Unreachable("connection refused")
        if any(path.startswith(prefix) for prefix in self.forbidden):
            raise Forbidden(f"403 Forbidden: the credentials may not read {path}")
        if path in self.objects:
            return copy.deepcopy(self.objects[path])
        raise NotFound(f"{path}: not found")


def gpu_node(name: str, product: str = H100, gpus: int = 8, ready: bool = True) -> dict:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {"taints": [GPU_TAINT]},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "64"},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def discovery(*kinds: str) -> dict:
    return {"resources": [{"kind": kind} for kind in kinds]}


def prod_cluster() -> dict:
    """Everything the prod stack needs: two H100 nodes, an NFS class, KEDA, the Prometheus Operator,
    cert-manager with its issuer, nginx's IngressClass, the namespace and the key's Secret."""
    return {
        "/version": {"gitVersion": "v1.34.4"},
        "/api/v1/nodes": {"items": [gpu_node("gpu-0"), gpu_node("gpu-1")]},
        "/api/v1/pods": {"items": []},
        "/apis/keda.sh/v1alpha1": discovery("ScaledObject", "TriggerAuthentication"),
        "/apis/monitoring.coreos.com/v1": discovery("PodMonitor", "PrometheusRule"),
        "/apis/cert-manager.io/v1": discovery("ClusterIssuer", "Issuer"),
        "/apis/storage.k8s.io/v1/storageclasses/nfs-client": {"metadata": {"name": "nfs-client"}, "provisioner": "nfs.csi.k8s.io"},
        "/apis/networking.k8s.io/v1/ingressclasses/nginx": {"metadata": {"name": "nginx"}},
        "/apis/cert-manager.io/v1/clusterissuers/letsencrypt-prod": {"metadata": {"name": "letsencrypt-prod"}},
        "/api/v1/namespaces/ai-serving": {"metadata": {"name": "ai-serving", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        "/api/v1/namespaces/ai-serving/secrets/vllm-api-key": {"data": {"api-key": "c2VjcmV0"}},
        "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io": {
            "status": {"conditions": [{"type": "Available", "status": "True"}]}},
    }


@pytest.fixture(scope="module")
def prod():
    return config_of("prod")


def findings_of(config, objects, **reader):
    return preflight(stack_needs(config), FakeCluster(objects, **reader))


def test_the_intact_cluster_passes_prod(prod):
    assert findings_of(prod, prod_cluster()) == []


def without(path: str):
    def change(objects):
        del objects[path]
    return change


def with_nodes(*nodes):
    def change(objects):
        objects["/api/v1/nodes"] = {"items": list(nodes)}
    return change


def other_pods_take(node: str, gpus: int):
    def change(objects):
        objects["/api/v1/pods"] = {"items": [{
            "metadata": {"namespace": "training", "labels": {"app": "trainer"}},
            "spec": {"nodeName": node, "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"}}]}
    return change


def namespace_enforces(level: str):
    def change(objects):
        objects["/api/v1/namespaces/ai-serving"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = level
    return change


def set_path(path: str, value: dict):
    def change(objects):
        objects[path] = value
    return change


def quota(name: str, gpus: str, labels=None):
    def change(objects):
        objects["/api/v1/namespaces/ai-serving/resourcequotas"] = {"items": [{
            "metadata": {"name": name, "namespace": "ai-serving", "labels": labels or {}},
            "spec": {"hard": {"requests.nvidia.com/gpu": gpus}}}]}
    return change


# One prerequisite taken away at a time: (change, severity, subject, words in the message).
MISSING = {
    "no node of the product": (
        with_nodes(gpu_node("a100-0", product="NVIDIA-A100-SXM4-40GB")), "problem", "gpuProducts",
        ["no node matches", "NVIDIA-A100-SXM4-40GB"]),
    "nodes not ready": (with_nodes(gpu_node("gpu-0", ready=False)), "problem", "gpuProducts", ["not Ready"]),
    "nodes too small": (with_nodes(gpu_node("gpu-0", gpus=4)), "problem", "gpuCount", ["no node can hold one pod of 8 nvidia.com/gpu", "gpu-0 offers the most (4 nvidia.com/gpu)"]),
    "too few free GPUs": (
        lambda o: (with_nodes(gpu_node("gpu-0"))(o), other_pods_take("gpu-0", 2)(o)), "problem", "gpuCount",
        ["1 pod(s) of 8 nvidia.com/gpu must run", "hold 0"]),
    "no room for the surge": (with_nodes(gpu_node("gpu-0")), "warning", "gpuCount", ["a rollout adds 1 pod(s)", "maxSurge 0"]),
    "another quota caps the GPUs": (quota("team-cap", "4"), "problem", "gpuCount",
                                    ["ResourceQuota ai-serving/team-cap caps requests.nvidia.com/gpu at 4", "take 8"]),
    "missing storage class": (without("/apis/storage.k8s.io/v1/storageclasses/nfs-client"), "problem", "storageClass",
                              ["StorageClass nfs-client does not exist"]),
    "block provisioner for ReadWriteMany": (
        set_path("/apis/storage.k8s.io/v1/storageclasses/nfs-client", {"metadata": {"name": "nfs-client"}, "provisioner": "ebs.csi.aws.com"}),
        "problem", "storageClass", ["ebs.csi.aws.com cannot make ReadWriteMany"]),
    "unknown provisioner": (
        set_path("/apis/storage.k8s.io/v1/storageclasses/nfs-client", {"metadata": {"name": "nfs-client"}, "provisioner": "example.com/fs"}),
        "warning", "storageClass", ["example.com/fs is not one whose access modes are known"]),
    "missing KEDA CRD": (without("/apis/keda.sh/v1alpha1"), "problem", "autoscalingEngine", ["ScaledObject: keda.sh/v1alpha1 is not served", "install KEDA"]),
    "KEDA's metrics server not available": (
        set_path("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
                 {"status": {"conditions": [{"type": "Available", "status": "False", "message": "endpoints for service/keda-operator-metrics-apiserver have no addresses"}]}}),
        "warning", "autoscalingEngine", ["is not Available", "have no addresses"]),
    "missing IngressClass": (without("/apis/networking.k8s.io/v1/ingressclasses/nginx"), "problem", "ingressClass",
                             ["IngressClass nginx does not exist"]),
    "missing ClusterIssuer": (without("/apis/cert-manager.io/v1/clusterissuers/letsencrypt-prod"), "problem", "tlsClusterIssuer",
                              ["ClusterIssuer letsencrypt-prod does not exist"]),
    "missing key Secret": (without("/api/v1/namespaces/ai-serving/secrets/vllm-api-key"), "problem", "apiKeySecretName",
                           ["Secret ai-serving/vllm-api-key does not exist"]),
    "Secret without the key": (set_path("/api/v1/namespaces/ai-serving/secrets/vllm-api-key", {"data": {"token": "eA=="}}),
                               "problem", "apiKeySecretName", ["has no key api-key (it has: token)"]),
}


@pytest.mark.parametrize("case", MISSING)
def test_each_missing_prerequisite_is_named_once(prod, case):
    change, severity, subject, words = MISSING[case]
    objects = prod_cluster()
    change(objects)
    (finding,) = findings_of(prod, objects)
    assert finding.severity == severity
    assert subject in finding.subject
    for word in words:
        assert word in finding.message


def test_cert_manager_not_installed_is_one_problem_not_two(prod):
    objects = prod_cluster()
    del objects["/apis/cert-manager.io/v1"], objects["/apis/cert-manager.io/v1/clusterissuers/letsencrypt-prod"]
    (finding,) = findings_of(prod, objects)
    assert finding.subject == "tlsClusterIssuer" and "cert-manager.io/v1 is not served" in finding.message


def test_every_problem_comes_in_one_pass(prod):
    objects = prod_cluster()
    for path in ("/apis/storage.k8s.io/v1/storageclasses/nfs-client", "/apis/networking.k8s.io/v1/ingressclasses/nginx",
                 "/api/v1/namespaces/ai-serving/secrets/vllm-api-key"):
        del objects[path]
    with_nodes(gpu_node("a100-0", product="NVIDIA-A100-SXM4-40GB"))(objects)
    subjects = [f.subject for f in findings_of(prod, objects)]
    assert len(subjects) == 4
    assert any("gpuProducts" in s for s in subjects) and "ingressClass" in subjects and "apiKeySecretName" in subjects


def test_reads_the_credentials_may_not_make_are_unchecked_not_problems(prod):
    findings = findings_of(prod, prod_cluster(), forbidden=("/api/v1/nodes", "/api/v1/namespaces/ai-serving/secrets"))
    assert {f.severity for f in findings} == {"unchecked"}
    assert any("could not list nodes" in f.message for f in findings)
    assert any("could not read Secret ai-serving/vllm-api-key" in f.message for f in findings)


def test_a_declared_kubernetes_version_must_be_the_clusters():
    objects = {**prod_cluster(), "/version": {"major": "1", "minor": "33+", "gitVersion": "v1.33.5-gke.1"}}
    (finding,) = findings_of(config_of("prod", kubernetesVersion="1.34"), objects)
    assert finding.subject == "kubernetesVersion"
    assert finding.message == "says 1.34, but the cluster runs v1.33.5-gke.1; set it to 1.33"
    assert findings_of(config_of("prod", kubernetesVersion="v1.33.2"), objects) == []
    assert findings_of(config_of("prod"), objects) == []


def test_an_unreachable_cluster_is_one_problem(prod):
    (finding,) = findings_of(prod, prod_cluster(), unreachable=True)
    assert finding.severity == "problem" and "cannot read the cluster" in finding.message


def test_the_stacks_own_quota_is_not_another_cap(prod):
    objects = prod_cluster()
    quota("vllm-qwen3-235b", "4", {"app.kubernetes.io/instance": "vllm-qwen3-235b"})(objects)
    assert findings_of(prod, objects) == []
    quota("roomy", "16")(objects)
    assert findings_of(prod, objects) == []


def test_the_stacks_own_pods_do_not_count_as_taking_gpus(prod):
    objects = prod_cluster()
    with_nodes(gpu_node("gpu-0"), gpu_node("gpu-1"))(objects)
    own = {"metadata": {"namespace": "ai-serving", "labels": {"app.kubernetes.io/instance": "vllm-qwen3-235b"}},
           "spec": {"nodeName": "gpu-0", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
           "status": {"phase": "Running"}}
    objects["/api/v1/pods"] = {"items": [own]}
    assert findings_of(prod, objects) == []
    other = copy.deepcopy(own)
    other["metadata"]["namespace"] = "research"
    objects["/api/v1/pods"] = {"items": [other]}
    assert [f.severity for f in findings_of(prod, objects)] == ["warning"]  # one node left: no room for the surge


def test_a_second_up_on_cordoned_nodes_only_warns_while_the_stacks_pods_run(prod):
    objects = prod_cluster()
    for node in objects["/api/v1/nodes"]["items"]:
        node["spec"]["unschedulable"] = True
    (finding,) = findings_of(prod, objects)
    assert finding.severity == "problem" and "cordoned" in finding.message
    own = {"metadata": {"namespace": "ai-serving", "labels": {"app.kubernetes.io/instance": "vllm-qwen3-235b"}},
           "spec": {"nodeName": "gpu-0", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
           "status": {"phase": "Running"}}
    objects["/api/v1/pods"] = {"items": [own]}
    (finding,) = findings_of(prod, objects)
    assert finding.severity == "warning"
    assert finding.message.startswith("the 1 pod(s) running stay, but no more would be placed") and "cordoned" in finding.message


def test_a_namespace_at_restricted_refuses_a_server_that_adds_ipc_lock():
    config = config_of("prod", ncclIbHca="mlx5_0", ncclSocketIfname="eth0")
    objects = prod_cluster()
    (finding,) = findings_of(config, objects)
    assert finding.subject == "namespace"
    assert "enforces Pod Security level restricted" in finding.message and "IPC_LOCK" in finding.message
    assert "pod-security.kubernetes.io/enforce=privileged" in finding.message
    namespace_enforces("privileged")(objects)
    assert findings_of(config, objects) == []


def test_a_namespace_the_stack_does_not_create_must_exist():
    config = config_of("prod", createNamespace=False)
    objects = prod_cluster()
    del objects["/api/v1/namespaces/ai-serving"]
    (finding,) = findings_of(config, objects)
    assert finding.subject == "namespace" and "does not exist" in finding.message


def test_an_existing_claim_must_be_bound_large_enough_and_of_the_mode():
    need = Needs(storage=StorageNeed("existingClaim", None, "ReadWriteMany", "470G", "ai-serving", "models"))
    path = "/api/v1/namespaces/ai-serving/persistentvolumeclaims/models"
    bound = {"status": {"phase": "Bound", "capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"]}}
    objects = {"/version": {}, path: bound}
    assert preflight(need, FakeCluster(objects)) == []
    for status, words in (({"phase": "Pending"}, "is Pending, not Bound"),
                          ({**bound["status"], "capacity": {"storage": "100Gi"}}, "holds 100Gi, less than the 470G"),
                          ({**bound["status"], "accessModes": ["ReadWriteOnce"]}, "is ReadWriteOnce, not ReadWriteMany")):
        (finding,) = preflight(need, FakeCluster({**objects, path: {"status": status}}))
        assert words in finding.message
    (finding,) = preflight(need, FakeCluster({"/version": {}}))
    assert "does not exist" in finding.message


def test_a_class_without_a_provisioner_needs_a_volume_made_beforehand():
    need = Needs(storage=StorageNeed("storageClass", "local", "ReadWriteOnce", "20Gi", "dev"))
    volume = {"spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "50Gi"}},
              "status": {"phase": "Available"}}
    objects = {"/version": {}, "/apis/storage.k8s.io/v1/storageclasses/local":
               {"metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner"},
               "/api/v1/persistentvolumes": {"items": [volume]}}
    assert preflight(need, FakeCluster(objects)) == []
    volume["status"]["phase"] = "Bound"
    (finding,) = preflight(need, FakeCluster(objects))
    assert "no Available PersistentVolume" in finding.message


def test_without_a_class_the_cluster_needs_a_default_one():
    need = Needs(storage=StorageNeed("storageClass", None, "ReadWriteOnce", "20Gi", "dev"))
    classes = "/apis/storage.k8s.io/v1/storageclasses"
    standard = {"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path"}
    assert preflight(need, FakeCluster({"/version": {}, classes: {"items": [standard]}})) == []
    del standard["metadata"]["annotations"]
    (finding,) = preflight(need, FakeCluster({"/version": {}, classes: {"items": [standard]}}))
    assert "no default one" in finding.message


# --- the pure parts -------------------------------------------------------------------------


def test_node_affinity_and_selector_as_the_scheduler_reads_them():
    node = {"metadata": {"labels": {"pool": "gpu", "nvidia.com/gpu.product": H100, "gpus": "8"}}}
    products = lambda op, *values: {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": op, "values": list(values)}]}]}}}
    assert node_matches(node, {"pool": "gpu"}, products("In", H100, "NVIDIA-H200"))
    assert not node_matches(node, {"pool": "cpu"}, None)
    assert not node_matches(node, {}, products("In", "NVIDIA-H200"))
    assert node_matches(node, {}, products("NotIn", "NVIDIA-H200"))
    assert node_matches(node, {}, products("Exists"))
    assert not node_matches(node, {}, products("DoesNotExist"))
    gt = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["4"]}]}]}}}
    assert node_matches(node, {}, gt)


def test_taints_need_tolerations_of_their_effect():
    assert tolerates([GPU_TAINT], [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert tolerates([GPU_TAINT], [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}])
    assert not tolerates([GPU_TAINT], [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}])
    assert not tolerates([GPU_TAINT], [])
    assert tolerates([{**GPU_TAINT, "effect": "PreferNoSchedule"}], [])
    assert tolerates([GPU_TAINT], [{"operator": "Exists"}])


def test_pods_fitting_takes_the_scarcest_resource():
    free = {"nvidia.com/gpu": quantity("8"), "nvidia.com/gpumem": quantity("100000")}
    assert pods_fitting(free, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "40000"}) == 2
    assert pods_fitting(free, {"nvidia.com/gpu": "3"}) == 2
    assert pods_fitting(free, {"nvidia.com/mig-3g.40gb": "1"}) == 0


def test_a_hami_slice_is_checked_on_hamis_resources():
    config = config_of("dev")
    need = stack_needs(config).gpus
    assert isinstance(need, GpuNeed) and "nvidia.com/gpumem" in need.limits
    node = gpu_node("hami-0")
    objects = {"/version": {}, "/api/v1/nodes": {"items": [node]}, "/api/v1/pods": {"items": []}}
    (finding,) = preflight(Needs(gpus=need), FakeCluster(objects))
    assert "nvidia.com/gpumem" in finding.message
    node["status"]["allocatable"]["nvidia.com/gpumem"] = str(8 * 81559)
    node["status"]["allocatable"]["nvidia.com/gpucores"] = "800"
    (finding,) = preflight(Needs(gpus=need), FakeCluster(objects))
    assert finding.severity == "warning" and "carries hami.io/node-nvidia-register" in finding.message
    node["metadata"]["annotations"] = {"hami.io/node-nvidia-register": "GPU-0,10,81559,100,NVIDIA-H100-80GB-HBM3,0,true:"}
    assert preflight(Needs(gpus=need), FakeCluster(objects)) == []


# --- modes ----------------------------------------------------------------------------------


def test_error_mode_fails_with_every_problem_and_warns_of_the_rest(prod):
    objects = prod_cluster()
    del objects["/apis/networking.k8s.io/v1/ingressclasses/nginx"]
    warnings = []
    with pytest.raises(PreflightError) as raised:
        run_preflight(prod, FakeCluster(objects, forbidden=("/api/v1/pods",)), warn=warnings.append)
    text = str(raised.value)
    assert text.startswith("the cluster (context fake (https://127.0.0.1:6443)) lacks what vllm-qwen3-235b needs")
    assert "ingressClass: IngressClass nginx does not exist" in text and "(1 problem(s))" in text
    assert warnings == [w for w in warnings if w.startswith("unchecked: ")] and len(warnings) == 1


def test_warn_mode_reports_problems_as_warnings():
    config = config_of("prod", preflight="warn")
    objects = prod_cluster()
    del objects["/apis/networking.k8s.io/v1/ingressclasses/nginx"]
    warnings = []
    findings = run_preflight(config, FakeCluster(objects), warn=warnings.append)
    assert [f.severity for f in findings] == ["problem"]
    assert warnings == ["preflight: ingressClass: IngressClass nginx does not exist; install that ingress controller, "
                        "or set ingressClass to one of kubectl get ingressclass"]


def test_off_reads_nothing():
    config = config_of("prod", preflight="off")
    cluster = FakeCluster({}, unreachable=True)
    assert run_preflight(config, cluster) == [] and cluster.paths == []


def test_a_mode_that_is_not_one_is_refused_naming_the_key(tmp_path):
    from stack.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, {"preflight": "strict"}), tmp_path)
    assert "vllm-serving:preflight = \"strict\": must be one of error, warn, off" in str(raised.value)


def test_the_offline_render_never_reads_a_cluster(monkeypatch):
    import vllm_serving_components.preflight as module

    def refuse(*args, **kwargs):
        raise AssertionError("the offline render built a cluster reader")

    monkeypatch.setattr(module.KubeReader, "__init__", refuse)
    assert render_stack("prod").objects


# --- the plan's APIs ------------------------------------------------------------------------

BUILT_IN = {"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
            "scheduling.k8s.io/v1", "autoscaling/v2", "storage.k8s.io/v1", "node.k8s.io/v1"}
"""API versions every supported Kubernetes release serves (1.30 and later)."""


def _uncovered(rendering, config) -> set:
    needed = {(api.api_version, api.kind) for api in plan_apis(config)}
    rendered = {(o.manifest["apiVersion"], o.kind) for o in rendering.objects}
    return {pair for pair in rendered if pair[0] not in BUILT_IN} - needed


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_the_plan_apis_cover_every_custom_resource_a_stack_renders(stack):
    assert _uncovered(render_stack(stack), config_of(stack)) == set()


def test_the_plan_apis_cover_the_variants(tmp_path):
    from test_stacks import VARIANT_DROPS, VARIANTS

    for index, (variant, settings) in enumerate(VARIANTS.items()):
        directory = tmp_path / str(index)
        directory.mkdir()
        stack = project_with_stack(directory, settings, VARIANT_DROPS.get(variant, ()))
        rendering = render_stack(stack, directory)
        assert _uncovered(rendering, config_of(stack, directory)) == set(), variant
