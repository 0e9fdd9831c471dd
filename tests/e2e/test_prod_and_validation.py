"""The prod stack against the real API server, deployed as the docs say: the namespace and the API
key's Secret made first, then a preview and up by the real CLI and provider, destroy around the
protected claim and up again; and its offline rendering applied with a server-side dry run (every
object, custom resources included, validated and defaulted by kube-apiserver with the upstream
CRDs installed)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from vllm_serving_components.rollout import wave_minutes

from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .pulumi_cli import ROOT
from .standins import StatusPublisher
from .test_dev_lifecycle import render

pytestmark = pytest.mark.e2e

STACK = "prod"
NAMESPACE = "ai-serving"
SECRET = "vllm-api-key"


def documented_steps_before_up() -> list[str]:
    """The shell block of README.md or docs/ that makes prod's namespace and API key's Secret."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = [block for page in pages for block in re.findall(r"```sh\n(.*?)```", page.read_text(), flags=re.S)
              if f"create secret generic {SECRET}" in block and "create namespace" in block]
    assert len(blocks) == 1, f"{len(blocks)} documented blocks make the namespace and the Secret"
    return [line.split("  #")[0].strip() for line in blocks[0].splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prod(project, cluster):
    """The prod stack, after the documented steps before its first up, run as written."""
    env = {**os.environ, "PATH": f"{cluster.bin}{os.pathsep}{os.environ['PATH']}", "KUBECONFIG": str(cluster.kubeconfig)}
    for command in documented_steps_before_up():
        subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env, check=True, capture_output=True, text=True,
                       timeout=60)
    project.run("stack", "init", STACK)
    return project


def test_preview_prod(prod):
    plan = prod.run("preview", "--json", stack=STACK, timeout=300).json()
    errors = [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    assert not errors, errors
    created = {s["newState"]["type"] for s in plan["steps"] if s["op"] == "create"}
    for token in ("kubernetes:apps/v1:Deployment", "kubernetes:networking.k8s.io/v1:Ingress",
                  "kubernetes:keda.sh/v1alpha1:ScaledObject", "kubernetes:monitoring.coreos.com/v1:PodMonitor"):
        assert token in created, sorted(created)


def uid(cluster, *args: str) -> str:
    return kubectl_json(cluster, "get", *args)["metadata"]["uid"]


def prod_up(prod, cluster):
    """Without an ingress controller that publishes an address and KEDA reporting the ScaledObject
    ready, `up` waits for them (10 minutes, then fails); stand-ins report both."""
    with StatusPublisher(cluster, NAMESPACE):
        prod.up(STACK, timeout=300)
    assert_next_run_creates_nothing_that_exists(prod, STACK, cluster)


def test_prod_up_in_the_namespace_the_docs_make_first(prod, cluster):
    namespace_uid, secret_uid = uid(cluster, "namespace", NAMESPACE), uid(cluster, "secret", SECRET, "-n", NAMESPACE)
    prod_up(prod, cluster)
    d = kubectl_json(cluster, "get", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE)
    assert d["status"].get("availableReplicas") == 1
    (pod,) = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]
    # On a node of a product prod allows, with its 8 GPUs (every H100 node of the cluster qualifies).
    node = kubectl_json(cluster, "get", "node", pod["spec"]["nodeName"])
    products = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["vllm-serving:gpuProducts"]
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] in products
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    claim = kubectl_json(cluster, "get", "pvc", "vllm-qwen3-235b-models", "-n", NAMESPACE)
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"].startswith("e2e-rwx-")
    for kind in ("scaledobject", "podmonitor", "ingress"):
        assert kubectl_json(cluster, "get", kind, "-n", NAMESPACE)["items"], kind
    assert prod.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "https://vllm.ai-serving.company.com/v1"
    # The namespace the docs made is the stack's now, unchanged but for the stack's field manager;
    # the Secret is the user's, untouched.
    namespace = kubectl_json(cluster, "get", "namespace", NAMESPACE)
    assert namespace["metadata"]["uid"] == namespace_uid
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert uid(cluster, "secret", SECRET, "-n", NAMESPACE) == secret_uid
    assert SECRET not in {r.get("outputs", {}).get("metadata", {}).get("name") for r in prod.resources(STACK)}


def prod_gpu_nodes(cluster) -> set[str]:
    """The nodes of a GPU product prod allows: where its node cache and image pre-pull run."""
    products = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["vllm-serving:gpuProducts"]
    return {n["metadata"]["name"] for n in kubectl_json(cluster, "get", "nodes")["items"]
            if n["metadata"]["labels"].get("nvidia.com/gpu.product") in products}


