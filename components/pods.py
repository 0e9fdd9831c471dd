"""Settings every pod of a cluster may need, whoever creates it: pull secrets, priority,
placement, extra environment. Shared by the server's pods and the download Job's."""

import re
from typing import Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from .arguments import DnsSubdomain, Labels, LabelValue, Problems, check, rule
from .escaping import container_text
from .grammar import label_key, secret_key, single_line

SECRET_WORDS = frozenset({"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"})
"""Words of an environment variable's name (split at '_') that say its value is a secret:
HF_TOKEN and AWS_SECRET_ACCESS_KEY are, TOKENIZERS_PARALLELISM is not."""


def looks_secret(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.upper().split("_")))


class SecretKeyArgs(TypedDict):
    """A key of an existing Secret."""

    name: str
    """Name of the Secret."""
    key: str
    """Key inside the Secret."""


class TolerationArgs(TypedDict):
    """A pod toleration, as Kubernetes spells it."""

    key: NotRequired[str]
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: NotRequired[str]
    """Equal (default) or Exists."""
    value: NotRequired[str]
    """Taint value, with operator Equal."""
    effect: NotRequired[str]
    """NoSchedule, PreferNoSchedule or NoExecute; empty tolerates every effect."""


class PodSettingsArgs(TypedDict):
    """Cluster settings for a component's pods."""

    image_pull_secrets: NotRequired[list[str]]
    """Secrets holding credentials for the image registry."""
    priority_class_name: NotRequired[Optional[str]]
    """PriorityClass of the pods."""
    node_selector: NotRequired[dict[str, str]]
    """Node labels the pods require, beside any the component sets itself."""
    tolerations: NotRequired[list[TolerationArgs]]
    """Taints the pods tolerate, beside any the component tolerates itself."""


def env_name(value: str) -> str:
    """An environment variable name a shell can also read: letters, digits and '_'."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", single_line(value)):
        raise ValueError("must be an environment variable name: letters, digits and '_', not starting with a digit")
    return value


def plain_env_name(value: str) -> str:
    """A variable whose value may sit in plain text in the pod spec."""
    if looks_secret(env_name(value)):
        raise ValueError(
            f"{value} looks like a secret, which would sit in plain text in the pod spec; give it from a Secret instead"
        )
    return value


EnvName = rule(env_name)
RULES: dict[str, Any] = {
    "image_pull_secrets": list[DnsSubdomain],  # type: ignore[valid-type]
    "priority_class_name": DnsSubdomain,
    "node_selector": Labels,
    "tolerations.key": rule(lambda value: label_key(value) if value else value),
    "tolerations.operator": Literal["Equal", "Exists"],
    "tolerations.value": LabelValue,
    "tolerations.effect": Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
}
"""Rules for a PodSettingsArgs argument, relative to it (prefix them with the argument's name)."""

SECRET_KEY_RULES: dict[str, Any] = {"name": DnsSubdomain, "key": rule(secret_key)}


def rules_under(argument: str, rules: dict[str, Any]) -> dict[str, Any]:
    return {f"{argument}.{path}": value for path, value in rules.items()}


def tolerations_problems(argument: str) -> Any:
    """A check that each toleration is one Kubernetes accepts (Exists takes no value)."""

    @check(argument)
    def run(args: dict) -> Problems:
        for index, toleration in enumerate(args[argument].get("tolerations", []), start=1):
            if toleration.get("operator") == "Exists" and toleration.get("value"):
                return {f"{argument}.tolerations": f"item {index}: operator Exists takes no value"}
            if not toleration.get("key") and toleration.get("operator", "Equal") != "Exists":
                return {f"{argument}.tolerations": f"item {index}: without a key the operator must be Exists"}
        return {}

    return run


def apply_pod_settings(pod_spec: dict, settings: PodSettingsArgs) -> dict:
    """The pod spec with the settings merged in (selectors and tolerations added to its own)."""
    spec = dict(pod_spec)
    if secrets := settings.get("image_pull_secrets"):
        spec["imagePullSecrets"] = [{"name": name} for name in secrets]
    if priority := settings.get("priority_class_name"):
        spec["priorityClassName"] = priority
    if selector := settings.get("node_selector"):
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **selector}
    if tolerations := settings.get("tolerations"):
        spec["tolerations"] = [*spec.get("tolerations", []), *tolerations]
    return spec


def one_secret_source(value: str, secret: str, what: str) -> Any:
    """A check that a secret is given once: as a value (kept in a Secret) or as an existing Secret."""

    @check(value, secret)
    def run(args: dict) -> Problems:
        if args[value] is not None and args[secret]:
            return {value: f"and {secret} both give {what}; keep one"}
        return {}

    return run


def secret_of(
    name: str, namespace: pulumi.Input[str], labels: dict, key: str, value: pulumi.Input[str], parent: pulumi.Resource
) -> k8s.core.v1.Secret:
    """A Secret holding one value given as a Pulumi secret: the value stays encrypted in the state
    and never appears in a pod spec, which takes it by reference."""
    return k8s.core.v1.Secret(
        name,
        metadata={"name": name, "namespace": namespace, "labels": labels},
        string_data={key: pulumi.Output.secret(value)},
        opts=pulumi.ResourceOptions(parent=parent),
    )


