"""ModelStore: model weights staged once from ModelScope (or the Hugging Face Hub) onto a shared volume.

One Job per model revision (and per way of staging it: job_key) runs ``stage_model.py``
(shipped in a ConfigMap), which downloads into ``<mount>/<model id>/<revision>`` and writes a
completion marker last. By default the Job first installs the hub client this project is tested
with into a scratch directory, every package of it pinned by hash (``stage_client/<source>.txt``,
written by tools/stage_client_lock.py for the default image's Python and platform), so the image
only needs python3 and pip. Pulumi waits for the Job to complete, and ``model_path`` resolves
only then, so a server that waits for it is created after the weights are in place. Pods never
download, so they never race.
"""

import hashlib
import json
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator, Field

from . import grammar
from .arguments import (
    ArgsSpec,
    ByteQuantity,
    CommandWord,
    DnsLabel,
    DnsSubdomain,
    HttpUrl,
    Image,
    Labels,
    Problems,
    check,
    int_range,
    rule,
    with_defaults,
)
from .escaping import container_text, container_texts
from .kept import kept_metadata, kept_options
from .labels import HOSTNAME_LABEL, object_labels, selector_labels
from .network import egress_only_to, url_port
from .pods import RULES as POD_RULES
from .pods import (
    SCRATCH,
    SCRATCH_ENV,
    SECRET_KEY_RULES,
    PodSettingsArgs,
    SecretKeyArgs,
    TolerationArgs,
    apply_pod_settings,
    env_list,
    locked_down,
    one_secret_source,
    rules_under,
    secret_of,
    tolerations_problems,
)
from .stage_model import MARKER_NAME

STAGE_SCRIPT = Path(__file__).with_name("stage_model.py")
SCRIPT_MOUNT = "/opt/model-store"
CLIENTS = {
    "modelscope": ("modelscope==1.40.2", "modelscope-hub==0.5.1"),
    "huggingface": ("huggingface-hub==0.35.3", "hf-xet==1.8.0"),
}
"""The hub client stage_model.py is tested with, per source (the same pins as requirements-dev.txt);
client_lock(source) pins it and all its dependencies by hash."""
LOCK_DIR = Path(__file__).with_name("stage_client")
HUBS = {"modelscope": "https://www.modelscope.cn", "huggingface": "https://huggingface.co"}
"""Where each client goes without an endpoint (modelscope/hub/constants.py; huggingface_hub constants.py)."""
DEFAULT_REVISIONS = {"modelscope": "master", "huggingface": "main"}
"""Each hub's default branch."""
TOKEN_ENV = {"modelscope": "MODELSCOPE_API_TOKEN", "huggingface": "HF_TOKEN"}
"""The variable each client reads its token from (stage_model.py)."""
HUB_TOKEN_KEY = "token"
CLIENT_DIR = f"{SCRATCH}/hub-client"
CLIENT_LOCK = "stage-client.txt"
"""The lock's name in the ConfigMap, beside stage_model.py."""
# Only the wheels the lock names, each checked against its sha256, nothing resolved and nothing
# built at run time: --require-hashes refuses any file whose hash the lock does not list, --no-deps
# installs no package the lock leaves out, --only-binary=:all: runs no package's build code.
INSTALL_AND_RUN = (
    "python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check "
    "--require-hashes --no-deps --only-binary=:all: "
    '--target "$CLIENT_DIR" -r "$CLIENT_LOCK" && PYTHONPATH="$CLIENT_DIR" exec python3 "$@"'
)
COMPONENT = "model-store"
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}
JOB_SUFFIX = "-stage-12345678"
"""What the Job's name adds to the component's name: the Job labels its pods with its name, a label value."""
MAX_TIMEOUT_MINUTES = 7 * 24 * 60


