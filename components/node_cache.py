"""NodeCache: the staged weights copied once to the local disk of every GPU node the server may
land on, so a pod loads them from that disk instead of the shared model volume.

How the pods of a namespace that enforces Pod Security ``restricted`` (which admits no hostPath
volume) read a node's disk:
- a PersistentVolume of type hostPath at ``<host_path>/<cache namespace>/<name>``, bound in
  advance to one claim in the server's namespace. Pod Security checks a pod's volumes, and a
  claim is one it admits; the kubelet mounts the PersistentVolume's host path of whichever node
  the pod runs on (a hostPath volume is never attached, so no node holds it alone). KServe's
  LocalModelCache exposes its node-local copies to serving namespaces the same way.
- the kubelet creates that directory owned by root (DirectoryOrCreate, mode 0755), and the
  copier runs unprivileged, as every pod here does: a small DaemonSet in a namespace of its own,
  at Pod Security ``privileged``, makes the directory the copier's on each node and nothing else.
- the copier, a DaemonSet in the server's namespace (restricted), runs ``cache_model.py``: it
  waits for the staged revision's marker on the model volume, copies the files while hashing
  them, checks sizes and sha256 against the marker, writes the marker last, evicts revisions no
  longer on the model volume, and then keeps running (a DaemonSet's container must). Ready means
  this node's copy is complete: the server's pods wait for every node's copy (the DaemonSet's
  rollout), so a model upgrade warms the caches before the server rolls.
- a destroy deletes the copier's DaemonSet first; each copier pod, told to stop, finds its
  DaemonSet gone or being deleted and removes the copies. The model volume is never touched.

Image volumes (KEP-4639) would need the weights as an OCI artifact in a registry; local
PersistentVolumes bind one claim to one node, where a Deployment's pods share one claim.
"""


import hashlib
import json
import math
import posixpath
from pathlib import Path
from typing import Annotated, Any, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from . import grammar
from .arguments import (
    ArgsSpec,
    ByteQuantity,
    Check,
    DnsLabel,
    Image,
    Problems,
    check,
    int_range,
    rule,
    with_defaults,
)
from .labels import object_labels, selector_labels
from .network import API_PORTS, egress_only_to, isolated
from .pods import RULES as POD_RULES
from .pods import (
    CONTAINER_SECURITY,
    RUN_AS,
    PodSettingsArgs,
    apply_pod_settings,
    locked_down,
    projected_api_access,
    rules_under,
)
from .ordering import value_only, waits_for
from .rollout import MARGIN_MINUTES

COMPONENT = "node-cache"
PREPARE_COMPONENT = "node-cache-prepare"
CACHE_SCRIPT = Path(__file__).with_name("cache_model.py")
MOUNT_PATH = "/node-cache"
"""Where the copier and the server mount the node's cache directory."""
SCRIPT_PATH = "/scripts"
HOST_MOUNT = "/host"
STOP_SECONDS = 300
"""How long a stopping copier may take to remove the copies at a destroy."""



class NodeCacheMount(TypedDict):
    """What the server needs to read the node-local copy (NodeCache.mount; VLLMServer's node_cache)."""

    claim_name: str
    """The claim in the server's namespace bound to the node-local directory."""
    mount_path: str
    """Where the server mounts it."""
    model_path: pulumi.Input[str]
    """The revision's directory under mount_path; known once every node's copy is complete."""
    read_mb_per_s: int
    """The slowest rate, in MB/s, the node's disk is expected to deliver to a load."""