def env_list(plain: dict[str, str], from_secrets: dict[str, SecretKeyArgs]) -> list[dict]:
    """Container env entries: plain values escaped for the kubelet, secrets by reference."""
    entries = [{"name": name, "value": container_text(value)} for name, value in plain.items()]
    entries += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}
        for name, ref in from_secrets.items()
    ]
    return entries


RUN_AS = 10001
"""The one unprivileged user every pod runs as. The download Job writes the weights and the server
reads them; on NFS, where the kubelet does not apply fsGroup, ownership must not depend on the
group, so both run as the same user."""
SCRATCH = "/tmp"
SCRATCH_ENV = {
    # With a read-only root filesystem every cache goes under the scratch emptyDir. vLLM's
    # VLLM_CACHE_ROOT and VLLM_CONFIG_ROOT follow XDG_CACHE_HOME and XDG_CONFIG_HOME
    # (vllm/envs.py); Hugging Face's HF_HOME, FlashInfer, Triton (~/.triton) and the CUDA cache
    # (~/.nv) follow HOME or XDG_CACHE_HOME.
    "HOME": f"{SCRATCH}/home",
    "XDG_CACHE_HOME": f"{SCRATCH}/home/.cache",
    "XDG_CONFIG_HOME": f"{SCRATCH}/home/.config",
    # getpass.getuser(), which PyTorch uses to name its inductor cache, fails for a user
    # without a passwd entry unless USER is set.
    "USER": "vllm",
    "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH}/torchinductor",
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def locked_down(pod_spec: dict, service_account: str, capabilities: tuple[str, ...] = ()) -> dict:
    """The pod spec run as RUN_AS with nothing it does not need: Pod Security's restricted level,
    a read-only root filesystem with a scratch emptyDir at /tmp, its own service account without
    an API token. ``capabilities`` are added back to the main containers only."""
    scratch_mount = {"name": "scratch", "mountPath": SCRATCH}

    def security(key: str) -> dict:
        if key == "initContainers" or not capabilities:
            return CONTAINER_SECURITY
        return {**CONTAINER_SECURITY, "capabilities": {"drop": ["ALL"], "add": list(capabilities)}}

    containers = {
        key: [
            {
                **container,
                "securityContext": security(key),
                "volumeMounts": [*container.get("volumeMounts", []), scratch_mount],
            }
            for container in pod_spec.get(key, [])
        ]
        for key in ("initContainers", "containers")
        if key in pod_spec
    }
    return {
        **pod_spec,
        **containers,
        "volumes": [*pod_spec.get("volumes", []), {"name": "scratch", "emptyDir": {}}],
        "securityContext": POD_SECURITY,
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
    }


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes clients read the token and the cluster's CA (the kubelet's own place for them)."""
API_ACCESS_VOLUME = {
    "name": "api-access",
    "projected": {
        "sources": [
            # A token the kubelet rotates, for the pod's own account.
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            # Published in every namespace by kube-controller-manager's root CA publisher.
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]
    },
}


def ext_proc_container(
    name: str, image: str, args: list[str], ports: tuple[int, int, int], resources: dict, health_service: Optional[str] = None
) -> dict:
    """A Gateway API Inference Extension server (the Endpoint Picker, the body router): ext_proc
    gRPC, gRPC health and metrics on ``ports``, its namespace in NAMESPACE, probed on its health port."""
    grpc, health_port, metrics = ports
    health = {"grpc": {"port": health_port, **({"service": health_service} if health_service else {})}}
    return {
        "name": name,
        "image": image,
        "args": args,
        "env": [{"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [
            {"name": "grpc", "containerPort": grpc, "protocol": "TCP"},
            {"name": "grpc-health", "containerPort": health_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": metrics, "protocol": "TCP"},
        ],
        "resources": resources,
        "readinessProbe": {**health, "periodSeconds": 5},
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 6},
    }


def role_for(
    account: k8s.core.v1.ServiceAccount, metadata: dict, rules: list[dict], parent: pulumi.Resource
) -> k8s.rbac.v1.RoleBinding:
    """A Role of these rules, bound to the account: both named and labeled by ``metadata``, the
    account's own. The binding is returned, once the Role and the account exist."""
    name = metadata["name"]
    role = k8s.rbac.v1.Role(name, metadata=metadata, rules=rules, opts=pulumi.ResourceOptions(parent=parent))
    return k8s.rbac.v1.RoleBinding(
        name,
        metadata=metadata,
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        subjects=[{"kind": "ServiceAccount", "name": name, "namespace": metadata["namespace"]}],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[role, account]),
    )


def projected_api_access(pod_spec: dict, container: str) -> dict:
    """A locked-down pod spec whose one container calls the API: its account's token and the CA,
    mounted explicitly where clients look for them, while the pod automounts nothing."""
    mount = {"name": API_ACCESS_VOLUME["name"], "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
    containers = [
        {**c, "volumeMounts": [*c.get("volumeMounts", []), mount]} if c["name"] == container else c
        for c in pod_spec["containers"]
    ]
    return {**pod_spec, "containers": containers, "volumes": [*pod_spec.get("volumes", []), API_ACCESS_VOLUME]}
