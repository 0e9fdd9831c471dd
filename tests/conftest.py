import re
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stack.render import Rendering, render_stack  # noqa: E402

STACKS = ("dev", "prod")
SHIPPED_STACKS = tuple(sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml")))
"""Every stack the project ships (a Pulumi.<stack>.yaml)."""


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


def project_with_stack(tmp_path: Path, settings: dict, drop: tuple = (), base: str = "dev") -> str:
    """A project directory whose stack 'bad' is a stack (dev by default) with some settings changed."""
    stack = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())["config"]
    config = {key: value for key, value in stack.items() if key.split(":", 1)[1] not in drop}
    config.update({f"vllm-serving:{key}": value for key, value in settings.items()})
    return stack_file(tmp_path, yaml.safe_dump({"config": config}), base=None)


def stack_file(tmp_path: Path, text: str, base: Optional[str] = "dev") -> str:
    """A project directory whose stack 'bad' is this text; with a base, the lines of that stack's
    config that the text does not set come first."""
    for name in ("Pulumi.yaml", "__main__.py"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    if base:
        own = {_normal_key(key) for key in re.findall(r"^\s+(.*?):(?: |$)", text, flags=re.M)}
        lines = (ROOT / f"Pulumi.{base}.yaml").read_text().splitlines()
        kept = [line for line in lines if not line.startswith("  ") or _normal_key(line.strip().split(": ")[0]) not in own]
        text = "\n".join(kept) + "\n" + text.removeprefix("config:\n")
    (tmp_path / "Pulumi.bad.yaml").write_text(text)
    return "bad"


def _normal_key(key: str) -> str:
    return key.replace(":config:", ":").rstrip(":")