class NodeCacheArgs(TypedDict):
    """Arguments of NodeCache."""

    namespace: pulumi.Input[str]
    """The server's namespace: the claim, the copier and its account live there."""
    cache_namespace: str
    """A namespace of the cache's own, created at Pod Security privileged, for the DaemonSet that
    prepares each node's directory."""
    image: str
    """The image the copier runs (python3 and sh): the server's, so the copier also pulls it onto
    the node before the server needs it."""
    claim_name: pulumi.Input[str]
    """The model store's claim (ModelStore.claim_name)."""
    mount_path: pulumi.Input[str]
    """Where the store's claim is mounted (ModelStore.mount_path)."""
    model_path: pulumi.Input[str]
    """The staged revision's directory (ModelStore.model_path; known once its Job completed)."""
    marker_name: pulumi.Input[str]
    """The store's completion marker (ModelStore.marker_name), which the copy checks against."""
    size: NotRequired[str]
    """The local space the copies may take (the PersistentVolume's capacity; the copier checks the
    disk's free space itself). Default 1Ti."""
    host_path: NotRequired[str]
    """The directory on each node under which the cache lives. Default /var/lib/vllm-serving."""
    model_size_gb: NotRequired[Optional[float]]
    """Size of the weights in GB; with it, the copy's timeout."""
    copy_read_mb_per_s: NotRequired[int]
    """The slowest rate, in MB/s, the model volume is expected to deliver to the copy. Default 200."""
    read_mb_per_s: NotRequired[int]
    """The slowest rate, in MB/s, a node's disk is expected to deliver to a load. Default 1000."""
    reserve_gb: NotRequired[int]
    """Free space, in GB, the copy leaves on the node's disk. Default 20."""
    image_pull_minutes: NotRequired[int]
    """Time allowed to pull the image on a fresh node. Default 15."""
    tolerations: NotRequired[list[dict[str, Any]]]
    """The GPU nodes' taints' tolerations (GpuClaim.pod_fragment's)."""
    node_affinity: NotRequired[Optional[dict[str, Any]]]
    """A pod affinity whose nodeAffinity selects the GPU nodes (GpuClaim.pod_fragment's affinity)."""
    pod: NotRequired[PodSettingsArgs]
    """Pod settings of the copier and the preparing pods: image pull secrets, priority class, and
    node_selector, which selects the GPU nodes with or instead of node_affinity."""
    network_policy: NotRequired[bool]
    """NetworkPolicies that let the copier reach DNS and the API server alone, and the preparing
    pods nothing. Default true."""


DEFAULTS: dict[str, Any] = {
    "size": "1Ti",
    "host_path": "/var/lib/vllm-serving",
    "model_size_gb": None,
    "copy_read_mb_per_s": 200,
    "read_mb_per_s": 1000,
    "reserve_gb": 20,
    "image_pull_minutes": 15,
    "tolerations": [],
    "node_affinity": None,
    "pod": {},
    "network_policy": True,
}


RUNNING_PROBES = {
    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 60},
    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 60},
}
"""Probes of an idle container, whose running is all it does: the runtime can still exec in it."""


def required_node_affinity(affinity: Optional[dict]) -> Optional[dict]:
    """The required node selector of a pod affinity, or None."""
    node = (affinity or {}).get("nodeAffinity") or {}
    return node.get("requiredDuringSchedulingIgnoredDuringExecution")


def selects_the_gpu_nodes(otherwise: str) -> Check:
    """A rule of the DaemonSets beside the server: node_affinity or pod.node_selector names the GPU
    nodes, for without either a DaemonSet runs on every node (``otherwise`` says what then happens)."""

    @check("node_affinity", "pod")
    def run(args: dict) -> Problems:
        if required_node_affinity(args["node_affinity"]) is None and not args["pod"].get("node_selector"):
            return {
                "node_affinity": f"or pod.node_selector must select the GPU nodes: without either {otherwise} "
                "every node of the cluster; pin the GPU products or give the GPU nodes' labels"
            }
        return {}

    return run


_selects_the_gpu_nodes = selects_the_gpu_nodes("the cache would copy the weights to")


SPEC = ArgsSpec(
    "NodeCache",
    NodeCacheArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "cache_namespace": DnsLabel,
        "image": Image,
        "size": ByteQuantity,
        "host_path": rule(grammar.absolute_path),
        "model_size_gb": Annotated[float, Field(gt=0, le=1e6)],
        "copy_read_mb_per_s": int_range(1, 10**6),
        "read_mb_per_s": int_range(1, 10**6),
        "reserve_gb": int_range(0, 10**6),
        "image_pull_minutes": int_range(0, 24 * 60),
        **rules_under("pod", POD_RULES),
    },
    checks=(_selects_the_gpu_nodes,),
    name_rule=grammar.dns_label,
)


