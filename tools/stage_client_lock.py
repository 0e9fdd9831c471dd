#!/usr/bin/env python3
"""The download Job's hub clients, locked with hashes for the Job image's Python and platform.

    .venv/bin/python tools/stage_client_lock.py                    # write components/stage_client/<source>.txt
    .venv/bin/python tools/stage_client_lock.py --download DIR     # fetch the locked wheels into DIR, hashes checked

The Job installs its client with ``pip install --require-hashes --no-deps --only-binary=:all:
-r <lock>`` (components/model_store.py INSTALL_AND_RUN): every package of the client's whole
dependency set is pinned to one version and to the sha256 of the one wheel that fits the image.
This script resolves that set with pip's own resolver (``pip install --dry-run --report``) for
the image's interpreter and platform, not this machine's: the tags pip may choose are given
with ``--python-version``, ``--implementation``, ``--abi`` and ``--platform``, and the report
names the file it chose for each package, with its sha256 from the index.

Which interpreter and platform: IMAGE_RUNTIMES, per image of the Job (ModelStore's default
``image``). After a bump of that image, add its entry (read the release's docker/Dockerfile)
and run this once; tests/test_stage_client_lock.py fails until the locks match the image.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from vllm_serving_components.model_store import CLIENTS, DEFAULTS, client_lock


class Runtime(NamedTuple):
    """The interpreter and platform of an image, as pip's tag options name them."""

    python: str  # major.minor
    glibc: tuple[int, int]
    arch: str

    def abis(self) -> list[str]:
        return ["cp" + self.python.replace(".", ""), "abi3", "none"]

    def platforms(self) -> list[str]:
        # A glibc of 2.N runs wheels for every manylinux_2_M with M <= N (PEP 600), and the
        # legacy aliases manylinux2014 (2.17), manylinux2010 (2.12) and manylinux1 (2.5).
        major, minor = self.glibc
        platforms = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 4, -1)]
        return platforms + [f"manylinux{alias}_{self.arch}" for alias in ("2014", "2010", "1")]

    def pip_options(self) -> list[str]:
        """pip options that select wheels for this runtime instead of the running one."""
        options = ["--python-version", self.python, "--implementation", "cp", "--only-binary=:all:"]
        for abi in self.abis():
            options += ["--abi", abi]
        for platform in self.platforms():
            options += ["--platform", platform]
        return options

    def describe(self) -> str:
        return f"CPython {self.python}, linux {self.arch}, glibc {self.glibc[0]}.{self.glibc[1]}"


IMAGE_RUNTIMES = {
    # vllm-project/vllm v0.11.0 docker/Dockerfile: ARG PYTHON_VERSION=3.12, installed from the
    # deadsnakes PPA into the final stage FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04
    # (Ubuntu 22.04: glibc 2.35); x86_64, the GPU nodes' platform (arm64 nodes need an entry of their own).
    "vllm/vllm-openai:v0.11.0": Runtime("3.12", (2, 35), "x86_64"),
    # v0.34.0: its docker/Dockerfile at the tag could not be read here (the stored copy of
    # vllm-project/vllm's docker/Dockerfile is of an older commit, with ARG PYTHON_VERSION=3.12);
    # the release's wheel accepts Python >=3.11,<3.15 (its METADATA Requires-Python) and is built
    # for manylinux_2_28. CPython 3.12 as in every release's Dockerfile read so far, and glibc 2.35
    # as the floor (an Ubuntu 22.04 or newer base runs every wheel chosen for it).
    "vllm/vllm-openai:v0.34.0": Runtime("3.12", (2, 35), "x86_64"),
}


def runtime_of(image: str) -> Runtime:
    if image not in IMAGE_RUNTIMES:
        raise SystemExit(
            f"stage_client_lock: no runtime known for {image}: read ARG PYTHON_VERSION and the final stage's base "
            "image in that release's docker/Dockerfile, add it to IMAGE_RUNTIMES, and run this again"
        )
    return IMAGE_RUNTIMES[image]


def resolve(requirements: tuple[str, ...], runtime: Runtime) -> dict:
    """pip's installation report for the requirements on the runtime: nothing is installed."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--disable-pip-version-check", "--report", str(report), "--target", str(Path(scratch) / "target"),
             *runtime.pip_options(), *requirements],
            check=True,
        )  # fmt: skip
        return json.loads(report.read_text())


def lock_text(source: str, requirements: tuple[str, ...], image: str, runtime: Runtime, report: dict) -> str:
    """The lock file for one source from pip's installation report: one pinned, hashed line per package."""
    lines = [
        f"# The {source} client of the download Job: pip install --require-hashes --no-deps -r this file.",
        "# Generated by tools/stage_client_lock.py; do not edit.",
        f"# requirements: {' '.join(requirements)}",
        f"# image: {image}",
        f"# runtime: {runtime.describe()}",
    ]
    entries = []
    for item in report["install"]:
        metadata, download = item["metadata"], item["download_info"]
        digest = (download.get("archive_info") or {}).get("hashes", {}).get("sha256")
        if not digest:
            raise SystemExit(f"stage_client_lock: the index gave no sha256 for {download['url']}")
        wheel = download["url"].rsplit("/", 1)[-1]
        entries.append((metadata["name"].lower(), f"{metadata['name']}=={metadata['version']} \\\n    --hash=sha256:{digest}  # {wheel}"))
    return "\n".join(lines + [entry for _, entry in sorted(entries)]) + "\n"


def write_locks() -> int:
    image = DEFAULTS["image"]
    runtime = runtime_of(image)
    for source, requirements in sorted(CLIENTS.items()):
        text = lock_text(source, requirements, image, runtime, resolve(requirements, runtime))
        path = client_lock(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}: {text.count('--hash=')} packages for {image} ({runtime.describe()})")
    return 0


def download(directory: Path) -> int:
    """The locked wheels of every source, for the image's runtime, checked against their hashes."""
    runtime = runtime_of(DEFAULTS["image"])
    for source in sorted(CLIENTS):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(directory),
             "--require-hashes", "--no-deps", *runtime.pip_options(), "-r", str(client_lock(source))],
            check=True,
        )  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--download", type=Path, metavar="DIR", help="fetch the locked wheels into DIR")
    args = parser.parse_args()
    if args.download:
        return download(args.download)
    return write_locks()


if __name__ == "__main__":
    sys.exit(main())
