"""The app.kubernetes.io label set shared by every object of one deployment."""

PART_OF = "vllm-serving"
MANAGED_BY = "pulumi"


def selector_labels(instance: str, component: str) -> dict[str, str]:
    """Labels that identify one component's pods; stable for the life of a Deployment."""
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
    }


def object_labels(instance: str, component: str) -> dict[str, str]:
    """Labels for an object's metadata: the selector labels plus ownership."""
    return {
        **selector_labels(instance, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


HOSTNAME_LABEL = "kubernetes.io/hostname"
"""The well-known node label: a topology of one node (pod affinity to the node holding a claim)."""
