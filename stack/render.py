"""Offline render: run the stack program under Pulumi's mock runtime and write what it creates.

    python -m stack.render dev [--out rendered/dev]
    python -m stack.render --stack-file /elsewhere/Pulumi.staging.yaml

No cluster, credentials or Pulumi CLI are needed. The program and components run exactly as
under ``pulumi up``; every Kubernetes object they register is written as YAML that
``kubectl apply`` accepts, one file per object plus ``all.yaml``, with the stack outputs in
``outputs.json``, each object's resource options in ``options.json`` and what a reviewer checks
(images, GPUs, CPU and memory, storage, hosts, replicas, options) in ``summary.md``, the table
printed. Secret values are never written.
"""

import argparse
import json
import logging
import re
import runpy
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pulumi
import yaml
from pulumi.runtime import mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.rpc import _special_secret_sig as SECRET_SIGNATURE
from pulumi.runtime.rpc import _special_sig_key as SIGNATURE_KEY
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from vllm_serving_components.gpu_claim import GPU_PRODUCT_LABEL
from vllm_serving_components.multinode import LWS_NAME_LABEL
from vllm_serving_components.rollout import scaled

from .config import ConfigError, namespaced_values
from .loading import parse_stack_config
from .project import PROJECT_DIR, StackFileError, read_project, stack_config
REDACTED = "<redacted>"
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
APPLY_ORDER = [
    "Namespace",
    "ResourceQuota",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "ResourceClaimTemplate",
    "NetworkPolicy",
    "Job",
    "Deployment",
    "LeaderWorkerSet",
    "PodDisruptionBudget",
    "Service",
    "Ingress",
    "HTTPRoute",
    "ScaledObject",
    "HorizontalPodAutoscaler",
    "PodMonitor",
    "PrometheusRule",
]


@dataclass(frozen=True)
class Options:
    """The resource options a registration carried: the part of the plan manifests do not show."""

    depends_on: frozenset[str] = frozenset()
    """What it waits for, as Kind/name (components as their type token/name)."""
    timeouts: dict[str, str] = field(default_factory=dict)
    """Custom timeouts by operation (create, update, delete)."""
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()
    adopts_existing: bool = False
    """A Patch resource (components/kept.py): creates the object, or adopts it if it exists."""


class RecordingMonitor(mocks.MockMonitor):
    """The mock monitor, also keeping each registration's resource options by URN."""

    def __init__(self, mocks_impl: mocks.Mocks):
        super().__init__(mocks_impl)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request):  # noqa: N802 - the monitor's RPC name
        response = super().RegisterResource(request)
        self.requests[response.urn] = request
        return response

    def options(self, urn: str) -> Options:
        request = self.requests.get(urn)
        if request is None:
            return Options()
        timeouts = request.customTimeouts
        return Options(
            depends_on=frozenset(self._describe(dependency) for dependency in request.dependencies),
            timeouts={op: getattr(timeouts, op) for op in ("create", "update", "delete") if getattr(timeouts, op)},
            protect=request.protect,
            retain_on_delete=request.retainOnDelete,
            delete_before_replace=request.deleteBeforeReplace,
            replace_on_changes=tuple(request.replaceOnChanges),
            ignore_changes=tuple(request.ignoreChanges),
            adopts_existing=request.type.startswith("kubernetes:") and request.type.endswith("Patch"),
        )

    def _describe(self, urn: str) -> str:
        registration = self.resources.get(urn)
        state = registration.state if registration else {}
        if isinstance(state, dict) and "kind" in state:
            return f"{state['kind']}/{plain(state.get('metadata', {})).get('name', '')}"
        return f"{_type_chain(urn)[-1]}/{urn.rsplit('::', 1)[-1]}"


@dataclass(frozen=True)
class RenderedObject:
    manifest: dict
    """The object as kubectl would apply it."""
    component: str
    """Type token of the component that created it, or "" for the stack itself."""
    options: Options = Options()
    """Its resource options: dependencies, timeouts, protect, retain and replace behaviour."""

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.manifest["metadata"].get("namespace", "")


