"""The example consumer project, examples/two-models, under Pulumi's mock runtime.

It composes the components differently from this repository's stack: two models in one
namespace behind one host, chosen by the request body's model, the second on a claim another
project already staged.
"""

import subprocess
import sys

import pytest
from conftest import ROOT
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors
from test_policy import check_stack

from vllm_serving_components.testing import render_program

EXAMPLE = ROOT / "examples" / "two-models"


@pytest.fixture(scope="module")
def example():
    return render_program(EXAMPLE, "dev")


def test_the_examples_own_test_passes():
    """examples/two-models/test_two_models.py: what a library user's test looks like, run as theirs runs."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLE), str(EXAMPLE)],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_two_servers_share_one_namespace_and_one_host_chosen_by_the_model(example):
    kinds = sorted(o.kind for o in example.objects)
    assert "Namespace" not in kinds
    assert kinds.count("InferencePool") == 2 and kinds.count("HTTPRoute") == 2
    routes = {o.manifest["metadata"]["name"]: o.manifest["spec"] for o in example.objects if o.kind == "HTTPRoute"}
    assert {name: spec["hostnames"] for name, spec in routes.items()} == {"chat": ["models.example.com"], "coder": ["models.example.com"]}
    assert {name: spec["rules"][0]["matches"] for name, spec in routes.items()} == {
        name: [{"path": {"type": "PathPrefix", "value": "/v1"},
                "headers": [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": model}]}]
        for name, model in (("chat", "qwen3-0.6b"), ("coder", "qwen2.5-coder-1.5b"))
    }
    assert {name: spec["rules"][0]["backendRefs"][0]["name"] for name, spec in routes.items()} == {"chat": "chat", "coder": "coder"}
    assert example.outputs == {"endpoint": "https://models.example.com/v1", "models": ["qwen3-0.6b", "qwen2.5-coder-1.5b"]}
    # The body router beside the servers; its Istio filter in the Gateway's namespace.
    assert {(o.kind, o.manifest["metadata"]["namespace"]) for o in example.objects if o.name == "models-router"} == {
        ("ServiceAccount", "models"), ("Deployment", "models"), ("Service", "models"), ("NetworkPolicy", "models"),
        ("DestinationRule", "models"), ("EnvoyFilter", "gateways"),
    }
    assert {o.manifest["metadata"]["namespace"] for o in example.objects} == {"models", "gateways"}


def test_the_second_model_runs_on_the_claim_already_staged(example):
    # One download Job and one claim: the chat model's. The coder mounts the existing claim.
    assert [o.manifest["metadata"]["name"] for o in example.objects if o.kind == "PersistentVolumeClaim"] == ["chat-models"]
    assert len([o for o in example.objects if o.kind == "Job"]) == 1
    coder = next(o.manifest for o in example.objects if o.kind == "Deployment" and o.manifest["metadata"]["name"] == "coder")
    pod = coder["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "shared-models", "readOnly": True}} in pod["volumes"]
    assert pod["containers"][0]["args"][0] == "/models/Qwen/Qwen2.5-Coder-1.5B-Instruct/master"


def test_every_object_is_valid_and_passes_the_policy_pack(example):
    for obj in example.objects:
        assert schema_errors(obj.manifest, SUPPORTED_KUBERNETES_VERSIONS[-1]) == [], obj.manifest["metadata"]["name"]
    assert check_stack([o.manifest for o in example.objects]) == []
