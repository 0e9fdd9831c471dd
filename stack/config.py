"""The stack's configuration: every key of Pulumi.yaml, validated as one model.

Values arrive as Pulumi passes them to a program: strings, with arrays as JSON. Per-key
rules live here; rules between keys in ``stack.checks``; ``stack.loading`` runs both.
"""

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from .quantity import parse_quantity

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
LABEL_PAIR = re.compile(r"^([a-z0-9A-Z./-]{1,253})=([a-z0-9A-Z]([-_.a-z0-9A-Z]{0,61}[a-z0-9A-Z])?)?$")
MAX_NAME_LENGTH = 40


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    key: str
    """The config key, without the project namespace."""
    message: str
    """What is wrong and what is allowed."""


class ConfigError(pulumi.RunError):
    """The stack configuration is invalid; nothing has been created."""

    def __init__(self, project: str, problems: list[Problem], values: dict[str, Any]):
        self.problems = problems
        lines = [f"invalid configuration, nothing was created ({len(problems)} problem(s)):"]
        for problem in problems:
            shown = f" = {json.dumps(values[problem.key])}" if problem.key in values else ""
            lines.append(f"  {project}:{problem.key}{shown}: {problem.message}")
        super().__init__("\n".join(lines))


class StackConfig(BaseModel):
    """All settings of one stack. Field aliases are the config keys; Pulumi.yaml documents them."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, protected_namespaces=())

    name: str
    namespace: str
    create_namespace: bool

    model_id: str
    model_revision: str = Field(min_length=1, pattern=r"^\S+$")
    served_model_name: str = Field(min_length=1, pattern=r"^\S+$")
    model_endpoint: Optional[str]
    model_allow_patterns: list[str]

    storage_size: str
    storage_class: Optional[str]
    storage_access_mode: str
    existing_claim: Optional[str]
    downloader_image: Optional[str]
    downloader_install_client: bool
    download_timeout_minutes: int
    download_max_workers: int

    image: str
    replicas: int = Field(ge=1)
    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    gpu_memory_utilization: float
    max_model_len: int
    extra_args: list[str]
    cpu: str
    memory: str
    shm_size: Optional[str]
    api_key_secret_name: Optional[str]
    api_key_secret_key: str
    startup_timeout_minutes: int
    max_surge: int = Field(ge=0)
    max_unavailable: int = Field(ge=0)

    gpu_backend: str
    gpu_count: int
    gpu_product: Optional[str]
    gpu_runtime_class: Optional[str]
    gpu_tolerate_taint: bool
    hami_memory_mib: int = Field(alias="hamiMemoryMiB")
    hami_memory_percent: int
    hami_cores: int
    hami_gpu_types: list[str]
    hami_exclude_gpu_types: list[str]
    hami_node_policy: Optional[str]
    hami_gpu_policy: Optional[str]

    host: Optional[str]
    exposure_route: str
    ingress_class: str
    gateway_name: Optional[str]
    gateway_namespace: Optional[str]
    gateway_listener: Optional[str]
    tls: bool
    tls_cluster_issuer: Optional[str]
    tls_secret_name: Optional[str]
    stream_timeout_seconds: int
    max_request_body_size: str

    autoscaling_enabled: bool
    autoscaling_min_replicas: int
    autoscaling_max_replicas: int
    autoscaling_queue_depth_target: int
    autoscaling_prometheus_address: str
    autoscaling_scale_down_stabilization_seconds: int
    autoscaling_pod_monitor: bool
    autoscaling_pod_monitor_labels: list[str]

    @field_validator("*", mode="before")
    @classmethod
    def _from_config_string(cls, value: Any, info) -> Any:
        """Pulumi passes every value as a string: "" leaves an optional key unset, arrays are JSON."""
        field = cls.model_fields[info.field_name]
        if value == "" and type(None) in getattr(field.annotation, "__args__", ()):
            return None
        if isinstance(value, str) and getattr(field.annotation, "__origin__", None) is list:
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("must be a list of strings, e.g. [\"a\", \"b\"]") from None
        return value

    @field_validator("name")
    @classmethod
    def _name_is_short_dns_label(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > MAX_NAME_LENGTH:
            raise ValueError(
                f"must be a DNS label of at most {MAX_NAME_LENGTH} characters (lowercase letters, digits, '-'), "
                "e.g. vllm-qwen3-235b; objects derive their names from it"
            )
        return value

    @field_validator("namespace", "gateway_namespace", "gateway_listener")
    @classmethod
    def _dns_label(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not DNS_LABEL.match(value) or len(value) > 63):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63 characters")
        return value

    @field_validator(
        "existing_claim", "storage_class", "api_key_secret_name", "gpu_runtime_class", "ingress_class",
        "gateway_name", "tls_cluster_issuer", "tls_secret_name",
    )
    @classmethod
    def _object_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not DNS_SUBDOMAIN.match(value):
            raise ValueError(
                "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', e.g. nfs-client"
            )
        return value

    @field_validator("api_key_secret_key")
    @classmethod
    def _secret_key(cls, value: str) -> str:
        if not SECRET_KEY.match(value):
            raise ValueError("must be a Secret key: letters, digits, '-', '_' and '.'")
        return value

    @field_validator("image", "downloader_image")
    @classmethod
    def _pinned_image(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            check_image_pinned(value)
        return value

    @field_validator("storage_size", "cpu", "memory", "shm_size")
    @classmethod
    def _quantity(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            parse_quantity(value)
        return value

    @field_validator("autoscaling_pod_monitor_labels")
    @classmethod
    def _label_pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            if not LABEL_PAIR.match(pair):
                raise ValueError(f"{pair!r} is not a label key=value, e.g. release=kube-prometheus-stack")
        return value

    def pod_monitor_labels(self) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in self.autoscaling_pod_monitor_labels)


def check_image_pinned(image: str) -> None:
    """Raise ValueError unless the image is pinned by a tag other than latest, or by digest."""
    if "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        raise ValueError("has no tag; pin a release, e.g. vllm/vllm-openai:v0.11.0, or a digest")
    if tag == "latest":
        raise ValueError("uses the moving tag latest; pin a release, e.g. vllm/vllm-openai:v0.11.0, or a digest")


def config_keys() -> set[str]:
    """Every config key the program knows."""
    return {field.alias for field in StackConfig.model_fields.values()}


def project_values(project: str) -> dict[str, Any]:
    """The config values of the project's namespace, keyed without the namespace."""
    # pulumi.Config reads one known key at a time; finding unknown keys needs the whole map.
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{project}:"
    return {key[len(prefix):]: value for key, value in merged.items() if key.startswith(prefix)}


def validation_problems(error: ValidationError) -> list[Problem]:
    """pydantic's errors as problems, each naming its config key."""
    problems = []
    for item in error.errors():
        key = str(item["loc"][0]) if item["loc"] else ""
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, sorted(config_keys()), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; Pulumi.yaml lists every setting"
            message = f"is not a setting of this program{hint}"
        elif item["type"] == "missing":
            message = "is required; set it in Pulumi.<stack>.yaml (Pulumi.yaml describes it)"
        else:
            message = item["msg"].removeprefix("Value error, ")
        problems.append(Problem(key=key, message=message))
    return problems
