"""The stack's configuration: every key of Pulumi.yaml, parsed into one typed model.

Values arrive as the Pulumi CLI passes them to a program: strings, with arrays as JSON.
This module only parses them (as the CLI's own type check reads them); what a value must
look like is the business of the component it feeds (``stack.checks`` runs their rules and
reports them under config keys). Every key is parsed on its own, so one pass finds every
key that cannot be read; a key that cannot be read is left ``INVALID``.
"""

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, get_args, get_origin

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PASS_THROUGH_NAMESPACES = ("kubernetes", "pulumi")
"""Config namespaces of the provider and the engine: read by them, not by this program."""
CREDENTIAL_KEYS = ("apiKey", "hubToken")
"""Keys whose value is a credential: only ever set encrypted."""
HIDDEN_VALUE_KEYS = frozenset({*CREDENTIAL_KEYS, "extraArgs", "serverEnv"})
"""Keys whose value an error never repeats: an item given by mistake may hold a secret. Nor does
it repeat the value of any key the stack holds encrypted."""
INT64_MAX = 2**63 - 1


class Invalid:
    """The value of a key that is missing or could not be parsed (its problem is reported)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = Invalid()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    key: str
    """The config key, without the project namespace."""
    message: str
    """What is wrong and what is allowed."""


class ConfigError(pulumi.RunError):
    """The stack configuration is invalid; nothing has been created."""

    def __init__(
        self, project: str, problems: list[Problem], values: dict[str, Any], secret: frozenset[str] = frozenset()
    ):
        self.problems = problems
        hidden = HIDDEN_VALUE_KEYS | secret
        lines = [f"invalid configuration, nothing was created ({len(problems)} problem(s)):"]
        for problem in problems:
            shown = ""
            if problem.key in values and problem.key not in hidden:
                shown = f" = {json.dumps(values[problem.key])}"
            name = problem.key if ":" in problem.key else f"{project}:{problem.key}"
            # A message of several problems, one per line, goes on lines of its own.
            message = "\n    " + problem.message.replace("\n", "\n    ") if "\n" in problem.message else f" {problem.message}"
            lines.append(f"  {name}{shown}:{message}")
        super().__init__("\n".join(lines))


class StackConfig(BaseModel):
    """All settings of one stack. Field aliases are the config keys; Pulumi.yaml documents them."""

    model_config = ConfigDict(alias_generator=to_camel, frozen=True, protected_namespaces=())

    name: str
    namespace: str
    create_namespace: bool
    preflight: str

    model_id: str
    model_source: str
    model_revision: Optional[str]
    served_model_name: str
    model_endpoint: Optional[str]
    model_allow_patterns: list[str]
    model_ignore_patterns: list[str]
    model_verify: bool
    hub_token: Optional[str]
    hub_token_secret_name: Optional[str]
    hub_token_secret_key: str
    model_layers: int
    model_kv_heads: int
    model_head_dim: int
    model_expert_fraction: float
    model_size_gb: int = Field(alias="modelSizeGB")
    model_revisions_to_keep: int

    storage_size: str
    storage_class: Optional[str]
    storage_access_mode: str
    existing_claim: Optional[str]
    downloader_image: Optional[str]
    downloader_install_client: bool
    download_timeout_minutes: int
    download_max_workers: int
    download_stall_timeout_seconds: int
    downloader_package_index: Optional[str]
    protect_model_volume: bool

    image: str
    vllm_release: Optional[str]
    replicas: int
    layout: Optional[str]
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    kv_offload_gi_b: int = Field(alias="kvOffloadGiB")
    gpu_memory_utilization: float
    max_model_len: int
    extra_args: list[str]
    lora_adapters: list[dict[str, Any]]
    cpu: str
    memory: str
    shm_size: Optional[str]
    api_key: Optional[str]
    api_key_secret_name: Optional[str]
    api_key_secret_key: str
    allow_public_without_api_key: bool
    startup_timeout_minutes: int
    model_load_min_read_m_bps: int = Field(alias="modelLoadMinReadMBps")
    model_load_parallel_read_m_bps: int = Field(alias="modelLoadParallelReadMBps")
    node_cache: bool
    node_cache_read_m_bps: int = Field(alias="nodeCacheReadMBps")
    node_cache_host_path: str
    node_cache_namespace: Optional[str]
    node_cache_reserve_g_b: int = Field(alias="nodeCacheReserveGB")
    image_pre_pull: bool
    image_pre_pull_priority_class: Optional[str]
    model_volume_is_network: bool
    safetensors_load_strategy: Optional[str]
    safetensors_prefetch_threads: int
    image_pull_minutes: int
    drain_seconds: int
    max_surge: int
    accept_service_gap: bool
    server_env: dict[str, str]
    server_secret_env: dict[str, dict[str, str]]

    image_registry: Optional[str]
    image_pull_secrets: list[str]
    priority_class_name: Optional[str]
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]

    gpu_backend: str
    gpu_count: int
    gpu_products: list[str]
    gpu_hourly_price: dict[str, float]
    gpu_price_currency: str
    gpus_per_node: int
    nccl_socket_ifname: Optional[str]
    nccl_ib_hca: Optional[str]
    gpu_memory_gi_b: int = Field(alias="gpuMemoryGiB")
    gpu_mig_profile: Optional[str]
    dra_device_class: str
    dra_min_memory_gi_b: int = Field(alias="draMinMemoryGiB")
    dra_selectors: list[str]
    kubernetes_version: Optional[str]
    gpu_quota: int
    gpu_memory_quota_mi_b: int = Field(alias="gpuMemoryQuotaMiB")
    gpu_runtime_class: Optional[str]
    gpu_tolerate_taint: bool
    hami_memory_mib: int = Field(alias="hamiMemoryMiB")
    hami_memory_percent: int
    hami_cores: int
    hami_gpu_types: list[str]
    hami_exclude_gpu_types: list[str]
    hami_node_policy: Optional[str]
    hami_gpu_policy: Optional[str]
    hami_enforce_eager: Optional[bool]
    hami_disable_custom_all_reduce: Optional[bool]

    host: Optional[str]
    exposure_route: str
    endpoint_picker_image: str
    endpoint_picker_failure_mode: str
    endpoint_picker_flow_control: bool
    ingress_class: str
    gateway_name: Optional[str]
    gateway_namespace: Optional[str]
    gateway_listener: Optional[str]
    path_prefix: Optional[str]
    tls: bool
    tls_cluster_issuer: Optional[str]
    tls_secret_name: Optional[str]
    stream_timeout_seconds: int
    route_wait_minutes: int
    max_request_body_size: str
    allowed_client_namespaces: list[str]
    network_policies: bool
    ingress_wait_for_address: bool

    autoscaling_enabled: bool
    autoscaling_min_replicas: int
    autoscaling_max_replicas: int
    autoscaling_engine: str
    autoscaling_signals: list[dict[str, Any]]
    autoscaling_scale_up_pods: int
    autoscaling_scale_up_period_seconds: int
    autoscaling_scale_down_period_seconds: int
    autoscaling_fallback_replicas: int
    autoscaling_scale_to_zero: bool
    autoscaling_activation_query: Optional[str]
    autoscaling_polling_seconds: int
    monitoring_alerts: bool
    monitoring_dashboard: bool
    autoscaling_prometheus_address: str
    autoscaling_scale_down_stabilization_seconds: int
    autoscaling_pod_monitor: bool
    autoscaling_pod_monitor_labels: dict[str, str]

    explicit: frozenset[str] = frozenset()
    """Keys the stack sets to something other than Pulumi.yaml's default."""
    secret: frozenset[str] = frozenset()
    """Keys whose value the stack holds encrypted (pulumi config set --secret)."""

    @field_validator("*", mode="before")
    @classmethod
    def _from_config_string(cls, value: Any, info) -> Any:
        """Read a config string as the CLI's type check does (pulumi workspace.ValidateConfigValue)."""
        if not isinstance(value, str):
            return value
        annotation = cls.model_fields[info.field_name].annotation
        optional = type(None) in get_args(annotation)
        if optional and value == "":
            return None
        kind = next((a for a in get_args(annotation) if a is not type(None)), annotation) if optional else annotation
        return _parse(value, kind, info.field_name)

    def valid(self, *keys: str) -> bool:
        """Whether every one of these config keys has a value that could be read."""
        return all(self.value(key) is not INVALID for key in keys)

    def value(self, key: str) -> Any:
        """The value of a config key."""
        return getattr(self, FIELD_OF_KEY[key])

    def set_or_none(self, key: str) -> Any:
        """The value of a key the stack sets explicitly, else None (the component's default applies)."""
        return self.value(key) if key in self.explicit else None


