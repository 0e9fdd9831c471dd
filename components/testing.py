"""Render a Pulumi program that uses the components, offline, under Pulumi's mock runtime.

    python -m vllm_serving_components.testing <project dir> [--stack dev] [--out rendered/dev]

For a library user's own project as for this repository's stack (``stack.render`` runs through
here): the program runs exactly as under ``pulumi up``, with no cluster, credentials or Pulumi
CLI; every Kubernetes object it registers is kept, as YAML that ``kubectl apply`` accepts. The
files written are the ones ``python -m stack.render`` writes: one per object plus ``all.yaml``,
``outputs.json``, ``options.json`` (each object's resource options) and ``summary.md`` (what a
reviewer checks). Secret values are never written. In a test::

    from vllm_serving_components.testing import render_program

    def test_my_program():
        rendering = render_program("path/to/project", stack="dev", config={"host": "models.example.com"})
        assert rendering.only("Ingress")["spec"]["rules"][0]["host"] == "models.example.com"

Each call starts a fresh mock runtime and waits for every registration, so several renders can
share one test. A component's bad argument raises ComponentArgsError, and a program's own refusal
pulumi.RunError, before anything is registered; the command line prints either and exits 2.
"""

import argparse
import asyncio
import json
import logging
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import pulumi
import yaml
from pulumi.runtime import mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.rpc import _special_secret_sig as SECRET_SIGNATURE
from pulumi.runtime.rpc import _special_sig_key as SIGNATURE_KEY
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from .arguments import ComponentArgsError
from .summary import TABLE_WIDTH, markdown_summary, options_document, summary

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
    """What the program warned of (pulumi.log.warn), as a preview shows it, sorted."""

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


async def _logged() -> None:
    """pulumi.log.warn about a resource logs from a task of its own once the resource's URN is
    known (pulumi/log.py ``_log``), which the program's run does not wait for: wait for those, so
    each warning lands in this rendering, never in the next one's."""
    pending = [
        task for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith("_log.<locals>.do_log") and not task.done()
    ]
    await asyncio.gather(*pending, return_exceptions=True)


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
    _sync_await(_logged())
    registered = list(monitor.resources.items())
    outputs = _sync_await(_stack_outputs())
    recorded = monitor.options if isinstance(monitor, RecordingMonitor) else lambda urn: Options()
    objects = [
        RenderedObject(manifest=redact(plain(registration.state)), component=_component_of(urn), options=recorded(urn))
        for urn, registration in registered
        if _type_chain(urn)[-1].startswith("kubernetes:")
    ]
    # Sorted: each is logged when its resource's URN is known, in no fixed order, and a review
    # diffs renderings. Every warning starts with the component and name it is about.
    return Rendering(stack=stack, objects=sorted(objects, key=_apply_rank), outputs=outputs, warnings=sorted(warnings.messages))


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


def run_program(
    project_dir: Path,
    project: str,
    stack: str,
    config: dict[str, str],
    monitor: Optional[mocks.MockMonitor] = None,
    secret_keys: Optional[list[str]] = None,
) -> Rendering:
    """Run a project's ``__main__.py`` under mocks, with config as the Pulumi CLI passes it
    (``<project>:<key>`` to strings, JSON for anything else), importing from the project's folder
    first, as ``pulumi up`` does."""
    program = project_dir / "__main__.py"
    if not program.is_file():
        raise pulumi.RunError(f"{project_dir} has no __main__.py; point at the folder of the program's Pulumi.yaml")
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    return run_under_mocks(
        lambda: runpy.run_path(str(program), run_name="__main__"), project, stack, config, monitor, secret_keys
    )


ConfigValues = Mapping[str, Any]


def program_config(project_dir: Path, stack: str, config: Optional[ConfigValues] = None) -> tuple[str, dict[str, str]]:
    """The project's name and the config a stack's program gets: Pulumi.yaml's defaults, then
    Pulumi.<stack>.yaml (if there is one), then ``config``; keys without a namespace are the project's."""
    project_file = yaml.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    project = project_file["name"]
    values: dict[str, Any] = {}
    for key, spec in (project_file.get("config") or {}).items():
        if isinstance(spec, dict) and ("default" in spec or "value" in spec):
            values[_namespaced(project, key)] = spec.get("value", spec.get("default"))
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    if stack_file.is_file():
        for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
            values[_namespaced(project, key)] = value
    values.update({_namespaced(project, key): value for key, value in (config or {}).items()})
    encoded = {}
    for key, value in values.items():
        if isinstance(value, dict) and "secure" in value:
            raise pulumi.RunError(f"{key} is encrypted in {stack_file.name}; pass its value in config to render offline")
        encoded[key] = value if isinstance(value, str) else json.dumps(value)
    return project, encoded


def _namespaced(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def render_program(
    project_dir: Union[str, Path], stack: str = "dev", config: Optional[ConfigValues] = None
) -> Rendering:
    """Render a Pulumi project's program under mocks: its Kubernetes objects and stack outputs.

    ``config`` overrides the stack file's values (``{"host": "a.example.com"}``; Python values,
    or strings as the CLI passes them). Raises ComponentArgsError for a bad component argument.
    """
    project_dir = Path(project_dir).resolve()
    project, values = program_config(project_dir, stack, config)
    return run_program(project_dir, project, stack, values)


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m vllm_serving_components.testing", description=__doc__.split("\n")[0])
    found.add_argument("project_dir", type=Path, help="the folder of the program's Pulumi.yaml")
    found.add_argument("--stack", default="dev", help="reads Pulumi.<stack>.yaml there, if it exists (default dev)")
    found.add_argument("--out", type=Path, help="output directory (default <project dir>/rendered/<stack>)")
    found.add_argument("--width", type=int, default=TABLE_WIDTH, help=f"columns of the printed table (default {TABLE_WIDTH})")
    return found


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not (args.project_dir / "Pulumi.yaml").is_file():
        print(f"error: {args.project_dir} has no Pulumi.yaml; point at the folder of the program's project", file=sys.stderr)
        return 2
    try:
        rendering = render_program(args.project_dir, args.stack)
    except (ComponentArgsError, pulumi.RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_and_show(rendering, args.out or args.project_dir / "rendered" / args.stack, args.width)
    return 0


def write_and_show(rendering: Rendering, out_dir: Path, width: int = TABLE_WIDTH) -> None:
    """Write the rendering's files and print the reviewer's table and where they went."""
    write_rendering(rendering, out_dir)
    print(summary(rendering, width))
    print(f"\nWritten to {out_dir}")


if __name__ == "__main__":
    sys.exit(main())