class ServerPodsArgs(TypedDict):
    """The pods that serve from the claim, as the download Job must find them."""

    labels: dict[str, str]
    """Labels that select them (VLLMServer's selector labels)."""
    tolerations: list[TolerationArgs]
    """The taints they tolerate (GPU nodes' taints)."""


class AdapterRepoArgs(TypedDict):
    """A LoRA adapter's repository on the same hub, staged beside the model."""

    name: str
    """The adapter's name: its directory (<mount_path>/adapters/<name>/<revision>) and what clients
    pass as `model` (VLLMServer's lora_adapters)."""
    model_id: str
    """The adapter's repository on the hub, owner/name."""
    revision: NotRequired[Optional[str]]
    """Revision to stage; None: the hub's default branch."""


class ModelStoreArgs(TypedDict):
    """Arguments of ModelStore."""

    namespace: pulumi.Input[str]
    """Namespace of the claim and the Job."""
    model_id: str
    """Model id on the hub, owner/name."""
    source: NotRequired[str]
    """The hub: modelscope or huggingface (the Hugging Face Hub). Default modelscope."""
    revision: NotRequired[Optional[str]]
    """Revision (branch, tag or commit) to stage. None: the hub's default branch, master on
    ModelScope, main on Hugging Face."""
    endpoint: NotRequired[Optional[str]]
    """Hub URL, for a mirror; None uses the client's default."""
    allow_patterns: NotRequired[list[str]]
    """Glob patterns of files to download; empty downloads what vLLM loads (the safetensors
    weights and every other file, without duplicate .bin/.pt weights or original/)."""
    ignore_patterns: NotRequired[list[str]]
    """Glob patterns of files never to download."""
    verify: NotRequired[bool]
    """On every run, re-hash each file against the sha256 the marker records and fetch again the
    ones that differ; otherwise a re-run checks names and sizes. Default false."""
    stall_timeout_seconds: NotRequired[int]
    """End the attempt (the Job retries and resumes) when no byte arrives for this long. Default 120."""
    token_secret: NotRequired[Optional[SecretKeyArgs]]
    """A key of an existing Secret holding the hub token, for private or gated models."""
    token: NotRequired[Optional[pulumi.Input[str]]]
    """The hub token as a Pulumi secret; the component keeps it in a Secret <name>-hub-token. At
    most one of token and token_secret."""
    image: NotRequired[str]
    """Image of the Job; needs python3 and pip (the vLLM image has both). Default vllm/vllm-openai:v0.34.0."""
    install_client: NotRequired[bool]
    """Install the tested hub client when the Job starts, every package pinned by hash (needs a Python
    package index). False runs the client the image ships. Default true."""
    size: NotRequired[Optional[str]]
    """Size of the claim to create, a Kubernetes quantity. Required without existing_claim."""
    storage_class: NotRequired[Optional[str]]
    """Storage class of the claim to create; None uses the cluster default."""
    access_mode: NotRequired[str]
    """Access mode of the claim to create, ReadWriteOnce or ReadWriteMany (ReadWriteOncePod is
    refused: an upgrade's Job could never mount it beside the server). Default ReadWriteOnce."""
    server_pods: NotRequired[Optional[ServerPodsArgs]]
    """The server pods that mount the claim. On a ReadWriteOnce claim the Job prefers their node
    and tolerates their taints: on an upgrade the server holds the claim on its node, and a Job
    elsewhere could not attach it. None: the Job schedules anywhere."""
    existing_claim: NotRequired[Optional[str]]
    """Stage onto this existing PersistentVolumeClaim instead of creating one."""
    mount_path: NotRequired[str]
    """Where the claim is mounted, in the Job and in server pods. Default /models."""
    timeout_minutes: NotRequired[int]
    """How long the Job may run before it is failed. Default 240."""
    max_workers: NotRequired[int]
    """Files downloaded in parallel. Default 4."""
    package_index: NotRequired[Optional[str]]
    """Python package index (a mirror) the Job installs the client from; None uses pip's default."""
    model_size_gb: NotRequired[Optional[float]]
    """Size of the model's weights in GB; with it, a claim too small for revisions_to_keep of them is refused."""
    revisions_to_keep: NotRequired[int]
    """Complete revisions of the model kept on the claim: before staging, the Job removes the oldest
    beyond this many, keeping the newest other one, which the server still uses during an upgrade.
    At least 2; 0 keeps every revision. Default 2."""
    protect_claim: NotRequired[bool]
    """Protect the claim it creates: Pulumi refuses to delete it, and a destroy stops at it. Default
    false; either way the claim is kept in the cluster on destroy, adopted by the next up, and never
    replaced (a change of its storage class or access mode fails instead)."""
    pod: NotRequired[PodSettingsArgs]
    """Pull secrets, priority class, extra node selector and tolerations of the Job's pod."""
    network_policy: NotRequired[bool]
    """Create a NetworkPolicy that lets the Job reach only DNS, the hub and the package index. Default true."""
    adapters: NotRequired[list[AdapterRepoArgs]]
    """LoRA adapters the same Job stages after the model, each into <mount_path>/adapters/<name>/<revision>
    with its own completion marker, keeping revisions_to_keep of each; the Job completes only when
    all are staged. Default none."""


