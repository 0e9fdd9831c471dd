"""ImagePrePull: the server's image on every GPU node before a replica needs it.

A DaemonSet on the GPU nodes runs the server's image, idle, with tiny requests, at a priority
below every other pod's that does not preempt: a new replica then starts without pulling
10 GB or more. Its container sleeps for good: one that exits would be restarted in a loop
(a DaemonSet's pods restart always).

The priority needs a PriorityClass, which is cluster-scoped: the component creates one for
this server unless it is given an existing one's name.
"""


from typing import Any, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from . import grammar
from .arguments import ArgsSpec, DnsLabel, DnsSubdomain, Image, Problems, check, with_defaults
from .labels import object_labels, selector_labels
from .network import isolated
from .node_cache import RUNNING_PROBES, daemon_set_spec, node_placement, selects_the_gpu_nodes
from .pods import RULES as POD_RULES
from .pods import PodSettingsArgs, apply_pod_settings, locked_down, rules_under

COMPONENT = "image-pre-pull"
PRIORITY = -1000
"""Below the default priority (0) of every pod that names no class: the scheduler preempts the
pre-pull pods first when a node is short, and they never preempt anything (preemptionPolicy Never)."""
IDLE = {"cpu": "1m", "memory": "16Mi"}


class ImagePrePullArgs(TypedDict):
    """Arguments of ImagePrePull."""

    namespace: pulumi.Input[str]
    """The server's namespace."""
    image: str
    """The server's image (VLLMServer's image), whose `sleep` the pods run."""
    priority_class_name: NotRequired[Optional[str]]
    """An existing PriorityClass for the pods; None creates <name>-image-pre-pull at -1000, which never
    preempts."""
    tolerations: NotRequired[list[dict[str, Any]]]
    """The GPU nodes' taints' tolerations (GpuClaim.pod_fragment's)."""
    node_affinity: NotRequired[Optional[dict[str, Any]]]
    """A pod affinity whose nodeAffinity selects the GPU nodes (GpuClaim.pod_fragment's affinity)."""
    pod: NotRequired[PodSettingsArgs]
    """Pod settings: image pull secrets, and node_selector, which selects the GPU nodes with or
    instead of node_affinity; a priority class here is refused: use priority_class_name."""
    network_policy: NotRequired[bool]
    """A NetworkPolicy that lets the pods call nothing and take no connections. Default true."""


DEFAULTS: dict[str, Any] = {
    "priority_class_name": None,
    "tolerations": [],
    "node_affinity": None,
    "pod": {},
    "network_policy": True,
}


_selects_the_gpu_nodes = selects_the_gpu_nodes("the image would be pulled onto")


@check("pod")
def _priority_in_one_place(args: dict) -> Problems:
    if args["pod"].get("priority_class_name"):
        return {"pod.priority_class_name": "is set by priority_class_name here"}
    return {}


SPEC = ArgsSpec(
    "ImagePrePull",
    ImagePrePullArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "image": Image,
        "priority_class_name": DnsSubdomain,
        **rules_under("pod", POD_RULES),
    },
    checks=(_selects_the_gpu_nodes, _priority_in_one_place),
    name_rule=grammar.dns_label,
)


def image_pre_pull_problems(args: ImagePrePullArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def priority_class_name(name: str, args: ImagePrePullArgs) -> str:
    args = with_defaults(args, DEFAULTS)
    return args["priority_class_name"] or f"{name}-image-pre-pull"


def pre_pull_pod_spec(name: str, args: ImagePrePullArgs) -> dict:
    """The image, idle on a GPU node: no GPU, no API token, Pod Security restricted."""
    args = with_defaults(args, DEFAULTS)
    spec = {
        "containers": [
            {
                "name": "image",
                "image": args["image"],
                "command": ["sleep", "infinity"],
                "resources": {"requests": IDLE, "limits": IDLE},
                **RUNNING_PROBES,
            }
        ],
        "priorityClassName": priority_class_name(name, args),
        # A pod of its own stops at once: nothing to drain.
        "terminationGracePeriodSeconds": 1,
        **node_placement(args),
    }
    return locked_down(apply_pod_settings(spec, args["pod"]), service_account=f"{name}-image-pre-pull")


class ImagePrePull(pulumi.ComponentResource):
    """The server's image pulled onto the GPU nodes ahead of the server."""

    def __init__(self, name: str, args: ImagePrePullArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:ImagePrePull", name, None, opts)
        namespace, labels = args["namespace"], object_labels(name, COMPONENT)
        account_name = f"{name}-image-pre-pull"
        needs: list[pulumi.Resource] = [
            k8s.core.v1.ServiceAccount(
                account_name,
                metadata={"name": account_name, "namespace": namespace, "labels": labels},
                automount_service_account_token=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
        ]
        if not args["priority_class_name"]:
            needs.append(
                k8s.scheduling.v1.PriorityClass(
                    priority_class_name(name, args),
                    metadata={"name": priority_class_name(name, args), "labels": labels},
                    value=PRIORITY,
                    preemption_policy="Never",
                    description="Pulls the vLLM server's image onto GPU nodes ahead of the server; yields to every other pod.",
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        daemon_set = k8s.apps.v1.DaemonSet(
            account_name,
            metadata={"name": account_name, "namespace": namespace, "labels": labels},
            spec=daemon_set_spec(selector_labels(name, COMPONENT), pre_pull_pod_spec(name, args)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=needs),
        )
        if args["network_policy"]:
            k8s.networking.v1.NetworkPolicy(
                account_name,
                metadata={"name": account_name, "namespace": namespace, "labels": labels},
                spec=isolated(selector_labels(name, COMPONENT)),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.daemon_set_name = daemon_set.metadata.apply(lambda metadata: metadata["name"])
        self.register_outputs({"daemonSetName": self.daemon_set_name})