FIELD_OF_KEY = {
    field.alias: name for name, field in StackConfig.model_fields.items() if name not in ("explicit", "secret")
}
"""Config key -> model field."""


def _parse(text: str, kind: Any, field: str) -> Any:
    if kind is bool:
        if text not in ("true", "false"):
            raise ValueError("must be true or false")
        return text == "true"
    if kind is int:
        if not re.fullmatch(r"[+-]?[0-9]+", text) or len(text.lstrip("+-")) > 19 or abs(int(text)) > INT64_MAX:
            raise ValueError("must be a whole number (a 64-bit integer)")
        return int(text)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
            raise ValueError('must be a decimal number written as a string, e.g. "0.9"')
        return number
    if get_origin(kind) in (list, dict):
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            items = None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError('must be a list of strings, e.g. ["a", "b"]')
        return ITEM_PARSERS[field](items) if field in ITEM_PARSERS else items
    return text


def _pairs(example: str) -> Callable[[list[str]], dict[str, str]]:
    """A parser of NAME=value strings into a mapping."""

    def parse(items: list[str]) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in items:
            key, equals, value = item.partition("=")
            if not equals or key in pairs:
                reason = "repeats a name" if equals else "has no '='"
                raise ValueError(f"{item!r} {reason}; give each as {example}")
            pairs[key] = value
        return pairs

    return parse


