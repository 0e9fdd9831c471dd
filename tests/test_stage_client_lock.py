"""The locks of the download Job's hub clients (components/stage_client/<source>.txt): made for the
Job's default image, for the client versions the tests use, and complete: every dependency that
a locked wheel declares for the image's Python and platform is locked too, and nothing else.

Completeness is read from the locked wheels themselves (their METADATA), which .ci/run downloads
into .wheels/stage-client with tools/stage_client_lock.py --download, hashes checked."""

import hashlib
import importlib.util
import re
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from vllm_serving_components.model_store import CLIENTS, DEFAULTS, client_lock

WHEELS = ROOT / ".wheels" / "stage-client"
_spec = importlib.util.spec_from_file_location("stage_client_lock", ROOT / "tools" / "stage_client_lock.py")
lock_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_tool)
RUNTIME = lock_tool.runtime_of(DEFAULTS["image"])
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) \\\n    --hash=sha256:(?P<sha256>[0-9a-f]{64})  # (?P<wheel>\S+)$", re.M)


def header(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# (requirements|image|runtime): (.*)$", text, re.M))


def entries(source: str) -> dict[str, re.Match]:
    text = client_lock(source).read_text()
    found = {canonicalize_name(m["name"]): m for m in _ENTRY.finditer(text)}
    assert len(found) == text.count("--hash="), f"{source}: a line of the lock is not 'name==version --hash=sha256:... # wheel'"
    return found


def wheels_by_hash() -> dict[str, Path]:
    if not any(WHEELS.glob("*.whl")):
        pytest.fail(f"{WHEELS} holds no wheel: run .ci/run (or tools/stage_client_lock.py --download {WHEELS})")
    return {hashlib.sha256(path.read_bytes()).hexdigest(): path for path in WHEELS.glob("*.whl")}


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]


def image_environment(extra: str = "") -> dict[str, str]:
    """Marker values of the image's interpreter (PEP 508)."""
    return {
        "python_version": RUNTIME.python, "python_full_version": f"{RUNTIME.python}.0", "implementation_name": "cpython",
        "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
        "os_name": "posix", "platform_machine": RUNTIME.arch, "extra": extra,
    }  # fmt: skip


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_the_lock_is_for_the_job_image_and_the_tested_client(source):
    found = header(client_lock(source).read_text())
    assert found == {"requirements": " ".join(CLIENTS[source]), "image": DEFAULTS["image"], "runtime": RUNTIME.describe()}
    locked = entries(source)
    for requirement in map(Requirement, CLIENTS[source]):
        assert requirement.specifier.contains(locked[canonicalize_name(requirement.name)]["version"])


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_every_locked_wheel_fits_the_image(source):
    supported = {(f"cp{RUNTIME.python.replace('.', '')}", abi) for abi in RUNTIME.abis()}
    for name, entry in entries(source).items():
        wheel_name, version, _, tags = parse_wheel_filename(entry["wheel"])
        assert (canonicalize_name(wheel_name), str(version)) == (name, entry["version"])
        fits = any(
            (tag.interpreter in ("py3", "py2.py3") or (tag.interpreter, tag.abi) in supported or tag.abi == "abi3")
            and (tag.platform == "any" or tag.platform in RUNTIME.platforms())
            for tag in tags
        )
        assert fits, f"{entry['wheel']} does not install on {RUNTIME.describe()}"


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_the_lock_holds_the_whole_dependency_set_and_nothing_else(source):
    locked = entries(source)
    wheels = wheels_by_hash()
    missing = [m["wheel"] for m in locked.values() if m["sha256"] not in wheels]
    assert not missing, f"no wheel with the locked sha256 in {WHEELS}: {missing}; run tools/stage_client_lock.py --download"
    reached, todo = set(), [(Requirement(text), "") for text in CLIENTS[source]]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate(image_environment(extra)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{source}: {requirement} is needed on the image but not locked"
        assert requirement.specifier.contains(locked[name]["version"], prereleases=True), (
            f"{source}: {requirement} is needed, the lock has {locked[name]['version']}"
        )
        for wanted in [""] + sorted(requirement.extras):
            if (name, wanted) not in reached:
                reached.add((name, wanted))
                todo += [(dependency, wanted) for dependency in requires(wheels[locked[name]["sha256"]])]
    assert {name for name, _ in reached} == set(locked), "the lock has packages nothing needs"


def test_lock_text_pins_each_package_to_the_hash_of_its_wheel():
    report = {"install": [
        {"metadata": {"name": "tqdm", "version": "4.70.1"},
         "download_info": {"url": "https://files.example/t/tqdm-4.70.1-py3-none-any.whl",
                           "archive_info": {"hashes": {"sha256": "ab" * 32}}}},
        {"metadata": {"name": "Cffi", "version": "2.1.1"},
         "download_info": {"url": "https://files.example/c/cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.whl",
                           "archive_info": {"hashes": {"sha256": "cd" * 32}}}},
    ]}  # fmt: skip
    text = lock_tool.lock_text("modelscope", ("modelscope==1.40.2",), "img:v1", RUNTIME, report)
    assert text.splitlines()[5:] == [
        "Cffi==2.1.1 \\", f"    --hash=sha256:{'cd' * 32}  # cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.whl",
        "tqdm==4.70.1 \\", f"    --hash=sha256:{'ab' * 32}  # tqdm-4.70.1-py3-none-any.whl",
    ]
    assert header(text) == {"requirements": "modelscope==1.40.2", "image": "img:v1", "runtime": RUNTIME.describe()}
    del report["install"][0]["download_info"]["archive_info"]
    with pytest.raises(SystemExit, match="no sha256 for https://files.example/t/tqdm"):
        lock_tool.lock_text("modelscope", ("modelscope==1.40.2",), "img:v1", RUNTIME, report)


def test_the_runtime_of_an_image_nobody_has_read_is_refused():
    with pytest.raises(SystemExit, match="vllm/vllm-openai:v9.9.9: read ARG PYTHON_VERSION"):
        lock_tool.runtime_of("vllm/vllm-openai:v9.9.9")


def test_pip_is_asked_for_the_image_runtime_only():
    options = RUNTIME.pip_options()
    assert options[:5] == ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
    assert [options[i + 1] for i, o in enumerate(options) if o == "--abi"] == ["cp312", "abi3", "none"]
    platforms = [options[i + 1] for i, o in enumerate(options) if o == "--platform"]
    assert platforms[0] == "manylinux_2_35_x86_64" and platforms[30] == "manylinux_2_5_x86_64"
    assert platforms[31:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def test_the_stacks_stage_with_the_image_the_locks_are_for():
    # The stack's Job runs the server image unless downloaderImage is set: a bump of one is a bump of both.
    from vllm_serving_components.vllm_server import DEFAULT_IMAGE

    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert DEFAULT_IMAGE == project["config"]["image"]["default"] == DEFAULTS["image"]
