"""What a reviewer checks of a rendering: the table ``python -m stack.render`` prints and summary.md.

Pure functions of the rendered objects (manifests and recorded options), for any program that
uses the components: ``vllm_serving_components.testing`` writes summary.md with them.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .cost import COST_OUTPUT, cost_heading, cost_lines, cost_rows
from .gpu_claim import GPU_PRODUCT_LABEL
from .multinode import LWS_NAME_LABEL
from .rollout import scaled

if TYPE_CHECKING:
    from .testing import Options, RenderedObject, Rendering

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
        if storage_class == "" and spec.get("volumeName"):
            where = f"bound to PersistentVolume {spec['volumeName']}"
        else:
            where = f"class {storage_class if storage_class is not None else '(cluster default)'}"
        details.append(("storage", f"{size}, {where}, {modes}"))
    if obj.kind == "PersistentVolume":
        size = (spec.get("capacity") or {}).get("storage", "?")
        source = f"hostPath {spec['hostPath'].get('path')} on each node" if "hostPath" in spec else "a volume"
        claim = spec.get("claimRef") or {}
        details.append(("storage", f"{size}, {source}" + (f", for claim {claim.get('name')}" if claim else "")))
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

    # Too narrow for columns: each object on its own line(s), kind namespace/name (component).
    narrow = sum(widths) + 2 * 3 > width

    def line(row: tuple[str, ...]) -> str:
        if not narrow:
            return "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()
        kind, namespace, name, component = row
        where = name if namespace == "-" else f"{namespace}/{name}"
        return "\n  ".join(_wrap(f"{kind} {where}" + ("" if component == "-" else f" ({component})"), width - 2))

    if narrow:
        rows[0] = ("KIND", "-", "NAMESPACE/NAME", "COMPONENT")
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
    """The printed table of the objects, what to check of each, and the stack outputs, every line
    within ``width`` columns but for a single word (a URL) longer than that."""
    lines = table_lines(rendering.objects, width)
    note = f"{len(rendering.objects)} objects for stack {rendering.stack}; {DEPENDS_ON_NOTE[0].lower()}{DEPENDS_ON_NOTE[1:]}"
    lines += ["", *_wrap(note, width)]
    if cost := rendering.outputs.get(COST_OUTPUT):
        heading, *rows = cost_lines(cost)
        lines += _wrap(heading, width)
        for row in rows:
            first, *more = _wrap(row.strip(), width - 4)
            lines += ["  " + first, *("    " + part for part in more)]
    lines.append("Outputs:")
    for key, value in sorted(rendering.outputs.items()):
        if key == COST_OUTPUT:
            continue
        text = json.dumps(value)
        if len(key) + len(text) + 4 <= width:
            lines.append(f"  {key}: {text}")
        else:
            lines += [f"  {key}:", *("    " + part for part in _wrap(text, width - 4))]
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
    lines += ["", DEPENDS_ON_NOTE]
    if cost := rendering.outputs.get(COST_OUTPUT):
        lines += ["", _cell(cost_heading(cost)), ""]
        lines += ["| Replicas | GPUs | GPU-hours per month | Cost per month |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in cost_rows(cost)]
    lines += ["", "| Output | Value |", "|---|---|"]
    lines += [f"| {_cell(key)} | {_code(json.dumps(value))} |" for key, value in sorted(rendering.outputs.items()) if key != COST_OUTPUT]
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
    """Text broken after commas and semicolons so each line fits width; an item longer than width
    is broken at its spaces, and a word longer than that after its commas (a PromQL selector). Only
    a longer word without commas (a URL) stays whole."""
    pieces: list[tuple[str, str]] = []  # (text, what joins it to the piece before)
    for item in re.split(r"(?<=[,;]) ", text):
        for word in [item] if len(item) <= width else item.split(" "):
            parts = [word] if len(word) <= width else re.split(r"(?<=,)(?=.)", word)
            pieces += [(part, "" if at else " ") for at, part in enumerate(parts)]
    lines = [""]
    for piece, joiner in pieces:
        if lines[-1] and len(lines[-1]) + len(joiner) + len(piece) > width:
            lines.append(piece)
        else:
            lines[-1] = f"{lines[-1]}{joiner}{piece}" if lines[-1] else piece
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
    if layout := next((text for _, pod in templates if (text := _layout(pod))), ""):
        details.append(("layout", layout))
    each = "each pod: " if kind == "LeaderWorkerSet" else ""
    for label, describe in (("gpus", _pod_gpus), ("resources", _pod_resources), ("vllm", _vllm_flags), ("api key", _api_key)):
        texts = [(role, describe(pod)) for role, pod in templates]
        if label in ("vllm", "api key"):  # only the pods that run the server
            texts = [(role, text) for role, text in texts if text]
        if len(texts) == len(templates) and len({text for _, text in texts}) == 1:
            if texts[0][1]:
                details.append((label, each + texts[0][1]))
        else:
            details += [(label, f"{role}: {text or 'none'}") for role, text in texts]
    return details


VLLM_SERVE = ["vllm", "serve"]
FIXED_FLAGS = ("--host", "--port")
"""Flags every server gets alike (listen on 8000 of every interface), left out of the review."""
API_KEY_ENV = "VLLM_API_KEY"
SCRIPT_EXEC = 'exec "$0" "$@"'


def _serve_arguments(container: dict) -> Optional[list[str]]:
    """What follows `vllm serve` in a container's command and args (a multi-node leader runs it
    after its start script), or None when the container does not run it."""
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    starts = [index for index in range(len(words) - 1) if words[index : index + 2] == VLLM_SERVE]
    return words[starts[0] + 2 :] if starts else None


def _server(pod: dict) -> Optional[dict]:
    return next((c for c in pod.get("containers") or [] if _serve_arguments(c) is not None), None)


def _flag_values(pod: dict) -> dict[str, Optional[str]]:
    """The server's flags with their values (None for a flag without one), its script's included."""
    if (server := _server(pod)) is None:
        return {}
    values: dict[str, Optional[str]] = {}
    flag = None
    for word in [*(_serve_arguments(server) or [])[1:], *_script_arguments(server)]:
        if word.startswith("-"):
            flag, _, value = word.partition("=")
            values[flag] = value or None
        elif flag is not None and values[flag] is None:
            values[flag] = word
    return values


def _layout(pod: dict) -> str:
    """How a replica's GPUs serve the model, from its server's parallelism flags."""
    values = _flag_values(pod)
    if not values:
        return ""
    sizes = {name: values.get(f"--{name}-parallel-size") or "1" for name in ("tensor", "pipeline", "data")}
    if sizes["data"] != "1":
        experts = ", experts expert parallel" if "--enable-expert-parallel" in values else ""
        return f"{sizes['data']} engines (data parallel) x tensor parallel {sizes['tensor']}{experts}"
    if sizes["pipeline"] != "1":
        return f"tensor parallel {sizes['tensor']} x pipeline parallel {sizes['pipeline']}, one engine"
    return f"tensor parallel {sizes['tensor']}, one engine"


def _script_arguments(container: dict) -> list[str]:
    """The flags a server's shell script adds after the command it is given (``exec "$0" "$@" ...``)."""
    command = container.get("command") or []
    if command[:2] != ["sh", "-c"] or len(command) < 3:
        return []
    _, found, tail = command[2].partition(SCRIPT_EXEC)
    return shlex.split(tail) if found else []


