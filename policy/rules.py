"""What vllm-serving promises about the Kubernetes objects it makes, as rules a policy pack runs.

A resource rule is a plain function ``rule(resource_type, props) -> list[str]``: the resource's
Pulumi type token (``kubernetes:apps/v1:Deployment``; a custom resource's is built the same way
from its apiVersion and kind, ``kubernetes:gateway.networking.k8s.io/v1:HTTPRoute``) and its
properties as pulumi-policy hands them to a validation: the object as its manifest spells it
(``apiVersion``, ``kind``, ``metadata``, ``spec``, camelCase keys), every number a float. It
returns one message per problem, each naming the object and saying how to fix it; none when the
object keeps every promise. The stack rule takes every resource of the stack, because a route is
public or not depending on the Service and pods it leads to.

Only this product's objects are judged: pods labelled ``app.kubernetes.io/part-of:
vllm-serving`` (every component labels what it makes) and any pod that runs vLLM's server. The
server rules (GPUs, probes, ``/dev/shm``) judge vLLM server containers alone: a container whose
command runs ``vllm serve`` (or the OpenAI API server module), one without a command in a
``vllm-openai`` image (whose entrypoint is ``vllm serve``), or, in a pod labelled as this
project's server where none is recognised, every container.

A value not known until the update (pulumi preview shows it as unknown) is ``UNKNOWN`` here; a
rule never reports a problem it cannot see, and ``pulumi up`` runs the rules again on the known
values before anything changes.

``resource_validation`` and ``stack_validation`` turn the rules into pulumi-policy validate
callbacks; ``__main__.py`` wires them into the pack.
"""

import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

PART_OF_LABEL = "app.kubernetes.io/part-of"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF = "vllm-serving"
"""The part-of label every component puts on what it makes (components/labels.py)."""
APP_NAME = "vllm"
SERVER_COMPONENT = "server"

SECRET_WORDS = frozenset({"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"})
"""Words of an environment variable's name (split at '_') that say its value is a secret, as
components/pods.py reads them: HF_TOKEN is one, TOKENIZERS_PARALLELISM is not."""
API_KEY_ENV = "VLLM_API_KEY"
API_PATH = "/v1"
"""vLLM checks the API key on paths under /v1 (0.11.0 api_server.py AuthenticationMiddleware: /v1
alone; 0.34.0 entrypoints/serve/middleware/authenticate.py: /v1, /v2, /inference, /cohere);
/invocations, /tokenize, /metrics and more answer anyone in both."""
ALLOW_PUBLIC_WITHOUT_API_KEY = "allowPublicWithoutApiKey"
"""The stack setting (and policy config value) that serves a public route without an API key."""

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
HAMI_RESOURCES = ("nvidia.com/gpumem", "nvidia.com/gpumem-percentage", "nvidia.com/gpucores")
SHM_PATH = "/dev/shm"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
PARALLEL_FLAGS = {
    # flag: (short form, shortest abbreviation vLLM's parser takes unambiguously)
    "--tensor-parallel-size": ("-tp", "--te"),
    "--pipeline-parallel-size": ("-pp", "--pi"),
    # --data-parallel-size is also the start of --data-parallel-size-local: only the whole flag.
    "--data-parallel-size": ("-dp", "--data-parallel-size"),
}
HEADLESS_FLAG = "--headless"
"""A server with it starts engines and no API server (vllm/entrypoints/cli/serve.py run_headless,
0.11.0 and 0.34.0): nothing answers an HTTP probe."""
SERVER_MODULES = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")
SERVER_IMAGE_NAME = "vllm-openai"
"""vLLM's server images (vllm/vllm-openai and its mirrors) run ``vllm serve`` as their entrypoint."""
PINNED_EXAMPLE = "vllm/vllm-openai:v0.34.0"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# Where each workload kind keeps its pod templates, by (API group, kind).
POD_TEMPLATES: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("apps", "Deployment"): (("spec", "template"),),
    ("apps", "StatefulSet"): (("spec", "template"),),
    ("apps", "DaemonSet"): (("spec", "template"),),
    ("apps", "ReplicaSet"): (("spec", "template"),),
    ("batch", "Job"): (("spec", "template"),),
    ("batch", "CronJob"): (("spec", "jobTemplate", "spec", "template"),),
    ("core", "Pod"): ((),),
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): (
        ("spec", "leaderWorkerTemplate", "leaderTemplate"),
        ("spec", "leaderWorkerTemplate", "workerTemplate"),
    ),
}


class _Unknown:
    """A value pulumi preview cannot know yet."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
_UNKNOWN_SENTINELS = frozenset(
    (
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    )
)


# --- reading objects ------------------------------------------------------------------------


def kind_of(resource_type: str) -> Optional[tuple[str, str]]:
    """(API group, kind) of a Kubernetes type token, "core" for the core group; None for others."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or "/" not in parts[1]:
        return None
    return parts[1].rsplit("/", 1)[0], parts[2]


def text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def dig(value: Any, *path: str) -> Any:
    """The value at a path of keys; None where a key is missing, UNKNOWN where a step is unknown."""
    for key in path:
        if value is UNKNOWN:
            return UNKNOWN
        value = mapping(value).get(key)
    return value


def describe(kind: str, metadata: Any) -> str:
    """Kind namespace/name, as kubectl names an object."""
    name, namespace = dig(metadata, "name"), dig(metadata, "namespace")
    name = name if isinstance(name, str) else "(name known after the update)"
    return f"{kind} {namespace}/{name}" if isinstance(namespace, str) and namespace else f"{kind} {name}"


