"""Reading Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI hands config to a program."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# libyaml's parser: Pulumi.yaml is read on every run and pure-Python parsing is slow.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StackFileError(Exception):
    """A project or stack file cannot be read as the Pulumi CLI would."""


@dataclass(frozen=True)
class Project:
    name: str
    directory: Path
    declarations: dict[str, dict]
    """Pulumi.yaml's config declarations: key -> {type, description, default?}."""


def read_project(directory: Path) -> Project:
    path = directory / "Pulumi.yaml"
    document = yaml.load(path.read_text(), Loader=LOADER)
    return Project(name=document["name"], directory=directory, declarations=document.get("config") or {})


def encode(value: Any) -> str:
    """A config value as the CLI passes it to a program: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def stack_config(project: Project, stack: str) -> dict[str, str]:
    """The namespaced config of a stack: its file's settings over Pulumi.yaml's defaults."""
    path = project.directory / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise StackFileError(f"no stack file {path.name} in {project.directory}")
    settings = (yaml.load(path.read_text(), Loader=LOADER) or {}).get("config") or {}
    values = {
        f"{project.name}:{key}": encode(declaration["default"])
        for key, declaration in project.declarations.items()
        if "default" in declaration
    }
    for key, value in settings.items():
        if isinstance(value, dict) and "secure" in value:
            raise StackFileError(
                f"{key} is an encrypted secret; the offline render cannot decrypt it. "
                "Render a stack file without secrets, or use pulumi preview"
            )
        values[key if ":" in key else f"{project.name}:{key}"] = encode(value)
    return values
