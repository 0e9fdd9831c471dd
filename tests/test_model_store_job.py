"""The download Job's container, run here exactly as rendered: its shell command installs the
pinned modelscope client, then runs the script shipped in the ConfigMap, which stages a model
from a local hub. Only the paths inside the pod are mapped onto a temporary directory, and the
package index is a local folder of the client's wheels (pip reads PIP_NO_INDEX and
PIP_FIND_LINKS from the environment), which .ci/run downloads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_component
from fake_modelscope_hub import FakeModelScopeHub

from vllm_serving_components import ModelStore
from vllm_serving_components.model_store import CLIENT_DIR, SCRIPT_MOUNT
from vllm_serving_components.stage_model import MARKER_NAME, read_marker

WHEELS = ROOT / ".wheels" / "stage-client"
MODEL_ID = "acme/tiny-chat"
FILES = {"config.json": b'{"hidden_size": 8}', "model.safetensors": os.urandom(4096), "nested/tokenizer.json": b"{}"}


@pytest.fixture(scope="module")
def wheels() -> Path:
    if not any(WHEELS.glob("modelscope-*.whl")):
        pytest.fail(f"{WHEELS} holds no modelscope wheel: run .ci/run (or the README's line that fills it)")
    return WHEELS


@pytest.fixture(scope="module")
def hub():
    with FakeModelScopeHub() as fake_hub:
        fake_hub.add_model(MODEL_ID, "master", FILES)
        yield fake_hub


def rendered_job(endpoint: str):
    rendering = run_component(
        lambda: ModelStore(
            "m",
            {"namespace": "ns", "model_id": MODEL_ID, "image": "vllm/vllm-openai:v0.11.0", "size": "1Gi", "endpoint": endpoint},
        )
    )
    return rendering.only("Job")["spec"]["template"]["spec"], rendering.only("ConfigMap")["data"]


def in_pod_paths_to_local(values: list[str], pod_root: Path) -> list[str]:
    """Paths inside the pod (/models, /opt/model-store, /tmp) re-rooted under pod_root."""
    prefixes = ("/models", SCRIPT_MOUNT, "/tmp")
    return [str(pod_root) + value if value.startswith(prefixes) else value for value in values]


def run_container(pod: dict, script_data: dict, pod_root: Path, wheels: Path) -> subprocess.CompletedProcess:
    (container,) = pod["containers"]
    for name, text in script_data.items():
        script = pod_root / SCRIPT_MOUNT.lstrip("/") / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODELSCOPE_", "PYTHON"))}
    env.update({e["name"]: in_pod_paths_to_local([e["value"]], pod_root)[0] for e in container["env"]})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    command = in_pod_paths_to_local(container["command"] + container.get("args", []), pod_root)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_rendered_job_installs_the_client_and_stages_the_model(tmp_path, hub, wheels):
    pod, script_data = rendered_job(hub.endpoint)
    first = run_container(pod, script_data, tmp_path, wheels)
    assert first.returncode == 0, first.stderr[-2000:]

    target = tmp_path / "models" / MODEL_ID / "master"
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file() and p.name != MARKER_NAME} == FILES
    marker = read_marker(str(target))
    assert (marker["modelId"], marker["revision"], marker["files"]) == (MODEL_ID, "master", 3)
    client = tmp_path / CLIENT_DIR.lstrip("/")
    assert (client / "modelscope").is_dir() and (client / "modelscope_hub").is_dir()

    requests_before = len(hub.requests)
    second = run_container(pod, script_data, tmp_path, wheels)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "already complete" in second.stdout
    assert len(hub.requests) == requests_before
