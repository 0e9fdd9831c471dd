"""What a destroy keeps, the next up adopts: the namespace and the model claim are Patch resources
(created, or applied to the object that is there), retained on destroy, aliased to the plain
resources earlier versions registered, each with a fixed field manager."""

import pytest
from conftest import SHIPPED_STACKS

from stack.render import EchoMocks, RecordingMonitor, render_stack
from vllm_serving_components.kept import FIELD_MANAGER_ANNOTATION, field_manager

PREVIOUS = {
    "kubernetes:core/v1:NamespacePatch": "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:PersistentVolumeClaimPatch": "kubernetes:core/v1:PersistentVolumeClaim",
}


def registrations(stack: str) -> dict[str, object]:
    """The stack's registrations by type, but the node cache's (its namespace and claim are its
    own, deleted with it)."""
    monitor = RecordingMonitor(EchoMocks())
    render_stack(stack, monitor=monitor)
    return {request.type: request for request in monitor.requests.values() if "NodeCache" not in request.parent}


@pytest.mark.parametrize(("stack", "protected"), [("dev", False), ("prod", True)])
def test_the_namespace_and_claim_are_kept_and_adopted(stack, protected):
    found = registrations(stack)
    assert not {"kubernetes:core/v1:Namespace", "kubernetes:core/v1:PersistentVolumeClaim"} & set(found)
    for token, previous in PREVIOUS.items():
        request = found[token]
        assert request.retainOnDelete is True
        assert [alias.spec.type for alias in request.aliases] == [previous]
        metadata = request.object["metadata"]
        kind = previous.rsplit(":", 1)[1]
        assert metadata["annotations"][FIELD_MANAGER_ANNOTATION] == field_manager(kind, metadata["name"])
    assert found["kubernetes:core/v1:PersistentVolumeClaimPatch"].protect is protected
    assert found["kubernetes:core/v1:NamespacePatch"].protect is False


def test_nothing_else_is_a_patch_resource():
    """Only what a destroy keeps may adopt an object that is there; everything else is created,
    and a name taken by something else fails the up."""
    for stack in SHIPPED_STACKS:
        patches = {token for token in registrations(stack) if token.startswith("kubernetes:") and token.endswith("Patch")}
        assert patches <= set(PREVIOUS), (stack, patches)


def test_the_review_says_which_objects_adopt(rendered):
    adopting = {o.kind for o in rendered["dev"].objects if o.options.adopts_existing}
    assert adopting == {"Namespace", "PersistentVolumeClaim"}


def test_field_managers_fit_the_api_servers_limit():
    assert len(field_manager("PersistentVolumeClaim", "x" * 253)) == 128
