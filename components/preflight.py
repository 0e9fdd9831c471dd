"""Preflight: read the cluster, read-only, and name every prerequisite of a plan that is missing,
before anything is created.

What a plan needs is given as ``Needs`` (built from a component's arguments or a stack's config:
every need names the setting it comes from). ``preflight`` reads the cluster through a
``ClusterReader`` and returns one ``Finding`` per thing wrong; a read the credentials may not make
(401/403) becomes an ``unchecked`` finding, never a problem. ``KubeReader`` is the reader of a
real cluster: the official Kubernetes Python client (``kubernetes``, pinned in requirements.txt),
loaded from the kubeconfig, context and cluster the Kubernetes provider would use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Optional, Protocol
from urllib.parse import quote

import yaml

from .gpu_claim import kubernetes_minor

Severity = Literal["problem", "warning", "unchecked"]


@dataclass(frozen=True)
class Finding:
    """One thing the cluster lacks, or could not be checked."""

    severity: Severity
    """problem: `up` would fail or hang on it; warning: it may; unchecked: it could not be read."""
    subject: str
    """The setting it comes from, or the cluster object it is about."""
    message: str
    """What is wrong, and the fix."""


class ReadError(Exception):
    """A read that did not return the object."""


class NotFound(ReadError):
    """The object, or the API, does not exist (404)."""


class Forbidden(ReadError):
    """The credentials may not make this read (401 or 403)."""


class Unreachable(ReadError):
    """The cluster cannot be reached or its kubeconfig cannot be loaded."""


class ClusterReader(Protocol):
    where: str
    """Which cluster: the kubeconfig's context and server, for messages."""

    def get(self, path: str) -> dict:
        """The JSON object at an API path; raises NotFound, Forbidden or Unreachable."""
        ...


# --- what a plan needs ----------------------------------------------------------------------


@dataclass(frozen=True)
class GpuNeed:
    """The GPU pods of the plan: where they may run and what each takes."""

    setting: str
    """The settings that choose the nodes and the GPUs per pod, as a user names them."""
    node_selector: dict[str, str]
    affinity: Optional[dict]
    """The pods' node affinity (only requiredDuringSchedulingIgnoredDuringExecution is checked)."""
    tolerations: list[dict]
    limits: dict[str, str]
    """Extended resources each pod takes (nvidia.com/gpu, a MIG profile, HAMi's memory and cores)."""
    pods: int
    """GPU pods at the minimum replicas: replicas x pods per replica."""
    surge: int
    """Pods more while a rollout replaces a replica."""
    namespace: str
    own_labels: dict[str, str]
    """Labels of the plan's own GPU pods: their GPUs are not counted as taken by others."""
    registration: Optional[str] = None
    """A node annotation the GPUs' scheduler needs (HAMi's device plugin writes the node's GPUs into
    hami.io/node-nvidia-register for the HAMi scheduler: Project-HAMi docs, developers/protocol)."""


@dataclass(frozen=True)
class StorageNeed:
    setting: str
    storage_class: Optional[str]
    """None: the cluster's default class."""
    access_mode: str
    size: str
    namespace: str
    existing_claim: Optional[str] = None
    """A claim the plan mounts instead of creating one: it must be bound and large enough."""


@dataclass(frozen=True)
class ApiNeed:
    api_version: str
    kind: str
    setting: str
    fix: str


@dataclass(frozen=True)
class ObjectNeed:
    """A named object the plan refers to and does not create."""

    path: str
    what: str
    setting: str
    fix: str


@dataclass(frozen=True)
class SecretNeed:
    namespace: str
    name: str
    key: str
    setting: str


@dataclass(frozen=True)
class NamespaceNeed:
    name: str
    created: bool
    """Whether the plan creates (or adopts) it; if not, it must exist."""
    level: str
    """The least Pod Security level that admits the plan's pods: restricted, baseline or privileged."""
    why: str
    setting: str


@dataclass(frozen=True)
class ServiceNeed:
    """An aggregated API a controller serves (seen through its APIService being Available)."""

    api_service: str
    what: str
    setting: str
    fix: str


@dataclass(frozen=True)
class VersionNeed:
    """The Kubernetes version the plan was made for: the cluster must run it (major.minor)."""

    version: str
    setting: str