DEFAULTS: dict[str, Any] = {
    "image": "vllm/vllm-openai:v0.34.0",
    "source": "modelscope",
    "revision": None,
    "endpoint": None,
    "allow_patterns": [],
    "ignore_patterns": [],
    "verify": False,
    "stall_timeout_seconds": 120,
    "token_secret": None,
    "token": None,
    "install_client": True,
    "size": None,
    "storage_class": None,
    "access_mode": "ReadWriteOnce",
    "server_pods": None,
    "existing_claim": None,
    "mount_path": "/models",
    "timeout_minutes": 240,
    "max_workers": 4,
    "package_index": None,
    "model_size_gb": None,
    "revisions_to_keep": 2,
    "protect_claim": False,
    "pod": {},
    "network_policy": True,
    "adapters": [],
}
ADAPTERS_DIR = "adapters"
"""Adapters live under <mount_path>/adapters/, apart from the models' <owner>/<name> directories."""
DEFAULT_PACKAGE_INDEX = "https://pypi.org/simple"
GIGABYTE = 10**9


def model_dir(mount_path: str, model_id: str, revision: str) -> str:
    """The directory one revision of a model is staged in; ValueError if it would leave mount_path."""
    path = posixpath.normpath(f"{mount_path}/{model_id}/{revision}")
    if posixpath.commonpath([mount_path, path]) != mount_path or path.count("/") < mount_path.count("/") + 3:
        raise ValueError(f"{model_id}/{revision} does not name a directory inside {mount_path}")
    return path


def revision_of(args: ModelStoreArgs) -> str:
    """The revision staged: as given, or the hub's default branch."""
    args = with_defaults(args, DEFAULTS)
    return args["revision"] or DEFAULT_REVISIONS[args["source"]]


def model_path(args: ModelStoreArgs) -> str:
    """Where the revision is staged: <mount_path>/<model id>/<revision>."""
    args = with_defaults(args, DEFAULTS)
    return model_dir(args["mount_path"], args["model_id"], revision_of(args))


def adapter_paths(args: ModelStoreArgs) -> dict[str, str]:
    """Where each adapter is staged, by name: <mount_path>/adapters/<name>/<revision>."""
    args = with_defaults(args, DEFAULTS)
    default = DEFAULT_REVISIONS[args["source"]]
    return {
        adapter["name"]: model_dir(args["mount_path"], f"{ADAPTERS_DIR}/{adapter['name']}", adapter.get("revision") or default)
        for adapter in args["adapters"]
    }


