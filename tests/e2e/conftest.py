"""Fixtures for the end-to-end tests (``pytest -m e2e``): the tools, a local cluster, the CLI.

The tools come from ``e2e/build-tools.sh`` (built once, cached outside the repository), or
from the directory in ``VLLM_E2E_BIN``. Set ``VLLM_E2E_KEEP=1`` to keep the work directory
(logs, kubeconfig, Pulumi state) after the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from . import netns
from .cluster import PLATFORM_CIDR, POD_CIDR, LocalCluster
from .pulumi_cli import ROOT, PulumiProject

CRDS = ROOT / "schemas" / "crds"
BUILD_TIMEOUT = 3600


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def e2e_bin() -> Path:
    given = os.environ.get("VLLM_E2E_BIN")
    if given:
        return Path(given)
    p = subprocess.run(["bash", str(ROOT / "e2e" / "build-tools.sh")], capture_output=True, text=True,
                       timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"e2e/build-tools.sh failed:\n{p.stderr[-6000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def e2e_work():
    work = Path(tempfile.mkdtemp(prefix="vllm-e2e-"))
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        yield work
    finally:
        signal.signal(signal.SIGTERM, previous)
        if os.environ.get("VLLM_E2E_KEEP"):
            print(f"\ne2e work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(e2e_bin, e2e_work, request) -> LocalCluster:
    crds = sorted(CRDS.glob("*.yaml"))
    c = LocalCluster(e2e_bin, e2e_bin.parent / "share", e2e_work / "cluster", crds)
    (e2e_work / "cluster").mkdir()
    namespace = netns.NetworkNamespace([POD_CIDR, PLATFORM_CIDR])
    namespace.enter()
    netns.CURRENT = namespace
    t0 = time.monotonic()
    try:
        c.start()
    except BaseException:
        c.stop()
        namespace.leave()
        raise
    request.config.stash[TIMINGS] = {"cluster start": time.monotonic() - t0, **{f"  {k}": v for k, v in c.timings.items()}}
    try:
        yield c
    finally:
        c.stop()
        namespace.leave()
        netns.CURRENT = None


@pytest.fixture(scope="session")
def project(e2e_bin, e2e_work, cluster) -> PulumiProject:
    return PulumiProject(e2e_bin, e2e_work, cluster.kubeconfig)


TIMINGS = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.write_line("e2e timings: " + ", ".join(f"{k.strip()} {v:.1f}s" for k, v in timings.items()))


def kubectl_json(cluster: LocalCluster, *args: str):
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)
