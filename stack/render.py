"""Offline render: run the stack program under Pulumi's mock runtime and write what it creates.

    python -m stack.render dev [--out rendered/dev]

No cluster, credentials or Pulumi CLI are needed. The program and components run exactly as
under ``pulumi up``; every Kubernetes object they register is written as YAML that
``kubectl apply`` accepts, one file per object plus ``all.yaml``, with the stack outputs in
``outputs.json``. Secret values are never written.
"""

import argparse
import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
import yaml
from pulumi.runtime import mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.rpc import _special_secret_sig as SECRET_SIGNATURE
from pulumi.runtime.rpc import _special_sig_key as SIGNATURE_KEY
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from .config import ConfigError, namespaced_values
from .loading import parse_stack_config
from .project import StackFileError, read_project, stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
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
    settings.ROOT.set(None)
    mocks.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)
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
    return Rendering(stack=stack, objects=sorted(objects, key=_apply_rank), outputs=outputs)


def render_stack(
    stack: str, project_dir: Path = PROJECT_DIR, monitor: Optional[mocks.MockMonitor] = None
) -> Rendering:
    """Run the stack's own __main__.py under mocks and collect its Kubernetes objects and outputs.

    Raises ConfigError (invalid config, nothing registered) or StackFileError.
    """
    project = read_project(project_dir)
    program = project_dir / "__main__.py"
    if not program.is_file():
        raise StackFileError(f"{project_dir} has no __main__.py; point --project-dir at this program's folder")
    settings = stack_config(project, stack)
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
    return [*written, combined, outputs]


def summary(rendering: Rendering) -> str:
    """A table of the objects and the stack outputs."""
    rows = [("KIND", "NAMESPACE", "NAME", "COMPONENT")]
    rows += [(o.kind, o.namespace or "-", o.name, o.component.rsplit(":", 1)[-1] or "-") for o in rendering.objects]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"\n{len(rendering.objects)} objects for stack {rendering.stack}. Outputs:")
    lines += [f"  {key}: {json.dumps(value)}" for key, value in sorted(rendering.outputs.items())]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.render", description=__doc__.split("\n")[0])
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="output directory (default <project dir>/rendered/<stack>)")
    parser.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR, help="directory of Pulumi.yaml (default: this project)"
    )
    args = parser.parse_args(argv)
    try:
        rendering = render_stack(args.stack, args.project_dir.resolve())
    except (ConfigError, StackFileError) as error:
        print(f"error: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    out_dir = args.out or args.project_dir / "rendered" / args.stack
    write_rendering(rendering, out_dir)
    print(summary(rendering))
    print(f"\nWritten to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
