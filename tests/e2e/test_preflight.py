"""The preflight against the real API server, through the real CLI and provider: `pulumi preview` of a
prod-like stack passes on the intact cluster, and fails naming the prerequisite when one is taken
away (each case puts it back); credentials that may not list nodes leave the GPUs unchecked, not
failed. The preview creates nothing, so every case runs on the same stack."""

from __future__ import annotations

import json

import pytest

from .cluster import INGRESS_CLASS, namespace_with_key, routing_objects
from .conftest import CRDS, kubectl_json
from .inference_extension import service_account_kubeconfig

pytestmark = pytest.mark.e2e

STACK = "preflight"
NAMESPACE = "preflight-prod"
SECRET = "vllm-api-key"
IB_STACK = "preflight-ib"
IB_NAMESPACE = "preflight-ib"
PROD_PRODUCTS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H200")
"""The products of prod's list that the cluster's nodes have."""


@pytest.fixture(scope="module")
def stacks(project, cluster):
    """prod in a namespace of its own, made with its key's Secret first as the docs say; and prod with
    InfiniBand (IPC_LOCK) in a namespace made beforehand at Pod Security level privileged."""
    cluster.apply(namespace_with_key(NAMESPACE, SECRET))
    project.init_stack_like(STACK, "prod", {"namespace": NAMESPACE})
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": IB_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
        namespace_with_key(IB_NAMESPACE, SECRET)[1]])
    project.init_stack_like(IB_STACK, "prod", {"namespace": IB_NAMESPACE, "ncclIbHca": "mlx5_0", "ncclSocketIfname": "eth0"})
    return project


def preview(project, stack: str = STACK):
    result = project.run("preview", stack=stack, timeout=300, check=False)
    return result, result.stdout + result.stderr


def assert_passes(project, stack: str = STACK) -> str:
    result, output = preview(project, stack)
    assert result.returncode == 0, output[-4000:]
    assert "lacks what " not in output
    return output


def assert_fails_naming(project, *words: str, stack: str = STACK) -> str:
    result, output = preview(project, stack)
    assert result.returncode != 0, output[-4000:]
    assert "lacks what " in output and "nothing was created" in output, output[-4000:]
    for word in words:
        assert word in output, output[-4000:]
    return output


def routing(kind: str) -> list[dict]:
    """The cluster's object of this kind among those it starts with (cluster.routing_objects)."""
    return [o for o in routing_objects() if o["kind"] == kind]


def storage_class(cluster) -> list[dict]:
    """nfs-client as the cluster has it, to apply again after a case deletes it."""
    found = kubectl_json(cluster, "get", "storageclass", "nfs-client")
    return [{k: found[k] for k in ("apiVersion", "kind", "provisioner", "volumeBindingMode", "reclaimPolicy")}
            | {"metadata": {"name": "nfs-client"}}]


def product_nodes(cluster) -> list[dict]:
    nodes = kubectl_json(cluster, "get", "nodes")["items"]
    return [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.product") in PROD_PRODUCTS]


def test_the_intact_cluster_passes_and_what_cannot_be_seen_is_a_warning(stacks, cluster):
    output = assert_passes(stacks)
    # KEDA's metrics server runs only while the scaling tests do: missing or not Available, its
    # APIService warns and does not fail.
    services = kubectl_json(cluster, "get", "apiservices")["items"]
    available = any(s["metadata"]["name"] == "v1beta1.external.metrics.k8s.io" and any(
        c["type"] == "Available" and c["status"] == "True" for c in s.get("status", {}).get("conditions", []))
        for s in services)
    assert ("warning: preflight: autoscalingEngine: " in output and "APIService v1beta1.external.metrics.k8s.io" in output) \
        is not available, output[-3000:]


def test_no_node_of_the_product(stacks, cluster):
    nodes = product_nodes(cluster)
    labels = {n["metadata"]["name"]: n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes}
    for name in labels:
        cluster.kubectl("label", "node", name, "nvidia.com/gpu.product-")
    try:
        assert_fails_naming(stacks, "gpuProducts", "no node matches the pods' node selection",
                            "NVIDIA-A100-SXM4-40GB")
    finally:
        for name, product in labels.items():
            cluster.kubectl("label", "--overwrite", "node", name, f"nvidia.com/gpu.product={product}")
    assert_passes(stacks)


def set_gpus(cluster, name: str, gpus: str):
    patch = {"status": {"allocatable": {"nvidia.com/gpu": gpus}, "capacity": {"nvidia.com/gpu": gpus}}}
    cluster.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))


def test_too_few_gpus(stacks, cluster):
    names = [n["metadata"]["name"] for n in product_nodes(cluster)]
    for name in names:
        set_gpus(cluster, name, "4")
    try:
        assert_fails_naming(stacks, "no node can hold one pod of 8 nvidia.com/gpu", "offers the most (4 nvidia.com/gpu)")
    finally:
        for name in names:
            set_gpus(cluster, name, "8")
    assert_passes(stacks)


