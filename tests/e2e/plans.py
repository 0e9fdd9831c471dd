"""Checks on what `pulumi preview --json` plans, against what the cluster holds."""

from __future__ import annotations

from .pulumi_cli import PulumiProject

ADOPTING = "Patch"
"""Type tokens of Patch resources end so: their create applies to an object that may exist (components/kept.py)."""


def planned_steps(project: PulumiProject, stack: str) -> list[dict]:
    plan = project.run("preview", "--json", stack=stack, timeout=300).json()
    errors = [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    assert not errors, errors
    return plan["steps"]


def object_of(step: dict) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of a step's Kubernetes object, or None for other resources."""
    state = step.get("newState") or step.get("oldState") or {}
    inputs = state.get("inputs") or {}
    if not state.get("type", "").startswith("kubernetes:") or "kind" not in inputs:
        return None
    metadata = inputs.get("metadata") or {}
    return inputs["kind"], metadata.get("namespace", ""), metadata.get("name", "")


def creates_of_existing_objects(project: PulumiProject, stack: str, cluster) -> list[str]:
    """Every create the next run plans for a Kubernetes object the cluster already holds, except the
    adopting creates of Patch resources. A plain create of such an object fails with AlreadyExists
    on pulumi-kubernetes 4.29 and later."""
    found = []
    for step in planned_steps(project, stack):
        obj = object_of(step)
        if step["op"] != "create" or obj is None or step["newState"]["type"].endswith(ADOPTING):
            continue
        kind, namespace, name = obj
        scope = ["-n", namespace] if namespace else []
        if cluster.kubectl("get", kind, name, *scope, "-o", "name", check=False).returncode == 0:
            found.append(f"{kind} {namespace}/{name}")
    return found


def assert_next_run_creates_nothing_that_exists(project: PulumiProject, stack: str, cluster):
    assert creates_of_existing_objects(project, stack, cluster) == []
