"""The download Job's container, run here exactly as rendered: its shell command installs the
hub client from the lock shipped in the ConfigMap (every package pinned by hash), then runs the
script shipped beside it, which stages a model from a local hub. Only the paths inside the pod are
mapped onto a temporary directory; the package index is a local folder of the locked wheels (pip
reads PIP_NO_INDEX and PIP_FIND_LINKS from the environment), which .ci/run downloads, or a local
index server in its place (a mirror). pip is told the Job image's interpreter and platform
(PIP_PYTHON_VERSION, PIP_PLATFORM, ...), so it installs the very wheels the image gets, and only if
their hashes are the locked ones."""

import functools
import hashlib
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, run_component
from fake_huggingface_hub import FakeHuggingFaceHub
from fake_modelscope_hub import FakeModelScopeHub

from vllm_serving_components import ModelStore
from vllm_serving_components.model_store import CLIENT_DIR, DEFAULTS, SCRIPT_MOUNT, client_lock
from vllm_serving_components.stage_model import MARKER_NAME, read_marker

WHEELS = ROOT / ".wheels" / "stage-client"
MODEL_ID = "acme/tiny-chat"
FILES = {"config.json": b'{"hidden_size": 8}', "model.safetensors": os.urandom(4096), "nested/tokenizer.json": b"{}"}
HUBS = {"modelscope": (FakeModelScopeHub, "master"), "huggingface": (FakeHuggingFaceHub, "main")}
PACKAGES = {"modelscope": ("modelscope", "modelscope_hub"), "huggingface": ("huggingface_hub",)}
_spec = importlib.util.spec_from_file_location("stage_client_lock", ROOT / "tools" / "stage_client_lock.py")
lock_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_tool)


def image_pip_environment() -> dict[str, str]:
    """pip's settings for the Job image's interpreter and platform (pip reads any option as PIP_<NAME>)."""
    runtime = lock_tool.runtime_of(DEFAULTS["image"])
    return {
        "PIP_PYTHON_VERSION": runtime.python, "PIP_IMPLEMENTATION": "cp",
        "PIP_ABI": " ".join(runtime.abis()), "PIP_PLATFORM": " ".join(runtime.platforms()),
    }  # fmt: skip


@pytest.fixture(scope="module")
def wheels() -> Path:
    if not any(WHEELS.glob("modelscope-*.whl")) or not any(WHEELS.glob("huggingface_hub-*.whl")):
        pytest.fail(f"{WHEELS} holds no client wheels: run .ci/run (or tools/stage_client_lock.py --download {WHEELS})")
    return WHEELS


@pytest.fixture(params=sorted(HUBS))
def hub(request):
    hub_class, revision = HUBS[request.param]
    with hub_class() as fake_hub:
        fake_hub.add_model(MODEL_ID, revision, FILES)
        fake_hub.source, fake_hub.revision = request.param, revision
        yield fake_hub


def rendered_job(hub, **settings):
    rendering = run_component(
        lambda: ModelStore(
            "m",
            {"namespace": "ns", "model_id": MODEL_ID, "image": "vllm/vllm-openai:v0.11.0", "size": "1Gi",
             "endpoint": hub.endpoint, "source": hub.source, **settings},
        )
    )  # fmt: skip
    return rendering.only("Job")["spec"]["template"]["spec"], rendering.only("ConfigMap")["data"]


def in_pod_paths_to_local(values: list[str], pod_root: Path) -> list[str]:
    """Paths inside the pod (/models, /opt/model-store, /tmp) re-rooted under pod_root."""
    prefixes = ("/models", SCRIPT_MOUNT, "/tmp")
    return [str(pod_root) + value if value.startswith(prefixes) else value for value in values]


def run_container(pod: dict, script_data: dict, pod_root: Path, index: dict) -> subprocess.CompletedProcess:
    (container,) = pod["containers"]
    for name, text in script_data.items():
        script = pod_root / SCRIPT_MOUNT.lstrip("/") / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODELSCOPE_", "PYTHON", "PIP_", "HF_"))}
    env.update({e["name"]: in_pod_paths_to_local([e["value"]], pod_root)[0] for e in container["env"]})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    env |= image_pip_environment() | index
    command = in_pod_paths_to_local(container["command"] + container.get("args", []), pod_root)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def offline(wheels: Path) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}


