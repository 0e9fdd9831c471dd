import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stack.render import Rendering, render_stack  # noqa: E402

STACKS = ("dev", "prod")


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendering]:
    """Each stack file rendered once through the real program."""
    return {stack: render_stack(stack) for stack in STACKS}


@pytest.fixture
def pulumi_mocks():
    """A fresh mock runtime for a @pulumi.runtime.test function."""
    from pulumi.runtime import mocks, settings

    from stack.render import EchoMocks

    settings.ROOT.set(None)
    mocks.set_mocks(EchoMocks(), project="test", stack="test", preview=False)


def run_component(build) -> Rendering:
    """Run a function that creates components under mocks; return the objects they registered."""
    from stack.render import run_under_mocks

    return run_under_mocks(build, "test", "test", {})


def project_with_stack(tmp_path: Path, settings: dict, drop: tuple = ()) -> str:
    """A project directory whose stack 'bad' is the dev stack with some settings changed."""
    for name in ("Pulumi.yaml", "__main__.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = {key: value for key, value in dev.items() if key.split(":", 1)[1] not in drop}
    config.update({f"vllm-serving:{key}": value for key, value in settings.items()})
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": config}))
    return "bad"