@dataclass(frozen=True)
class Needs:
    version: Optional[VersionNeed] = None
    apis: tuple[ApiNeed, ...] = ()
    gpus: Optional[GpuNeed] = None
    storage: Optional[StorageNeed] = None
    namespace: Optional[NamespaceNeed] = None
    objects: tuple[ObjectNeed, ...] = ()
    secrets: tuple[SecretNeed, ...] = ()
    services: tuple[ServiceNeed, ...] = ()


# --- checks ---------------------------------------------------------------------------------


def preflight(needs: Needs, reader: ClusterReader) -> list[Finding]:
    """Every finding of every check, in one pass. An unreachable cluster is one problem."""
    findings: list[Finding] = []
    try:
        version = reader.get("/version")
    except Unreachable as error:
        return [Finding("problem", reader.where, f"cannot read the cluster: {error}")]
    except ReadError as error:
        if needs.version:
            findings.append(Finding("unchecked", needs.version.setting, f"could not read the cluster's version: {error}"))
    else:
        findings += _version(needs.version, version)
    served = _apis_served(needs.apis, reader, findings)
    if needs.namespace:
        findings += _namespace(needs.namespace, reader)
    if needs.gpus:
        findings += _gpus(needs.gpus, reader)
        findings += _quotas(needs.gpus, reader)
    if needs.storage:
        findings += _storage(needs.storage, reader)
    for need in needs.objects:
        if served.get(_api_version_of(need.path), True):
            findings += _object(need, reader)
    for secret in needs.secrets:
        findings += _secret(secret, reader)
    for service in needs.services:
        findings += _service(service, reader)
    return findings


def _version(need: Optional[VersionNeed], version: dict) -> list[Finding]:
    if need is None:
        return []
    running = kubernetes_minor(f"{version.get('major', '')}.{version.get('minor', '').rstrip('+')}")
    if running is not None and kubernetes_minor(need.version) != running:
        return [Finding("problem", need.setting, f"says {need.version}, but the cluster runs "
                        f"{version.get('gitVersion', '%d.%d' % running)}; set it to {'%d.%d' % running}")]
    return []


def _api_version_of(path: str) -> str:
    parts = path.strip("/").split("/")
    return "v1" if parts[0] == "api" else f"{parts[1]}/{parts[2]}"


def _apis_served(apis: tuple[ApiNeed, ...], reader: ClusterReader, findings: list[Finding]) -> dict[str, bool]:
    """Whether each API version is served (discovery), with a problem for each kind that is not."""
    served: dict[str, bool] = {}
    kinds: dict[str, Optional[set[str]]] = {}
    for need in apis:
        if need.api_version not in kinds:
            path = "/api/v1" if need.api_version == "v1" else f"/apis/{need.api_version}"
            try:
                kinds[need.api_version] = {r["kind"] for r in reader.get(path).get("resources", [])}
            except NotFound:
                kinds[need.api_version] = set()
            except ReadError as error:
                kinds[need.api_version] = None
                findings.append(Finding("unchecked", need.setting, f"could not read whether {need.api_version} is served: {error}"))
        found = kinds[need.api_version]
        if found is not None and need.kind not in found:
            what = f"{need.api_version} is not served" if not found else f"{need.api_version} serves no {need.kind}"
            findings.append(Finding("problem", need.setting, f"{need.kind}: {what}; {need.fix}"))
        served[need.api_version] = served.get(need.api_version, True) and (found is None or need.kind in found)
    return served


def _lookup(reader: ClusterReader, path: str, setting: str, what: str, missing: Optional[Finding]) -> tuple[Optional[dict], list[Finding]]:
    """The object at path, or None with what that means: ``missing`` when it does not exist (None:
    nothing), unchecked when it may not be read."""
    try:
        return reader.get(path), []
    except NotFound:
        return None, [missing] if missing else []
    except ReadError as error:
        return None, [Finding("unchecked", setting, f"could not read {what}: {error}")]


def _object(need: ObjectNeed, reader: ClusterReader) -> list[Finding]:
    missing = Finding("problem", need.setting, f"{need.what} does not exist; {need.fix}")
    return _lookup(reader, need.path, need.setting, need.what, missing)[1]


