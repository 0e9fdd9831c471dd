"""Objects a destroy keeps, and that the next up adopts instead of failing on them.

The model claim (hours of staged weights) and a namespace the stack owns outlive `pulumi destroy`
(retain_on_delete). Since pulumi-kubernetes 4.29 a resource Pulumi does not yet track is created
with a plain create, which fails with AlreadyExists when the object is there (provider
pkg/await/await.go, Creation; upsertExistingObjects defaults to false). So the next `up` could not
create them again. They are registered as Patch resources instead (NamespacePatch,
PersistentVolumeClaimPatch):

- a Patch resource is a server-side apply of exactly the fields given (await.go: Patch resources
  always apply): it creates the object when it is missing and adopts it, same UID, when it is
  there; fields the program does not set (a bound claim's volumeName) stay as they are;
- a value that another field manager set differently is a conflict, and `up` fails naming the field
  and the manager: the program never silently overwrites what someone else decided for an object of
  the same name. Immutable fields (a claim's storage class, access modes) fail at the API server;
- a Patch resource is never replaced on a spec change (only a new name or namespace replaces it:
  provider.go Diff forces no other field for Patch resources) and never deletes the object:
  destroying it only gives up its fields (ssa.Relinquish), and retain_on_delete skips even that.

Why not `import`: it needs to know whether the object exists, and an imported claim carries the
server-set spec.volumeName, which the provider treats as a field that forces replacement (diff.go,
PersistentVolumeClaim), so the next diff would plan to replace the claim. Why not a second provider
with upsertExistingObjects: it needs the cluster settings of the stack's provider passed on by hand,
and a component could not use it for one child only.

A fixed field manager per object makes an adoption apply as the same manager that created the
object, so a later change of a field (a resized claim) is no conflict with an earlier self. An
object created before it was a Patch resource still lists the provider's earlier managers: the
first change of one of its fields may meet a conflict with them (pulumi.com/patchForce resolves it).
"""

from typing import Optional

import pulumi

FIELD_MANAGER_ANNOTATION = "pulumi.com/patchFieldManager"
"""The provider's annotation that names a Patch resource's field manager (pkg/metadata/annotations.go)."""


def field_manager(kind: str, name: str) -> str:
    """The field manager of one kept object: the same on every up that creates or adopts it."""
    return f"vllm-serving-{kind.lower()}-{name}"[:128]


def kept_metadata(kind: str, metadata: dict) -> dict:
    """The object's metadata with its fixed field manager."""
    annotations = {**metadata.get("annotations", {}), FIELD_MANAGER_ANNOTATION: field_manager(kind, metadata["name"])}
    return {**metadata, "annotations": annotations}


def kept_options(
    previous_type: str, parent: Optional[pulumi.Resource] = None, protect: bool = False
) -> pulumi.ResourceOptions:
    """Options of a kept object: retained on destroy and, for stacks that created it before it was
    a Patch resource, the same resource as the one of ``previous_type`` (so that the move is an
    update in place: a protected claim can be neither deleted nor replaced)."""
    return pulumi.ResourceOptions(
        parent=parent,
        retain_on_delete=True,
        protect=protect,
        aliases=[pulumi.Alias(type_=previous_type)],
    )
