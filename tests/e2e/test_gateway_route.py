"""A stack published through a Gateway: `up` waits until the Gateway accepts the route, fails with
the condition it waited for when the Gateway refuses it, and finishes once it accepts it. A stand-in
writes the route's status as a Gateway controller would."""

from __future__ import annotations

import pytest
import yaml

from .plans import assert_next_run_creates_nothing_that_exists
from .pulumi_cli import ROOT
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "route"
NAMESPACE = "ai-serving-route"


@pytest.fixture(scope="module")
def routed(project):
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"].update({
        "vllm-serving:namespace": NAMESPACE, "vllm-serving:host": "chat.example.com",
        "vllm-serving:exposureRoute": "gateway", "vllm-serving:gatewayName": "public",
        "vllm-serving:gatewayNamespace": "gateways", "vllm-serving:apiKeySecretName": "chat-api-key",
        "vllm-serving:routeWaitMinutes": 1,
    })
    (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack))
    project.run("stack", "init", STACK)
    return project


def test_a_route_the_gateway_refuses_fails_the_up_and_an_accepted_one_finishes_it(routed, cluster):
    with StatusPublisher(cluster, NAMESPACE, accept_routes=False):
        refused = routed.up(STACK, timeout=300, check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    # The error names the route; the provider's last word on it, the condition and what it found.
    assert "HTTPRoute::vllm-qwen3-0-6b" in output and "timed out waiting for the condition" in output, output[-3000:]
    assert 'Waiting for {.status.parents[0].conditions[?@.type=="Accepted"].status}=True (found "False")' in output

    with StatusPublisher(cluster, NAMESPACE):
        routed.up(STACK, timeout=300)
    assert_next_run_creates_nothing_that_exists(routed, STACK, cluster)
    assert routed.run("stack", "output", "endpoint", stack=STACK).stdout.strip() == "http://chat.example.com/v1"