def _secret(need: SecretNeed, reader: ClusterReader) -> list[Finding]:
    what = f"Secret {need.namespace}/{need.name}"
    missing = Finding("problem", need.setting, f"{what} does not exist; create it with the key {need.key} before up")
    secret, found = _lookup(reader, f"/api/v1/namespaces/{need.namespace}/secrets/{quote(need.name)}", need.setting, what, missing)
    if secret is None:
        return found
    if need.key not in {**secret.get("data", {}), **secret.get("stringData", {})}:
        keys = ", ".join(sorted(secret.get("data", {}))) or "none"
        return [Finding("problem", need.setting, f"{what} has no key {need.key} (it has: {keys}); add it or name the key it has")]
    return []


POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
"""Pod Security Standards' levels, strictest first (kubernetes.io/docs/concepts/security/pod-security-standards)."""


def _namespace(need: NamespaceNeed, reader: ClusterReader) -> list[Finding]:
    missing = None if need.created else Finding(
        "problem", need.setting, f"namespace {need.name} does not exist; create it first, or let the stack create it")
    namespace, found = _lookup(reader, f"/api/v1/namespaces/{need.name}", need.setting, f"namespace {need.name}", missing)
    if namespace is None:
        return found
    labels = namespace.get("metadata", {}).get("labels", {})
    # Without the label the cluster's admission default applies, which the API does not show.
    enforced = labels.get("pod-security.kubernetes.io/enforce")
    if enforced in POD_SECURITY_LEVELS and POD_SECURITY_LEVELS.index(enforced) < POD_SECURITY_LEVELS.index(need.level):
        return [Finding(
            "problem", need.setting,
            f"namespace {need.name} enforces Pod Security level {enforced}, which refuses the server's pods: {need.why}; "
            f"label it pod-security.kubernetes.io/enforce={need.level} (kubectl label --overwrite namespace {need.name} "
            f"pod-security.kubernetes.io/enforce={need.level}), or use another namespace",
        )]
    return []


def _service(need: ServiceNeed, reader: ClusterReader) -> list[Finding]:
    missing = Finding("warning", need.setting, f"no APIService {need.api_service}: {need.what} is not installed; {need.fix}")
    service, found = _lookup(reader, f"/apis/apiregistration.k8s.io/v1/apiservices/{need.api_service}", need.setting,
                             f"APIService {need.api_service}", missing)
    if service is None:
        return found
    available = next((c for c in service.get("status", {}).get("conditions", []) if c.get("type") == "Available"), {})
    if available.get("status") != "True":
        reason = available.get("message") or available.get("reason") or "no Available condition"
        return [Finding("warning", need.setting, f"APIService {need.api_service} is not Available ({reason}): {need.what} is not running; {need.fix}")]
    return []


# --- GPUs -----------------------------------------------------------------------------------


def quantity(value: str) -> Decimal:
    """A Kubernetes quantity as a number (the official client's parser)."""
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(value)


def node_matches(node: dict, node_selector: dict[str, str], affinity: Optional[dict]) -> bool:
    """Whether the node's labels meet a pod's nodeSelector and required node affinity."""
    labels = node.get("metadata", {}).get("labels", {})
    if any(labels.get(key) != value for key, value in node_selector.items()):
        return False
    required = ((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(all(_expression_holds(labels, e) for e in term.get("matchExpressions", []))
               for term in required.get("nodeSelectorTerms", []))


def _expression_holds(labels: dict[str, str], expression: dict) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and labels[key].lstrip("-").isdigit():
        return int(labels[key]) > int(values[0]) if operator == "Gt" else int(labels[key]) < int(values[0])
    return False


def tolerates(taints: list[dict], tolerations: list[dict]) -> bool:
    """Whether tolerations cover every NoSchedule and NoExecute taint (kubernetes.io/docs/concepts/
    scheduling-eviction/taint-and-toleration)."""
    def covers(toleration: dict, taint: dict) -> bool:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            return False
        if not toleration.get("key"):
            return toleration.get("operator") == "Exists"
        if toleration["key"] != taint.get("key"):
            return False
        return toleration.get("operator") == "Exists" or toleration.get("value", "") == taint.get("value", "")

    return all(any(covers(t, taint) for t in tolerations)
               for taint in taints if taint.get("effect") in ("NoSchedule", "NoExecute"))


def schedulable(node: dict) -> bool:
    ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), {})
    return not node.get("spec", {}).get("unschedulable") and ready.get("status") == "True"