def staged(pod_root: Path, revision: str) -> dict[str, bytes]:
    target = pod_root / "models" / MODEL_ID / revision
    return {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file() and p.name != MARKER_NAME and ".cache" not in p.parts}


def test_rendered_job_installs_the_locked_client_and_stages_the_model(tmp_path, hub, wheels):
    pod, script_data = rendered_job(hub)
    first = run_container(pod, script_data, tmp_path, offline(wheels))
    assert first.returncode == 0, first.stderr[-2000:]

    assert staged(tmp_path, hub.revision) == FILES
    marker = read_marker(str(tmp_path / "models" / MODEL_ID / hub.revision))
    assert (marker["modelId"], marker["revision"], marker["files"]) == (MODEL_ID, hub.revision, 3)
    client = tmp_path / CLIENT_DIR.lstrip("/")
    assert all((client / package).is_dir() for package in PACKAGES[hub.source])
    # Exactly the locked packages, at the locked versions: nothing resolved at run time.
    locked = {line.split("==")[0].lower().replace("_", "-") + "==" + line.split("==")[1].split()[0]
              for line in client_lock(hub.source).read_text().splitlines() if "==" in line and not line.startswith("#")}
    installed = {p.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-") + "==" + p.name.removesuffix(".dist-info").rsplit("-", 1)[1]
                 for p in client.glob("*.dist-info")}  # fmt: skip
    assert installed == locked

    requests_before = len(hub.requests)
    second = run_container(pod, script_data, tmp_path, offline(wheels))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "already complete" in second.stdout
    assert len(hub.requests) == requests_before


def tampered_copy(wheels: Path, directory: Path, package: str) -> Path:
    """The wheels, with one package's wheel rebuilt around a changed file (same name and version)."""
    directory.mkdir()
    for wheel in wheels.glob("*.whl"):
        shutil.copy(wheel, directory)
    (wheel,) = directory.glob(f"{package}-*.whl")
    with zipfile.ZipFile(wheel) as original:
        contents = {info: original.read(info) for info in original.infolist()}
    with zipfile.ZipFile(wheel, "w") as rebuilt:
        for info, data in contents.items():
            rebuilt.writestr(info, data + b"\n# changed\n" if info.filename.endswith("/__init__.py") else data)
    return directory


def test_the_job_refuses_a_wheel_whose_hash_is_not_locked(tmp_path, hub, wheels):
    pod, script_data = rendered_job(hub)
    index = offline(tampered_copy(wheels, tmp_path / "wheels", "tqdm"))
    result = run_container(pod, script_data, tmp_path / "pod", index)
    assert result.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr and "tqdm" in result.stderr
    assert not (tmp_path / "pod" / "models").exists() and hub.requests == []


def simple_index(wheels: Path, root: Path) -> Path:
    """A PEP 503 index of the wheels, as a mirror serves it: /simple/<project>/ lists its files
    with their sha256 in the URL fragment."""
    for wheel in wheels.glob("*.whl"):
        project = root / "simple" / wheel.name.split("-")[0].lower().replace("_", "-")
        project.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, project)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        with (project / "index.html").open("a") as page:
            page.write(f'<a href="{wheel.name}#sha256={digest}">{wheel.name}</a>\n')
    return root


def test_the_job_installs_the_locked_client_from_a_mirror(tmp_path, hub, wheels):
    root = simple_index(wheels, tmp_path / "mirror")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as mirror:
        threading.Thread(target=mirror.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            pod, script_data = rendered_job(hub, package_index=f"http://127.0.0.1:{mirror.server_address[1]}/simple")
            result = run_container(pod, script_data, tmp_path / "pod", {})
        finally:
            mirror.shutdown()
    assert result.returncode == 0, result.stderr[-2000:]
    assert staged(tmp_path / "pod", hub.revision) == FILES
