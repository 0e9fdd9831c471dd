"""A real Prometheus on loopback for tests, and promtool.

Both come from Debian's ``prometheus`` package, which ``.ci/run`` installs. A missing binary
fails the test with that instruction; it is never a skip.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

STARTUP_SECONDS = 30
"""How long Prometheus may take to answer /-/ready."""
LIFETIME_SECONDS = 300
"""A Prometheus still running after this long is killed, whatever the tests are doing (unless
the test gives another ``lifetime``)."""
HTTP_TIMEOUT = 10


def binary(name: str) -> str:
    """The path of prometheus or promtool, on PATH or in /usr/bin; fails the test without it."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if found is None:
        pytest.fail(
            f"{name} is not installed: these tests need Debian's prometheus package (prometheus and promtool). "
            f"Run .ci/run as root, which installs it, or: apt-get install --no-install-recommends prometheus",
            pytrace=False,
        )
    return found


def version(name: str) -> str:
    out = subprocess.run([binary(name), "--version"], capture_output=True, text=True, timeout=HTTP_TIMEOUT)
    return (out.stdout or out.stderr).splitlines()[0]


def promtool(*args: str, cwd: Optional[Path] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QueryError(Exception):
    """Prometheus answered a query with an error (a parse error, a bad matcher, ...)."""


class Prometheus:
    """``prometheus`` on 127.0.0.1 (a free port), storing in ``directory``, scraping
    ``scrape_configs`` every ``interval``. Stop it with ``stop``, or use it as a context manager."""

    def __init__(self, directory: Path, scrape_configs: list[dict], interval: str = "1s",
                 lifetime: float = LIFETIME_SECONDS):
        binary("prometheus")
        self.lifetime = lifetime
        self.directory = directory
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                    "scrape_configs": scrape_configs,
                },
                sort_keys=False,
            )
        )
        self.log = directory / "prometheus.log"
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self._watchdog: Optional[threading.Timer] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        prometheus = binary("prometheus")
        # A port taken between probing and binding makes Prometheus exit: try another.
        for _ in range(3):
            self.port = free_port()
            command = [
                prometheus,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ]
            if setpriv := shutil.which("setpriv"):
                # Prometheus dies with the test process, even one killed without its teardown.
                command = [setpriv, "--pdeathsig", "KILL", "--", *command]
            with self.log.open("w") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self._watchdog = threading.Timer(self.lifetime, self._kill)
            self._watchdog.daemon = True
            self._watchdog.start()
            if self._wait_ready():
                return
            self.stop()
            if "address already in use" not in self.log.read_text():
                break
        raise RuntimeError(f"Prometheus did not become ready within {STARTUP_SECONDS} s; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        return False

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def reload(self, scrape_configs: list[dict], interval: str) -> None:
        """A new configuration, read again on SIGHUP as Prometheus does (no restart, data kept)."""
        self.config.write_text(yaml.safe_dump(
            {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
             "scrape_configs": scrape_configs}, sort_keys=False))
        assert self.process is not None and self.process.poll() is None, self.log_tail()
        self.process.send_signal(signal.SIGHUP)

    def __enter__(self) -> "Prometheus":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query now: the result vector, each element's value a float."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        assert data["resultType"] == "vector", data
        return [{"metric": item["metric"], "value": float(item["value"][1])} for item in data["result"]]

    def value(self, expr: str) -> float:
        """The one value an aggregating query returns (as a KEDA trigger needs it)."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return result[0]["value"]

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 60, every: float = 0.25) -> None:
        """Poll until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; Prometheus log:\n{self.log_tail()}")
            if self.process.poll() is not None:
                raise AssertionError(f"Prometheus exited ({self.process.returncode}) waiting for {what}:\n{self.log_tail()}")
            time.sleep(every)