def node_cache_problems(args: NodeCacheArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def copy_minutes(args: NodeCacheArgs) -> int:
    """How long `up` waits for every node's copy: an image pull, one read of the weights from the
    model volume (the nodes copy at once), and a margin; the pull and a margin when the size is
    unknown."""
    args = with_defaults(args, DEFAULTS)
    read = 0 if args["model_size_gb"] is None else math.ceil(args["model_size_gb"] * 1000 / args["copy_read_mb_per_s"] / 60)
    return args["image_pull_minutes"] + read + MARGIN_MINUTES


def cache_directory(host_path: str, cache_namespace: str, name: str) -> str:
    """The cache's directory on each node: one per server, under the cache namespace's."""
    return posixpath.join(host_path, cache_namespace, name)


def revision_name(mount_path: str, model_path: str) -> str:
    """The revision's directory in the cache: its path on the model volume below the mount, one
    name with "--" for "/" (as Hugging Face's cache names repositories; cache_model.py's
    --keep-stored maps it back to find the revisions the volume still holds)."""
    relative = posixpath.relpath(model_path, mount_path)
    if relative.startswith("..") or relative == ".":
        raise ValueError(f"model_path {model_path} is not under mount_path {mount_path}")
    return relative.replace("/", "--")


def node_placement(args: dict) -> dict:
    """The GPU nodes: their required node affinity and their taints' tolerations (pod settings add
    their node selector)."""
    placement: dict[str, Any] = {"tolerations": args["tolerations"]}
    if required := required_node_affinity(args["node_affinity"]):
        placement["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    return placement


def volume_key(args: NodeCacheArgs, directory: str) -> str:
    """A digest of what a PersistentVolume and its bound claim may not change once created (the host
    path, the node affinity; a claim's size, which only a provisioner's class may grow): it names
    them, so a change makes new ones that the copier fills and the server then rolls onto, where an
    update in place would be refused by the API server on the next `up`."""
    args = with_defaults(args, DEFAULTS)
    fixed = {"path": directory, "size": args["size"], "nodes": required_node_affinity(args["node_affinity"])}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]


def persistent_volume_spec(args: NodeCacheArgs, directory: str, claim: dict) -> dict:
    """The node-local directory as a volume any GPU node mounts its own of, bound to one claim."""
    args = with_defaults(args, DEFAULTS)
    spec: dict[str, Any] = {
        "capacity": {"storage": args["size"]},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "hostPath": {"path": directory, "type": "DirectoryOrCreate"},
        "claimRef": claim,
    }
    if required := required_node_affinity(args["node_affinity"]):
        spec["nodeAffinity"] = {"required": required}
    return spec


def prepare_pod_spec(args: NodeCacheArgs, name: str, directory: str) -> dict:
    """Makes the node's cache directory the copier's user's, then idles (a DaemonSet's pod must run).

    Root with CHOWN alone, at Pod Security privileged, in the cache's own namespace: the only pod
    of the cache that touches the host's filesystem directly."""
    args = with_defaults(args, DEFAULTS)
    owner = f"{RUN_AS}:{RUN_AS}"
    idle = {"cpu": "10m", "memory": "16Mi"}
    return apply_pod_settings(
        {
            "initContainers": [
                {
                    "name": "prepare",
                    "image": args["image"],
                    # The mode while root still owns it: root without CAP_FOWNER may not chmod another's directory.
                    "command": ["sh", "-c", f'mkdir -p -m 0755 "$DIRECTORY" && chown {owner} "$DIRECTORY"'],
                    "env": [{"name": "DIRECTORY", "value": posixpath.join(HOST_MOUNT, posixpath.relpath(directory, args["host_path"]))}],
                    "resources": {"requests": idle, "limits": idle},
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsNonRoot": False,
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                    },
                    "volumeMounts": [{"name": "host", "mountPath": HOST_MOUNT}],
                }
            ],
            "containers": [
                {
                    "name": "idle",
                    "image": args["image"],
                    "command": ["sleep", "infinity"],
                    "resources": {"requests": idle, "limits": idle},
                    **RUNNING_PROBES,
                    "securityContext": {**CONTAINER_SECURITY, "runAsUser": RUN_AS},
                }
            ],
            "volumes": [{"name": "host", "hostPath": {"path": args["host_path"], "type": "DirectoryOrCreate"}}],
            "automountServiceAccountToken": False,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            **node_placement(args),
        },
        {key: value for key, value in args["pod"].items() if key != "priority_class_name"},
    )


def daemon_set_url(namespace: str, name: str) -> str:
    """The API path of a DaemonSet, from inside the cluster."""
    return f"https://kubernetes.default.svc/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"


