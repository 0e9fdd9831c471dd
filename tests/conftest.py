import sys
from pathlib import Path

import pytest

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