def _secret_refs(items: list[str]) -> dict[str, dict[str, str]]:
    """NAME=secret:key strings as environment variables taken from Secrets."""
    refs = {}
    for name, ref in _pairs("NAME=secret-name:key, e.g. HF_TOKEN=hub-token:token")(items).items():
        secret, colon, key = ref.partition(":")
        if not colon:
            raise ValueError(f"{name}={ref!r} names no key; give it as NAME=secret-name:key")
        refs[name] = {"name": secret, "key": key}
    return refs


def _tolerations(items: list[str]) -> list[dict[str, str]]:
    """key=value:Effect, key:Effect or key, as kubectl writes taints, into tolerations."""
    tolerations = []
    for item in items:
        taint, _, effect = item.partition(":")
        key, equals, value = taint.partition("=")
        toleration = {"key": key, "operator": "Equal" if equals else "Exists"}
        toleration |= {"value": value} if equals else {}
        toleration |= {"effect": effect} if effect else {}
        tolerations.append(toleration)
    return tolerations


def _lora_adapters(items: list[str]) -> list[dict[str, Any]]:
    """name=owner/repo[@revision]:rank strings as adapters (the component checks each part)."""
    adapters = []
    for item in items:
        name, equals, rest = item.partition("=")
        repository, colon, rank = rest.rpartition(":")
        if not equals or not colon or not re.fullmatch("[0-9]{1,9}", rank):
            raise ValueError(f"{item!r} is not name=owner/repo[@revision]:rank, e.g. sql=acme/qwen3-sql-lora@v1:16")
        model_id, _, revision = repository.partition("@")
        adapters.append({"name": name, "model_id": model_id, "revision": revision or None, "rank": int(rank)})
    return adapters


GPU_TARGET = 70.0
"""The source document's target GPU utilisation."""


def _signals(items: list[str]) -> list[dict[str, Any]]:
    """signal=target strings (latency:<histogram>[:p<quantile>][:<window>]=seconds) as signals."""
    signals = []
    for item in items:
        name, equals, target = item.partition("=")
        kind, *details = name.split(":")
        if not equals and kind != "gpu":
            raise ValueError(f"{item!r} has no target; give each as signal=target, e.g. queue=5")
        try:
            signal: dict[str, Any] = {"kind": kind, "target": float(target) if equals else GPU_TARGET}
        except ValueError:
            raise ValueError(f"{item!r}: the target must be a number") from None
        if details:
            signal["histogram"] = details[0]
        for detail in details[1:]:
            if detail.startswith("p") and detail[1:].replace(".", "", 1).isdigit():
                signal["quantile"] = float(detail[1:]) / 100 if float(detail[1:]) >= 1 else float(detail[1:])
            else:
                signal["window"] = detail
        signals.append(signal)
    return signals