def namespace_of(props: Mapping) -> Any:
    """The object's namespace: a name, UNKNOWN, or "" when it sets none (its stack's default)."""
    namespace = dig(props, "metadata", "namespace")
    return namespace if isinstance(namespace, str) or namespace is UNKNOWN else ""


def same_namespace(a: Any, b: Any) -> bool:
    """Whether two namespaces may be the same one: an unknown one may be any."""
    return a is UNKNOWN or b is UNKNOWN or a == b


@dataclass(frozen=True)
class Pod:
    """A pod template of a workload (or a Pod itself)."""

    where: str
    """The workload as a message names it."""
    labels: Mapping
    """The pod's labels."""
    owner_labels: Mapping
    """The workload's own labels."""
    spec: Mapping
    """The pod spec."""
    annotations: Mapping = field(default_factory=dict)
    """The pod's annotations."""

    def containers(self) -> list[tuple[str, Mapping]]:
        """(how a message names it, container) for every init, regular and ephemeral container."""
        found = []
        for section, label in (("initContainers", "init container"), ("containers", "container"),
                               ("ephemeralContainers", "ephemeral container")):
            for container in items(self.spec.get(section)):
                container = mapping(container)
                name = container.get("name")
                found.append((f"{label} {name if isinstance(name, str) else '(unnamed)'}", container))
        return found

    def labelled(self, key: str) -> Any:
        return self.labels.get(key, self.owner_labels.get(key))

    @property
    def ours(self) -> bool:
        """Made by this project's components, or running vLLM's server."""
        return self.labelled(PART_OF_LABEL) == PART_OF or bool(self.servers())

    @property
    def labelled_server(self) -> bool:
        return self.labels.get(COMPONENT_LABEL) == SERVER_COMPONENT and (
            self.labelled(PART_OF_LABEL) == PART_OF or self.labels.get(NAME_LABEL) == APP_NAME
        )

    def servers(self) -> list[tuple[str, Mapping]]:
        """The vLLM server containers: recognised by what they run, else, in a pod labelled as
        this project's server, every regular container (a server must not escape the rules by
        a changed command)."""
        regular = [(label, c) for label, c in self.containers() if label.startswith("container ")]
        recognised = [(label, c) for label, c in regular if runs_vllm_server(c)]
        if recognised or not self.labelled_server:
            return recognised
        return regular


def pods_of(resource_type: str, props: Mapping) -> list[Pod]:
    """The pod templates of a workload; none for other objects."""
    kind = kind_of(resource_type)
    paths = POD_TEMPLATES.get(kind) if kind else None
    if not paths:
        return []
    where = describe(kind[1], props.get("metadata"))
    owner_labels = mapping(dig(props, "metadata", "labels"))
    pods = []
    for path in paths:
        template = mapping(dig(props, *path))
        if not template:
            continue
        suffix = f" ({path[-1]})" if len(paths) > 1 else ""
        pods.append(
            Pod(
                where=where + suffix,
                labels=mapping(dig(template, "metadata", "labels")),
                annotations=mapping(dig(template, "metadata", "annotations")),
                owner_labels=owner_labels,
                spec=mapping(template.get("spec")),
            )
        )
    return pods


def project_pods(resource_type: str, props: Mapping) -> list[Pod]:
    return [pod for pod in pods_of(resource_type, props) if pod.ours]


def words(container: Mapping) -> list[str]:
    """command and args as words (a shell script's words too); unknown words are left out."""
    found = []
    for part in (*items(container.get("command")), *items(container.get("args"))):
        if isinstance(part, str):
            found += part.split()
    return found


def runs_vllm_server(container: Mapping) -> bool:
    if not items(container.get("command")):
        # The image's entrypoint runs: vllm serve, in vLLM's server images.
        image = container.get("image")
        repository = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0] if isinstance(image, str) else ""
        return repository.startswith(SERVER_IMAGE_NAME)
    argv = words(container)
    for index, word in enumerate(argv):
        if posixpath.basename(word) == "vllm" and argv[index + 1 : index + 2] == ["serve"]:
            return True
        if word in SERVER_MODULES and index > 0 and argv[index - 1] == "-m":
            return True
    return False


def flag_value(argv: list[str], flag: str) -> Optional[str]:
    """The last value given to a vllm serve flag, read as vLLM's parser reads it: --a_b is
    --a-b, --flag=value, the short form, and unambiguous abbreviations."""
    short, shortest = PARALLEL_FLAGS[flag]
    value = None
    for index, word in enumerate(argv):
        name, equals, inline = word.partition("=")
        if name.startswith("--"):
            name = name.replace("_", "-")
            matches = len(name) >= len(shortest) and flag.startswith(name)
        else:
            matches = name == short
        if matches:
            value = inline if equals else (argv[index + 1] if index + 1 < len(argv) else None)
    return value