def _vllm_flags(pod: dict) -> str:
    """What `vllm serve` runs with: the parallelism, --max-model-len, --gpu-memory-utilization and
    every further flag (extra arguments included), each with its value."""
    if (server := _server(pod)) is None:
        return ""
    flags: list[str] = []
    for word in [*(_serve_arguments(server) or [])[1:], *_script_arguments(server)]:  # after the model path
        if word.startswith("-") or not flags:
            flags.append(word)
        else:
            flags[-1] += f" {word}"
    return ", ".join(flag for flag in flags if flag.split(" ")[0].partition("=")[0] not in FIXED_FLAGS)


def _api_key(pod: dict) -> str:
    """Where the server's API key comes from: a Secret's key, or none (anyone may call /v1). A
    headless server (a multi-node worker) has no API, so nothing to say."""
    if (server := _server(pod)) is None or "--headless" in _flag_values(pod):
        return ""
    for env in server.get("env") or []:
        if env.get("name") == API_KEY_ENV:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref:
                return f"${API_KEY_ENV} from Secret {ref.get('name')}, key {ref.get('key')}"
            return f"${API_KEY_ENV} in plain text in the manifest"
    return "none: /v1 answers anyone who reaches it"


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
    """A KEDA trigger's signal and target: prometheus sum(vllm:num_requests_waiting{...}) above 5 per replica."""
    metadata = trigger.get("metadata") or {}
    threshold = metadata.get("threshold", metadata.get("value"))
    parts = [trigger.get("type", "?")]
    if metadata.get("query"):
        parts.append(metadata["query"])
    elif metadata.get("metricName"):
        parts.append(metadata["metricName"])
    if threshold is not None:
        per = " per replica" if trigger.get("metricType", "AverageValue") == "AverageValue" else ""
        parts.append(f"above {threshold}{per}")
    if metadata.get("activationThreshold") is not None:
        parts.append(f"(activates above {metadata['activationThreshold']})")
    return " ".join(parts)


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
    headers = sorted({f"{header.get('name')}: {header.get('value')}" for rule in spec.get("rules") or []
                      for match in rule.get("matches") or [] for header in match.get("headers") or []})
    when = f", when {' or '.join(headers)}" if headers else ""
    return [f"{host} {' '.join(paths)}{via}{when}" for host in spec.get("hostnames") or ["*"]]


def _claim_devices(spec: dict) -> list[str]:
    found = []
    for request in ((spec.get("spec") or {}).get("devices") or {}).get("requests") or []:
        exactly = request.get("exactly") or request  # resource.k8s.io/v1, or v1beta1's flat request
        count = exactly.get("count", 1) if exactly.get("allocationMode", "ExactCount") == "ExactCount" else "all"
        selectors = len(exactly.get("selectors") or [])
        text = f"{request.get('name', '?')}: {count} x {exactly.get('deviceClassName', '?')}"
        found.append(text + (f", {selectors} CEL selector{'s' if selectors != 1 else ''}" if selectors else ""))
    return found