@dataclass(frozen=True)
class Rendering:
    stack: str
    objects: list[RenderedObject]
    outputs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    """What the program warned of (pulumi.log.warn), as a preview shows it."""

    def find(self, kind: str, name: str) -> dict:
        """The manifest of one object; KeyError if the stack does not create it."""
        for obj in self.objects:
            if obj.kind == kind and obj.name == name:
                return obj.manifest
        raise KeyError(f"{kind}/{name}")

    def only(self, kind: str) -> dict:
        """The manifest of the one object of a kind; ValueError unless there is exactly one."""
        (manifest,) = [obj.manifest for obj in self.objects if obj.kind == kind]
        return manifest

    def options(self, kind: str, name: Optional[str] = None) -> Options:
        """The resource options of an object (the only one of its kind when no name is given)."""
        (found,) = [obj.options for obj in self.objects if obj.kind == kind and name in (None, obj.name)]
        return found


class EchoMocks(mocks.Mocks):
    """Every resource's state is its inputs, as a provider would return for these objects."""

    def new_resource(self, args: mocks.MockResourceArgs):
        return f"{args.name}-id", args.inputs

    def call(self, args: mocks.MockCallArgs):
        return {}, None


def plain(value: Any) -> Any:
    """A registered value as Kubernetes wants it, with every Pulumi secret redacted.

    The mock runtime returns every number as a float, and a value built from a secret Output
    inside Pulumi's secret envelope, with the secret in plain text.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and value.get(SIGNATURE_KEY) == SECRET_SIGNATURE:
        # A secret mapping keeps its keys (a Secret's data stays a mapping kubectl accepts).
        secret = value.get("value")
        return {key: REDACTED for key in secret} if isinstance(secret, dict) else REDACTED
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def redact(manifest: dict) -> dict:
    """The manifest with every Secret value replaced."""
    if manifest.get("kind") != "Secret":
        return manifest
    redacted = dict(manifest)
    for field in ("data", "stringData"):
        if field in redacted:
            redacted[field] = {key: REDACTED for key in redacted[field]}
    return redacted


def _type_chain(urn: str) -> list[str]:
    """The types of a resource's parents and its own, outermost first."""
    return urn.split("::")[2].split("$")


def _component_of(urn: str) -> str:
    types = _type_chain(urn)
    parent = types[-2] if len(types) > 1 else ""
    return "" if parent == "pulumi:pulumi:Stack" else parent


def _apply_rank(obj: RenderedObject) -> tuple:
    kind_rank = APPLY_ORDER.index(obj.kind) if obj.kind in APPLY_ORDER else len(APPLY_ORDER)
    return kind_rank, obj.kind, obj.namespace, obj.name


async def _stack_outputs() -> dict[str, Any]:
    root = settings.get_root_resource()
    outputs = {}
    for key, value in root.outputs.items():
        output = pulumi.Output.from_input(value)
        outputs[key] = REDACTED if await output.is_secret() else plain(await output.future())
    return outputs


