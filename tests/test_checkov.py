"""checkov's Kubernetes checks on every rendered stack: no failed check, and the skipped ones
exactly those tests/checkov/skips.yaml lists for the stack, each with its reason.

Each stack (dev, prod, multinode and the variants of test_stacks.py) is rendered as `python -m
stack.render` writes it, and checkov scans the directory's one-object files (all.yaml holds the
same objects again) and, for a LeaderWorkerSet, which checkov does not know, its two pod
templates written as Pods. checkov runs from .venv-checkov, a virtual environment of its own
(checkov 3.3.30 and the pinned pulumi need conflicting versions of packaging), which .ci/run
creates from requirements-checkov.txt.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHIPPED_STACKS
from test_stacks import VARIANTS, render_variant

from vllm_serving_components.multinode import LWS_NAME_LABEL
from vllm_serving_components.testing import render_program
from stack.render import render_stack, write_rendering

CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
CREATE_CHECKOV_VENV = f"run .ci/run (or only its {CHECKOV_VENV.name} lines, from {ROOT})"
CHECKOV_TIMEOUT = 300
"""Seconds one scan may take; a stack takes a few."""
SKIPS_FILE = Path(__file__).parent / "checkov" / "skips.yaml"
MAX_SKIPS_PER_STACK = 4
EXAMPLES = {"two-models": ROOT / "examples" / "two-models"}
"""Example projects, scanned as rendered by vllm_serving_components.testing (their dev stack)."""
STACKS = (*SHIPPED_STACKS, *VARIANTS, *EXAMPLES)
WORKLOADS = ("Deployment", "Job", "Pod")
"""Kinds whose pods checkov's container checks read; every one rendered must be scanned."""


def checkov_env() -> dict[str, str]:
    """The environment checkov runs in: offline, with no vendor platform and no update check."""
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    env.pop("BC_API_KEY", None)
    return env


def load_skips() -> dict[str, dict]:
    return yaml.safe_load(SKIPS_FILE.read_text())


def skips_for(stack: str) -> dict[str, dict]:
    return {check: skip for check, skip in load_skips().items() if skip["stacks"] == "all" or stack in skip["stacks"]}