def count(value: Any) -> Any:
    """A whole-number quantity as a number; UNKNOWN if unknown, None if missing or not a number."""
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def show(value: Any) -> str:
    """A value as a manifest would spell it (pulumi-policy hands every number over as a float)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def env_from_secret(container: Mapping, name: str) -> bool:
    for entry in items(container.get("env")):
        entry = mapping(entry)
        if entry.get("name") == name and "value" not in entry and isinstance(dig(entry, "valueFrom", "secretKeyRef"), Mapping):
            return True
    return False


def looks_secret(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.upper().split("_")))


def image_problem(image: Any) -> Optional[str]:
    """Why an image reference is not pinned, or None when it is (or cannot be known yet)."""
    fix = f"pin a release tag, e.g. {PINNED_EXAMPLE}, or a digest (<image>@sha256:<64 hex digits>)"
    if image is UNKNOWN:
        return None
    if not isinstance(image, str) or not image.strip():
        return f"has no image; set one and {fix}"
    reference, _, digest = image.partition("@")
    if digest:
        return None if _DIGEST.fullmatch(digest) else f"uses {image}, whose digest is not sha256:<64 lowercase hex digits>; {fix}"
    last = reference.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if not tag:
        return f"uses {image} without a tag, which pulls the moving tag latest; {fix}"
    if tag == "latest":
        return f"uses {image}, the moving tag latest; {fix}"
    return None


# --- resource rules -------------------------------------------------------------------------


def pinned_images(resource_type: str, props: Mapping) -> list[str]:
    """Every container and init container runs an image pinned by a tag other than latest, or by digest."""
    problems = []
    for pod in project_pods(resource_type, props):
        for label, container in pod.containers():
            if problem := image_problem(container.get("image")):
                problems.append(f"{pod.where}: {label} {problem}.")
    return problems


def server_gets_gpus(resource_type: str, props: Mapping) -> list[str]:
    """The vLLM server container has a GPU limit of at least 1 (nvidia.com/gpu, which HAMi slices
    also need beside nvidia.com/gpumem and gpucores), a MIG instance, or a DRA resource claim."""
    problems = []
    for pod in pods_of(resource_type, props):
        claims = {text(dig(claim, "name")) for claim in items(pod.spec.get("resourceClaims"))} - {None}
        for label, container in pod.servers():
            limits = dig(container, "resources", "limits")
            if limits is UNKNOWN:
                continue
            limits = mapping(limits)
            gpus = count(limits.get(GPU_RESOURCE))
            if gpus is UNKNOWN or (gpus is not None and gpus >= 1):
                continue
            if any(key.startswith(MIG_RESOURCE_PREFIX) and (count(value) is UNKNOWN or (count(value) or 0) >= 1)
                   for key, value in limits.items()):
                continue
            if any(text(dig(claim, "name")) in claims for claim in items(dig(container, "resources", "claims"))):
                continue
            hami = [key for key in HAMI_RESOURCES if key in limits]
            given = f"limits {GPU_RESOURCE}: {show(limits[GPU_RESOURCE])}" if GPU_RESOURCE in limits else f"no {GPU_RESOURCE} limit"
            if hami:
                problems.append(
                    f"{pod.where}: vLLM server {label} has HAMi slice limits ({', '.join(hami)}) but {given}; HAMi "
                    f"hands out a slice only with resources.limits {GPU_RESOURCE} of at least 1 (the GPUs the slice spans)."
                )
            else:
                problems.append(
                    f"{pod.where}: vLLM server {label} has {given}, so it would start without a GPU; set "
                    f"resources.limits {GPU_RESOURCE} to the GPUs it uses (at least 1: tensor x pipeline parallel "
                    f"size), or give it a MIG instance ({MIG_RESOURCE_PREFIX}<profile>) or a DRA resource claim."
                )
    return problems


def server_probes(resource_type: str, props: Mapping) -> list[str]:
    """The vLLM server container has startup, readiness and liveness probes, unless it is headless."""
    problems = []
    for pod in pods_of(resource_type, props):
        for label, container in pod.servers():
            if HEADLESS_FLAG in words(container):
                continue
            missing = [
                probe
                for probe in PROBES
                if container.get(probe) is not UNKNOWN
                and not any(handler in mapping(container.get(probe)) for handler in PROBE_HANDLERS)
            ]
            if missing:
                problems.append(
                    f"{pod.where}: vLLM server {label} has no {', '.join(missing)}; probe GET /health on the API port: "
                    "a startupProbe whose periodSeconds x failureThreshold covers the model load, then a "
                    "readinessProbe and a livenessProbe (without the startup probe, liveness kills a loading server "
                    "over and over)."
                )
    return problems


def server_shm_for_parallelism(resource_type: str, props: Mapping) -> list[str]:
    """A vLLM server with tensor or pipeline parallelism above 1 has a memory-backed /dev/shm."""
    problems = []
    for pod in pods_of(resource_type, props):
        volumes = {text(dig(volume, "name")): mapping(volume) for volume in items(pod.spec.get("volumes"))}
        for label, container in pod.servers():
            argv = words(container)
            parallel = []
            for flag in PARALLEL_FLAGS:
                size = count(flag_value(argv, flag))
                if size is not None and size is not UNKNOWN and size > 1:
                    parallel.append(f"{flag} {size:g}")
            if not parallel:
                continue
            shm = memory_shm(container, volumes)
            if shm is UNKNOWN or shm:
                continue
            problems.append(
                f"{pod.where}: vLLM server {label} runs with {' and '.join(parallel)} but has no memory-backed "
                f"{SHM_PATH}; NCCL between the GPUs of a pod needs far more than the container's 64 MB: add a volume "
                f"with emptyDir {{medium: Memory, sizeLimit: 20Gi}} and mount it at {SHM_PATH} in this container."
            )
    return problems


def memory_shm(container: Mapping, volumes: Mapping) -> Any:
    """Whether /dev/shm is a memory-backed emptyDir in this container (UNKNOWN if it cannot be told)."""
    for mount in items(container.get("volumeMounts")):
        path = dig(mount, "mountPath")
        if path is UNKNOWN:
            return UNKNOWN
        if isinstance(path, str) and posixpath.normpath(path) == SHM_PATH:
            volume = volumes.get(text(dig(mount, "name"))) or {}
            medium = dig(volume, "emptyDir", "medium")
            if medium is UNKNOWN:
                return UNKNOWN
            if medium == "Memory":
                return True
    return False


def no_plain_secret_env(resource_type: str, props: Mapping) -> list[str]:
    """An env entry whose name looks like a secret takes its value from a Secret, never from value."""
    problems = []
    for pod in project_pods(resource_type, props):
        for label, container in pod.containers():
            for entry in items(container.get("env")):
                entry = mapping(entry)
                name = entry.get("name")
                if not isinstance(name, str) or not looks_secret(name):
                    continue
                fix = (
                    f"take it from a Secret with valueFrom.secretKeyRef (name: <secret>, key: <key>) instead "
                    "(kubectl create secret generic <secret> --from-literal=<key>=...)."
                )
                if "value" in entry:
                    problems.append(
                        f"{pod.where}: {label} sets {name} with value, so the secret sits in plain text in the "
                        f"object (and in Pulumi's state and every preview); {fix}"
                    )
                elif not isinstance(dig(entry, "valueFrom", "secretKeyRef"), Mapping) and dig(entry, "valueFrom") is not UNKNOWN:
                    source = ", ".join(mapping(entry.get("valueFrom"))) or "nowhere"
                    problems.append(f"{pod.where}: {label} takes {name}, whose name says secret, from {source}; {fix}")
    return problems


ROOT_INIT_ANNOTATION = "vllm-serving.io/root-init-container"
"""A pod template's annotation naming the one init container that runs as root, adding CHOWN alone
(the node cache's, which makes a host directory its unprivileged copier's)."""


def root_allowed(pod: Pod, label: str, context: Mapping) -> bool:
    """Whether the container is the pod's declared root init container, with CHOWN its only added capability."""
    name = pod.annotations.get(ROOT_INIT_ANNOTATION)
    added = dig(context, "capabilities", "add")
    return (
        isinstance(name, str)
        and label == f"init container {name}"
        and added is not UNKNOWN
        and set(items(added)) <= {"CHOWN"}
    )


