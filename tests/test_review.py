"""The pull-request review: every stack rendered at the base (with the base's own program, in a
git worktree) and at the head, diffed; and the workflow that runs it."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT

from stack import render, review
from stack.review import COMMENT_LIMIT, COMMENT_MARKER, Side, compare, review_markdown

WORKFLOW = ROOT / ".github" / "workflows" / "pull-request.yml"
WORKFLOW_SCHEMA = ROOT / "schemas" / "github" / "workflow.json"
COPIED = ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "__main__.py", "pyproject.toml", "stack", "components")
GIT_IDENTITY = ("-c", "user.name=Review Test", "-c", "user.email=review@example.com", "-c", "commit.gpgsign=false")


def run_git(repository: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_IDENTITY, "-C", str(repository), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A copy of the project in a git repository of two commits. The second: prod gives the model
    longer to load and prices its dearest GPU higher, the components label what they make
    differently, and a stack is added."""
    repo = tmp_path_factory.mktemp("project")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, repo / name)
    run_git(repo, "init", "--quiet", "--initial-branch=main")
    run_git(repo, "add", ".")
    run_git(repo, "commit", "--quiet", "-m", "base")
    edit(repo / "Pulumi.prod.yaml", "vllm-serving:nodeCache: true", "vllm-serving:nodeCache: true\n  vllm-serving:nodeCacheReadMBps: 500")
    edit(repo / "Pulumi.prod.yaml", "NVIDIA-H200=3.20", "NVIDIA-H200=3.60")
    edit(repo / "components" / "labels.py", 'MANAGED_BY = "pulumi"', 'MANAGED_BY = "pulumi-at-head"')
    staging = (repo / "Pulumi.dev.yaml").read_text().replace("ai-serving-dev", "ai-serving-staging")
    (repo / "Pulumi.staging.yaml").write_text(staging)
    run_git(repo, "add", ".")
    run_git(repo, "commit", "--quiet", "-m", "head")
    return repo


@pytest.fixture(scope="module")
def reviewed(repository, tmp_path_factory):
    """The review as the workflow runs it: the head is the working tree, --out a relative path."""
    here = tmp_path_factory.mktemp("workdir")
    previous = os.getcwd()
    os.chdir(here)
    try:
        code = review.main(["--project-dir", str(repository), "--base", "HEAD~1", "--out", "review", "--base-label", "main"])
    finally:
        os.chdir(previous)
    return code, here / "review"


def test_every_stack_is_rendered_on_both_sides(reviewed):
    code, out = reviewed
    assert code == 0
    assert sorted(p.name for p in (out / "base").iterdir()) == ["dev", "prod"]
    assert sorted(p.name for p in (out / "head").iterdir()) == ["dev", "prod", "staging"]
    assert sorted(p.name for p in (out / "diff").iterdir()) == ["dev.diff", "prod.diff", "staging.diff"]
    for side in ("base", "head"):
        assert {"all.yaml", "outputs.json", "options.json", "summary.md"} <= {p.name for p in (out / side / "prod").iterdir()}


def test_each_side_runs_its_own_program(reviewed):
    # The components changed at head; the base must not run them (nor the editable install's).
    _, out = reviewed
    labels = {
        side: yaml.safe_load(next((out / side / "prod").glob("*-deployment-vllm-qwen3-235b.yaml")).read_text())["metadata"]["labels"]
        for side in ("base", "head")
    }
    assert labels["base"]["app.kubernetes.io/managed-by"] == "pulumi"
    assert labels["head"]["app.kubernetes.io/managed-by"] == "pulumi-at-head"


def test_the_diff_shows_the_changed_setting(reviewed):
    _, out = reviewed
    diff = (out / "diff" / "prod.diff").read_text()
    assert "--- a/prod/Deployment/ai-serving/vllm-qwen3-235b.yaml\n+++ b/prod/Deployment/ai-serving/vllm-qwen3-235b.yaml\n" in diff
    assert "-    app.kubernetes.io/managed-by: pulumi\n+    app.kubernetes.io/managed-by: pulumi-at-head\n" in diff
    startup = [line for line in diff.splitlines() if re.match(r"^[-+]\s+failureThreshold: \d+$", line)]
    assert len(startup) == 2, "the startup probe's budget follows the node cache's read rate"
    assert '"update": "88m"' in diff and "--- a/prod/options.json" in diff
    new_stack = (out / "diff" / "staging.diff").read_text()
    assert "--- /dev/null\n+++ b/staging/Namespace/ai-serving-staging.yaml\n" in new_stack
    assert "--- /dev/null\n+++ b/staging/outputs.json\n" in new_stack


