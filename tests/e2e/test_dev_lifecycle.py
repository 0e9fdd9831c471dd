"""The dev stack's life with the real Pulumi CLI and provider on a local cluster: preview, up,
an idempotent second up, the endpoint output, the offline rendering against what up created,
a model upgrade, a failed download Job, destroy, and up again over what destroy kept. The tests
run in file order and share one stack."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .cluster import HAMI_SCHEDULER, job_pod_fail_stage
from .conftest import kubectl_json
from .plans import assert_next_run_creates_nothing_that_exists
from .pulumi_cli import ROOT, pinned_provider
from .standins import Poller, ReadyPods

pytestmark = pytest.mark.e2e

STACK = "dev"
NAMESPACE = "ai-serving-dev"
NAME = "vllm-qwen3-0-6b"
CLAIM = f"{NAME}-models"
UP_TIMEOUT = 300


@pytest.fixture(scope="module")
def dev(project):
    project.run("stack", "init", STACK)
    return project


def jobs(cluster) -> dict[str, dict]:
    return {j["metadata"]["name"]: j for j in kubectl_json(cluster, "get", "jobs", "-n", NAMESPACE)["items"]}


def condition(obj: dict, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def deployment(cluster) -> dict:
    return kubectl_json(cluster, "get", "deployment", NAME, "-n", NAMESPACE)


def render(stack: str, out: Path) -> list[dict]:
    subprocess.run([sys.executable, "-m", "stack.render", stack, "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=120)
    return [d for d in yaml.safe_load_all((out / "all.yaml").read_text()) if d]


def test_preview_creates_every_object(dev):
    result = dev.run("preview", "--json", stack=STACK)
    plan = result.json()
    errors = [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    assert not errors, errors
    created = {s["newState"]["type"] for s in plan["steps"] if s["op"] == "create"}
    for token in ("kubernetes:core/v1:NamespacePatch", "kubernetes:core/v1:PersistentVolumeClaimPatch",
                  "kubernetes:batch/v1:Job", "kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"):
        assert token in created, sorted(created)


def test_up_creates_a_running_server(dev, cluster):
    dev.up(STACK, timeout=UP_TIMEOUT)

    claim = kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)
    assert claim["status"]["phase"] == "Bound"
    (job,) = jobs(cluster).values()
    assert condition(job, "Complete"), job["status"]
    d = deployment(cluster)
    assert d["status"].get("availableReplicas") == 1, d["status"]
    pods = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == ["gpu-hami-0"]
    assert pods[0]["spec"]["schedulerName"] == HAMI_SCHEDULER
    assert_next_run_creates_nothing_that_exists(dev, STACK, cluster)


def test_the_namespace_admits_the_stacks_pods_and_refuses_a_privileged_one(dev, cluster):
    """Pod Security admission enforces restricted in the namespace: the server and Job pods were
    admitted (up above), and a root, privileged pod is refused by the API server itself."""
    labels = kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}]},
    }
    r = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert r.returncode != 0 and 'violates PodSecurity "restricted:latest"' in r.stderr, r.stderr


def test_provider_is_the_pinned_release(dev, cluster, capsys):
    """The provider the stack ran is the release requirements.txt pins, as a user's `up` downloads it."""
    providers = [r for r in dev.resources(STACK) if r["type"] == "pulumi:providers:kubernetes"]
    assert [p["inputs"].get("version") for p in providers] == [pinned_provider()] == [dev.versions["pulumi-kubernetes"]]
    with capsys.disabled():
        print(f"\npulumi-kubernetes provider {providers[0]['inputs']['version']} ({dev.versions})")


def test_new_objects_are_created_and_kept_ones_applied(dev, cluster):
    """Since provider 4.29 a new object is created with a plain create under the provider's static
    field manager; the objects a destroy keeps are Patch resources, applied server-side by their
    own fixed field manager (components/kept.py)."""

    def managers(*args: str) -> set[tuple[str, str]]:
        metadata = kubectl_json(cluster, "get", *args, "--show-managed-fields")["metadata"]
        return {(m["manager"], m["operation"]) for m in metadata["managedFields"]}

    assert ("pulumi-kubernetes", "Update") in managers("deployment", NAME, "-n", NAMESPACE)
    assert (f"vllm-serving-persistentvolumeclaim-{CLAIM}", "Apply") in managers("pvc", CLAIM, "-n", NAMESPACE)
    assert (f"vllm-serving-namespace-{NAMESPACE}", "Apply") in managers("namespace", NAMESPACE)