def job_key(args: ModelStoreArgs, name: str) -> str:
    """A short digest of all the Job runs: its spec and its ConfigMap's files. It names the Job,
    so a new revision, or any change to how it is staged, is a new Job, created before the old
    one is deleted. A Job cannot be changed in place, and replacing one under its own name deletes
    it first (delete_before_replace), which made the engine replace a server whose state still
    held a property dependency on it (components/ordering.py)."""
    args = with_defaults(args, DEFAULTS)
    claim = args["existing_claim"] or f"{name}-models"
    runs = {"spec": job_spec(args, name, claim, f"{name}-stage-script"), "files": script_files(args)}
    # Values not known while the program runs (a namespace from another resource, a token) count by their place.
    text = json.dumps(runs, sort_keys=True, default=lambda _: "<output>")
    return hashlib.sha256(text.encode()).hexdigest()[:8]


COMMIT_ID = re.compile(r"[0-9a-f]{40}")
"""A full commit id: what both hubs' revisions resolve to (git object names)."""


def moving_revision(args: ModelStoreArgs, adapter: Optional[AdapterRepoArgs] = None) -> Optional[str]:
    """Why the model's revision (or an adapter's) can change under the same name, or None for a full commit id."""
    args = with_defaults(args, DEFAULTS)
    revision = revision_of({**args, "revision": adapter.get("revision")} if adapter else args)
    if COMMIT_ID.fullmatch(revision):
        return None
    what = "the hub's default branch" if revision == DEFAULT_REVISIONS[args["source"]] else "a branch or tag, not a commit"
    field, path = (f"adapter {adapter['name']}'s revision", adapter_paths(args)[adapter["name"]]) if adapter else ("revision", model_path(args))
    pin = f"pin {field} to a 40-character commit id (a first run records it as commit in {path}/{MARKER_NAME})"
    if args["source"] == "modelscope" and not args["install_client"]:
        # modelscope 1.30.0 (vllm/vllm-openai:v0.11.0) checks the revision against the branch and tag
        # names alone (hub/api.py HubApi.get_valid_revision_detail): it refuses a commit id.
        pin = f"pin a tag, or {pin} with install_client true: the image's own modelscope may take no commit id"
    return (
        f"{field} {revision} is {what}: the Job stages whatever commit it names when the Job runs, a change "
        f"upstream starts no new download, and a re-run after upstream moved fails rather than mix two commits' "
        f"files; {pin}"
    )


def locked_image(source: str) -> str:
    """The image whose Python and platform the source's lock was made for (its header)."""
    return re.search(r"^# image: (\S+)$", client_lock(source).read_text(), re.M)[1]


def foreign_image(args: ModelStoreArgs) -> Optional[str]:
    """Why the locked client may not install on the Job's image, or None when it was locked for it."""
    args = with_defaults(args, DEFAULTS)
    locked = locked_image(args["source"])
    # A registry mirror's copy of the image (harbor.internal/hub/vllm/...) is the same image.
    if not args["install_client"] or args["image"] == locked or args["image"].endswith("/" + locked):
        return None
    return (
        f"the hub client's lock pins wheels for {locked}'s Python and platform; on image {args['image']} with "
        "another Python the Job's install fails on their hashes: stage with that image, or set install_client "
        "false to run the image's own client"
    )


def _model_id(value: str) -> str:
    grammar.path_segments(value, "owner/name, e.g. Qwen/Qwen3-0.6B")
    if value.count("/") != 1:
        raise ValueError("must be owner/name, e.g. Qwen/Qwen3-0.6B")
    return value


def _revision(value: str) -> str:
    return grammar.path_segments(value, "a branch, tag or commit, e.g. master or v1.0.0")


@check("existing_claim", "size", "storage_class", "access_mode", "protect_claim")
def _claim_settings(args: dict) -> Problems:
    if not args["existing_claim"]:
        return {} if args["size"] else {"size": "is required to create a claim (or name an existing_claim)"}
    given = [f for f in ("size", "storage_class", "access_mode", "protect_claim") if args[f] not in (None, DEFAULTS[f])]
    return {field: "has no effect with existing_claim; remove it" for field in given}