def test_the_summary_counts_each_stack_and_names_the_changed_options(reviewed):
    _, out = reviewed
    text = (out / "summary.md").read_text()
    lines = text.splitlines()
    assert lines[0] == COMMENT_MARKER
    assert lines[1].startswith("## Rendered stacks: main → the working tree at ")
    # Every object but the Namespace carries the label the components changed; the download Job,
    # named by all it runs, becomes a new Job (one added, one removed), which the server now waits for.
    assert "| `dev` | 12 → 12 | 1 | 1 | 10 | 1 | 0 |" in lines
    # In prod the node cache's read rate changed too: the server's budget, its timeouts and the
    # stated time to ready follow it.
    assert "| `prod` | 33 → 33 | 1 | 1 | 31 | 3 | 2 |" in lines
    assert "| `staging` | - → 12 | 12 | 0 | 0 | 0 | 10 |" in lines
    # Each stack's GPUs and their cost a month, and what the higher price changed.
    assert "| `prod` | 8 – 16 | 5,840 – 11,680 | 18,688.00 USD – 37,376.00 USD → 21,024.00 USD – 42,048.00 USD |" in lines
    assert "| `staging` | - → 1 | - → 730 | - → unknown |" in lines
    assert (
        "- GPU cost: cost per month at min replicas 18,688.00 USD → 21,024.00 USD; cost per month at max replicas "
        "37,376.00 USD → 42,048.00 USD; priced as NVIDIA-H200 at 3.60 USD per GPU-hour, the dearest of the 3 products "
        "the pods may run on (was NVIDIA-H200 at 3.20 USD per GPU-hour, the dearest of the 3 products the pods may run on)"
    ) in lines
    assert "A new stack: every object is added." in text
    timeouts = [line for line in lines if line.startswith("  - `Deployment/ai-serving/vllm-qwen3-235b` customTimeouts: ")]
    assert timeouts == ["  - `Deployment/ai-serving/vllm-qwen3-235b` customTimeouts: create 33m, update 72m → create 41m, update 88m"]
    assert "<details><summary>Diff of <code>prod</code>" in text
    assert "<details><summary>What <code>prod</code> creates at head</summary>" in text
    assert len(text) <= COMMENT_LIMIT


def test_the_review_leaves_the_repository_as_it_was(repository, reviewed):
    assert run_git(repository, "status", "--porcelain") == ""
    assert len(run_git(repository, "worktree", "list").splitlines()) == 1


def test_the_head_can_be_a_ref_too(repository, tmp_path):
    run_git(repository, "checkout", "--quiet", "--detach", "HEAD~1")  # the working tree is the base now
    try:
        changes = review.review(repository, "main~1", tmp_path, head="main")
    finally:
        run_git(repository, "checkout", "--quiet", "main")
    assert [(c.stack, len(c.added), len(c.changed), len(c.options_changed)) for c in changes] == [
        ("dev", 1, 10, 1), ("prod", 1, 31, 3), ("staging", 12, 0, 0),
    ]
    assert (tmp_path / "summary.md").read_text().splitlines()[1].startswith("## Rendered stacks: `main~1` (")
    assert len(run_git(repository, "worktree", "list").splitlines()) == 1


