"""Waiting for what a value comes from, without a property dependency on it.

An argument that is another resource's output (ModelStore.model_path resolves once the download
Job has completed) makes the object built from it depend on that resource through the property
it lands in. The Pulumi engine replaces the dependents of a resource replaced delete-before-
replace whose properties depend on it, after asking their provider whether an unknown value
there would force a replacement (pkg/resource/deploy/step_generator.go,
calculateDependentReplacements); for a Deployment an unknown spec does (spec.selector). So a
replaced download Job replaced the server's Deployment, every replica at once. The server waits
for the Job all the same, through depends_on, which never replaces anything.
"""

from typing import Any, TypeVar

import pulumi

T = TypeVar("T")


def value_only(value: pulumi.Input[T]) -> pulumi.Input[T]:
    """The value, without the resources it depends on."""
    if not isinstance(value, pulumi.Output):
        return value
    return pulumi.Output(set(), value.future(with_unknowns=True), value.is_known(), value.is_secret())


def waits_for(value: pulumi.Input[Any]) -> pulumi.Output[None]:
    """A depends_on entry for the resources the value depends on (the SDK adds an entry's own
    resources to the dependencies: pulumi/runtime/_depends_on.py); it stands for no resource itself."""
    return pulumi.Output.from_input(value).apply(lambda _: None)