class WarningCollector(logging.Handler):
    """Keeps the warnings the mock engine logs (pulumi.log.warn under mocks goes to its logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())


def run_under_mocks(
    program: Callable[[], Any],
    project: str,
    stack: str,
    config: dict[str, str],
    monitor: Optional[mocks.MockMonitor] = None,
    secret_keys: Optional[list[str]] = None,
) -> Rendering:
    """Run a Pulumi program under the mock runtime until every registration has finished.

    Pass a monitor to see what was registered even when the program raises.
    """
    monitor = monitor or RecordingMonitor(EchoMocks())
    warnings = WarningCollector()
    logger = logging.Logger("stack.render")  # not registered: nothing else logs through it
    logger.addHandler(warnings)
    settings.ROOT.set(None)
    mocks.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor, logger=logger)
    set_all_config(config, secret_keys or [])
    _sync_await(run_pulumi_func(program))
    registered = list(monitor.resources.items())
    outputs = _sync_await(_stack_outputs())
    recorded = monitor.options if isinstance(monitor, RecordingMonitor) else lambda urn: Options()
    objects = [
        RenderedObject(manifest=redact(plain(registration.state)), component=_component_of(urn), options=recorded(urn))
        for urn, registration in registered
        if _type_chain(urn)[-1].startswith("kubernetes:")
    ]
    return Rendering(stack=stack, objects=sorted(objects, key=_apply_rank), outputs=outputs, warnings=warnings.messages)


def render_stack(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    monitor: Optional[mocks.MockMonitor] = None,
    stack_file: Optional[Path] = None,
) -> Rendering:
    """Run the stack's own __main__.py under mocks and collect its Kubernetes objects and outputs.

    ``stack_file`` reads the stack's config from that file instead of the project's
    Pulumi.<stack>.yaml (a stack kept elsewhere, rendered with this project's schema and program).
    Raises ConfigError (invalid config, nothing registered) or StackFileError.
    """
    project = read_project(project_dir)
    program = project_dir / "__main__.py"
    if not program.is_file():
        raise StackFileError(f"{project_dir} has no __main__.py; point --project-dir at this program's folder")
    settings = stack_config(project, stack, stack_file)
    if settings.problems:
        # The CLI would refuse the file; report that together with every other problem.
        values, foreign = namespaced_values(project.name, settings.values)
        secret = frozenset(key.split(":", 1)[1] for key in settings.secret_keys if key.startswith(f"{project.name}:"))
        parse_stack_config(project.name, values, project.defaults(), (*settings.problems, *foreign), secret)
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    return run_under_mocks(
        lambda: runpy.run_path(str(program), run_name="__main__"),
        project.name,
        stack,
        settings.values,
        monitor,
        settings.secret_keys,
    )


def write_rendering(rendering: Rendering, out_dir: Path) -> list[Path]:
    """Write one YAML file per object, all.yaml and outputs.json; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.yaml"):
        stale.unlink()
    written = []
    for index, obj in enumerate(rendering.objects, start=1):
        path = out_dir / f"{index:02d}-{obj.kind.lower()}-{obj.name}.yaml"
        path.write_text(yaml.dump(obj.manifest, Dumper=DUMPER, sort_keys=True))
        written.append(path)
    combined = out_dir / "all.yaml"
    combined.write_text(yaml.dump_all([obj.manifest for obj in rendering.objects], Dumper=DUMPER, sort_keys=True))
    outputs = out_dir / "outputs.json"
    outputs.write_text(json.dumps(rendering.outputs, indent=2, sort_keys=True) + "\n")
    options = out_dir / "options.json"
    options.write_text(json.dumps(options_document(rendering.objects), indent=2, sort_keys=True) + "\n")
    markdown = out_dir / "summary.md"
    markdown.write_text(markdown_summary(rendering))
    return [*written, combined, outputs, options, markdown]


# --- What a reviewer checks ------------------------------------------------------------------
#
# Pure functions of the rendered objects (manifests and recorded options): the table that
# `python -m stack.render` prints and the Markdown of summary.md, for a pull-request comment.

TABLE_WIDTH = 120
"""The printed table wraps detail lines to this many columns."""
LABEL_WIDTH = 10
PLAIN_RESOURCES = ("cpu", "memory", "ephemeral-storage")
SCALERS = ("ScaledObject", "HorizontalPodAutoscaler")
DEPENDS_ON_NOTE = "dependsOn leaves out the Namespace each object lives in."


def object_key(manifest: dict) -> str:
    """Kind/namespace/name (Kind/name when cluster-scoped): how options.json and the review name an object."""
    metadata = manifest.get("metadata") or {}
    namespace = metadata.get("namespace")
    return "/".join(part for part in (manifest.get("kind", ""), namespace, metadata.get("name", "")) if part)


def options_json(options: Options) -> dict[str, Any]:
    """The options that are set, under Pulumi's names."""
    found: dict[str, Any] = {}
    if options.timeouts:
        found["customTimeouts"] = dict(options.timeouts)
    if options.retain_on_delete:
        found["retainOnDelete"] = True
    if options.protect:
        found["protect"] = True
    if options.replace_on_changes:
        found["replaceOnChanges"] = list(options.replace_on_changes)
    if options.delete_before_replace:
        found["deleteBeforeReplace"] = True
    if options.ignore_changes:
        found["ignoreChanges"] = list(options.ignore_changes)
    if options.adopts_existing:
        found["adoptsExisting"] = True
    if options.depends_on:
        found["dependsOn"] = sorted(options.depends_on)
    return found


def options_document(objects: Sequence[RenderedObject]) -> dict[str, dict[str, Any]]:
    """options.json: each object's options that are set, by object_key."""
    return {object_key(obj.manifest): options_json(obj.options) for obj in objects}


def describe_options(options: dict[str, Any]) -> str:
    """Options as options_json gives them, in one line: customTimeouts create 80m, update 161m; protect."""
    parts = []
    for name, value in options.items():
        if name == "dependsOn":
            continue
        if name == "customTimeouts":
            parts.append("customTimeouts " + ", ".join(f"{op} {value[op]}" for op in ("create", "update", "delete") if op in value))
        elif value is True:
            parts.append(name)
        else:
            parts.append(f"{name} [{', '.join(value)}]")
    return "; ".join(parts)


def object_details(obj: RenderedObject, objects: Sequence[RenderedObject]) -> list[tuple[str, str]]:
    """What a reviewer checks of one object, as (label, text): images, GPUs, CPU and memory,
    replicas or scaling bounds, storage, hosts, quotas, and the resource options that are set.
    ``objects`` are all the stack's objects (an autoscaler sets a workload's replicas)."""
    manifest = obj.manifest
    spec = manifest.get("spec") or {}
    details: list[tuple[str, str]] = []
    templates = _pod_templates(manifest)
    if templates:
        details += _workload_details(obj.kind, spec, templates)
    if obj.kind in ("Deployment", "StatefulSet", "ReplicaSet", "LeaderWorkerSet"):
        details.append(("replicas", _replicas(obj, objects)))
    if obj.kind in ("Deployment", "LeaderWorkerSet"):
        details.append(("rollout", _rollout(obj, objects)))
    if obj.kind == "PodDisruptionBudget":
        details.append(("drain", _drain(obj, objects)))
    if obj.kind == "ScaledObject":
        low, high = _scaling_bounds(manifest)
        details.append(("replicas", f"{low}-{high} of {_target(spec)}"))
        triggers = [_trigger(trigger) for trigger in spec.get("triggers") or []]
        if triggers:
            details.append(("triggers", ", ".join(triggers)))
    if obj.kind == "HorizontalPodAutoscaler":
        low, high = _scaling_bounds(manifest)
        details.append(("replicas", f"{low}-{high} of {_target(spec)}"))
        metrics = [_hpa_metric(metric) for metric in spec.get("metrics") or []]
        if metrics:
            details.append(("metrics", ", ".join(metrics)))
    if obj.kind == "PersistentVolumeClaim":
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "?")
        storage_class = spec.get("storageClassName")
        modes = ", ".join(spec.get("accessModes") or []) or "no access mode"
        details.append(("storage", f"{size}, class {storage_class if storage_class is not None else '(cluster default)'}, {modes}"))
    if obj.kind == "Ingress":
        details += [("host", text) for text in _ingress_hosts(spec)]
    if obj.kind == "HTTPRoute":
        details += [("host", text) for text in _route_hosts(spec, obj.namespace)]
    if obj.kind == "ResourceQuota":
        hard = (spec.get("hard") or {}).items()
        details.append(("quota", ", ".join(f"{key}: {value}" for key, value in hard) or "none"))
    if obj.kind == "ResourceClaimTemplate":
        details += [("devices", text) for text in _claim_devices(spec)]
    options = options_json(obj.options)
    if text := describe_options(options):
        details.append(("options", text))
    own_namespace = f"Namespace/{obj.namespace}"
    if dependencies := [d for d in options.get("dependsOn", []) if d != own_namespace]:
        details.append(("dependsOn", ", ".join(dependencies)))
    return details