def copy_command(args: NodeCacheArgs, namespace: str, name: str, model_path: str, mount_path: str, marker: str) -> list[str]:
    """cache_model.py and its arguments: copy the revision, keep those still on the model volume,
    stay, and remove the copies when the DaemonSet is deleted."""
    args = with_defaults(args, DEFAULTS)
    return [
        "python3",
        posixpath.join(SCRIPT_PATH, CACHE_SCRIPT.name),
        "--source", model_path,
        "--cache-root", MOUNT_PATH,
        "--name", revision_name(mount_path, model_path),
        "--keep-stored", mount_path,
        "--marker-name", marker,
        "--reserve-gb", str(args["reserve_gb"]),
        "--stay",
        "--remove-when-gone", daemon_set_url(namespace, name),
    ]  # fmt: skip


def copier_pod_spec(
    args: NodeCacheArgs, name: str, claim: str, command: pulumi.Input[list[str]], ready_file: pulumi.Input[str]
) -> dict:
    """The copier: the model volume read-only, the node's cache directory writable, unprivileged;
    ready once this node's copy is complete. It reads its own DaemonSet at a destroy, with a
    projected token of its account (whose role may get that DaemonSet and nothing else)."""
    args = with_defaults(args, DEFAULTS)
    spec = {
        "containers": [
            {
                "name": "copy",
                "image": args["image"],
                "command": command,
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                "readinessProbe": {"exec": {"command": ["test", "-f", ready_file]}, "periodSeconds": 10},
                # The node's directory is still there: a copy that lost it is restarted.
                "livenessProbe": {"exec": {"command": ["test", "-d", MOUNT_PATH]}, "periodSeconds": 60},
                "volumeMounts": [
                    {"name": "models", "mountPath": args["mount_path"], "readOnly": True},
                    {"name": "node-cache", "mountPath": MOUNT_PATH},
                    {"name": "script", "mountPath": SCRIPT_PATH, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": args["claim_name"], "readOnly": True}},
            {"name": "node-cache", "persistentVolumeClaim": {"claimName": claim}},
            {"name": "script", "configMap": {"name": script_name(name)}},
        ],
        "terminationGracePeriodSeconds": STOP_SECONDS,
        **node_placement(args),
    }
    return projected_api_access(locked_down(apply_pod_settings(spec, args["pod"]), service_account=copier_name(name)), "copy")


def copier_name(name: str) -> str:
    return f"{name}-node-cache"


def claim_name(name: str, key: str) -> str:
    return f"{name}-node-cache-{key}"


def script_name(name: str) -> str:
    return f"{name}-node-cache-script"


def prepare_name(name: str) -> str:
    return f"{name}-node-cache-prepare"


ROOT_INIT_ANNOTATION = "vllm-serving.io/root-init-container"
"""Names the preparing pods' root init container, which the policy pack then admits (policy/rules.py)."""


def daemon_set_spec(labels: dict[str, str], pod_spec: dict, annotations: Optional[dict[str, str]] = None) -> dict:
    """Every node at once: a copier that is replaced stops nothing the server needs.

    pulumi-kubernetes awaits a DaemonSet until kstatus calls it Current (provider pkg/await/
    daemonset.go; cli-utils pkg/kstatus/status/core.go daemonsetConditions): the controller saw
    the spec, and every node it should run on has a pod of the current template, ready and
    available; at once with no such node. A copier is ready when its node's copy is complete, so
    `up` waits for every node's copy."""
    return {
        "selector": {"matchLabels": labels},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
        "template": {"metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})}, "spec": pod_spec},
    }


class NodeCache(pulumi.ComponentResource):
    """The weights on the local disk of every GPU node, for the server to load from."""

    mount: NodeCacheMount
    """What VLLMServer's node_cache takes."""

    def __init__(self, name: str, args: NodeCacheArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:NodeCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace, cache_namespace = args["namespace"], args["cache_namespace"]
        labels = object_labels(name, COMPONENT)
        directory = cache_directory(args["host_path"], cache_namespace, name)

        own_namespace = k8s.core.v1.Namespace(
            cache_namespace,
            metadata={
                "name": cache_namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "app.kubernetes.io/part-of": labels["app.kubernetes.io/part-of"],
                    "app.kubernetes.io/managed-by": labels["app.kubernetes.io/managed-by"],
                },
            },
            opts=child,
        )
        prepare_labels = object_labels(name, PREPARE_COMPONENT)
        prepare = k8s.apps.v1.DaemonSet(
            prepare_name(name),
            metadata={"name": prepare_name(name), "namespace": cache_namespace, "labels": prepare_labels},
            spec=daemon_set_spec(selector_labels(name, PREPARE_COMPONENT), prepare_pod_spec(args, name, directory),
                                 {ROOT_INIT_ANNOTATION: "prepare"}),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[own_namespace], custom_timeouts=pull_timeouts(args)),
        )  # fmt: skip

        key = volume_key(args, directory)
        volume_name, claim_of_volume = f"{cache_namespace}-{name}-{key}", claim_name(name, key)
        volume = k8s.core.v1.PersistentVolume(
            volume_name,
            metadata={"name": volume_name, "labels": labels},
            spec=persistent_volume_spec(args, directory, {"namespace": namespace, "name": claim_of_volume}),
            opts=child,
        )
        claim = k8s.core.v1.PersistentVolumeClaim(
            claim_of_volume,
            metadata={"name": claim_of_volume, "namespace": namespace, "labels": labels},
            spec={
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": volume_name,
                "resources": {"requests": {"storage": args["size"]}},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[volume]),
        )
        script = k8s.core.v1.ConfigMap(
            script_name(name),
            metadata={"name": script_name(name), "namespace": namespace, "labels": labels},
            data={CACHE_SCRIPT.name: CACHE_SCRIPT.read_text(encoding="utf-8")},
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            copier_name(name),
            metadata={"name": copier_name(name), "namespace": namespace, "labels": labels},
            opts=child,
        )
        role = k8s.rbac.v1.Role(
            copier_name(name),
            metadata={"name": copier_name(name), "namespace": namespace, "labels": labels},
            rules=[{"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [copier_name(name)], "verbs": ["get"]}],
            opts=child,
        )
        binding = k8s.rbac.v1.RoleBinding(
            copier_name(name),
            metadata={"name": copier_name(name), "namespace": namespace, "labels": labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": copier_name(name)},
            subjects=[{"kind": "ServiceAccount", "name": copier_name(name), "namespace": namespace}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role, account]),
        )

        # The copier waits for the store's Job through depends_on only (components/ordering.py).
        staged = waits_for(args["model_path"])
        paths = pulumi.Output.all(
            value_only(args["namespace"]), value_only(args["model_path"]), args["mount_path"], args["marker_name"]
        )
        command = paths.apply(lambda p: copy_command(args, p[0], copier_name(name), p[1], p[2], p[3]))
        local_path = paths.apply(lambda p: posixpath.join(MOUNT_PATH, revision_name(p[2], p[1])))
        ready_file = pulumi.Output.all(local_path, args["marker_name"]).apply(lambda p: posixpath.join(*p))
        copier = k8s.apps.v1.DaemonSet(
            copier_name(name),
            metadata={"name": copier_name(name), "namespace": namespace, "labels": labels},
            spec=daemon_set_spec(selector_labels(name, COMPONENT), copier_pod_spec(args, name, claim_of_volume, command, ready_file)),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[claim, script, binding, prepare, staged],
                custom_timeouts=copy_timeouts(args),
            ),
        )

        if args["network_policy"]:
            k8s.networking.v1.NetworkPolicy(
                copier_name(name),
                metadata={"name": copier_name(name), "namespace": namespace, "labels": labels},
                spec=egress_only_to(selector_labels(name, COMPONENT), API_PORTS),
                opts=child,
            )
            k8s.networking.v1.NetworkPolicy(
                prepare_name(name),
                metadata={"name": prepare_name(name), "namespace": cache_namespace, "labels": prepare_labels},
                spec=isolated(selector_labels(name, PREPARE_COMPONENT)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[own_namespace]),
            )

        self.mount = {
            "claim_name": claim_of_volume,
            "mount_path": MOUNT_PATH,
            "model_path": pulumi.Output.all(copier.metadata, local_path).apply(lambda p: p[1]),
            "read_mb_per_s": args["read_mb_per_s"],
        }
        self.register_outputs({"mount": self.mount})


def pull_timeouts(args: NodeCacheArgs) -> pulumi.CustomTimeouts:
    """The preparing pods pull the image and start."""
    args = with_defaults(args, DEFAULTS)
    minutes = f"{args['image_pull_minutes'] + MARGIN_MINUTES}m"
    return pulumi.CustomTimeouts(create=minutes, update=minutes)


def copy_timeouts(args: NodeCacheArgs) -> pulumi.CustomTimeouts:
    minutes = f"{copy_minutes(args)}m"
    return pulumi.CustomTimeouts(create=minutes, update=minutes)
