"""The prod stack against the real API server: a preview by the real CLI and provider, and its
offline rendering applied with a server-side dry run (every object, custom resources included,
validated and defaulted by kube-apiserver with the upstream CRDs installed)."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from .conftest import kubectl_json
from .test_dev_lifecycle import render
from .pulumi_cli import ROOT

pytestmark = pytest.mark.e2e

STACK = "prod"
NAMESPACE = "ai-serving"


@pytest.fixture(scope="module")
def prod(project):
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


class IngressStatusPublisher(threading.Thread):
    """Does what an ingress controller does for the provider's await: publishes an address in
    the status of each Ingress of the namespace."""

    def __init__(self, cluster, namespace: str):
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.stop = cluster, namespace, threading.Event()

    def run(self):
        status = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}})
        while not self.stop.wait(0.5):
            r = self.cluster.kubectl("get", "ingress", "-n", self.namespace, "-o", "name", check=False)
            for name in r.stdout.split():
                self.cluster.kubectl("patch", name, "-n", self.namespace, "--subresource=status",
                                     "--type=merge", "-p", status, check=False)


def test_prod_up_completes_once_an_ingress_controller_publishes_an_address(prod, cluster):
    """Without a controller that publishes Ingress status, `up` waits for it (10 minutes by
    default, then fails); this test stands in for the controller."""
    publisher = IngressStatusPublisher(cluster, NAMESPACE)
    publisher.start()
    try:
        prod.up(STACK, timeout=300)
    except Exception:
        print(cluster.kubectl("get", "pods,endpointslices,svc,ingress,pvc", "-n", NAMESPACE, "-o", "wide", check=False).stdout)
        print(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "yaml", check=False).stdout[-6000:])
        raise
    finally:
        publisher.stop.set()
        publisher.join(10)
    d = kubectl_json(cluster, "get", "deployment", "vllm-qwen3-235b", "-n", NAMESPACE)
    assert d["status"].get("availableReplicas") == 1
    (pod,) = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]
    # On a node of a product prod allows, with its 8 GPUs (every GPU node of the cluster qualifies).
    node = kubectl_json(cluster, "get", "node", pod["spec"]["nodeName"])
    products = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["vllm-serving:gpuProducts"]
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] in products
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    claim = kubectl_json(cluster, "get", "pvc", "-n", NAMESPACE)["items"]
    assert [(c["status"]["phase"], c["spec"]["volumeName"].startswith("e2e-rwx-")) for c in claim] == [("Bound", True)]
    for kind in ("scaledobject", "podmonitor", "ingress"):
        assert kubectl_json(cluster, "get", kind, "-n", NAMESPACE)["items"], kind
    assert prod.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "https://vllm.ai-serving.company.com/v1"
    # protectModelVolume: destroy deletes everything else, then fails on the protected claim, which
    # stays in the stack; after `pulumi state unprotect` (the README's step) destroy completes,
    # leaving the claim and namespace in the cluster.
    refused = prod.run("destroy", "--yes", "--skip-preview", stack=STACK, timeout=300, check=False)
    assert refused.returncode != 0 and "because it is protected" in refused.stdout + refused.stderr
    left = {r["type"].split(":")[-1] for r in prod.resources(STACK) if r["type"].startswith("kubernetes:")}
    assert "PersistentVolumeClaim" in left and "Deployment" not in left, left
    prod.run("state", "unprotect", "--all", "--yes", stack=STACK)
    prod.run("destroy", "--yes", "--skip-preview", stack=STACK, timeout=300)
    assert prod.resources(STACK) == []
    (kept,) = kubectl_json(cluster, "get", "pvc", "-n", NAMESPACE)["items"]
    assert kept["metadata"]["uid"] == claim[0]["metadata"]["uid"] and "deletionTimestamp" not in kept["metadata"]


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
            out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=render-check",
                                  "-o", "yaml", "-f", "-", input=yaml.safe_dump_all(rest), check=False)
        finally:
            for name in created:
                cluster.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)
    assert out.returncode == 0, f"kube-apiserver rejected the {stack} rendering:\n{out.stderr}"
    applied = [d for d in yaml.safe_load_all(out.stdout) if d]
    items = applied[0]["items"] if len(applied) == 1 and applied[0]["kind"] == "List" else applied
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in rest)
