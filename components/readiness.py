"""What "ready" means for each object `pulumi up` waits for, as the provider's waitFor annotation.

pulumi-kubernetes waits for a Deployment until its live spec.replicas are all ready on the new
ReplicaSet (pkg/await/deployment.go), which counts the replicas an autoscaler added: one that
cannot be scheduled holds every later `up` for its whole timeout. It waits for no custom resource
(pkg/metadata/overrides.go ReadyCondition: without waitFor, an immediate condition), so an `up`
ended while KEDA could not query Prometheus or a Gateway refused the route. `pulumi.com/waitFor`
replaces the built-in wait with its expressions, all of which must hold (a JSON list), within the
resource's custom timeout (pkg/await/await.go). JSONPath expressions are RFC 9535 (the provider's
pkg/jsonpath, on github.com/theory/jsonpath): a filter over the object's members selects the status
when the whole condition holds; "=" outside "==" separates a path from a value to compare.
"""

import json

import pulumi

WAIT_FOR = "pulumi.com/waitFor"
CUSTOM_RESOURCE_WAIT = pulumi.CustomTimeouts(create="10m", update="10m")
"""How long `up` waits for a custom resource's controller to accept it; the provider's default, stated."""


def _annotation(*expressions: str) -> dict[str, str]:
    return {WAIT_FOR: json.dumps(list(expressions)) if len(expressions) > 1 else expressions[0]}


def rolled_out(promised: int) -> dict[str, str]:
    """A Deployment or LeaderWorkerSet is ready when its controller has seen the current spec,
    every replica runs the current template (old ones are gone) and at least ``promised`` are
    ready; replicas an autoscaler added beyond those may still be starting or unschedulable.

    Each expression filters the object's members; only the status has observedGeneration, which
    guards the comparison of two fields that other members lack alike. One "&&" per filter: the
    provider's parser (theory/jsonpath v0.9.0, parser/parse.go parseLogicalAndExpr) ends a
    logical-and at the blank after its second operand."""
    expressions = [
        "jsonpath={$[?@.observedGeneration == $.metadata.generation]}",
        "jsonpath={$[?@.observedGeneration && @.updatedReplicas == @.replicas]}",
    ]
    if promised > 0:
        expressions.append(f"jsonpath={{$[?@.readyReplicas > {promised - 1}]}}")
    return _annotation(*expressions)


def condition_true(kind: str) -> dict[str, str]:
    """A custom resource whose controller reports a condition of that type (KEDA's Ready)."""
    return _annotation(f"condition={kind}")


def route_accepted() -> dict[str, str]:
    """An HTTPRoute with one parent is ready when its Gateway accepted it and resolved its backends
    (Gateway API: status.parents[].conditions Accepted and ResolvedRefs)."""
    return _annotation(*(
        f'jsonpath={{.status.parents[0].conditions[?@.type=="{kind}"].status}}=True' for kind in ("Accepted", "ResolvedRefs")
    ))