@check("access_mode")
def _claim_outlives_one_pod(args: dict) -> Problems:
    # A stack cannot tell a first `up` from an upgrade, and on every upgrade the server still
    # holds the claim while the new revision's Job must mount it; a second replica or a rollout's
    # new pod needs it too. The scheduler keeps a ReadWriteOncePod claim's second pod Pending
    # (VolumeRestrictions), so the Job would wait out its whole timeout.
    if args["access_mode"] == "ReadWriteOncePod":
        return {
            "access_mode": "ReadWriteOncePod lets one pod at a time mount the claim: once the server runs, "
            "an upgrade's download Job, a rollout's new pod or a second replica could never start. Use "
            "ReadWriteOnce (the Job then runs beside the server) or ReadWriteMany"
        }
    return {}


@check("size", "model_size_gb", "revisions_to_keep", "existing_claim")
def _claim_holds_the_revisions(args: dict) -> Problems:
    if args["existing_claim"] or not args["size"] or args["model_size_gb"] is None:
        return {}
    revisions = args["revisions_to_keep"] or 2
    needed = args["model_size_gb"] * revisions * GIGABYTE
    if grammar.parse_quantity(args["size"]) < needed:
        return {
            "size": f"cannot hold {revisions} revisions of a {args['model_size_gb']:g} GB model "
            f"({needed / GIGABYTE:g} GB): during an upgrade the new revision downloads while the server still "
            "reads the old one; raise it"
        }
    return {}


@check("package_index", "install_client")
def _index_needs_the_install(args: dict) -> Problems:
    if args["package_index"] and not args["install_client"]:
        return {"package_index": "has no effect when install_client is false (nothing is installed); remove it"}
    return {}


@check("adapters", "model_id")
def _adapters_apart(args: dict) -> Problems:
    names = [adapter["name"] for adapter in args["adapters"]]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        return {"adapters": f"names {', '.join(repeated)} more than once; give each adapter a name of its own"}
    if names and args["model_id"].split("/")[0] == ADAPTERS_DIR:
        return {"model_id": f"its owner {ADAPTERS_DIR} is the directory the adapters are staged in; stage the adapters from a model of another owner"}
    return {}


def _revisions_to_keep(value: int) -> int:
    if value == 1:
        raise ValueError("must be 0 (keep all) or at least 2: the revision the server uses must survive an upgrade")
    return value


SPEC = ArgsSpec(
    "ModelStore",
    ModelStoreArgs,
    DEFAULTS,
    rules={
        "namespace": DnsLabel,
        "model_id": rule(_model_id),
        "source": Literal["modelscope", "huggingface"],
        "revision": rule(_revision),
        "endpoint": HttpUrl,
        "allow_patterns": list[CommandWord],  # type: ignore[valid-type]
        "ignore_patterns": list[CommandWord],  # type: ignore[valid-type]
        "stall_timeout_seconds": int_range(10, 3600),
        **rules_under("token_secret", SECRET_KEY_RULES),
        "image": Image,
        "size": ByteQuantity,
        "storage_class": DnsSubdomain,
        "access_mode": Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"],
        "server_pods.labels": Labels,
        **rules_under("server_pods", {key: value for key, value in POD_RULES.items() if key.startswith("tolerations")}),
        "existing_claim": DnsSubdomain,
        "mount_path": rule(grammar.absolute_path),
        "timeout_minutes": int_range(1, MAX_TIMEOUT_MINUTES),
        "max_workers": int_range(1, 64),
        "package_index": HttpUrl,
        "model_size_gb": Annotated[float, Field(gt=0, le=1e6)],
        "revisions_to_keep": Annotated[int, Field(ge=0, le=100), AfterValidator(_revisions_to_keep)],
        **rules_under("pod", POD_RULES),
        "adapters.name": rule(grammar.adapter_name),
        "adapters.model_id": rule(_model_id),
        "adapters.revision": rule(_revision),
    },
    checks=(
        _adapters_apart,
        _claim_settings,
        _claim_outlives_one_pod,
        _claim_holds_the_revisions,
        one_secret_source("token", "token_secret", "the hub token"),
        _index_needs_the_install,
        tolerations_problems("pod"),
    ),
    name_rule=lambda name: grammar.dns_label(name, grammar.DNS_LABEL_MAX - len(JOB_SUFFIX)),
)