def pods_fitting(free: dict[str, Decimal], limits: dict[str, str]) -> int:
    """How many pods taking ``limits`` fit into ``free``."""
    return int(min((free.get(resource, Decimal(0)) // quantity(amount) for resource, amount in limits.items()),
                   default=Decimal(0)))


def _pod_takes(pod: dict, resource: str) -> Decimal:
    """What a pod takes of an extended resource: its containers' sum, or its largest init container's
    (extended resources are requested as limits)."""
    def of(container: dict) -> Decimal:
        resources = container.get("resources", {})
        return quantity(resources.get("limits", {}).get(resource) or resources.get("requests", {}).get(resource) or "0")

    spec = pod.get("spec", {})
    return max(sum((of(c) for c in spec.get("containers", [])), Decimal(0)),
               max((of(c) for c in spec.get("initContainers", [])), default=Decimal(0)))


def _gpus(need: GpuNeed, reader: ClusterReader) -> list[Finding]:
    try:
        nodes = reader.get("/api/v1/nodes")["items"]
    except ReadError as error:
        return [Finding("unchecked", need.setting, f"could not list nodes, so GPUs were not checked: {error}")]
    try:
        pods: Optional[list[dict]] = reader.get("/api/v1/pods")["items"]
    except ReadError as error:
        pods, unread = None, error
    findings = _gpu_room(need, nodes, pods) if pods is not None else _gpu_room(need, nodes, [], unread)
    running = sum(1 for pod in pods or [] if _own(pod, need) and pod.get("spec", {}).get("nodeName")
                  and pod.get("status", {}).get("phase") == "Running")
    if running >= need.pods and findings and findings[0].severity == "problem":
        # The minimum already runs (a second up): nothing more need be placed but a rollout's surge.
        return [Finding("warning", need.setting, f"the {running} pod(s) running stay, but no more would be placed: "
                        f"{findings[0].message}. The next rollout would wait for GPUs")]
    return findings


def _gpu_room(need: GpuNeed, nodes: list[dict], pods: list[dict], unread: Optional[ReadError] = None) -> list[Finding]:
    """Whether the pods at the minimum replicas, and a rollout's surge, fit on the nodes they may run on."""
    placed = [n for n in nodes if node_matches(n, need.node_selector, need.affinity)]
    usable = [n for n in placed if schedulable(n) and tolerates(n.get("spec", {}).get("taints", []), need.tolerations)]
    if not usable:
        return [Finding("problem", need.setting, _no_node_message(nodes, placed, need))]
    wanted = ", ".join(f"{amount} {resource}" for resource, amount in need.limits.items())
    allocatable = {n["metadata"]["name"]: {r: quantity(n["status"].get("allocatable", {}).get(r, "0")) for r in need.limits}
                   for n in usable}
    if not any(pods_fitting(free, need.limits) for free in allocatable.values()):
        most = max(allocatable.items(), key=lambda item: min(item[1].values(), default=Decimal(0)))
        offered = ", ".join(f"{v.normalize():f} {r}" for r, v in most[1].items())
        return [Finding("problem", need.setting,
                        f"no node can hold one pod of {wanted}: of the {len(usable)} node(s) the pods may run on, "
                        f"{most[0]} offers the most ({offered}); ask for fewer GPUs per pod or add larger nodes")]
    registered = [n for n in usable if need.registration in n["metadata"].get("annotations", {})] if need.registration else usable
    if not registered:
        return [Finding("warning", need.setting, f"no node the pods may run on carries {need.registration}: HAMi's device "
                        "plugin has registered no GPU there, so the HAMi scheduler cannot place the pods; check its DaemonSet")]
    if unread:
        return [Finding("unchecked", need.setting, f"could not list pods, so the GPUs other pods take were not counted: {unread}")]
    free = {name: dict(values) for name, values in allocatable.items()}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if node not in free or pod.get("status", {}).get("phase") in ("Succeeded", "Failed") or _own(pod, need):
            continue
        for resource in need.limits:
            free[node][resource] -= _pod_takes(pod, resource)
    fit = sum(pods_fitting(values, need.limits) for values in free.values())
    if fit < need.pods:
        return [Finding("problem", need.setting,
                        f"{need.pods} pod(s) of {wanted} must run at the minimum replicas, but the free GPUs of the "
                        f"{len(usable)} node(s) they may run on hold {fit}; free GPUs, add nodes, or lower the replicas")]
    if fit < need.pods + need.surge:
        return [Finding("warning", need.setting,
                        f"a rollout adds {need.surge} pod(s) of {wanted} beside the {need.pods} running, but the free GPUs "
                        f"hold {fit}: the next rollout would wait for GPUs; set maxSurge 0 (with acceptServiceGap) or add GPUs")]
    return []


def _quotas(need: GpuNeed, reader: ClusterReader) -> list[Finding]:
    """Quotas of the namespace other than the plan's own must let its pods in. Extended resources
    are quoted only as requests.<name> (kubernetes.io/docs/concepts/policy/resource-quotas)."""
    try:
        quotas = reader.get(f"/api/v1/namespaces/{need.namespace}/resourcequotas")["items"]
    except NotFound:
        return []
    except ReadError as error:
        return [Finding("unchecked", need.setting, f"could not read the namespace's ResourceQuotas: {error}")]
    findings = []
    for quota in quotas:
        if _own(quota, need):
            continue
        hard = quota.get("spec", {}).get("hard", {})
        for resource, amount in need.limits.items():
            cap = hard.get(f"requests.{resource}")
            if cap is not None and quantity(cap) < quantity(amount) * need.pods:
                findings.append(Finding(
                    "problem", need.setting,
                    f"ResourceQuota {need.namespace}/{quota['metadata']['name']} caps requests.{resource} at {cap}, but the "
                    f"{need.pods} pod(s) at the minimum replicas take {quantity(amount) * need.pods:f}; raise the quota or "
                    "ask for less"))
    return findings


def _own(thing: dict, need: GpuNeed) -> bool:
    """Whether a pod or quota is the plan's own: in its namespace, with its labels."""
    labels = thing.get("metadata", {}).get("labels", {})
    return thing.get("metadata", {}).get("namespace") == need.namespace and all(
        labels.get(k) == v for k, v in need.own_labels.items())


def _no_node_message(nodes: list[dict], placed: list[dict], need: GpuNeed) -> str:
    if placed:
        names = ", ".join(sorted(n["metadata"]["name"] for n in placed))
        return (f"the nodes the pods may run on ({names}) are not Ready, are cordoned, or have taints the pods do not "
                "tolerate; uncordon them, or add tolerations")
    products = sorted({n.get("metadata", {}).get("labels", {}).get("nvidia.com/gpu.product", "") for n in nodes} - {""})
    seen = f"the cluster's GPU products: {', '.join(products)}" if products else "no node has the label nvidia.com/gpu.product"
    return f"no node matches the pods' node selection ({_selection(need)}); {seen}; choose products the cluster has, or add nodes"


def _selection(need: GpuNeed) -> str:
    parts = [f"{k}={v}" for k, v in need.node_selector.items()]
    required = ((need.affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms", []):
        for e in term.get("matchExpressions", []):
            parts.append(f"{e['key']} {e['operator']} {', '.join(e.get('values', []))}".strip())
    return "; ".join(parts) or "any node"


# --- storage --------------------------------------------------------------------------------

READ_WRITE_MANY = {
    # Which access modes a provisioner's volumes support, by its documentation. Kubernetes' own
    # table for in-tree plugins: kubernetes.io/docs/concepts/storage/persistent-volumes/#access-modes.
    "nfs.csi.k8s.io": True,  # github.com/kubernetes-csi/csi-driver-nfs (ReadWriteMany)
    "k8s-sigs.io/nfs-subdir-external-provisioner": True,  # github.com/kubernetes-sigs/nfs-subdir-external-provisioner
    "cluster.local/nfs-subdir-external-provisioner": True,  # the same, its chart's older default name
    "efs.csi.aws.com": True,  # github.com/kubernetes-sigs/aws-efs-csi-driver
    "filestore.csi.storage.gke.io": True,  # cloud.google.com/filestore/docs/csi-driver
    "file.csi.azure.com": True,  # learn.microsoft.com/azure/aks/azure-files-csi
    "kubernetes.io/azure-file": True,
    "cephfs.csi.ceph.com": True,  # github.com/ceph/ceph-csi (CephFS: ReadWriteMany)
    "driver.longhorn.io": True,  # longhorn.io/docs (RWX volumes through its share manager)
    "ebs.csi.aws.com": False,  # github.com/kubernetes-sigs/aws-ebs-csi-driver (ReadWriteOnce)
    "kubernetes.io/aws-ebs": False,
    "pd.csi.storage.gke.io": False,  # ReadWriteMany not for filesystem volumes (ReadOnlyMany only)
    "kubernetes.io/gce-pd": False,
    "disk.csi.azure.com": False,
    "kubernetes.io/azure-disk": False,
    "rancher.io/local-path": False,  # github.com/rancher/local-path-provisioner (ReadWriteOnce)
    "rbd.csi.ceph.com": False,  # ReadWriteMany only for raw block volumes
    "cinder.csi.openstack.org": False,
    "kubernetes.io/cinder": False,
}
"""Whether a provisioner's volumes can be ReadWriteMany. No StorageClass field says so."""
STATIC = "kubernetes.io/no-provisioner"
"""No provisioner: claims bind only to PersistentVolumes made beforehand."""
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def _storage(need: StorageNeed, reader: ClusterReader) -> list[Finding]:
    if need.existing_claim:
        return _existing_claim(need, reader)
    try:
        if need.storage_class:
            storage_class = reader.get(f"/apis/storage.k8s.io/v1/storageclasses/{quote(need.storage_class)}")
        else:
            defaults = [c for c in reader.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
                        if c.get("metadata", {}).get("annotations", {}).get(DEFAULT_CLASS) == "true"]
            if not defaults:
                return [Finding("problem", need.setting, "no storage class is given and the cluster has no default one; "
                                "set storageClass to one of the cluster's classes (kubectl get storageclass)")]
            storage_class = defaults[0]
    except NotFound:
        return [Finding("problem", need.setting, f"StorageClass {need.storage_class} does not exist; "
                        "set storageClass to one of the cluster's classes (kubectl get storageclass)")]
    except ReadError as error:
        return [Finding("unchecked", need.setting, f"could not read the storage class: {error}")]
    name, provisioner = storage_class["metadata"]["name"], storage_class.get("provisioner", "")
    if provisioner == STATIC:
        return _static_volumes(need, name, reader)
    if need.access_mode != "ReadWriteMany":
        return []
    if provisioner not in READ_WRITE_MANY:
        return [Finding("warning", need.setting, f"StorageClass {name}'s provisioner {provisioner} is not one whose "
                        "access modes are known here; make sure it serves ReadWriteMany, or the claim never binds")]
    if not READ_WRITE_MANY[provisioner]:
        return [Finding("problem", need.setting, f"StorageClass {name}'s provisioner {provisioner} cannot make "
                        "ReadWriteMany volumes, so the claim would never bind; use a class of a shared file system (NFS, "
                        "CephFS, EFS, Filestore, Azure Files), or ReadWriteOnce with one replica")]
    return []


def _static_volumes(need: StorageNeed, name: str, reader: ClusterReader) -> list[Finding]:
    """A class without a provisioner binds claims only to volumes made beforehand."""
    try:
        volumes = reader.get("/api/v1/persistentvolumes")["items"]
    except ReadError as error:
        return [Finding("unchecked", need.setting, f"StorageClass {name} has no provisioner and the volumes could not be listed: {error}")]
    size = quantity(need.size)
    for volume in volumes:
        spec = volume.get("spec", {})
        claim = spec.get("claimRef") or {}
        mine = claim.get("namespace") == need.namespace
        if (spec.get("storageClassName") == name and need.access_mode in spec.get("accessModes", [])
                and quantity(spec.get("capacity", {}).get("storage", "0")) >= size
                and (volume.get("status", {}).get("phase") == "Available" or mine)):
            return []
    return [Finding("problem", need.setting, f"StorageClass {name} has no provisioner and no Available PersistentVolume of "
                    f"it is {need.access_mode} with {need.size} or more; create one, or use a class with a provisioner")]


def _existing_claim(need: StorageNeed, reader: ClusterReader) -> list[Finding]:
    what = f"PersistentVolumeClaim {need.namespace}/{need.existing_claim}"
    missing = Finding("problem", need.setting, f"{what} does not exist; create it, or leave existingClaim unset to have one made")
    path = f"/api/v1/namespaces/{need.namespace}/persistentvolumeclaims/{quote(need.existing_claim or '')}"
    claim, found = _lookup(reader, path, need.setting, what, missing)
    if claim is None:
        return found
    status = claim.get("status", {})
    if status.get("phase") != "Bound":
        return [Finding("problem", need.setting, f"{what} is {status.get('phase', 'not bound')}, not Bound; bind it before up")]
    capacity = status.get("capacity", {}).get("storage", "0")
    if quantity(capacity) < quantity(need.size):
        return [Finding("problem", need.setting, f"{what} holds {capacity}, less than the {need.size} the model needs; "
                        "give a larger claim")]
    if need.access_mode not in status.get("accessModes", []):
        return [Finding("problem", need.setting, f"{what} is {', '.join(status.get('accessModes', []))}, not {need.access_mode}")]
    return []


# --- reading a real cluster -----------------------------------------------------------------


class KubeReader:
    """Reads through the official Kubernetes client, configured as the Kubernetes provider configures
    client-go (pulumi-kubernetes provider/pkg/provider/provider.go, Configure): ``kubeconfig`` is a
    path or the kubeconfig itself (provider/util.go parseKubeconfigString), else $KUBECONFIG's files,
    else ~/.kube/config; ``context`` replaces the current context and ``cluster`` the context's cluster."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str], cluster: Optional[str], timeout: float = 15):
        self.timeout = timeout
        self.where = "the cluster"
        self.error: Optional[str] = None
        try:
            self.api = self._client(kubeconfig, context, cluster)
        except Exception as error:  # noqa: BLE001 - the client raises many kinds on a bad kubeconfig
            self.error = f"cannot load the kubeconfig: {error}"

    def _client(self, kubeconfig: Optional[str], context: Optional[str], cluster: Optional[str]):
        from kubernetes import client
        from kubernetes.config.kube_config import ConfigNode, KubeConfigLoader, KubeConfigMerger

        if kubeconfig:
            path = os.path.expanduser(kubeconfig)
            merged = KubeConfigMerger(path).config if os.path.exists(path) else ConfigNode("kubeconfig", yaml.safe_load(kubeconfig))
        else:
            merged = KubeConfigMerger(os.environ.get("KUBECONFIG") or "~/.kube/config").config
        if merged is None:
            raise ValueError("no kubeconfig found ($KUBECONFIG, ~/.kube/config or kubernetes:kubeconfig)")
        name = context or merged.safe_get("current-context")
        if cluster:
            entry = merged["contexts"].get_with_name(name)
            entry.value["context"]["cluster"] = cluster
        loader = KubeConfigLoader(config_dict=merged, active_context=name, config_base_path=None)
        configuration = client.Configuration()
        loader.load_and_set(configuration)
        configuration.retries = 1
        self.where = f"context {name} ({configuration.host})"
        return client.ApiClient(configuration)

    def get(self, path: str) -> dict:
        if self.error:
            raise Unreachable(self.error)
        from kubernetes.client.exceptions import ApiException

        try:
            method, url, headers, _, _ = self.api.param_serialize(
                "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            response = self.api.call_api(method, url, header_params=headers, _request_timeout=self.timeout)
            data = response.read()
        except ApiException as error:
            raise _http_error(error.status, error.reason or "", path) from None
        except Exception as error:  # noqa: BLE001 - connection and TLS errors of urllib3
            raise Unreachable(f"{self.where}: {error}") from None
        if response.status >= 400:
            raise _http_error(response.status, response.reason or "", path)
        return json.loads(data)


def _http_error(status: int, reason: str, path: str) -> ReadError:
    if status == 404:
        return NotFound(f"{path}: not found")
    if status in (401, 403):
        return Forbidden(f"{status} {reason}: the credentials may not read {path}")
    return Unreachable(f"{status} {reason} reading {path}")