def daemon_set_nodes(cluster, namespace: str, name: str) -> set[str]:
    """The nodes of a DaemonSet's pods, once the set reports every one ready."""
    daemon_set = kubectl_json(cluster, "get", "daemonset", name, "-n", namespace)
    status = daemon_set["status"]
    assert status["numberReady"] == status["desiredNumberScheduled"] == status.get("updatedNumberScheduled"), status
    selector = ",".join(f"{k}={v}" for k, v in daemon_set["spec"]["selector"]["matchLabels"].items())
    return {p["spec"]["nodeName"] for p in kubectl_json(cluster, "get", "pods", "-n", namespace, "-l", selector)["items"]}


def test_the_node_cache_and_the_image_run_on_every_gpu_node_of_prod(prod, cluster):
    """kwok runs no container: this proves the objects, their admission and their placement; the
    copy itself is proven by tests/test_cache_model.py and bench/cold_start.py."""
    gpu_nodes = prod_gpu_nodes(cluster)
    assert gpu_nodes
    cache_namespace = f"{NAMESPACE}-node-cache"
    labels = kubectl_json(cluster, "get", "namespace", cache_namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert daemon_set_nodes(cluster, cache_namespace, "vllm-qwen3-235b-node-cache-prepare") == gpu_nodes
    assert daemon_set_nodes(cluster, NAMESPACE, "vllm-qwen3-235b-node-cache") == gpu_nodes
    assert daemon_set_nodes(cluster, NAMESPACE, "vllm-qwen3-235b-image-pre-pull") == gpu_nodes
    (claim,) = [c for c in kubectl_json(cluster, "get", "pvc", "-n", NAMESPACE)["items"]
                if c["metadata"]["name"].startswith("vllm-qwen3-235b-node-cache-")]
    volume = kubectl_json(cluster, "get", "pv", claim["spec"]["volumeName"])
    assert volume["status"]["phase"] == "Bound" and volume["metadata"]["name"].startswith(f"{cache_namespace}-vllm-qwen3-235b-")
    (server,) = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]
    assert server["spec"]["nodeName"] in gpu_nodes
    claims = {v["persistentVolumeClaim"]["claimName"] for v in server["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"vllm-qwen3-235b-models", claim["metadata"]["name"]}
    assert kubectl_json(cluster, "get", "priorityclass", "vllm-qwen3-235b-image-pre-pull")["value"] == -1000


def test_a_new_revision_is_on_every_gpu_node_before_the_server_rolls(prod, cluster):
    """A model upgrade: the staging Job of the new revision, then the copier's new pods on every
    node, ready, and only then the server's new ReplicaSet (the objects' timestamps)."""
    old_sets = {rs["metadata"]["name"] for rs in kubectl_json(cluster, "get", "replicasets", "-n", NAMESPACE)["items"]}
    prod.run("config", "set", "vllm-serving:modelRevision", "0123456789abcdef0123456789abcdef01234567", stack=STACK)
    try:
        prod_up(prod, cluster)
        (new_set,) = [rs for rs in kubectl_json(cluster, "get", "replicasets", "-n", NAMESPACE)["items"]
                      if rs["metadata"]["name"] not in old_sets]
        copier = kubectl_json(cluster, "get", "daemonset", "vllm-qwen3-235b-node-cache", "-n", NAMESPACE)
        assert "--name" in copier["spec"]["template"]["spec"]["containers"][0]["command"]
        assert "0123456789abcdef0123456789abcdef01234567" in " ".join(copier["spec"]["template"]["spec"]["containers"][0]["command"])
        pods = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=node-cache")["items"]
        assert {p["spec"]["nodeName"] for p in pods} == prod_gpu_nodes(cluster)
        ready_at = max(
            c["lastTransitionTime"] for p in pods for c in p["status"]["conditions"] if c["type"] == "Ready"
        )
        # RFC 3339 UTC timestamps of one format compare as text; a second's resolution can tie.
        assert ready_at <= new_set["metadata"]["creationTimestamp"], (ready_at, new_set["metadata"]["creationTimestamp"])
        job_done = max(j["status"]["completionTime"] for j in kubectl_json(cluster, "get", "jobs", "-n", NAMESPACE)["items"])
        assert job_done <= min(p["metadata"]["creationTimestamp"] for p in pods)
    finally:
        # Back to the revision the later tests expect staged (they cordon every node).
        prod.run("config", "rm", "vllm-serving:modelRevision", stack=STACK)
        prod_up(prod, cluster)


def test_an_up_finishes_beside_an_autoscaled_replica_that_cannot_start(prod, cluster):
    """The autoscaler asked for a second replica that no node can take: an up that changes the
    Deployment waits for the replicas the stack promises (one), not for the autoscaler's."""
    nodes = [n["metadata"]["name"] for n in kubectl_json(cluster, "get", "nodes")["items"]]
    cluster.kubectl("cordon", *nodes)
    try:
        cluster.kubectl("scale", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE, "--replicas=2")
        # A change of the Deployment's own spec, not its pods' (imagePullMinutes moves the progress deadline).
        prod.run("config", "set", "vllm-serving:imagePullMinutes", "16", stack=STACK)
        prod_up(prod, cluster)
        d = kubectl_json(cluster, "get", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE)
        assert d["spec"]["replicas"] == 2 and d["status"].get("readyReplicas") == 1, d["status"]
        # prod's load budget: its node's copy, 470 GB at 1000 MB/s and the engine's start.
        assert d["spec"]["progressDeadlineSeconds"] == 60 * wave_minutes(13, 16, 120), d["spec"]
    finally:
        prod.run("config", "rm", "vllm-serving:imagePullMinutes", stack=STACK)
        cluster.kubectl("scale", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE, "--replicas=1")
        cluster.kubectl("uncordon", *nodes)


def test_prod_destroy_stops_at_the_protected_claim_and_the_next_up_adopts_it(prod, cluster):
    """protectModelVolume: destroy's preview refuses the protected claim, and nothing is deleted;
    after `pulumi state unprotect` (the docs' step) destroy completes, leaving the claim and
    namespace in the cluster; the next up adopts both and protects the claim again."""
    claim_uid = uid(cluster, "pvc", "vllm-qwen3-235b-models", "-n", NAMESPACE)
    before = {r["urn"] for r in prod.resources(STACK)}
    refused = prod.run("destroy", "--yes", stack=STACK, timeout=300, check=False)
    assert refused.returncode != 0 and "because it is protected" in refused.stdout + refused.stderr
    assert {r["urn"] for r in prod.resources(STACK)} == before
    assert kubectl_json(cluster, "get", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE)["status"].get("availableReplicas") == 1
    prod.run("state", "unprotect", "--all", "--yes", stack=STACK)
    prod.run("destroy", "--yes", stack=STACK, timeout=300)
    assert prod.resources(STACK) == []
    assert uid(cluster, "pvc", "vllm-qwen3-235b-models", "-n", NAMESPACE) == claim_uid
    # The node caches go with the stack: their DaemonSets, claim, volume and namespace.
    assert not [c for c in kubectl_json(cluster, "get", "pvc", "-n", NAMESPACE)["items"]
                if c["metadata"]["name"].startswith("vllm-qwen3-235b-node-cache-")]
    assert not [v for v in kubectl_json(cluster, "get", "pv")["items"]
                if v["metadata"]["name"].startswith(f"{NAMESPACE}-node-cache-")]
    for args in (("daemonset", "vllm-qwen3-235b-node-cache", "-n", NAMESPACE),
                 ("namespace", f"{NAMESPACE}-node-cache"),
                 ("priorityclass", "vllm-qwen3-235b-image-pre-pull")):
        assert cluster.kubectl("get", *args, check=False).returncode != 0, args

    prod_up(prod, cluster)
    assert uid(cluster, "pvc", "vllm-qwen3-235b-models", "-n", NAMESPACE) == claim_uid
    (claim,) = [r for r in prod.resources(STACK) if r["type"] == "kubernetes:core/v1:PersistentVolumeClaimPatch"]
    assert claim.get("protect") is True and claim.get("retainOnDelete") is True


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_rendering_passes_a_server_side_dry_run(stack, cluster):
    with tempfile.TemporaryDirectory() as tmp:
        objects = render(stack, Path(tmp) / "out")
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        rest = [o for o in objects if o["kind"] != "Namespace"]
        # A dry run cannot create a namespace for the objects after it: create the namespace
        # for real (in a throwaway copy, under another field manager) and dry-run the rest.
        created = []
        for ns in namespaces:
            name = ns["metadata"]["name"]
            if cluster.kubectl("get", "namespace", name, check=False).returncode != 0:
                cluster.kubectl("create", "namespace", name)
                created.append(name)
        try:
            # Over what the stacks' up may have left (--force-conflicts): the API server validates.
            out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                                  "--field-manager=render-check", "-o", "yaml", "-f", "-",
                                  input=yaml.safe_dump_all(rest), check=False)
        finally:
            for name in created:
                cluster.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)
    assert out.returncode == 0, f"kube-apiserver rejected the {stack} rendering:\n{out.stderr}"
    applied = [d for d in yaml.safe_load_all(out.stdout) if d]
    items = applied[0]["items"] if len(applied) == 1 and applied[0]["kind"] == "List" else applied
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in rest)