def model_store_problems(args: ModelStoreArgs, name: Optional[str] = None) -> Problems:
    """What is wrong with the arguments (and the name, if given), keyed by argument name."""
    return SPEC.problems(args, name)


def stage_args(args: ModelStoreArgs, target: str) -> list[str]:
    """stage_model.py and its arguments."""
    args = with_defaults(args, DEFAULTS)
    command = [
        f"{SCRIPT_MOUNT}/{STAGE_SCRIPT.name}",
        "--model-id", args["model_id"],
        "--revision", revision_of(args),
        "--target", target,
        "--max-workers", str(args["max_workers"]),
    ]
    if args["source"] != "modelscope":
        command += ["--source", args["source"]]
    if args["revisions_to_keep"]:
        command += ["--keep-revisions", str(args["revisions_to_keep"])]
    if args["endpoint"]:
        command += ["--endpoint", args["endpoint"]]
    for pattern in args["allow_patterns"]:
        command += ["--allow-pattern", pattern]
    for pattern in args["ignore_patterns"]:
        command += ["--ignore-pattern", pattern]
    if args["verify"]:
        command.append("--verify")
    if args["stall_timeout_seconds"] != DEFAULTS["stall_timeout_seconds"]:
        command += ["--stall-timeout", str(args["stall_timeout_seconds"])]
    for adapter, path in zip(args["adapters"], adapter_paths(args).values()):
        command += ["--adapter", adapter["model_id"], posixpath.basename(path), path]
    return command


def token_ref(name: str, args: ModelStoreArgs) -> Optional[SecretKeyArgs]:
    """Where the Job reads the hub token: the given Secret, or the one made for token."""
    args = with_defaults(args, DEFAULTS)
    if args["token"] is not None:
        return {"name": f"{name}-hub-token", "key": HUB_TOKEN_KEY}
    return args["token_secret"]