def runs_as_non_root(resource_type: str, props: Mapping) -> list[str]:
    """Every container runs as non-root (runAsNonRoot: true, no runAsUser 0), cannot escalate its
    privileges and drops every capability."""
    problems = []
    for pod in project_pods(resource_type, props):
        pod_context = pod.spec.get("securityContext")
        if pod_context is UNKNOWN:
            continue
        pod_context = mapping(pod_context)
        for label, container in pod.containers():
            context = container.get("securityContext")
            if context is UNKNOWN:
                continue
            context = mapping(context)
            wrong = []
            # A container's own setting overrides the pod's.
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            user = context.get("runAsUser", pod_context.get("runAsUser"))
            as_root = root_allowed(pod, label, context)
            if non_root is not True and non_root is not UNKNOWN and not as_root:
                wrong.append("runAsNonRoot is not true")
            if user is not UNKNOWN and count(user) == 0 and not as_root:
                where = "its" if "runAsUser" in context else "the pod's"
                wrong.append(f"{where} runAsUser is 0 (root)")
            escalation = context.get("allowPrivilegeEscalation")
            if escalation is not False and escalation is not UNKNOWN:
                wrong.append("allowPrivilegeEscalation is not false")
            drop = dig(context, "capabilities", "drop")
            if drop is not UNKNOWN and "ALL" not in items(drop):
                wrong.append("capabilities.drop does not hold ALL")
            if wrong:
                problems.append(
                    f"{pod.where}: {label} may run as root or gain privileges: {'; '.join(wrong)}. Set runAsNonRoot: "
                    "true (in the pod's or the container's securityContext) with a non-zero runAsUser, and in the "
                    "container's securityContext allowPrivilegeEscalation: false and capabilities: {drop: [ALL]}."
                )
    return problems


# --- the stack rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A resource of the stack, as the stack rule reads it."""

    resource_type: str
    props: Mapping
    urn: str = ""
    name: str = ""
    dependencies: tuple[str, ...] = ()
    """URNs of the resources it depends on."""


class Violation(NamedTuple):
    message: str
    urn: str = ""
    """The resource in violation; "" for the stack as a whole."""


@dataclass(frozen=True)
class _Exposure:
    """One way a route (or a Service of its own) reaches a Service from outside."""

    service: str
    namespace: Any
    hosts: str
    """Which hosts, as a message says it."""
    open_paths: tuple[str, ...]
    """Paths routed there that are not under /v1, or whatever else lets a request around the key."""
    kind: tuple[str, str] = ("core", "Service")
    """What the route sends to: a Service, or an InferencePool (Gateway API Inference Extension),
    whose selector picks the pods alike."""


POOL_KIND = ("inference.networking.k8s.io", "InferencePool")