def test_second_up_changes_nothing(dev):
    dev.run("preview", "--expect-no-changes", stack=STACK)
    dev.up(STACK, "--expect-no-changes", timeout=UP_TIMEOUT)


def test_stack_output_endpoint(dev):
    endpoint = dev.run("stack", "output", "endpoint", stack=STACK).stdout.strip()
    assert endpoint == f"http://{NAME}.{NAMESPACE}.svc.cluster.local:8000/v1"


def test_offline_rendering_matches_what_up_created(dev, cluster):
    """The renderer's all.yaml, applied with a server-side dry run over what `up` created, names
    the same objects and changes none of their specs or data."""
    with tempfile.TemporaryDirectory() as tmp:
        rendered = render(STACK, Path(tmp) / "out")
        applied = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                                  "--field-manager=render-check", "-o", "yaml", "-f", str(Path(tmp) / "out" / "all.yaml"))
    result = [d for d in yaml.safe_load_all(applied.stdout) if d]
    items = result[0]["items"] if len(result) == 1 and result[0]["kind"] == "List" else result

    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    from_up = dev.kubernetes_objects(STACK)
    assert sorted(key(o) for o in rendered) == sorted(from_up), "rendered and deployed objects differ"

    for obj in items:
        live = kubectl_json(cluster, "get", obj["kind"], obj["metadata"]["name"],
                            *(["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []))
        for part in ("spec", "data"):
            assert obj.get(part) == live.get(part), f"{key(obj)}: the rendering would change {part}"
        assert obj["metadata"].get("labels") == live["metadata"].get("labels"), key(obj)


def provider_writes(cluster, mark: int) -> list[dict]:
    return [e for e in cluster.audit_events(mark) if e.get("userAgent", "").startswith("pulumi-kubernetes/")]


def test_model_revision_change_stages_a_new_job_and_rolls_the_server(dev, cluster):
    before = deployment(cluster)
    old_jobs = set(jobs(cluster))
    dev.run("config", "set", "vllm-serving:modelRevision", "v2", stack=STACK)

    # The preview asks the API server: a dry-run create of the new Job, a server-side dry-run
    # apply of the changed Deployment, and no real write.
    mark = cluster.audit_mark()
    dev.run("preview", "--diff", stack=STACK)
    writes = provider_writes(cluster, mark)
    assert all("dryRun=All" in e["requestURI"] for e in writes), [e["requestURI"] for e in writes]
    dry_run = {(e["verb"], e["objectRef"]["resource"]) for e in writes}
    assert {("patch", "deployments"), ("create", "jobs")} <= dry_run, dry_run

    # One replica, and a surge replica fits: the rollout starts the new pod before it stops the
    # old one, so a Ready pod serves all along.
    with ReadyPods(cluster, NAMESPACE, "app.kubernetes.io/component=server") as ready:
        dev.up(STACK, timeout=UP_TIMEOUT)
    assert ready.errors == [] and len(ready.counts) > 5 and min(ready.counts) == 1, ready.counts
    assert_next_run_creates_nothing_that_exists(dev, STACK, cluster)

    now = jobs(cluster)
    new = set(now) - old_jobs
    assert len(new) == 1, sorted(now)
    job = new.pop()
    assert condition(now[job], "Complete")
    # dev's claim is ReadWriteOnce: the upgrade's Job ran where the server holds it (the first
    # up's Job, with no server yet, ran anywhere it could).
    (stage,) = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", f"job-name={job}")["items"]
    server_nodes = {p["spec"]["nodeName"] for p in kubectl_json(
        cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=server")["items"]}
    assert stage["spec"]["nodeName"] in server_nodes, (stage["spec"]["nodeName"], server_nodes)
    assert not old_jobs & set(now), "the previous revision's Job is still there"
    after = deployment(cluster)
    args = after["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "/models/Qwen/Qwen3-0.6B/v2" in args, args
    assert before["spec"]["template"]["spec"]["containers"][0]["args"] != args
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["status"].get("updatedReplicas") == 1 and after["status"].get("availableReplicas") == 1


class JobBackoffToZero(Poller):
    """Sets backoffLimit 0 on each new Job in the namespace, so that a failing pod fails its Job
    at once instead of after four retries with growing back-off (minutes)."""

    interval = 0.3

    def __init__(self, cluster, known: set[str]):
        super().__init__(cluster, NAMESPACE)
        self.known = known

    def step(self):
        for name in set(jobs(self.cluster)) - self.known:
            r = self.cluster.kubectl("patch", "job", name, "-n", NAMESPACE, "--type=merge",
                                     "-p", '{"spec":{"backoffLimit":0}}', check=False)
            if r.returncode == 0:
                self.known.add(name)


@pytest.fixture(scope="module")
def failed_download(dev, cluster):
    """An up whose new download Job fails (kwok fails the pods of Jobs in the namespace)."""
    stage = job_pod_fail_stage(NAMESPACE)
    cluster.apply([stage])
    try:
        with JobBackoffToZero(cluster, set(jobs(cluster))):
            dev.run("config", "set", "vllm-serving:modelRevision", "v3", stack=STACK)
            result = dev.up(STACK, timeout=UP_TIMEOUT, check=False)
    finally:
        cluster.kubectl("delete", "stage", stage["metadata"]["name"], "--wait=true")
    return result


def test_failed_download_job_fails_the_up(failed_download, cluster):
    assert failed_download.returncode != 0
    failed = [n for n, j in jobs(cluster).items() if condition(j, "Failed")]
    assert len(failed) == 1, sorted(jobs(cluster))
    assert failed[0] in failed_download.stdout, failed_download.stdout[-3000:]


def test_next_up_replaces_the_failed_job_and_resumes(failed_download, dev, cluster):
    """pulumi.com/replaceUnready: the provider replaces the failed Job instead of awaiting it again."""
    (failed,) = [j for j in jobs(cluster).values() if condition(j, "Failed")]
    result = dev.up(STACK, timeout=UP_TIMEOUT, check=False)
    assert result.returncode == 0, f"the next up failed again:\n{result.stdout[-2000:]}"
    now = jobs(cluster)
    replacement = now.get(failed["metadata"]["name"])
    assert replacement and replacement["metadata"]["uid"] != failed["metadata"]["uid"], sorted(now)
    assert condition(replacement, "Complete")
    args = deployment(cluster)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "/models/Qwen/Qwen3-0.6B/v3" in args


@pytest.fixture(scope="module")
def destroyed(dev, cluster, failed_download):
    claim_uid = kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)["metadata"]["uid"]
    result = dev.run("destroy", "--yes", stack=STACK, timeout=UP_TIMEOUT)
    return claim_uid, result


def test_destroy_removes_the_stack_but_the_server(destroyed, dev, cluster):
    """Every object leaves the stack; the server and its Service leave the cluster."""
    _, result = destroyed
    assert dev.resources(STACK) == []
    for kind, name in (("deployment", NAME), ("service", NAME)):
        r = cluster.kubectl("get", kind, name, "-n", NAMESPACE, check=False)
        assert r.returncode != 0 and "NotFound" in r.stderr, (kind, r.stdout)


def test_destroy_keeps_the_model_weights_and_namespace(destroyed, cluster):
    """retain_on_delete on the claim and on a namespace the stack created: hours of download survive."""
    claim_uid, _ = destroyed
    ns = cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json", check=False)
    assert ns.returncode == 0, f"namespace {NAMESPACE} was deleted"
    claim = kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)
    assert claim["metadata"]["uid"] == claim_uid and "deletionTimestamp" not in claim["metadata"]


def test_up_after_destroy_adopts_what_destroy_kept(destroyed, dev, cluster):
    """The next up finds the claim and the namespace that destroy kept, and adopts them: the same
    objects (UIDs), no AlreadyExists, the weights where they were."""
    claim_uid, _ = destroyed
    namespace_uid = kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["uid"]
    assert_next_run_creates_nothing_that_exists(dev, STACK, cluster)
    dev.up(STACK, timeout=UP_TIMEOUT)
    assert kubectl_json(cluster, "get", "pvc", CLAIM, "-n", NAMESPACE)["metadata"]["uid"] == claim_uid
    assert kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["uid"] == namespace_uid
    assert deployment(cluster)["status"].get("availableReplicas") == 1
    kept = {r["type"] for r in dev.resources(STACK)}
    assert {"kubernetes:core/v1:PersistentVolumeClaimPatch", "kubernetes:core/v1:NamespacePatch"} <= kept
    assert_next_run_creates_nothing_that_exists(dev, STACK, cluster)
    dev.run("preview", "--expect-no-changes", stack=STACK)
