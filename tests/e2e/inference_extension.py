"""What the Gateway API Inference Extension's tests need around the real Endpoint Picker and
body-based router: fake vLLM pods at the addresses kwok gave them, the extension's processes run
as their Deployments are rendered, and Envoy's part of the ext_proc protocol (extproc-client,
built with the tools: e2e/tools/epp).

Everything here runs inside the tests' network namespace (netns.py): the pods' addresses are
local addresses of its ``lo``."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.fake_vllm_metrics import Engine, MetricsEndpoint, Pod, release_metrics, vllm_exposition

from .cluster import LocalCluster, wait_for

DESTINATION_HEADER = "x-gateway-destination-endpoint"
"""Where the picker sends a request (pkg/epp/metadata: DestinationEndpointKey)."""


class FakeVllmPods:
    """One fake vLLM /metrics per pod, listening at the pod's IP and the server's port, serving
    the release's metrics with a load the test sets (``set``)."""

    def __init__(self, pods: dict[str, str], port: int, model_name: str, namespace: str, release: str):
        self.addresses = {name: f"{ip}:{port}" for name, ip in pods.items()}
        self.pods = {name: Pod(namespace, name, model_name, (Engine(),)) for name in pods}
        self.metrics = release_metrics(release)
        self.started = time.time() - 3600
        self.endpoints = {
            name: MetricsEndpoint(lambda name=name: self._render(name), bind=(ip, port)) for name, ip in pods.items()
        }

    def _render(self, name: str) -> str:
        return vllm_exposition(self.pods[name], time.time() - self.started, self.started, self.metrics)

    def set(self, name: str, engine: Engine | None = None, **changes) -> None:
        """The pod's load from now on: its (one) engine, and other Pod fields (lora)."""
        pod = self.pods[name]
        self.pods[name] = dataclasses.replace(pod, **({"engines": (engine,)} if engine else {}), **changes)

    def wait_scraped(self, times: int = 2, timeout: float = 30) -> None:
        """Until every pod has been scraped ``times`` more times: the picker has seen the load set before."""
        start = {name: endpoint.scrapes for name, endpoint in self.endpoints.items()}
        wait_for("the picker scraping every pod", lambda: all(
            endpoint.scrapes >= start[name] + times for name, endpoint in self.endpoints.items()), timeout)

    def pod_at(self, address: str) -> str:
        (name,) = [name for name, at in self.addresses.items() if at == address]
        return name

    def __enter__(self):
        for endpoint in self.endpoints.values():
            endpoint.start()
        return self

    def __exit__(self, *exc):
        for endpoint in self.endpoints.values():
            endpoint.stop()


def service_account_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig with a token of the ServiceAccount: the process acts with its Role alone."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "e2e", "cluster": {
            "server": cluster.server, "certificate-authority-data": base64.b64encode(cluster.pki.ca.read_bytes()).decode()}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": account, "namespace": namespace}}],
    }))
    path.chmod(0o600)
    return path


def container_of(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def with_local_files(args: list[str], mounts: dict[str, Path]) -> list[str]:
    """The container's args, with every path under a mounted directory moved to its local copy."""
    out = []
    for arg in args:
        for mount, local in mounts.items():
            if arg.startswith(mount + "/"):
                arg = str(local / arg[len(mount) + 1:])
        out.append(arg)
    return out


@contextmanager
def process(binary: Path, args: list[str], env: dict[str, str], log: Path):
    """The program running, its output in ``log``; stopped (process group) on exit."""
    with open(log, "wb") as out:
        popen = subprocess.Popen([str(binary), *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={"PATH": os.environ["PATH"], **env}, start_new_session=True)
    try:
        yield popen
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)


def prometheus_gauge(url: str, name: str) -> float | None:
    """The sum of a gauge's series at a /metrics URL, or None when it has none."""
    with urllib.request.urlopen(url, timeout=5) as response:
        values = [float(line.rsplit(" ", 1)[1]) for line in response.read().decode().splitlines()
                  if line.startswith(name + "{") or line.startswith(name + " ")]
    return sum(values) if values else None


class Envoy:
    """Envoy's side of ext_proc: each request's headers and body to the processor, and what it
    answered (the headers it set, or an immediate response)."""

    def __init__(self, bin_dir: Path, target: str, tls: bool, metrics: str | None = None):
        self.command = [str(bin_dir / "extproc-client"), "-target", target, *(["-tls"] if tls else [])]
        self.metrics = metrics

    def gauge(self, name: str) -> float | None:
        assert self.metrics, "the processor's metrics URL"
        return prometheus_gauge(self.metrics, name)

    def ready_pods(self) -> float | None:
        """How many of the pool's pods the picker holds (its inference_pool_ready_pods gauge)."""
        return self.gauge("inference_pool_ready_pods")

    def send(self, requests: list[dict], deadline_seconds: int = 10) -> list[dict]:
        """Each request ({headers, body?, respond?}; without a body, the headers end the request),
        one after another, each given up after deadline_seconds."""
        lines = "".join(json.dumps(r) + "\n" for r in requests)
        result = subprocess.run([*self.command, "-timeout", f"{deadline_seconds}s"], input=lines, capture_output=True,
                                text=True, timeout=60 + deadline_seconds * len(requests))
        assert result.returncode == 0, result.stderr
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(answers) == len(requests), result.stderr
        return answers


def completion(model: str, prompt: str, host: str = "chat.example.com") -> dict:
    """An OpenAI completion request as the Gateway hands it to the processor; the model server's
    answer is played back too, so the request ends in the processor's books."""
    return {
        "headers": {":method": "POST", ":path": "/v1/completions", ":authority": host, ":scheme": "http",
                    "content-type": "application/json", "authorization": "Bearer test-key"},
        "body": json.dumps({"model": model, "prompt": prompt, "max_tokens": 8}),
        "respond": True,
    }


def spread(answers: list[dict], pods: FakeVllmPods) -> Counter:
    """Requests per pod; an answer without a destination fails the test with what it was."""
    counts: Counter = Counter({name: 0 for name in pods.pods})
    for answer in answers:
        assert not answer.get("error") and not answer.get("immediate_status"), answer
        counts[pods.pod_at(answer["set_headers"][DESTINATION_HEADER])] += 1
    return counts
