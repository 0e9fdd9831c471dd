"""examples/two-models, a consumer project of its own, with the real Pulumi CLI and provider:
two servers in one existing namespace, one on a claim staged elsewhere, behind one host where the
request body's model chooses the server (a pool and route per model, one body router)."""

from __future__ import annotations

import pytest

from .cluster import wait_for
from .conftest import kubectl_json
from .inference_extension import Envoy, completion, container_of, process, service_account_kubeconfig
from .pulumi_cli import ROOT, PulumiProject
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "two-models"
STACK = "dev"
NAMESPACE = "models"
GATEWAY_NAMESPACE = "gateways"
MODELS = {"chat": "qwen3-0.6b", "coder": "qwen2.5-coder-1.5b"}


@pytest.fixture(scope="module")
def example(e2e_bin, e2e_work, cluster) -> PulumiProject:
    """The example's project, and what it expects to exist: its namespace (restricted), the API
    key's Secret and the claim another project staged the coder model onto, and the Gateway's
    namespace, where the body router's EnvoyFilter goes."""
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "models-api-key", "namespace": NAMESPACE},
             "stringData": {"api-key": "e2e-key"}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared-models", "namespace": NAMESPACE},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-client",
                      "resources": {"requests": {"storage": "20Gi"}}}},
        ]
    )
    files = tuple(p.name for p in EXAMPLE.iterdir() if p.is_file() and p.suffix in (".py", ".yaml", ".txt"))
    project = PulumiProject(e2e_bin, e2e_work, cluster.kubeconfig, source=EXAMPLE, files=files, dirs=())
    project.run("stack", "init", STACK)
    return project


def assert_the_router_names_the_model(cluster, e2e_bin, work) -> None:
    """The body router as rendered (gateway-api-inference-extension v1.5.0's cmd/bbr, its args,
    its ServiceAccount's token), as a Gateway calls it over ext_proc: a request's header gets the
    body's model, and a request without a body (GET /v1/models) passes with its headers as they are."""
    container = container_of(kubectl_json(cluster, "get", "deployment", "models-router", "-n", NAMESPACE))
    kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, "models-router", work / "kubeconfig")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    log = work / "bbr.log"
    with process(e2e_bin / "bbr", container["args"], {"KUBECONFIG": str(kubeconfig), "NAMESPACE": NAMESPACE}, log) as bbr:
        envoy = Envoy(e2e_bin, f"127.0.0.1:{ports['grpc']}", tls="--secure-serving=false" not in container["args"])
        listing = {"headers": {":method": "GET", ":path": "/v1/models", ":authority": "models.example.com",
                               "x-gateway-model-name": "qwen2.5-coder-1.5b"}}
        wait_for("the body router serving", lambda: bbr.poll() is None and not envoy.send([listing])[0].get("error"), 60,
                 diagnose=lambda: log.read_text()[-3000:])
        answers = envoy.send([completion(model, "Say hello.", host="models.example.com") for model in MODELS.values()] + [listing])
    for answer, model in zip(answers, MODELS.values()):
        assert {k.lower(): v for k, v in answer["set_headers"].items()}.get("x-gateway-model-name") == model, answer
    assert answers[-1]["set_headers"] == {} and not answers[-1].get("error"), answers[-1]


def test_the_example_comes_up_beside_what_it_uses_and_goes_without_it(example, cluster, e2e_bin, tmp_path):
    # The routes are awaited until their Gateway accepts them: a stand-in Gateway controller does.
    with StatusPublisher(cluster, NAMESPACE):
        example.up(STACK, timeout=300)
        example.up(STACK, "--expect-no-changes", timeout=300)
    for name in ("chat", "coder"):
        d = kubectl_json(cluster, "get", "deployment", name, "-n", NAMESPACE)
        assert d["status"].get("availableReplicas") == 1, (name, d["status"])
    coder = kubectl_json(cluster, "get", "deployment", "coder", "-n", NAMESPACE)["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "shared-models", "readOnly": True}} in coder["volumes"]
    # One host and path, a route per model by the header the body router sets, to that model's pool.
    routes = kubectl_json(cluster, "get", "httproutes", "-n", NAMESPACE)["items"]
    assert {r["metadata"]["name"]: (r["spec"]["hostnames"], r["spec"]["rules"][0]["matches"],
                                    r["spec"]["rules"][0]["backendRefs"][0]["kind"]) for r in routes} == {
        name: (["models.example.com"],
               [{"path": {"type": "PathPrefix", "value": "/v1"},
                 "headers": [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": model}]}],
               "InferencePool")
        for name, model in MODELS.items()
    }
    router = kubectl_json(cluster, "get", "deployment", "models-router", "-n", NAMESPACE)
    assert router["status"].get("availableReplicas") == 2, router["status"]
    envoy_filter = kubectl_json(cluster, "get", "envoyfilters.networking.istio.io", "models-router", "-n", GATEWAY_NAMESPACE)
    assert envoy_filter["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    outputs = example.run("stack", "output", "--json", stack=STACK).json()
    assert outputs == {"endpoint": "https://models.example.com/v1", "models": list(MODELS.values())}
    assert_the_router_names_the_model(cluster, e2e_bin, tmp_path)

    example.run("destroy", "--yes", stack=STACK, timeout=300)
    assert example.resources(STACK) == []
    # What the example did not create stays: the namespace, the Secret, the staged claim.
    kept = {(o["kind"], o["metadata"]["name"]) for o in kubectl_json(cluster, "get", "secret,pvc", "-n", NAMESPACE)["items"]}
    assert {("Secret", "models-api-key"), ("PersistentVolumeClaim", "shared-models")} <= kept
