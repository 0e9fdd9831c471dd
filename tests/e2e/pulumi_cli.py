"""The real Pulumi CLI, offline: a local file backend, the passphrase secrets provider, the
language host and Kubernetes provider from the tools' bin directory, and no plugin downloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# What a stack program needs; the rest of the repository (tests, docs, .venv) stays out.
PROJECT_FILES = (
    "Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "Pulumi.multinode.yaml", "Pulumi.moe.yaml", "__main__.py",
    "requirements.txt",
)
PROJECT_DIRS = ("components", "stack")


class PulumiError(AssertionError):
    pass


def pinned_provider() -> str:
    """The pulumi-kubernetes release requirements.txt pins: the provider a user's `up` downloads."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("pulumi-kubernetes=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("requirements.txt pins no pulumi-kubernetes")


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self):
        return json.loads(self.stdout)


class PulumiProject:
    """A copy of the project in ``work/project`` with its own backend and PULUMI_HOME.

    The copy's ``.venv`` is a link to the repository's ``.venv-e2e`` (requirements.txt alone, as
    ``pulumi install`` makes it), which ``.ci/run`` (or the README's install command) creates."""

    def __init__(
        self,
        bin_dir: Path,
        work: Path,
        kubeconfig: Path,
        source: Path = ROOT,
        files: tuple[str, ...] = PROJECT_FILES,
        dirs: tuple[str, ...] = PROJECT_DIRS,
    ):
        """A copy of ``files`` and ``dirs`` of ``source`` (this repository's stack program by
        default; another project, such as an example, otherwise) under ``work``."""
        self.bin = bin_dir
        work = work / ("project" if source == ROOT else source.name)
        self.dir = work / "project"
        self.dir.mkdir(parents=True)
        for name in files:
            shutil.copy2(source / name, self.dir / name)
        for name in dirs:
            shutil.copytree(source / name, self.dir / name, ignore=shutil.ignore_patterns("__pycache__"))
        venv = ROOT / ".venv-e2e"
        if not (venv / "bin" / "python").exists():
            raise RuntimeError(f"{venv} is missing: create it first (see docs/end-to-end-tests.md)")
        (self.dir / ".venv").symlink_to(venv)
        backend = work / "backend"
        backend.mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_HOME": str(work / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            # Plugins by version from PULUMI_HOME, not whatever is on PATH: a Kubernetes SDK that
            # asks for another provider version than the one built fails instead of using it.
            # The language host is still found beside the CLI.
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "NO_COLOR": "1",
            "KUBECONFIG": str(kubeconfig),
        }
        self.log: list[Result] = []
        self.log_dir = work / "pulumi-logs"
        self.log_dir.mkdir()
        self.versions = json.loads((bin_dir.parent / "versions.json").read_text())
        self.run("plugin", "install", "resource", "kubernetes", self.versions["pulumi-kubernetes"],
                 "--file", str(bin_dir / "pulumi-resource-kubernetes"))

    def run(self, *args: str, stack: str | None = None, timeout: float = 300, check: bool = True) -> Result:
        cmd = [str(self.bin / "pulumi"), *args, "--non-interactive"]
        if stack:
            cmd += ["--stack", stack]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            self._write_log(args, cmd, "timeout", time.monotonic() - t0, _text(e.stdout), _text(e.stderr))
            raise PulumiError(f"pulumi {' '.join(args)} timed out after {timeout}s\n"
                              f"{_text(e.stdout)[-4000:]}\n{_text(e.stderr)[-4000:]}") from None
        result = Result(cmd, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
        self.log.append(result)
        self._write_log(args, cmd, p.returncode, result.seconds, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise PulumiError(f"pulumi {' '.join(args)} exited {p.returncode}\n"
                              f"--- stdout\n{p.stdout[-6000:]}\n--- stderr\n{p.stderr[-4000:]}")
        return result

    def _write_log(self, args, cmd, status, seconds, stdout, stderr):
        self.count = getattr(self, "count", 0) + 1
        name = "-".join(a for a in args[:2] if not a.startswith("-"))
        (self.log_dir / f"{self.count:02d}-{name}.log").write_text(
            f"$ {' '.join(cmd)}\n# exit {status} after {seconds:.1f}s\n{stdout}\n--- stderr\n{stderr}")

    def up(self, stack: str, *extra: str, timeout: float = 300, check: bool = True) -> Result:
        # With its preview, as a user runs it: a plan the preview cannot make fails here too.
        return self.run("up", "--yes", "--diff", *extra, stack=stack, timeout=timeout, check=check)

    def init_stack_like(self, stack: str, base: str, settings: dict) -> None:
        """A stack of its own: the shipped stack ``base`` with these config settings (keys without
        the project prefix) changed."""
        config = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())
        config["config"].update({f"vllm-serving:{key}": value for key, value in settings.items()})
        (self.dir / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(config))
        self.run("stack", "init", stack)

    def resources(self, stack: str) -> list[dict]:
        return self.run("stack", "export", stack=stack).json()["deployment"].get("resources", [])

    def kubernetes_objects(self, stack: str) -> dict[tuple[str, str, str], dict]:
        """(kind, namespace, name) -> outputs of every Kubernetes object in the stack's state."""
        found = {}
        for r in self.resources(stack):
            if not r["type"].startswith("kubernetes:") or r["type"].startswith("pulumi:providers:"):
                continue
            out = r.get("outputs", {})
            meta = out.get("metadata", {})
            if "kind" in out and "name" in meta:
                found[(out["kind"], meta.get("namespace", ""), meta["name"])] = out
        return found


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
