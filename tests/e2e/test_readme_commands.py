"""Every README command that needs no cluster, pasted in order into a fresh clone, works.

The commands run as written, one bash session per code block, in a `git clone` of this
checkout's HEAD. Left out, each for its reason: commands that talk to a cluster or a Pulumi
backend, lines with a placeholder to fill in, the test commands themselves, and the flag-table
tool (it downloads a vLLM wheel of several hundred MB). The install commands reach the package
index as they do for a user; pip's cache makes a second run quick.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from . import netns
from .pulumi_cli import ROOT

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
SKIPPED = [
    (re.compile(r"\bpulumi\s+[a-z]|\bkubectl\b"), "needs a cluster or a Pulumi backend"),
    (re.compile(r"<owner>|/path/to/|/elsewhere/"), "has a placeholder to fill in"),
    (re.compile(r"-m pytest\b"), "is the test suite itself"),
    (re.compile(r"tools/vllm_flag_table\.py"), "downloads a vLLM wheel"),
    (re.compile(r"stack\.smoke\b"), "calls a deployed server"),
]
COMMAND_TIMEOUT = 900


def commands() -> list[tuple[int, str, str | None]]:
    """(block, command, reason to skip or None) for every line of every sh block, in order."""
    found = []
    for index, block in enumerate(re.findall(r"```sh\n(.*?)```", README, flags=re.S)):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command:
                reason = next((why for pattern, why in SKIPPED if pattern.search(command)), None)
                found.append((index, command, reason))
    return found


def test_the_skips_leave_the_no_cluster_commands():
    """Every program a README command starts is one the reader has after the steps before it."""
    run = [command for _, command, reason in commands() if reason is None]
    assert run, "nothing left to run"
    for command in run:
        assert re.match(r"(python3 -m venv |\.venv[\w.-]*/bin/|policy/venv/bin/|bash e2e/)", command), command


def test_readme_commands_work_in_order_in_a_fresh_clone(tmp_path, capsys):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    timings = []
    for block, command, reason in commands():
        if reason:
            timings.append(f"  skipped ({reason}): {command}")
            continue
        started = time.monotonic()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone, capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=netns.outside)
        timings.append(f"  {time.monotonic() - started:6.1f}s  {command}")
        assert result.returncode == 0, f"README block {block}: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with capsys.disabled():
        print("\nREADME commands in a fresh clone:\n" + "\n".join(timings))
    assert (clone / "rendered" / "dev" / "all.yaml").is_file()