@pytest.fixture(scope="session")
def checkov() -> Path:
    """The checkov executable of .venv-checkov; fails (never skips) when it is missing or another release."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: {CREATE_CHECKOV_VENV}")
    result = subprocess.run(
        [str(CHECKOV), "--version"], capture_output=True, text=True, timeout=CHECKOV_TIMEOUT, env=checkov_env()
    )
    if result.stdout.strip() != CHECKOV_VERSION:
        pytest.fail(
            f"{CHECKOV_VENV} must hold checkov {CHECKOV_VERSION}, found "
            f"{result.stdout.strip() or result.stderr.strip()[-500:]}: delete it and {CREATE_CHECKOV_VENV}"
        )
    return CHECKOV


def render(stack: str, tmp_path: Path):
    """The stack rendered into tmp_path/rendered: that directory and its objects by file name."""
    if stack in VARIANTS:
        project = tmp_path / "project"
        project.mkdir()
        rendering = render_variant(project, stack)
    elif stack in EXAMPLES:
        rendering = render_program(EXAMPLES[stack], "dev")
    else:
        rendering = render_stack(stack)
    out_dir = tmp_path / "rendered"
    written = write_rendering(rendering, out_dir)
    # One file per object, in the rendering's order, then all.yaml and outputs.json.
    files = {path.name: obj.manifest for path, obj in zip(written, rendering.objects)}
    for obj in rendering.objects:
        if obj.kind == "LeaderWorkerSet":
            files |= group_pods(obj.manifest, out_dir)
    return out_dir, files


def group_pods(lws: dict, out_dir: Path) -> dict[str, dict]:
    """checkov has no checks for a LeaderWorkerSet: its leader and worker pod templates are
    written beside it as Pods, which checkov's container checks read, with the set's name label
    LeaderWorkerSet adds to every pod it creates (which the group's network policy selects)."""
    pods = {}
    for role in ("leader", "worker"):
        template = lws["spec"]["leaderWorkerTemplate"][f"{role}Template"]
        labels = {**template.get("metadata", {}).get("labels", {}), LWS_NAME_LABEL: lws["metadata"]["name"]}
        metadata = {**template.get("metadata", {}), "labels": labels, "name": f"{lws['metadata']['name']}-{role}", "namespace": lws["metadata"]["namespace"]}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        name = f"group-pod-{metadata['name']}.yaml"
        (out_dir / name).write_text(yaml.safe_dump(pod, sort_keys=False))
        pods[name] = pod
    return pods


def scan(checkov: Path, directory: Path) -> dict:
    """checkov's JSON report on the directory's Kubernetes objects, offline."""
    command = [
        str(checkov),
        "--directory", str(directory),
        "--framework", "kubernetes",
        "--output", "json",
        "--skip-download",  # no policy metadata from the vendor's platform
        "--skip-path", r"/all\.yaml$",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=CHECKOV_TIMEOUT, env=checkov_env(), cwd=directory
    )
    # checkov exits 1 when a check failed; anything else is an error of its own.
    assert result.returncode in (0, 1), f"checkov exited {result.returncode}: {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and "results" in report, f"checkov found nothing to check: {result.stdout[:500]}"
    return report


def file_of(record: dict) -> str:
    return record["file_path"].rsplit("/", 1)[-1]


def kind_of(record: dict) -> str:
    return record["resource"].split(".", 1)[0]


def secret_env_names(manifest: dict) -> set[str]:
    """Names of the variables any container of the workload takes from a Secret (envFrom as '*')."""
    pod = manifest["spec"] if manifest["kind"] == "Pod" else manifest["spec"]["template"]["spec"]
    names = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        names |= {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        names |= {"*" for source in container.get("envFrom", []) if "secretRef" in source}
    return names


def test_every_skip_has_a_reason_and_at_most_three_apply_to_a_stack():
    skips = load_skips()
    for check, skip in skips.items():
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), check
        assert len(skip.get("reason", "").split()) >= 10, f"{check}: give the reason it is skipped"
        assert skip["stacks"] == "all" or set(skip["stacks"]) <= set(STACKS), f"{check}: unknown stack"
        assert skip["kinds"] and set(skip) <= {"name", "stacks", "kinds", "reason", "secret_env"}, check
    for stack in STACKS:
        assert len(skips_for(stack)) <= MAX_SKIPS_PER_STACK, f"{stack}: {sorted(skips_for(stack))}"


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_no_failed_check(checkov, tmp_path, capsys, stack):
    out_dir, files = render(stack, tmp_path)
    report = scan(checkov, out_dir)
    results, summary = report["results"], report["summary"]
    skips = skips_for(stack)

    def skipped(record: dict) -> bool:
        return record["check_id"] in skips and kind_of(record) in skips[record["check_id"]]["kinds"]

    failed = [r for r in results["failed_checks"] if not skipped(r)]
    skipped_here = [r for r in results["failed_checks"] if skipped(r)]
    passed = results["passed_checks"]
    counts = {check: sum(r["check_id"] == check for r in skipped_here) for check in sorted(skips)}
    with capsys.disabled():
        print(
            f"\ncheckov {stack}: passed {len(passed)} / failed {len(failed)} / skipped {len(skipped_here)} "
            f"({', '.join(f'{check} x{n}' for check, n in counts.items()) or 'none'})"
        )

    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    scanned = {file_of(r) for r in [*passed, *results["failed_checks"]]}
    assert "all.yaml" not in scanned
    workloads = {name for name, manifest in files.items() if manifest["kind"] in WORKLOADS}
    assert workloads and workloads <= scanned, f"not scanned: {sorted(workloads - scanned)}"

    assert [f"{r['check_id']} {r['check_name']}: {r['resource']} ({file_of(r)})" for r in failed] == []
    # Skips come from skips.yaml alone: none from annotations on the objects.
    assert results.get("skipped_checks", []) == []
    stale = set(skips) - {r["check_id"] for r in skipped_here}
    assert not stale, f"skipped for {stack} in {SKIPS_FILE.name} but passing here: drop {sorted(stale)} for {stack}"
    for record in skipped_here:
        allowed = skips[record["check_id"]].get("secret_env")
        if allowed is not None:
            names = secret_env_names(files[file_of(record)])
            assert names <= set(allowed), f"{record['resource']}: {sorted(names - set(allowed))} from a Secret"
