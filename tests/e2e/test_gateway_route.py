"""A stack published through a Gateway: `up` waits until the Gateway accepts the route, fails with
the condition it waited for when the Gateway refuses it, and finishes once it accepts it. A stand-in
writes the route's status as a Gateway controller would."""

from __future__ import annotations

import pytest

from .cluster import namespace_with_key
from .plans import assert_next_run_creates_nothing_that_exists
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

STACK = "route"
NAMESPACE = "ai-serving-route"


@pytest.fixture(scope="module")
def routed(project, cluster):
    cluster.apply(namespace_with_key(NAMESPACE, "chat-api-key"))
    project.init_stack_like(STACK, "dev", {
        "namespace": NAMESPACE, "host": "chat.example.com",
        "exposureRoute": "gateway", "gatewayName": "public",
        "gatewayNamespace": "gateways", "apiKeySecretName": "chat-api-key",
        "routeWaitMinutes": 1,
    })
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