def table_lines(objects: Sequence[RenderedObject], width: int = TABLE_WIDTH) -> list[str]:
    """One line per object (kind, namespace, name, component) and under it, indented, what a
    reviewer checks, each detail wrapped at commas to fit ``width`` columns."""
    rows = [("KIND", "NAMESPACE", "NAME", "COMPONENT")]
    rows += [(o.kind, o.namespace or "-", o.name, _component_name(o) or "-") for o in objects]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()

    lines = [line(rows[0])]
    indent = " " * (2 + LABEL_WIDTH + 1)
    for obj, row in zip(objects, rows[1:], strict=True):
        lines.append(line(row))
        for label, text in object_details(obj, objects):
            wrapped = _wrap(text, width - len(indent))
            lines.append(f"  {label.ljust(LABEL_WIDTH)} {wrapped[0]}")
            lines += [indent + more for more in wrapped[1:]]
    return lines


def summary(rendering: Rendering, width: int = TABLE_WIDTH) -> str:
    """The printed table of the objects, what to check of each, and the stack outputs."""
    lines = table_lines(rendering.objects, width)
    lines.append(f"\n{len(rendering.objects)} objects for stack {rendering.stack}; {DEPENDS_ON_NOTE[0].lower()}{DEPENDS_ON_NOTE[1:]}")
    lines.append("Outputs:")
    lines += [f"  {key}: {json.dumps(value)}" for key, value in sorted(rendering.outputs.items())]
    if rendering.warnings:
        lines.append("Warnings:")
        lines += [textwrap.fill(warning, width, initial_indent="  - ", subsequent_indent="    ") for warning in rendering.warnings]
    return "\n".join(lines)