def test_a_missing_storage_class(stacks, cluster):
    saved = storage_class(cluster)
    cluster.kubectl("delete", "storageclass", "nfs-client")
    try:
        assert_fails_naming(stacks, "storageClass", "StorageClass nfs-client does not exist")
    finally:
        cluster.apply(saved)
    assert_passes(stacks)


def test_a_missing_crd(stacks, cluster):
    crd = CRDS / "cert-manager.io_clusterissuers.yaml"
    cluster.kubectl("delete", "-f", str(crd), "--wait=true")
    try:
        assert_fails_naming(stacks, "tlsClusterIssuer", "ClusterIssuer: cert-manager.io/v1 is not served", "install cert-manager")
    finally:
        cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterissuers.cert-manager.io")
        cluster.apply(routing("ClusterIssuer"))
    assert_passes(stacks)


def test_a_missing_ingress_class(stacks, cluster):
    cluster.kubectl("delete", "ingressclass", INGRESS_CLASS)
    try:
        assert_fails_naming(stacks, "ingressClass", "IngressClass nginx does not exist")
    finally:
        cluster.apply(routing("IngressClass"))
    assert_passes(stacks)


def test_an_existing_namespace_at_restricted_for_a_server_that_adds_ipc_lock(stacks, cluster):
    assert_passes(stacks, IB_STACK)
    cluster.kubectl("label", "--overwrite", "namespace", IB_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    try:
        assert_fails_naming(stacks, f"namespace {IB_NAMESPACE} enforces Pod Security level restricted", "IPC_LOCK",
                            "pod-security.kubernetes.io/enforce=privileged", stack=IB_STACK)
    finally:
        cluster.kubectl("label", "--overwrite", "namespace", IB_NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")


def test_a_missing_key_secret(stacks, cluster):
    cluster.kubectl("delete", "secret", SECRET, "-n", NAMESPACE)
    try:
        assert_fails_naming(stacks, "apiKeySecretName", f"Secret {NAMESPACE}/{SECRET} does not exist")
    finally:
        cluster.apply(namespace_with_key(NAMESPACE, SECRET)[1:])
    assert_passes(stacks)


NOT_NODES = [
    {"apiGroups": [""], "verbs": ["*"], "resources": [
        "namespaces", "pods", "services", "secrets", "configmaps", "serviceaccounts", "persistentvolumeclaims",
        "persistentvolumes", "resourcequotas", "endpoints", "events"]},
    {"apiGroups": ["apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io", "scheduling.k8s.io",
                   "storage.k8s.io", "node.k8s.io", "apiregistration.k8s.io", "keda.sh", "monitoring.coreos.com",
                   "cert-manager.io", "gateway.networking.k8s.io"], "resources": ["*"], "verbs": ["*"]},
]
"""What a deployer's account may do: everything the stack touches, but not read nodes."""


def test_credentials_that_may_not_list_nodes_leave_the_gpus_unchecked(stacks, cluster, e2e_work):
    account = "deployer"
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "e2e-deployer"},
         "rules": NOT_NODES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "e2e-deployer"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-deployer"},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]},
    ])
    kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, account, e2e_work / "deployer.kubeconfig")
    # The provider's own setting: the preflight reads the cluster the provider would.
    stacks.run("config", "set", "kubernetes:kubeconfig", str(kubeconfig), stack=STACK)
    try:
        output = assert_passes(stacks)
    finally:
        stacks.run("config", "rm", "kubernetes:kubeconfig", stack=STACK)
    assert "unchecked: gpuProducts, nodeSelector, tolerations, gpuCount: could not list nodes" in output
    assert "403" in output


def test_three_prerequisites_missing_at_once_come_in_one_failure(stacks, cluster, capsys):
    saved = storage_class(cluster)
    cluster.kubectl("delete", "storageclass", "nfs-client")
    cluster.kubectl("delete", "ingressclass", INGRESS_CLASS)
    cluster.kubectl("delete", "secret", SECRET, "-n", NAMESPACE)
    try:
        output = assert_fails_naming(stacks, "(3 problem(s))", "StorageClass nfs-client does not exist",
                                     "IngressClass nginx does not exist", f"Secret {NAMESPACE}/{SECRET} does not exist")
    finally:
        cluster.apply([*saved, *routing("IngressClass"), *namespace_with_key(NAMESPACE, SECRET)[1:]])
    with capsys.disabled():
        print("\n  preview of prod with three prerequisites missing:\n" + "\n".join(
            "    " + line for line in output.splitlines() if line.strip()))
    assert_passes(stacks)