def stage_container_command(args: ModelStoreArgs, target: str, token: Optional[SecretKeyArgs] = None) -> dict:
    """command, args and env of the Job's container; the hub token, if any, by reference."""
    args = with_defaults(args, DEFAULTS)
    env = [
        # modelscope keeps lock and session files here even with local_dir.
        {"name": "MODELSCOPE_CACHE", "value": f"{SCRATCH}/modelscope/cache"},
        {"name": "MODELSCOPE_HOME", "value": f"{SCRATCH}/modelscope/home"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": key, "value": value} for key, value in SCRATCH_ENV.items()),
        *env_list({}, {TOKEN_ENV[args["source"]]: token} if token else {}),
    ]
    script_args = container_texts(stage_args(args, target))
    if not args["install_client"]:
        return {"command": ["python3", *script_args], "env": env}
    env += [
        {"name": "CLIENT_LOCK", "value": f"{SCRIPT_MOUNT}/{CLIENT_LOCK}"},
        {"name": "CLIENT_DIR", "value": CLIENT_DIR},
    ]
    if args["package_index"]:
        # pip reads its index from the environment: no URL is spliced into the shell text.
        env.append({"name": "PIP_INDEX_URL", "value": container_text(args["package_index"])})
    # sh -c SCRIPT NAME ARGS...: the script sees ARGS as "$@".
    return {"command": ["sh", "-c", INSTALL_AND_RUN, "stage-model"], "args": script_args, "env": env}


def client_lock(source: str) -> Path:
    """The lock of the source's client: every package pinned to one wheel by its sha256."""
    return LOCK_DIR / f"{source}.txt"


def script_files(args: ModelStoreArgs) -> dict[str, str]:
    """The ConfigMap's files: the staging script and, when the Job installs the client, its lock."""
    args = with_defaults(args, DEFAULTS)
    files = {STAGE_SCRIPT.name: STAGE_SCRIPT.read_text()}
    if args["install_client"]:
        files[CLIENT_LOCK] = client_lock(args["source"]).read_text()
    return files


def stage_name(name: str) -> str:
    """The name of the Job's ServiceAccount and NetworkPolicy."""
    return f"{name}-stage"


def egress_ports(args: ModelStoreArgs) -> list[int]:
    """The TCP ports the Job calls: the hub's, and the package index's when it installs the client."""
    args = with_defaults(args, DEFAULTS)
    ports = [url_port(args["endpoint"] or HUBS[args["source"]])]
    if args["install_client"]:
        ports.append(url_port(args["package_index"] or DEFAULT_PACKAGE_INDEX))
    return ports


def beside_the_server(args: ModelStoreArgs) -> dict:
    """Where the Job's pod goes on a claim that attaches to one node: preferably beside the server's
    pods, which hold it during an upgrade, with their tolerations to reach their (GPU) node.

    Preferred, not required: on the first `up` no server pod exists yet, and a required affinity
    to pods the Job's own labels do not match would never schedule.
    """
    args = with_defaults(args, DEFAULTS)
    pods = args["server_pods"]
    if not pods or args["existing_claim"] or args["access_mode"] == "ReadWriteMany":
        return {}
    term = {"labelSelector": {"matchLabels": pods["labels"]}, "topologyKey": HOSTNAME_LABEL}
    placement: dict = {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}}
    if pods["tolerations"]:
        placement["tolerations"] = pods["tolerations"]
    return placement