def markdown_summary(rendering: Rendering, heading: str = "###") -> str:
    """summary.md: the same summary as a Markdown table, for a pull-request comment."""
    lines = [
        f"{heading} Stack `{rendering.stack}`: {len(rendering.objects)} objects",
        "",
        "| Kind | Namespace | Name | Component | What to check |",
        "|---|---|---|---|---|",
    ]
    for obj in rendering.objects:
        details = "<br>".join(f"**{label}** {_cell(text)}" for label, text in object_details(obj, rendering.objects)) or "-"
        cells = (obj.kind, obj.namespace or "-", obj.name, _component_name(obj) or "-")
        lines.append("| " + " | ".join([*(_cell(cell) for cell in cells), details]) + " |")
    lines += ["", DEPENDS_ON_NOTE, "", "| Output | Value |", "|---|---|"]
    lines += [f"| {_cell(key)} | {_code(json.dumps(value))} |" for key, value in sorted(rendering.outputs.items())]
    if rendering.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {_cell(warning)}" for warning in rendering.warnings]
    return "\n".join(lines) + "\n"


def _component_name(obj: RenderedObject) -> str:
    return obj.component.rsplit(":", 1)[-1]


def _cell(text: str) -> str:
    """Text in a Markdown table cell, shown as it is."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Text as inline code in a Markdown table cell (plain when it holds a backtick)."""
    return _cell(text) if "`" in text else "`" + text.replace("|", "\\|").replace("\n", " ") + "`"


def _wrap(text: str, width: int) -> list[str]:
    """Text broken after commas and semicolons so each line fits width (a longer item stays whole)."""
    lines = [""]
    for piece in re.split(r"(?<=[,;]) ", text):
        if lines[-1] and len(lines[-1]) + 1 + len(piece) > width:
            lines.append(piece)
        else:
            lines[-1] = f"{lines[-1]} {piece}" if lines[-1] else piece
    return lines


def _pod_templates(manifest: dict) -> list[tuple[str, dict]]:
    """The pod specs of a workload, each with its role ("" when it has one kind of pod)."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind == "Pod":
        return [("", spec)]
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"):
        return [("", (spec.get("template") or {}).get("spec") or {})]
    if kind == "LeaderWorkerSet":
        group = spec.get("leaderWorkerTemplate") or {}
        worker = (group.get("workerTemplate") or {}).get("spec") or {}
        if "leaderTemplate" in group:
            return [("leader", (group["leaderTemplate"] or {}).get("spec") or {}), ("worker", worker)]
        return [("", worker)]
    return []


def _workload_details(kind: str, spec: dict, templates: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    images: list[str] = []
    for _, pod in templates:
        for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            if container.get("image") and container["image"] not in images:
                images.append(container["image"])
    details = [("image", ", ".join(images) or "none")]
    if kind == "LeaderWorkerSet":
        size = (spec.get("leaderWorkerTemplate") or {}).get("size", 1)
        details.append(("group", f"{size} pods (leader + {size - 1} worker{'s' if size != 2 else ''})"))
    each = "each pod: " if kind == "LeaderWorkerSet" else ""
    for label, describe in (("gpus", _pod_gpus), ("resources", _pod_resources)):
        texts = [(role, describe(pod)) for role, pod in templates]
        if len({text for _, text in texts}) == 1:
            if texts[0][1]:
                details.append((label, each + texts[0][1]))
        else:
            details += [(label, f"{role}: {text or 'none'}") for role, text in texts]
    return details


def _pod_gpus(pod: dict) -> str:
    """The GPUs a pod's containers ask for: extended resources and DRA claims, with the GPU
    products the pod is pinned to and its scheduler."""
    templates = {claim.get("name"): claim.get("resourceClaimTemplateName") or claim.get("resourceClaimName") for claim in pod.get("resourceClaims") or []}
    asked = []
    for container in pod.get("containers") or []:
        resources = container.get("resources") or {}
        quantities = resources.get("limits") or resources.get("requests") or {}
        parts = [f"{key}: {value}" for key, value in sorted(quantities.items()) if key not in PLAIN_RESOURCES and not key.startswith("hugepages-")]
        for claim in resources.get("claims") or []:
            source = templates.get(claim.get("name"))
            parts.append(f"DRA claim {claim.get('name')}" + (f" (ResourceClaimTemplate {source})" if source else ""))
        if parts:
            asked.append((container.get("name", ""), ", ".join(parts)))
    if not asked:
        return ""
    text = asked[0][1] if len(asked) == 1 else "; ".join(f"{name}: {parts}" for name, parts in asked)
    if products := _gpu_products(pod):
        text += " on " + " or ".join(products)
    if pod.get("schedulerName") and pod["schedulerName"] != "default-scheduler":
        text += f"; scheduler {pod['schedulerName']}"
    return text


def _gpu_products(pod: dict) -> list[str]:
    if product := (pod.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL):
        return [product]
    required = (((pod.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    products: list[str] = []
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == GPU_PRODUCT_LABEL and expression.get("operator") == "In":
                products += [value for value in expression.get("values") or [] if value not in products]
    return products


def _pod_resources(pod: dict) -> str:
    """CPU and memory of a pod's containers (init containers left out)."""
    described = []
    for container in pod.get("containers") or []:
        resources = container.get("resources") or {}
        requests, limits = ({key: (resources.get(side) or {})[key] for key in PLAIN_RESOURCES[:2] if key in (resources.get(side) or {})} for side in ("requests", "limits"))
        if requests and requests == limits:
            text = f"{_quantities(requests)} (requests = limits)"
        elif requests or limits:
            text = f"requests {_quantities(requests) or 'none'}; limits {_quantities(limits) or 'none'}"
        else:
            text = "none set"
        described.append((container.get("name", ""), text))
    if len(described) == 1:
        return described[0][1]
    return "; ".join(f"{name}: {text}" for name, text in described)


