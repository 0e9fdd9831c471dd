"""Another Pulumi project can pip install the components and use them.

The library lives in components/ and installs as vllm_serving_components (pyproject's
package-dir), so a consumer's own components/ package cannot shadow it.
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT

IMPORT_NAME = "vllm_serving_components"
CONSUMER_MODULE = """\
import sys
from components import Mine
import vllm_serving_components
from vllm_serving_components import Exposure, ExposureArgs, VLLMServer
import vllm_serving_components.vllm_args as flags

good: ExposureArgs = {"namespace": "ai", "selector": {"app": "a"}, "port": 8000, "target_port_name": "http"}
assert flags.flag_table("0.11.0").release == "0.11.0"
assert vllm_serving_components.__file__.startswith(sys.argv[1]), vllm_serving_components.__file__
print(Mine, Exposure.__module__, VLLMServer.__name__)
"""
MISTYPED = """\
from vllm_serving_components import ExposureArgs

bad: ExposureArgs = {"namespace": "ai", "selector": {"app": "a"}, "port": "8000", "target_port_name": "http"}
"""


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


# No package index: the build uses this environment's setuptools (requirements-dev.txt), and
# nothing else is installed.
OFFLINE = ("--quiet", "--no-index", "--no-build-isolation", "--no-deps")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The distribution as pip builds it, from a copy of the checkout (pip builds in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", "venv", ".git", "rendered", "review", "__pycache__", "*.egg-info"))
    built = run([sys.executable, "-m", "pip", "wheel", *OFFLINE, "--wheel-dir", str(tmp), str(source)])
    assert built.returncode == 0, built.stderr
    (path,) = tmp.glob("vllm_serving_components-*.whl")
    return path


@pytest.fixture(scope="module")
def consumer(tmp_path_factory, wheel) -> Path:
    """A consumer project with a components/ package of its own, and the wheel installed beside it."""
    project = tmp_path_factory.mktemp("consumer")
    (project / "components").mkdir()
    (project / "components" / "__init__.py").write_text("Mine = 'the consumer components'\n")
    installed = run([sys.executable, "-m", "pip", "install", *OFFLINE, "--target", str(project / "site"), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return project


def test_the_package_installs_under_its_own_name_with_its_data(consumer):
    package = consumer / "site" / IMPORT_NAME
    for pattern in ("*.py", "vllm_flags/*.json", "vllm_metrics/*.json", "stage_client/*.txt"):
        assert sorted(p.name for p in package.glob(pattern)) == sorted(p.name for p in (ROOT / "components").glob(pattern))
    assert (package / "py.typed").is_file()
    assert not (consumer / "site" / "components").exists()


def test_a_consumers_own_components_package_does_not_shadow_it(consumer):
    # The consumer's folder first on the path, as when its program runs from there.
    # pulumi and pydantic come from this interpreter's site-packages, after the installed wheel.
    (consumer / "app.py").write_text(CONSUMER_MODULE)
    result = run([sys.executable, "app.py", str(consumer / "site")], cwd=consumer, env={"PYTHONPATH": str(consumer / "site")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["the", "consumer", "components", f"{IMPORT_NAME}.exposure", "VLLMServer"]


@pytest.fixture(scope="module")
def typed_env(tmp_path_factory, wheel) -> Path:
    """A virtual environment holding the wheel alone, as a type checker sees a consumer's."""
    env = tmp_path_factory.mktemp("typed") / "venv"
    venv.create(env, with_pip=False)
    site = next((env / "lib").glob("python3*/site-packages"))
    installed = run([sys.executable, "-m", "pip", "install", *OFFLINE, "--target", str(site), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return env


def mypy(env: Path, module: str, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "app.py").write_text(module)
    command = [sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", str(env / "bin" / "python"), "app.py"]
    return run(command, cwd=tmp_path)


def test_type_checkers_read_the_typed_args(typed_env, tmp_path):
    """py.typed makes mypy check a consumer's Args against the TypedDicts; without it mypy
    would skip the package ("missing library stubs or py.typed marker")."""
    checked = mypy(typed_env, MISTYPED, tmp_path)
    assert checked.returncode == 1, checked.stdout
    assert 'app.py:3: error: Incompatible types (expression has type "str", TypedDict item "port" has type "int")' in checked.stdout
    # The control: the same package without its marker is not read at all.
    site = next((typed_env / "lib").glob("python3*/site-packages"))
    (site / IMPORT_NAME / "py.typed").unlink()
    try:
        unmarked = mypy(typed_env, MISTYPED, tmp_path)
    finally:
        (site / IMPORT_NAME / "py.typed").touch()
    assert "missing library stubs or py.typed marker" in unmarked.stdout


def test_the_stack_program_uses_the_installed_package_alone():
    """The stack imports the library by its installed name, as outsiders do: no second copy under
    the folder's name."""
    probe = (
        "import sys; from stack.render import render_stack; render_stack('dev'); "
        "print(sorted(m for m in sys.modules if m == 'components' or m.startswith('components.')))"
    )
    result = run([sys.executable, "-c", probe], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pip_installs_it_from_a_git_url(tmp_path, wheel):
    """The README's install form, `pip install "git+<URL>"`, on a local clone (file:// URL)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv*", "venv", ".git", "rendered", "review", "__pycache__", "*.egg-info"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for command in (["init", "--quiet"], ["add", "-A"], ["commit", "--quiet", "-m", "snapshot"]):
        assert run([*git, *command], cwd=repo).returncode == 0
    target = tmp_path / "site"
    installed = run([sys.executable, "-m", "pip", "install", *OFFLINE, "--target", str(target), f"git+file://{repo}"])
    assert installed.returncode == 0, installed.stderr
    assert (target / IMPORT_NAME / "py.typed").is_file()


def test_the_changelog_describes_this_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    headings = [line[3:].strip() for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    # Changes not yet released gather under "Unreleased", above the current version.
    released = headings[1:] if headings[0] == "Unreleased" else headings
    assert released[0] == version, "a new version needs its CHANGELOG section first"
    assert released == sorted(released, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


def test_the_end_to_end_provider_is_the_release_users_get():
    """The provider e2e/build-tools.sh builds is the release of the Kubernetes SDK that
    requirements.txt pins: `pulumi up` outside the tests downloads exactly that provider."""
    import re

    pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#")
    )
    script = (ROOT / "e2e" / "build-tools.sh").read_text()
    provider = re.search(r"^PROVIDER_VERSION=(\S+)", script, re.M).group(1)
    tag = re.search(r"^PROVIDER_TAG=(\S+)", script, re.M).group(1)
    assert pins["pulumi-kubernetes"] == provider and tag == f"v{provider}"