def job_spec(args: ModelStoreArgs, name: str, claim_name: pulumi.Input[str], script_config_map: str) -> dict:
    """The download Job's spec: one pod, retried with resume, bounded in time."""
    args = with_defaults(args, DEFAULTS)
    mount_path = args["mount_path"]
    target = model_path(args)
    return {
        "backoffLimit": 4,
        "activeDeadlineSeconds": args["timeout_minutes"] * 60,
        "template": {
            "metadata": {"labels": object_labels(name, COMPONENT)},
            "spec": locked_down(apply_pod_settings({
                "restartPolicy": "Never",
                **beside_the_server(args),
                "containers": [
                    {
                        "name": "stage-model",
                        "image": args["image"],
                        **stage_container_command(args, target, token_ref(name, args)),
                        # Large downloads are killed by tight memory limits (kserve #5326).
                        "resources": {
                            "requests": {"cpu": "1", "memory": "2Gi"},
                            "limits": {"cpu": "4", "memory": "8Gi"},
                        },
                        "volumeMounts": [
                            {"name": "models", "mountPath": mount_path},
                            {"name": "script", "mountPath": SCRIPT_MOUNT, "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "models", "persistentVolumeClaim": {"claimName": claim_name}},
                    {"name": "script", "configMap": {"name": script_config_map}},
                ],
            }, args["pod"]), service_account=stage_name(name)),
        },
    }


class ModelStore(pulumi.ComponentResource):
    """A claim holding one model revision, and the Job that stages it there once."""

    claim_name: pulumi.Output[str]
    """The PersistentVolumeClaim the model is on."""
    mount_path: pulumi.Output[str]
    """Where pods mount the claim."""
    model_path: pulumi.Output[str]
    """The model directory; resolves once the download Job has completed."""
    marker_name: pulumi.Output[str]
    """File name, inside model_path, whose presence means the store is complete."""
    adapter_paths: pulumi.Output[dict[str, str]]
    """Each adapter's directory, by name (marked complete by marker_name like the model's); resolves
    once the download Job has completed."""

    def __init__(self, name: str, args: ModelStoreArgs, opts: Optional[pulumi.ResourceOptions] = None):
        args = SPEC.resolve(name, args)
        super().__init__("vllm-serving:index:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = args["namespace"]
        labels = object_labels(name, COMPONENT)
        mount_path = args["mount_path"]

        if args["existing_claim"]:
            claim_name: pulumi.Input[str] = args["existing_claim"]
        else:
            # The weights took hours to stage: a destroy leaves the claim (and its volume) in the
            # cluster, and the next up adopts it (kept.py); protect_claim also makes Pulumi refuse
            # to delete it.
            claim = k8s.core.v1.PersistentVolumeClaimPatch(
                f"{name}-models",
                metadata=kept_metadata(
                    "PersistentVolumeClaim", {"name": f"{name}-models", "namespace": namespace, "labels": labels}
                ),
                spec={
                    "accessModes": [args["access_mode"]],
                    "resources": {"requests": {"storage": args["size"]}},
                    **({"storageClassName": args["storage_class"]} if args["storage_class"] else {}),
                },
                opts=kept_options("kubernetes:core/v1:PersistentVolumeClaim", self, protect=args["protect_claim"]),
            )
            claim_name = claim.metadata.name

        script = k8s.core.v1.ConfigMap(
            f"{name}-stage-script",
            metadata={"name": f"{name}-stage-script", "namespace": namespace, "labels": labels},
            data=script_files(args),
            opts=child,
        )
        # Its own identity, with no API token: the Job never calls the Kubernetes API.
        account = k8s.core.v1.ServiceAccount(
            stage_name(name),
            metadata={"name": stage_name(name), "namespace": namespace, "labels": labels},
            automount_service_account_token=False,
            opts=child,
        )
        if args["network_policy"]:
            k8s.networking.v1.NetworkPolicy(
                stage_name(name),
                metadata={"name": stage_name(name), "namespace": namespace, "labels": labels},
                spec=egress_only_to(selector_labels(name, COMPONENT), egress_ports(args)),
                opts=child,
            )
        needs: list[pulumi.Resource] = [script, account]
        if args["token"] is not None:
            needs.append(secret_of(f"{name}-hub-token", namespace, labels, HUB_TOKEN_KEY, args["token"], self))
        job_name = f"{name}-stage-{job_key(args, name)}"
        timeout = f"{args['timeout_minutes'] + 5}m"
        job = k8s.batch.v1.Job(
            job_name,
            # A failed Job is replaced on the next up, and the new one resumes from the volume;
            # without this the provider awaits the failed Job again and fails at once
            # (provider.go Diff, replaceUnready for Jobs).
            metadata={"name": job_name, "namespace": namespace, "labels": labels, "annotations": REPLACE_UNREADY},
            spec=job_spec(args, name, claim_name, f"{name}-stage-script"),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=needs,
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
        )

        adapters_moving = (moving_revision(args, adapter) for adapter in args["adapters"])
        for warning in filter(None, (moving_revision(args), *adapters_moving, foreign_image(args))):
            pulumi.log.warn(f"ModelStore {name}: {warning}", resource=self)

        path = model_path(args)
        self.claim_name = pulumi.Output.from_input(claim_name)
        self.mount_path = pulumi.Output.from_input(mount_path)
        self.model_path = job.metadata.apply(lambda _: path)
        self.marker_name = pulumi.Output.from_input(MARKER_NAME)
        adapters = adapter_paths(args)
        self.adapter_paths = job.metadata.apply(lambda _: adapters)
        self.register_outputs(
            {
                "claimName": self.claim_name,
                "mountPath": self.mount_path,
                "modelPath": self.model_path,
                "markerName": self.marker_name,
                "adapterPaths": self.adapter_paths,
            }
        )