def public_routes_need_api_key(resources: Sequence[Resource], config: Optional[Mapping] = None) -> list[Violation]:
    """An Ingress, HTTPRoute or LoadBalancer/NodePort Service that reaches a vLLM server's pods
    needs the server to take VLLM_API_KEY from a Secret, and routes /v1 alone (vLLM checks the key
    there only), unless allowPublicWithoutApiKey is true."""
    allowed = mapping(config).get(ALLOW_PUBLIC_WITHOUT_API_KEY) is True
    services: dict[tuple, list[Resource]] = {}
    workloads = []
    for resource in resources:
        kind = kind_of(resource.resource_type)
        if kind in (("core", "Service"), POOL_KIND):
            services.setdefault((kind, text(dig(resource.props, "metadata", "name"))), []).append(resource)
        for pod in pods_of(resource.resource_type, resource.props):
            if pod.servers():
                workloads.append((resource, pod))

    violations = []
    for resource in resources:
        kind = kind_of(resource.resource_type)
        where = describe(kind[1], resource.props.get("metadata")) if kind else resource.name
        for exposure in exposures(resource.resource_type, resource.props):
            for service in services.get((exposure.kind, exposure.service), []) if exposure.service else []:
                if not same_namespace(namespace_of(service.props), exposure.namespace):
                    continue
                for owner, pod in selected_servers(service, workloads):
                    keyless = [label for label, container in pod.servers() if not env_from_secret(container, API_KEY_ENV)]
                    if keyless and not allowed:
                        violations.append(
                            Violation(
                                f"{where} makes {exposure.kind[1]} {exposure.service} public on {exposure.hosts}, and its pods "
                                f"({pod.where}) run vLLM without an API key ({', '.join(keyless)} has no "
                                f"{API_KEY_ENV} from a Secret): anyone who reaches the route can generate. Give the "
                                f"server {API_KEY_ENV} from a Secret (stack settings apiKeySecretName or apiKey; "
                                "VLLMServer's api_key_secret or api_key in a program of your own), or, to serve anyone "
                                f"on purpose, set {ALLOW_PUBLIC_WITHOUT_API_KEY}: true in the stack (or in the policy "
                                "configuration).",
                                resource.urn,
                            )
                        )
                    elif not keyless and exposure.open_paths:
                        violations.append(
                            Violation(
                                f"{where} sends {', '.join(exposure.open_paths)} on {exposure.hosts} to the vLLM "
                                f"server ({pod.where}), which checks its API key on {API_PATH} alone: /invocations, "
                                f"/tokenize, /metrics and the rest answer anyone. Route the path prefix {API_PATH} "
                                "only, without rewriting it.",
                                resource.urn,
                            )
                        )
    return violations


def selected_servers(service: Resource, workloads: list[tuple[Resource, Pod]]) -> list[tuple[Resource, Pod]]:
    """The vLLM server pods a Service selects: by its selector, or, while the selector is unknown,
    the server workloads it was built from."""
    selector = dig(service.props, "spec", "selector")
    if kind_of(service.resource_type) == POOL_KIND:
        selector = dig(selector, "matchLabels") if isinstance(selector, Mapping) else selector
    namespace = namespace_of(service.props)
    known = isinstance(selector, Mapping) and all(isinstance(value, str) for value in selector.values())
    if not known and selector is not UNKNOWN and not isinstance(selector, Mapping):
        return []
    found = []
    for owner, pod in workloads:
        if not same_namespace(namespace_of(owner.props), namespace):
            continue
        if known:
            if selector and all(pod.labels.get(key) == value for key, value in selector.items()):
                found.append((owner, pod))
        elif owner.urn and owner.urn in service.dependencies:
            found.append((owner, pod))
    return found


def exposures(resource_type: str, props: Mapping) -> list[_Exposure]:
    """Where a route, or a Service reachable from outside the cluster, sends requests."""
    kind = kind_of(resource_type)
    namespace = namespace_of(props)
    spec = mapping(props.get("spec"))
    if kind == ("networking.k8s.io", "Ingress"):
        return _ingress_exposures(props, spec, namespace)
    if kind == ("gateway.networking.k8s.io", "HTTPRoute"):
        return _http_route_exposures(spec, namespace)
    if kind == ("core", "Service") and spec.get("type") in ("LoadBalancer", "NodePort"):
        name = text(dig(props, "metadata", "name"))
        return [_Exposure(name, namespace, f"every node or load balancer address (type {spec['type']})",
                          ("every path (the Service itself is reachable from outside)",))]
    return []


def _ingress_exposures(props: Mapping, spec: Mapping, namespace: Any) -> list[_Exposure]:
    rewrite = [key for key in mapping(dig(props, "metadata", "annotations")) if key.endswith("/rewrite-target")]
    found = []
    default = dig(spec, "defaultBackend", "service", "name")
    if isinstance(default, str):
        found.append(_Exposure(default, namespace, "every host", ("every path (defaultBackend)",)))
    for rule in items(spec.get("rules")):
        rule = mapping(rule)
        host = rule.get("host")
        hosts = f"host {host}" if isinstance(host, str) and host else "every host"
        by_service: dict[str, list[str]] = {}
        for path in items(dig(rule, "http", "paths")):
            service = dig(path, "backend", "service", "name")
            if not isinstance(service, str):
                continue
            value = dig(path, "path")
            opened = by_service.setdefault(service, [])
            if value is UNKNOWN:
                continue
            if not isinstance(value, str) or not value.startswith(API_PATH):
                opened.append(f"path {value if isinstance(value, str) else '(none: every path)'}")
            opened.extend(f"paths rewritten by {key}" for key in rewrite)
        found += [_Exposure(service, namespace, hosts, tuple(dict.fromkeys(opened))) for service, opened in by_service.items()]
    return found