def _prices(items: list[str]) -> dict[str, float]:
    """PRODUCT=price strings (a price per GPU-hour, at least 0) as a mapping."""
    example = "PRODUCT=price per GPU-hour, e.g. NVIDIA-H100-80GB-HBM3=2.50"
    prices = {}
    for product, text in _pairs(example)(items).items():
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            problem = "is negative" if text.startswith("-") else "is not a number"
            raise ValueError(f"{product}={text}: the price {problem}; give each as {example} (0 or more)")
        prices[product] = float(text)
    return prices


ITEM_PARSERS: dict[str, Callable[[list[str]], Any]] = {
    "gpu_hourly_price": _prices,
    "autoscaling_signals": _signals,
    "autoscaling_pod_monitor_labels": _pairs("key=value, e.g. release=kube-prometheus-stack"),
    "node_selector": _pairs("key=value, e.g. node-pool=gpu"),
    "server_env": _pairs("NAME=value, e.g. NCCL_SOCKET_IFNAME=eth0"),
    "server_secret_env": _secret_refs,
    "tolerations": _tolerations,
    "lora_adapters": _lora_adapters,
}
"""Array keys whose items are parsed further, by field."""


def parse_values(
    values: dict[str, Any], defaults: dict[str, str], secret: frozenset[str] = frozenset()
) -> tuple[StackConfig, list[Problem]]:
    """Each known key parsed on its own; problems for unknown, missing and unreadable keys."""
    config = StackConfig.model_construct(
        **{field: INVALID for field in FIELD_OF_KEY.values()},
        explicit=frozenset(key for key, value in values.items() if defaults.get(key) != value),
        secret=secret,
    )
    problems = []
    for key, value in values.items():
        if key not in FIELD_OF_KEY:
            close = difflib.get_close_matches(key, sorted(FIELD_OF_KEY), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; Pulumi.yaml lists every setting"
            problems.append(Problem(key=key, message=f"is not a setting of this program{hint}"))
            continue
        try:
            StackConfig.__pydantic_validator__.validate_assignment(config, FIELD_OF_KEY[key], value)
        except ValidationError as error:
            message = error.errors()[0]["msg"].removeprefix("Value error, ")
            problems.append(Problem(key=key, message=message))
    for key in sorted(FIELD_OF_KEY.keys() - values.keys()):
        problems.append(Problem(key=key, message="is required; set it in Pulumi.<stack>.yaml (Pulumi.yaml describes it)"))
    return config, problems


def namespaced_values(project: str, config: dict[str, str]) -> tuple[dict[str, str], list[Problem]]:
    """The project's own config, keyed without the namespace, and a problem for each foreign namespace.

    Keys of the provider and the engine pass through; any other namespace is almost always a
    misspelling of the project's name (``vllm_serving:gpuCount``), which Pulumi would ignore.
    """
    own, problems = {}, []
    for key, value in config.items():
        namespace, _, name = key.partition(":")
        if namespace == project:
            own[name] = value
        elif namespace not in PASS_THROUGH_NAMESPACES:
            close = difflib.get_close_matches(namespace, [project, *PASS_THROUGH_NAMESPACES], n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}:{name}?" if close else f"this program reads {project}:{name}"
            problems.append(Problem(key=key, message=f"is in namespace {namespace}, which nothing reads; {hint}"))
    return own, problems


def running_config() -> dict[str, str]:
    """Every config value the engine passes to the running program, namespaced."""
    # pulumi.Config reads one known key at a time; finding unknown keys needs the whole map.
    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def secret_keys(project: str, config: dict[str, str]) -> frozenset[str]:
    """The project's keys whose values the engine passes as secrets, without the namespace."""
    prefix = f"{project}:"
    return frozenset(key[len(prefix) :] for key in config if key.startswith(prefix) and runtime_config.is_config_secret(key))
