"""A stack deployed by the code and the Kubernetes SDK pin of before the kept objects became Patch
resources (the commit below, pinning pulumi-kubernetes 4.34.2) moves to today's code and pin
without deleting or replacing its protected claim or its namespace.

That release of the provider is not built here: the 4.32.0 build stands in under its version
number, so the old state names provider 4.34.2 exactly as a user's does. What the move exercises
is the engine's part: the change of default provider (its DiffConfig plans no replacement for a
version change alone) and the change of resource type through an alias.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

from . import netns
from .cluster import namespace_with_key
from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists, object_of, planned_steps
from .pulumi_cli import PROJECT_DIRS, PROJECT_FILES, ROOT, PulumiProject
from .standins import StatusPublisher

pytestmark = pytest.mark.e2e

BEFORE = "9f25bf7f64edb68548d3149adc608bec9cb4f7e7"
"""The last commit whose stack created its namespace and claim as plain Namespace and
PersistentVolumeClaim resources, with requirements.txt pinning pulumi-kubernetes 4.34.2."""
BEFORE_PROVIDER = "4.34.2"
STACK = "upgrade"
NAMESPACE = "ai-serving-upgrade"
CLAIM = "vllm-qwen3-235b-models"


def files_at(commit: str) -> tuple[str, ...]:
    """The project files that existed at ``commit`` (stack files added since did not)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", commit], check=True, capture_output=True,
                            text=True, timeout=60).stdout.split()
    return tuple(name for name in PROJECT_FILES if name in listed)


def checkout(commit: str, target) -> None:
    """The stack program's files as they were at ``commit``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, *files_at(commit), *PROJECT_DIRS,
                              "pyproject.toml", "README.md"], check=True, capture_output=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


@pytest.fixture(scope="module")
def before(e2e_bin, e2e_work, cluster, tmp_path_factory) -> PulumiProject:
    """The old program in a project of its own, with its own pins in its own virtual environment,
    and prod's settings in another namespace."""
    source = tmp_path_factory.mktemp("before")
    checkout(BEFORE, source)
    venv = source / ".venv-before"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(source / "requirements.txt")], cwd=source, check=True, timeout=900,
                   preexec_fn=netns.outside)
    stack = yaml.safe_load((source / "Pulumi.prod.yaml").read_text())
    stack["config"]["vllm-serving:namespace"] = NAMESPACE
    (source / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack))
    project = PulumiProject(e2e_bin, e2e_work, cluster.kubeconfig, source=source,
                            files=(*files_at(BEFORE), "pyproject.toml", "README.md", f"Pulumi.{STACK}.yaml"), dirs=PROJECT_DIRS)
    (project.dir / ".venv").unlink()
    (project.dir / ".venv").symlink_to(venv)
    project.run("plugin", "install", "resource", "kubernetes", BEFORE_PROVIDER,
                "--file", str(e2e_bin / "pulumi-resource-kubernetes"))
    project.run("stack", "init", STACK)
    return project


def to_todays_code(project: PulumiProject) -> None:
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, project.dir / name)
    for name in PROJECT_DIRS:
        shutil.rmtree(project.dir / name)
        shutil.copytree(ROOT / name, project.dir / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project.dir / ".venv").unlink()
    (project.dir / ".venv").symlink_to(ROOT / ".venv-e2e")


def test_a_stack_of_the_old_code_and_pin_moves_without_touching_its_claim(before, cluster):
    with StatusPublisher(cluster, NAMESPACE):
        before.up(STACK, timeout=300)
    old = {r["type"]: r for r in before.resources(STACK)}
    assert old["kubernetes:core/v1:PersistentVolumeClaim"]["protect"] is True
    assert old["pulumi:providers:kubernetes"]["inputs"]["version"] == BEFORE_PROVIDER
    claim_uid = kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)["metadata"]["uid"]
    namespace_uid = kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["uid"]
    # The API key's Secret the server reads, which today's preflight checks before the plan.
    cluster.apply(namespace_with_key(NAMESPACE, "vllm-api-key")[1:])

    to_todays_code(before)
    ops = {object_of(step): step["op"] for step in planned_steps(before, STACK) if object_of(step)}
    # The claim and the namespace move in place; the server and its Service roll or stay, never
    # replaced (which would stop every replica at once). The download Job and its script's
    # ConfigMap are replaced once, as their contents changed.
    for kept in (("PersistentVolumeClaim", NAMESPACE, CLAIM), ("Namespace", "", NAMESPACE),
                 ("Deployment", NAMESPACE, "vllm-qwen3-235b"), ("Service", NAMESPACE, "vllm-qwen3-235b")):
        assert ops.get(kept, "same") in ("same", "update"), (kept, ops)

    with StatusPublisher(cluster, NAMESPACE):
        before.up(STACK, timeout=300)
    assert_next_run_creates_nothing_that_exists(before, STACK, cluster)
    assert kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)["metadata"]["uid"] == claim_uid
    assert kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["uid"] == namespace_uid
    now = {r["type"]: r for r in before.resources(STACK)}
    assert now["kubernetes:core/v1:PersistentVolumeClaimPatch"]["protect"] is True
    assert "kubernetes:core/v1:PersistentVolumeClaim" not in now
    before.run("preview", "--expect-no-changes", stack=STACK)