def _http_route_exposures(spec: Mapping, namespace: Any) -> list[_Exposure]:
    hostnames = [host for host in items(spec.get("hostnames")) if isinstance(host, str)]
    hosts = f"host {', '.join(hostnames)}" if hostnames else "every host of its Gateway listener"
    found = []
    for rule in items(spec.get("rules")):
        rule = mapping(rule)
        matches = _matches(rule)
        rewrites = [f for f in items(rule.get("filters")) if dig(f, "type") == "URLRewrite" and dig(f, "urlRewrite", "path")]
        for ref in items(rule.get("backendRefs")):
            ref = mapping(ref)
            backend = (ref.get("group", "") or "core", ref.get("kind", "Service"))
            if backend not in (("core", "Service"), POOL_KIND):
                continue
            name = ref.get("name")
            if not isinstance(name, str):
                continue
            own = [f for f in items(ref.get("filters")) if dig(f, "type") == "URLRewrite" and dig(f, "urlRewrite", "path")]
            if rewrites or own:
                # What the server sees is the rewritten path: safe only when every rewrite lands under /v1.
                safe = all(_rewrites_into_api(dig(f, "urlRewrite", "path"), matches) for f in [*rewrites, *own])
                paths = [] if safe else ["paths rewritten by a URLRewrite filter"]
            else:
                paths = [f"path {path}" for path in (_open_match(match) for match in matches) if path]
            found.append(_Exposure(name, ref.get("namespace") or namespace, hosts, tuple(paths), backend))
    return found


def _rewrites_into_api(path: Any, matches: list[Mapping]) -> bool:
    """Whether a URLRewrite path modifier sends every request the matches admit to a path under /v1.

    ReplaceFullPath replaces the whole path; ReplacePrefixMatch replaces the matched prefix of a
    PathPrefix match, which Gateway API matches element by element (/x/v1 admits /x/v1 and
    /x/v1/..., not /x/v1x), so a replacement of /v1 or /v1/... keeps the rest under /v1.
    """
    path = mapping(path)
    kind = path.get("type")
    if kind == "ReplaceFullPath":
        target = path.get("replaceFullPath")
    elif kind == "ReplacePrefixMatch" and all(dig(m, "path", "type") == "PathPrefix" for m in matches):
        target = path.get("replacePrefixMatch")
    else:
        return False
    return isinstance(target, str) and (target == API_PATH or target.startswith(API_PATH + "/"))


def _matches(rule: Mapping) -> list[Mapping]:
    """A rule's matches; a rule without any matches every request (PathPrefix /)."""
    return [mapping(match) for match in items(rule.get("matches"))] or [{}]


def _open_match(match: Mapping) -> Optional[str]:
    """The path a match lets past the key, or None when it stays under /v1."""
    path = match.get("path")
    if path is UNKNOWN:
        return None
    path = mapping(path)
    value, path_type = path.get("value", "/"), path.get("type", "PathPrefix")
    if value is UNKNOWN or path_type is UNKNOWN:
        return None
    if not isinstance(value, str):
        return "(none: every path)"
    if path_type in ("PathPrefix", "Exact") and value.startswith(API_PATH):
        return None
    if path_type == "RegularExpression" and re.match(r"\^?/v1(/|\b)", value) and "|" not in value:
        return None
    return f"{value} ({path_type})"


# --- wiring into pulumi-policy --------------------------------------------------------------

# --- the GPU budget -------------------------------------------------------------------------

MAX_GPUS = "maxGpus"
MAX_MONTHLY_GPU_COST = "maxMonthlyGpuCost"
GPU_HOURLY_PRICE = "gpuHourlyPrice"
"""The budget policy's configuration: caps (0 or unset for none) and the price per GPU-hour by product."""
HOURS_PER_MONTH = 730
"""365 days x 24 hours / 12, as components/cost.py counts a month."""
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
SCALED_KINDS = {("apps", "Deployment"), ("apps", "StatefulSet"), ("leaderworkerset.x-k8s.io", "LeaderWorkerSet")}
"""Workloads whose replicas run all month; a Job's or a DaemonSet's pods are not counted."""
SCALERS = {("keda.sh", "ScaledObject"): ("maxReplicaCount", 100.0), ("autoscaling", "HorizontalPodAutoscaler"): ("maxReplicas", None)}
"""A scaler's field of the most replicas, and its default (KEDA's is 100)."""


def pod_gpus(pod: Pod, claim_counts: Mapping[str, Any]) -> Any:
    """Devices a pod holds: nvidia.com/gpu (a HAMi slice counts the GPUs it spans), MIG instances
    and the devices of its DRA claims' templates; UNKNOWN if any is unknown."""
    total = 0.0
    for _, container in pod.containers():
        limits = dig(container, "resources", "limits")
        if limits is UNKNOWN:
            return UNKNOWN
        for key, value in mapping(limits).items():
            if key == GPU_RESOURCE or key.startswith(MIG_RESOURCE_PREFIX):
                number = count(value)
                if number is UNKNOWN:
                    return UNKNOWN
                total += number or 0
    for claim in items(pod.spec.get("resourceClaims")):
        template = dig(claim, "resourceClaimTemplateName")
        devices = claim_counts.get(template) if isinstance(template, str) else UNKNOWN
        if devices is UNKNOWN or devices is None:
            return UNKNOWN
        total += devices
    return total