def _quantities(values: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def _scaler_of(obj: RenderedObject, objects: Sequence[RenderedObject]) -> Optional[RenderedObject]:
    for other in objects:
        target = (other.manifest.get("spec") or {}).get("scaleTargetRef") or {}
        if other.kind in SCALERS and other.namespace == obj.namespace and target.get("name") == obj.name:
            if target.get("kind", "Deployment") == obj.kind:
                return other
    return None


def _replicas(obj: RenderedObject, objects: Sequence[RenderedObject]) -> str:
    count = (obj.manifest.get("spec") or {}).get("replicas")
    unit = " groups" if obj.kind == "LeaderWorkerSet" else ""
    if scaler := _scaler_of(obj, objects):
        low, high = _scaling_bounds(scaler.manifest)
        fixed = f" (spec.replicas {count} until it scales)" if count is not None else ""
        return f"{low}-{high}{unit}, by {scaler.kind} {scaler.name}{fixed}"
    if count is None:
        return f"1{unit[:-1]} (the default)"
    return f"{count}{unit[:-1] if count == 1 else unit}"


def _fewest(obj: RenderedObject, objects: Sequence[RenderedObject]) -> int:
    """The fewest replicas a workload runs while it serves: its scaler's minimum (at least 1), else its count."""
    if scaler := _scaler_of(obj, objects):
        return max(_scaling_bounds(scaler.manifest)[0], 1)
    return (obj.manifest.get("spec") or {}).get("replicas", 1)


GAP = "service gap"


def _rollout(obj: RenderedObject, objects: Sequence[RenderedObject]) -> str:
    """How a rollout replaces replicas, and whether one keeps serving at the fewest replicas."""
    spec = obj.manifest.get("spec") or {}
    strategy = spec.get("strategy") or {} if obj.kind == "Deployment" else spec.get("rolloutStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return f"{strategy['type']}: a rollout stops every replica before new ones start ({GAP})"
    rolling = strategy.get("rollingUpdate" if obj.kind == "Deployment" else "rollingUpdateConfiguration") or {}
    default = "25%" if obj.kind == "Deployment" else None  # each API's defaults
    surge_value, unavailable_value = rolling.get("maxSurge", default or 0), rolling.get("maxUnavailable", default or 1)
    fewest = _fewest(obj, objects)
    surge, unavailable = scaled(surge_value, fewest, True), scaled(unavailable_value, fewest, False)
    unavailable = unavailable or (0 if surge else 1)  # both 0: the controller takes one down
    text = f"maxSurge {surge_value}, maxUnavailable {unavailable_value}"
    if deadline := spec.get("progressDeadlineSeconds"):
        text += f", progress deadline {deadline // 60}m"
    unit = "group" if obj.kind == "LeaderWorkerSet" else "replica"
    if fewest - unavailable < 1:
        return f"{text}; at {fewest} {unit} a rollout stops it before its successor is ready ({GAP})"
    how = "a new one starts before an old one stops" if surge else "old ones stop first"
    return f"{text}; at {fewest} {unit}{'s' if fewest > 1 else ''} {how}, {fewest - unavailable} keep{'s' if fewest - unavailable == 1 else ''} serving"


def _drain(obj: RenderedObject, objects: Sequence[RenderedObject]) -> str:
    """What a node drain may evict at the fewest replicas of the workload the budget covers."""
    spec = obj.manifest.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    workloads = [
        other for other in objects
        if other.kind in ("Deployment", "LeaderWorkerSet") and other.namespace == obj.namespace and _selects(selector, other)
    ]
    limit = f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec else f"maxUnavailable {spec.get('maxUnavailable')}"
    if len(workloads) != 1:
        return limit
    (workload,) = workloads
    fewest = _fewest(workload, objects)
    size = ((workload.manifest.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("size", 1)
    pods = fewest * size
    if "minAvailable" in spec:
        allowed = pods - scaled(spec["minAvailable"], pods, True)
    else:
        allowed = scaled(spec.get("maxUnavailable", 0), pods, True)
    unit = "group" if workload.kind == "LeaderWorkerSet" else "replica"
    at = f"at {fewest} {unit}{'s' if fewest > 1 else ''}"
    if allowed <= 0:
        return f"{limit}; {at} a drain waits: no pod may be evicted until another {unit} runs"
    if allowed >= fewest:
        return f"{limit}; {at} a drain may evict {allowed} pod{'s' if allowed > 1 else ''} at once and stop the last {unit} ({GAP})"
    return f"{limit}; {at} a drain evicts at most {allowed} pod{'s' if allowed > 1 else ''} at once, a {unit} keeps serving"


def _selects(selector: dict, workload: RenderedObject) -> bool:
    """Whether a label selector matches the pods of a Deployment, or of a LeaderWorkerSet (which
    labels every pod with its name)."""
    spec = workload.manifest.get("spec") or {}
    if workload.kind == "LeaderWorkerSet":
        return selector == {LWS_NAME_LABEL: workload.name}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    return bool(selector) and selector.items() <= labels.items()


def _scaling_bounds(manifest: dict) -> tuple[int, Any]:
    spec = manifest.get("spec") or {}
    if manifest.get("kind") == "ScaledObject":
        return spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)  # KEDA's defaults
    return spec.get("minReplicas", 1), spec.get("maxReplicas", "?")


def _target(spec: dict) -> str:
    target = spec.get("scaleTargetRef") or {}
    return f"{target.get('kind', 'Deployment')}/{target.get('name', '?')}"


def _trigger(trigger: dict) -> str:
    metadata = trigger.get("metadata") or {}
    threshold = metadata.get("threshold", metadata.get("value"))
    return f"{trigger.get('type', '?')}" + (f" threshold {threshold}" if threshold is not None else "")


def _hpa_metric(metric: dict) -> str:
    kind = metric.get("type", "?")
    body = metric.get(kind[:1].lower() + kind[1:], {}) if kind != "?" else {}
    name = (body.get("metric") or {}).get("name") or body.get("name") or ""
    target = body.get("target") or {}
    value = target.get("averageValue", target.get("value"))
    if value is None and "averageUtilization" in target:
        value = f"{target['averageUtilization']}%"
    return " ".join(str(part) for part in (kind, name, value) if part not in (None, ""))


def _ingress_hosts(spec: dict) -> list[str]:
    tls_hosts = {host for tls in spec.get("tls") or [] for host in tls.get("hosts") or []}
    found = []
    for rule in spec.get("rules") or []:
        host = rule.get("host", "*")
        paths = " ".join(path.get("path", "/") for path in (rule.get("http") or {}).get("paths") or [])
        extras = ["TLS" if host in tls_hosts else "no TLS"]
        if spec.get("ingressClassName"):
            extras.append(f"class {spec['ingressClassName']}")
        found.append(f"{host} {paths}".strip() + ", " + ", ".join(extras))
    return found


def _route_hosts(spec: dict, namespace: str) -> list[str]:
    paths = sorted({(match.get("path") or {}).get("value", "/") for rule in spec.get("rules") or [] for match in rule.get("matches") or [{}]})
    gateways = [f"{ref.get('namespace', namespace)}/{ref.get('name')}" for ref in spec.get("parentRefs") or []]
    via = f", Gateway {', '.join(gateways)}" if gateways else ""
    return [f"{host} {' '.join(paths)}{via}" for host in spec.get("hostnames") or ["*"]]


def _claim_devices(spec: dict) -> list[str]:
    found = []
    for request in ((spec.get("spec") or {}).get("devices") or {}).get("requests") or []:
        exactly = request.get("exactly") or request  # resource.k8s.io/v1, or v1beta1's flat request
        count = exactly.get("count", 1) if exactly.get("allocationMode", "ExactCount") == "ExactCount" else "all"
        selectors = len(exactly.get("selectors") or [])
        text = f"{request.get('name', '?')}: {count} x {exactly.get('deviceClassName', '?')}"
        found.append(text + (f", {selectors} CEL selector{'s' if selectors != 1 else ''}" if selectors else ""))
    return found


def stack_of_file(path: Path) -> Optional[str]:
    """The stack a stack file is named for: Pulumi.<stack>.yaml."""
    match = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    return match.group(1) if match else None


def _missing_project(project_dir: Path) -> str:
    """Why --project-dir cannot be rendered from, and what to do instead."""
    if not project_dir.is_dir():
        return f"{project_dir} has no Pulumi.yaml: there is no such directory; point --project-dir at the folder that holds Pulumi.yaml"
    stacks = sorted(project_dir.glob("Pulumi.*.yaml"))
    example = stacks[0] if stacks else project_dir / "Pulumi.<stack>.yaml"
    found = f" (it holds stack files: {', '.join(path.name for path in stacks)})" if stacks else ""
    return (
        f"{project_dir} has no Pulumi.yaml, the project file with the config schema and the program{found}; "
        f"point --project-dir at the folder that holds Pulumi.yaml, or render a stack file kept elsewhere "
        f"with this project's program: python -m stack.render --stack-file {example}"
    )


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m stack.render", description=__doc__.split("\n")[0])
    found.add_argument(
        "stack", nargs="?",
        help="stack name: reads Pulumi.<stack>.yaml from the project (with --stack-file: the name to render it as; "
        "default: from the file's name)",
    )
    found.add_argument(
        "--stack-file", type=Path,
        help="a stack file kept elsewhere (Pulumi.<stack>.yaml), rendered with this project's Pulumi.yaml and program",
    )
    found.add_argument("--out", type=Path, help="output directory (default <project dir>/rendered/<stack>)")
    found.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR,
        help="the directory of Pulumi.yaml and the program (default: this project)",
    )
    found.add_argument("--width", type=int, default=TABLE_WIDTH, help=f"columns of the printed table (default {TABLE_WIDTH})")
    return found


def main(argv: Optional[list[str]] = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    stack = args.stack
    if args.stack_file is not None:
        if not args.stack_file.is_file():
            print(f"error: --stack-file {args.stack_file}: no such file", file=sys.stderr)
            return 2
        stack = stack or stack_of_file(args.stack_file)
        if not stack:
            print(
                f"error: --stack-file {args.stack_file}: cannot tell the stack from the file's name; "
                "name it Pulumi.<stack>.yaml or give the stack name too",
                file=sys.stderr,
            )
            return 2
    elif not stack:
        arguments.print_usage(sys.stderr)
        print("error: give a stack name (reads Pulumi.<stack>.yaml) or --stack-file", file=sys.stderr)
        return 2
    project_dir = args.project_dir.resolve()
    if not (project_dir / "Pulumi.yaml").is_file():
        print(f"error: stack {stack}: {_missing_project(project_dir)}", file=sys.stderr)
        return 2
    try:
        rendering = render_stack(stack, project_dir, stack_file=args.stack_file and args.stack_file.resolve())
    except (ConfigError, StackFileError) as error:
        print(f"error: stack {stack}: {error}", file=sys.stderr)
        return 2
    out_dir = args.out or args.project_dir / "rendered" / stack
    write_rendering(rendering, out_dir)
    print(summary(rendering, args.width))
    print(f"\nWritten to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