def test_a_ref_that_is_not_a_commit_or_a_folder_outside_git_exits_2(repository, tmp_path, capsys):
    assert review.main(["--project-dir", str(repository), "--base", "no-such-branch", "--out", str(tmp_path / "o")]) == 2
    assert "'no-such-branch' is not a commit of" in capsys.readouterr().err
    outside = tmp_path / "plain"
    outside.mkdir()
    assert review.main(["--project-dir", str(outside), "--base", "main", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: git rev-parse --show-toplevel: ")


def side(manifests, options=None, outputs=None):
    return Side(exists=True, rendered=True, manifests=manifests, options=options, outputs=outputs or {})


def manifest(kind, name, **spec):
    return {"kind": kind, "metadata": {"name": name, "namespace": "n"}, "spec": spec}


def test_compare_objects_options_and_outputs():
    before = side(
        {"Service/n/a": manifest("Service", "a"), "Job/n/old": manifest("Job", "old"), "Deployment/n/d": manifest("Deployment", "d", replicas=1)},
        {"Service/n/a": {"protect": True}, "Job/n/old": {}, "Deployment/n/d": {"customTimeouts": {"create": "5m"}}},
        {"endpoint": "x"},
    )
    after = side(
        {"Service/n/a": manifest("Service", "a"), "Job/n/new": manifest("Job", "new"), "Deployment/n/d": manifest("Deployment", "d", replicas=2)},
        {"Service/n/a": {}, "Job/n/new": {}, "Deployment/n/d": {"customTimeouts": {"create": "5m"}, "dependsOn": ["Job/new"]}},
        {"endpoint": "y"},
    )
    change = compare("s", before, after)
    assert (change.added, change.removed, change.changed) == (["Job/n/new"], ["Job/n/old"], ["Deployment/n/d"])
    assert change.options_changed == [
        ("Service/n/a", "protect", "set", "not set"),
        ("Deployment/n/d", "dependsOn", "not set", "Job/new"),
    ]
    assert change.outputs_changed == ["endpoint"]
    assert "-  replicas: 1\n+  replicas: 2\n" in change.diff
    assert "--- a/s/Job/n/old.yaml\n+++ /dev/null\n" in change.diff
    unchanged = compare("s", before, before)
    assert unchanged.unchanged and unchanged.diff == ""


def test_a_side_without_options_json_or_that_does_not_render():
    old = side({"Service/n/a": manifest("Service", "a")})  # a renderer from before options.json
    new = side({"Service/n/a": manifest("Service", "a")}, {"Service/n/a": {"protect": True}})
    text = review_markdown([compare("s", old, new)], "base", "head")
    assert "Resource options were not compared: one side's renderer does not write options.json." in text
    broken = Side(exists=True, error="error: stack s: invalid configuration ```")
    change = compare("s", side({}), broken)
    assert not change.compared
    text = review_markdown([change], "base", "head")
    assert "| `s` | 0 → failed | - | - | - | - | - |" in text
    assert "It does not render at head:\n\n````\nerror: stack s: invalid configuration ```\n````" in text


def test_a_diff_too_long_for_a_comment_is_left_to_the_artifact():
    big = {f"ConfigMap/n/c{i}": manifest("ConfigMap", f"c{i}", data="x" * 1000) for i in range(80)}
    change = compare("big", side({}), side(big))
    text = review_markdown([change], "base", "head")
    assert len(text) <= COMMENT_LIMIT
    assert "The diff of `big` is too long for a comment: see `diff/big.diff` in the artifact." in text


# --- The workflow ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict:
    document = yaml.safe_load(WORKFLOW.read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true; GitHub reads it as "on"
    return document


def steps(workflow):
    return [(job_name, step) for job_name, job in workflow["jobs"].items() for step in job["steps"]]


def test_the_workflow_validates_against_the_github_workflow_schema(workflow):
    schema = json.loads(WORKFLOW_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(workflow), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []
    assert "https://json.schemastore.org/github-workflow.json" in (ROOT / "schemas" / "github" / "SOURCES.md").read_text()


def test_the_schema_refuses_what_github_refuses():
    schema = json.loads(WORKFLOW_SCHEMA.read_text())
    bad = {"on": "pull_request", "jobs": {"a": {"runs-on": "ubuntu-24.04", "steps": [{"run": "true", "uses": "x/y@v1"}]}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))
    assert list(jsonschema.Draft7Validator(schema).iter_errors({"on": "pull_request", "jobs": {"a": {"stepz": []}}}))


def test_runs_on_pull_requests_with_python_3_11_and_ci(workflow):
    assert list(workflow["on"]) == ["pull_request"]
    setups = [step for _, step in steps(workflow) if step.get("uses", "").startswith("actions/setup-python@")]
    assert setups and all(step["with"]["python-version"] == "3.11" for step in setups)
    runs = [step["run"] for _, step in steps(workflow) if "run" in step]
    assert "bash .ci/run" in runs


def test_every_action_is_pinned_to_a_commit_of_a_release():
    uses = re.findall(r"uses: ([\w./-]+)@(\S+)( # (v\d+\.\d+\.\d+))?", WORKFLOW.read_text())
    assert {action for action, *_ in uses} == {"actions/checkout", "actions/setup-python", "actions/upload-artifact", "pulumi/actions"}
    for action, ref, _, version in uses:
        assert re.fullmatch(r"[0-9a-f]{40}", ref) and version, f"{action}@{ref}: pin a commit and name its release"


def test_secrets_never_appear_in_an_if(workflow):
    conditions = [step.get("if", "") for _, step in steps(workflow)] + [job.get("if", "") for job in workflow["jobs"].values()]
    assert not [condition for condition in conditions if "secrets." in str(condition)]
    preview = workflow["jobs"]["preview"]
    assert preview["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    gated = [step for step in preview["steps"] if step.get("if") == "env.PREVIEW == 'true'"]
    assert len(gated) == len(preview["steps"]) - 1
    assert any("pulumi preview --stack" in step.get("run", "") and "--policy-pack policy" in step["run"] for step in gated)


def test_attacker_controlled_values_reach_scripts_only_through_the_environment(workflow):
    for _, step in steps(workflow):
        assert "${{" not in step.get("run", ""), f"{step.get('name')}: pass expressions through env"


def commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script: continuation lines joined, split at ; && || |."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line.strip()):
            try:
                tokens = shlex.split(part, comments=True)
            except ValueError:  # a fragment of a quoted string split above
                continue
            if tokens:
                found.append(tokens)
    return found


def test_every_command_the_workflow_runs_exists_here(workflow, tmp_path):
    checked = []
    for _, step in steps(workflow):
        for tokens in commands(step.get("run", "")):
            if tokens[0] == "bash":
                assert (ROOT / tokens[1]).is_file(), tokens
                checked.append(tokens[1])
            if "-m" in tokens and tokens[tokens.index("-m") + 1].startswith("stack."):
                module = tokens[tokens.index("-m") + 1]
                assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
                # The arguments the step gives are ones the module's own parser accepts.
                {"stack.review": review, "stack.render": render}[module].parser().parse_args(tokens[tokens.index("-m") + 2 :])
                checked.append(module)
            if "-r" in tokens:
                assert (ROOT / tokens[tokens.index("-r") + 1]).is_file(), tokens
                checked.append(tokens[tokens.index("-r") + 1])
            if "--policy-pack" in tokens:
                assert (ROOT / tokens[tokens.index("--policy-pack") + 1] / "PulumiPolicy.yaml").is_file()
                checked.append("policy")
            if tokens[0].startswith(".venv/bin/"):
                checked.append(tokens[0])
    assert sorted(set(checked)) == sorted({".ci/run", "stack.review", "requirements.txt", "policy/requirements.txt", "policy", ".venv/bin/python"})
    assert (ROOT / ".ci" / "run").read_text().count("python3 -m venv .venv\n") == 1, ".ci/run makes the .venv the steps use"


def test_the_review_writes_where_the_workflow_reads(workflow):
    script = next(step["run"] for _, step in steps(workflow) if "stack.review" in step.get("run", ""))
    assert "--out review" in script
    upload = next(step for _, step in steps(workflow) if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "review/"
    comment = next(step for _, step in steps(workflow) if "gh api" in step.get("run", ""))
    assert 'marker="$(head -n 1 review/summary.md)"' in comment["run"] and "-F body=@review/summary.md" in comment["run"]
    assert workflow["jobs"]["test-and-render"]["permissions"]["pull-requests"] == "write"


def test_the_preview_loop_finds_every_stack_review_renders():
    # The preview step loops over Pulumi.*.yaml in the shell; stack.review lists the same files.
    shell = subprocess.run(
        ["bash", "-c", 'for file in Pulumi.*.yaml; do stack="${file#Pulumi.}"; echo "${stack%.yaml}"; done'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert shell.stdout.split() == review.stack_names(ROOT)
    assert {"dev", "prod", "multinode"} <= set(review.stack_names(ROOT))


FAKE_GH = """#!/bin/bash
# gh as the comment step uses it: `api --paginate URL --jq FILTER` applies FILTER to the comments
# in $GH_COMMENTS; every call is logged with the body file it would send.
printf '%s\\n' "$*" >> "$GH_LOG"
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = --jq ]; then jq -r "${args[$((i + 1))]}" "$GH_COMMENTS"; fi
done
"""


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq, which gh's --jq stands for here")
@pytest.mark.parametrize(
    ("comments", "call"),
    [
        ([], "api --method POST repos/o/r/issues/7/comments -F body=@review/summary.md"),
        (
            [
                {"id": 11, "user": {"type": "User"}, "body": COMMENT_MARKER + "\nquoted by a person"},
                {"id": 12, "user": {"type": "Bot"}, "body": "another bot's comment"},
                {"id": 13, "user": {"type": "Bot"}, "body": COMMENT_MARKER + "\nthe last review"},
            ],
            "api --method PATCH repos/o/r/issues/comments/13 -F body=@review/summary.md",
        ),
    ],
)
def test_the_comment_step_updates_its_own_comment_or_posts_one(workflow, tmp_path, comments, call):
    step = next(step for _, step in steps(workflow) if "gh api" in step.get("run", ""))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "gh").write_text(FAKE_GH)
    (tmp_path / "bin" / "gh").chmod(0o755)
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "summary.md").write_text(review_markdown([], "base", "head"))
    (tmp_path / "comments.json").write_text(json.dumps(comments))
    environment = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "GH_LOG": str(tmp_path / "gh.log"), "GH_COMMENTS": str(tmp_path / "comments.json"),
        "GITHUB_REPOSITORY": "o/r", "PR_NUMBER": "7",
    }
    # GitHub runs `run:` with bash -e -o pipefail.
    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path, env=environment, check=True)
    log = (tmp_path / "gh.log").read_text().splitlines()
    assert log[0].startswith("api --paginate repos/o/r/issues/7/comments --jq ")
    assert log[1:] == [call]


FAKE_PULUMI = """#!/bin/bash
# pulumi as the preview step uses it: every call logged; `config get vllm-serving:preflight` answers
# from $PREFLIGHT_OF_<stack> (unset: the key is not set, as the CLI exits 1).
printf '%s\\n' "$*" >> "$PULUMI_LOG"
if [ "$1 $2" = "config get" ]; then
  var="PREFLIGHT_OF_${5#acme/}"
  [ -n "${!var:-}" ] && { echo "${!var}"; exit 0; }
  exit 1
fi
"""


def test_the_preview_keeps_each_stacks_preflight_only_on_the_cluster_it_is_aimed_at(workflow, tmp_path):
    script = next(step["run"] for step in workflow["jobs"]["preview"]["steps"] if "pulumi preview --stack" in step.get("run", ""))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pulumi").write_text(FAKE_PULUMI)
    (tmp_path / "bin" / "pulumi").chmod(0o755)
    for stack in ("dev", "prod", "staging"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    log = tmp_path / "pulumi.log"
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "PULUMI_LOG": str(log), "PULUMI_STACK_PREFIX": "acme/",
           "PREFLIGHT_STACKS": "dev", "PREFLIGHT_OF_staging": "off", "RUNNER_TEMP": str(tmp_path), "POLICY_PACK_CONFIG": ""}
    subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    previews = {line.split("--stack ")[1].split()[0]: line for line in log.read_text().splitlines() if line.startswith("preview ")}
    assert set(previews) == {"acme/dev", "acme/prod", "acme/staging"}
    # dev's cluster is the kubeconfig's: its own mode; prod's is not: warn; staging reads nothing: off stays.
    assert "preflight" not in previews["acme/dev"]
    assert "--config vllm-serving:preflight=warn" in previews["acme/prod"]
    assert "preflight" not in previews["acme/staging"]