def pod_products(pod: Pod) -> list[str]:
    """The GPU products a pod may run on (nvidia.com/gpu.product by nodeSelector or required
    affinity); empty when any."""
    product = dig(pod.spec, "nodeSelector", GPU_PRODUCT_LABEL)
    if isinstance(product, str):
        return [product]
    found: list[str] = []
    terms = dig(pod.spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
    for term in items(terms):
        for expression in items(dig(term, "matchExpressions")):
            if dig(expression, "key") == GPU_PRODUCT_LABEL and dig(expression, "operator") == "In":
                found += [value for value in items(dig(expression, "values")) if isinstance(value, str) and value not in found]
    return found


def most_replicas(resource: Resource, resources: Sequence[Resource]) -> Any:
    """The most replicas of a workload: its scaler's maximum, else spec.replicas (default 1)."""
    kind = kind_of(resource.resource_type)
    name = dig(resource.props, "metadata", "name")
    for other in resources:
        scaler = SCALERS.get(kind_of(other.resource_type) or ("", ""))
        target = mapping(dig(other.props, "spec", "scaleTargetRef"))
        if scaler and target.get("name") == name and target.get("kind", "Deployment") == kind[1] and \
                same_namespace(namespace_of(other.props), namespace_of(resource.props)):
            most = dig(other.props, "spec", scaler[0])
            return scaler[1] if most is None else count(most)
    replicas = dig(resource.props, "spec", "replicas")
    return 1.0 if replicas is None else count(replicas)


def gpu_budget(resources: Sequence[Resource], config: Optional[Mapping] = None) -> list[Violation]:
    """The stack's GPUs at the most replicas, and what they cost a month at the dearest product
    each workload may run on, stay within the caps the policy configuration sets."""
    config = mapping(config)
    max_gpus, max_cost = count(config.get(MAX_GPUS)) or 0, count(config.get(MAX_MONTHLY_GPU_COST)) or 0
    prices = mapping(config.get(GPU_HOURLY_PRICE))
    if not max_gpus and not max_cost:
        return []
    claim_counts: dict[str, Any] = {}
    for resource in resources:
        if kind_of(resource.resource_type) == ("resource.k8s.io", "ResourceClaimTemplate"):
            requests = items(dig(resource.props, "spec", "spec", "devices", "requests"))
            counts = [count(dig(request, "exactly", "count")) or 1.0 for request in requests]
            claim_counts[dig(resource.props, "metadata", "name")] = UNKNOWN if UNKNOWN in counts else sum(counts)
    gpus, cost, parts, unpriced = 0.0, 0.0, [], []
    for resource in resources:
        kind = kind_of(resource.resource_type)
        if kind not in SCALED_KINDS:
            continue
        pods = pods_of(resource.resource_type, resource.props)
        size = count(dig(resource.props, "spec", "leaderWorkerTemplate", "size")) if kind[0] == "leaderworkerset.x-k8s.io" else 1.0
        per_pod = [pod_gpus(pod, claim_counts) for pod in pods]
        replicas = most_replicas(resource, resources)
        if UNKNOWN in (*per_pod, replicas, size):
            continue  # pulumi up runs the rule again on the known values
        size = size or 1.0
        # A LeaderWorkerSet group: its leader, and size - 1 workers (the leader's template is the
        # workers' when it has none of its own).
        per_replica = per_pod[0] + per_pod[-1] * (size - 1) if len(pods) > 1 else (per_pod[0] * size if pods else 0.0)
        if not per_replica:
            continue
        where = describe(kind[1], resource.props.get("metadata"))
        gpus += per_replica * (replicas or 0)
        parts.append(f"{where}: {show(per_replica)} GPUs x {show(replicas or 0)} replica{'' if replicas == 1 else 's'}")
        products = sorted({product for pod in pods for product in pod_products(pod)})
        known = [prices[product] for product in products if isinstance(count(prices.get(product)), float)]
        if products and len(known) == len(products):
            cost += per_replica * (replicas or 0) * HOURS_PER_MONTH * max(count(price) for price in known)
        else:
            missing = ", ".join(product for product in products if product not in prices) or "any GPU (no nvidia.com/gpu.product pinned)"
            unpriced.append(f"{where} runs on {missing}")
    violations = []
    fix = f"in the policy configuration of this policy ({MAX_GPUS}, {MAX_MONTHLY_GPU_COST}, {GPU_HOURLY_PRICE})"
    if max_gpus and gpus > max_gpus:
        violations.append(Violation(
            f"The stack's vLLM servers take up to {show(gpus)} GPUs at their most replicas ({'; '.join(parts)}), above "
            f"{MAX_GPUS} ({show(max_gpus)}). Lower the most replicas (autoscalingMaxReplicas or replicas) or the GPUs "
            f"per replica (gpuCount), or raise {MAX_GPUS} {fix}."
        ))
    if max_cost and unpriced:
        violations.append(Violation(
            f"The stack's GPU cost cannot be held to {MAX_MONTHLY_GPU_COST} ({show(max_cost)} a month): "
            f"{'; '.join(unpriced)}, with no price in {GPU_HOURLY_PRICE}. Pin the GPU products (gpuProducts) and "
            f"give each a price per GPU-hour {fix}."
        ))
    elif max_cost and cost > max_cost:
        violations.append(Violation(
            f"The stack's GPUs cost up to {cost:,.2f} a month at their most replicas ({'; '.join(parts)}; "
            f"{HOURS_PER_MONTH} h at the dearest product each may run on), above {MAX_MONTHLY_GPU_COST} "
            f"({show(max_cost)}). Lower the most replicas or the GPUs per replica, pin cheaper products, or "
            f"raise {MAX_MONTHLY_GPU_COST} {fix}."
        ))
    return violations


class Policy(NamedTuple):
    name: str
    description: str
    rule: Callable
    config: Optional[dict] = None
    """A stack policy's configuration schema (JSON Schema properties), as --policy-pack-config sets it."""


RESOURCE_POLICIES = (
    Policy("vllm-pinned-images", "Every container and init container runs an image pinned by a tag other than latest, or by digest.", pinned_images),
    Policy("vllm-server-gpu-limits", "The vLLM server container has a GPU limit of at least 1 (nvidia.com/gpu; a MIG instance or DRA claim).", server_gets_gpus),
    Policy("vllm-server-probes", "The vLLM server container has startup, readiness and liveness probes.", server_probes),
    Policy("vllm-server-shm", "A vLLM server with tensor or pipeline parallelism above 1 has a memory-backed /dev/shm.", server_shm_for_parallelism),
    Policy("vllm-no-plain-secret-env", "Environment variables whose names say secret come from a Secret (valueFrom.secretKeyRef), never value.", no_plain_secret_env),
    Policy("vllm-non-root", "Containers run as non-root, without privilege escalation, with every capability dropped.", runs_as_non_root),
)
"""The pack's resource policies (``__main__.py``) and the offline check's (``check.py``): one list."""
STACK_POLICY = Policy(
    "vllm-public-route-needs-api-key",
    "A public route to a vLLM server needs its API key and routes /v1 alone, unless the stack allows public access without a key.",
    public_routes_need_api_key,
    {
        ALLOW_PUBLIC_WITHOUT_API_KEY: {
            "type": "boolean",
            "default": False,
            "description": "Allow public routes to vLLM servers that take no API key, in every stack this "
            "configuration is used for. A stack can allow it for itself with its own "
            "allowPublicWithoutApiKey setting.",
        }
    },
)
BUDGET_POLICY = Policy(
    "vllm-gpu-budget",
    "The stack's GPUs at the most replicas, and their cost a month, stay within the caps of this policy's configuration.",
    gpu_budget,
    {
        MAX_GPUS: {
            "type": "integer",
            "minimum": 0,
            "default": 0,
            "description": "The most GPUs (devices) a stack's vLLM servers may take at their most replicas; 0 for no cap.",
        },
        MAX_MONTHLY_GPU_COST: {
            "type": "number",
            "minimum": 0,
            "default": 0,
            "description": f"The most those GPUs may cost a month ({HOURS_PER_MONTH} h) at the dearest product each "
            "workload may run on, in the currency of gpuHourlyPrice; 0 for no cap.",
        },
        GPU_HOURLY_PRICE: {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0},
            "default": {},
            "description": "The price of a GPU-hour by product, as the node label nvidia.com/gpu.product names it, "
            'e.g. {"NVIDIA-H100-80GB-HBM3": 2.5}. The pack\'s own prices: a stack\'s gpuHourlyPrice does not lower its cap.',
        },
    },
)
STACK_POLICIES = (STACK_POLICY, BUDGET_POLICY)
"""The pack's stack policies: the policy's configuration is each one's own."""
RESOURCE_RULES: tuple[Callable[[str, Mapping], list[str]], ...] = tuple(policy.rule for policy in RESOURCE_POLICIES)
STACK_RULES: tuple[Callable[..., list[Violation]], ...] = tuple(policy.rule for policy in STACK_POLICIES)


def plain(value: Any) -> Any:
    """pulumi-policy's properties as plain dicts and lists, with UNKNOWN where preview cannot
    know a value (pulumi-policy raises UnknownValueError on reading one)."""
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        result = {}
        for key in value:
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence):
        result_list = []
        for index in range(len(value)):
            try:
                result_list.append(plain(value[index]))
            except UnknownValueError:
                result_list.append(UNKNOWN)
        return result_list
    return value


def stack_setting(key: str, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """A setting of the stack under preview, from its own project's namespace. The Pulumi CLI
    hands a policy pack the stack's configuration as JSON in PULUMI_CONFIG and its project's
    name in PULUMI_PROJECT."""
    project = environ.get("PULUMI_PROJECT")
    try:
        config = json.loads(environ.get("PULUMI_CONFIG") or "{}")
    except ValueError:
        return None
    value = config.get(f"{project}:{key}") if project and isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def stack_rule_config(policy_config: Mapping, environ: Mapping[str, str] = os.environ) -> dict:
    """The stack rule's configuration: the policy's own (--policy-pack-config), with
    allowPublicWithoutApiKey also granted by the stack's own setting of that name."""
    config = dict(policy_config)
    by_stack = (stack_setting(ALLOW_PUBLIC_WITHOUT_API_KEY, environ) or "").strip().lower() == "true"
    config[ALLOW_PUBLIC_WITHOUT_API_KEY] = config.get(ALLOW_PUBLIC_WITHOUT_API_KEY) is True or by_stack
    return config


def resource_validation(rule: Callable[[str, Mapping], list[str]]) -> Callable:
    """A ResourceValidationPolicy validate callback that reports each of the rule's messages."""

    def validate(args: Any, report_violation: Callable) -> None:
        for message in rule(args.resource_type, plain(args.props)):
            report_violation(message, None)

    validate.rule = rule  # type: ignore[attr-defined]
    return validate


def stack_validation(rule: Callable[..., list[Violation]]) -> Callable:
    """A StackValidationPolicy validate callback that reports each violation against its resource."""

    def validate(args: Any, report_violation: Callable) -> None:
        resources = [
            Resource(
                resource_type=resource.resource_type,
                props=plain(resource.props),
                urn=resource.urn,
                name=resource.name,
                dependencies=tuple(dependency.urn for dependency in resource.dependencies),
            )
            for resource in args.resources
        ]
        for violation in rule(resources, stack_rule_config(args.get_config())):
            report_violation(violation.message, violation.urn or None)

    validate.rule = rule  # type: ignore[attr-defined]
    return validate
