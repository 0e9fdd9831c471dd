"""Reading Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI hands config to a program.

What the CLI refuses before a program runs is refused here too, so the offline render and
``pulumi up`` agree: a stack file that is not YAML, repeats a key, or whose config is not a
mapping; keys that are not ``<namespace>:<name>`` (the legacy ``<namespace>:config:<name>``
is read as the CLI reads it); null values and values of the wrong shape for their declared
type (pulumi workspace.ValidateConfigValue). Everything else passes to the program, which
reports it with every other problem in one pass.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import INT64_MAX, Problem

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""This repository: its Pulumi.yaml and stack program."""

# libyaml's parser: Pulumi.yaml is read on every run and pure-Python parsing is slow.
BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StackFileError(Exception):
    """A project or stack file cannot be read at all."""


class _Loader(BASE_LOADER):  # type: ignore[misc,valid-type]
    """Records keys a mapping repeats: YAML forbids them, and the CLI refuses them."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.repeated: list[tuple[Any, int, int]] = []

    def construct_mapping(self, node, deep=False):
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in lines:
                self.repeated.append((key, lines[key], line))
            elif isinstance(key, (str, int, float, bool)):
                lines[key] = line
        return super().construct_mapping(node, deep=deep)



def load_yaml(path: Path) -> tuple[Any, list[tuple[Any, int, int]]]:
    """A YAML file's content and the keys it repeats (key, first line, repeated line)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise StackFileError(f"cannot read {path}: {error.strerror}") from None
    loader = _Loader(text)
    try:
        return loader.get_single_data(), loader.repeated
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise StackFileError(f"{path.name}{where}: not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise StackFileError(f"{path.name}: not valid YAML: {error}") from None
    except ValueError:  # an integer of thousands of digits, which Python will not convert
        raise StackFileError(f"{path.name}: holds a number too large to read") from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class Project:
    name: str
    directory: Path
    declarations: dict[str, dict]
    """Pulumi.yaml's config declarations: key -> {type, description, default?}."""

    def defaults(self) -> dict[str, str]:
        """Each declared default, as the CLI passes it to the program."""
        return {key: encode(d["default"]) for key, d in self.declarations.items() if "default" in d}


def read_project(directory: Path) -> Project:
    path = directory / "Pulumi.yaml"
    if not path.is_file():
        raise StackFileError(f"{directory} has no Pulumi.yaml; point --project-dir at the folder that holds it")
    document, _ = load_yaml(path)
    if not isinstance(document, dict) or not isinstance(document.get("name"), str):
        raise StackFileError(f"{path} is not a Pulumi project file: it needs a top-level name")
    declarations = document.get("config") or {}
    if not isinstance(declarations, dict) or not all(isinstance(d, dict) for d in declarations.values()):
        raise StackFileError(f"{path}: config must map each key to its declaration (type, default, description)")
    return Project(name=document["name"], directory=directory, declarations=declarations)


def encode(value: Any) -> str:
    """A config value as the CLI passes it to a program: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def parse_key(key: Any, project: str) -> tuple[str, str]:
    """(namespace, name) of a stack file's key, as the CLI's config.ParseKey reads it; ValueError if none."""
    parts = key.split(":") if isinstance(key, str) else []
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    if len(parts) == 3 and parts[1] == "config" and parts[0] and parts[2]:
        return parts[0], parts[2]
    if len(parts) == 1 and parts[0]:
        raise ValueError(f"has no namespace; write {project}:{key}")
    raise ValueError(f"is not a config key; keys are <namespace>:<name>, e.g. {project}:gpuCount")


def shape_problem(value: Any, declaration: dict) -> str:
    """Why a value cannot stand for a key of this declared type, or "" if it can."""
    if value is None:
        return "has no value (null); remove the line to use the default, or give a value"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        return "is out of range (the CLI reads integers as 64 bits)"
    is_array = declaration.get("type") == "array"
    if is_array and not isinstance(value, list):
        return "must be a list, e.g. [a, b]"
    if not is_array and isinstance(value, (list, dict)):
        return f"must be a single {declaration.get('type', 'string')} value, not a {'list' if isinstance(value, list) else 'mapping'}"
    return ""


SECRET_PLACEHOLDER = "offline-render-secret"
"""Stands for an encrypted value: only the CLI, with the stack's secrets provider, can decrypt it."""


@dataclass(frozen=True)
class StackSettings:
    values: dict[str, str]
    """The namespaced config as the CLI passes it to the program."""
    problems: list[Problem]
    """What the CLI would refuse the file for."""
    secret_keys: list[str]
    """Namespaced keys whose values are encrypted in the file (and stand-ins here)."""


def is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str)


def stack_config(project: Project, stack: str, path: Optional[Path] = None) -> StackSettings:
    """The config of a stack: its file's settings over Pulumi.yaml's defaults.

    The file is the project's Pulumi.<stack>.yaml unless ``path`` names another (a stack kept
    elsewhere, read the same way against this project's declarations).
    """
    path = path or project.directory / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise StackFileError(f"no stack file {path.name} in {path.parent}")
    document, repeated = load_yaml(path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise StackFileError(f"{path.name} must be a mapping with a config: section, not a {type(document).__name__}")
    settings = document.get("config") or {}
    if not isinstance(settings, dict):
        raise StackFileError(f"{path.name}: config: must map keys to values, not be a {type(settings).__name__}")
    problems = [
        Problem(key=_problem_key(key, project.name), message=f"is set twice in {path.name} (lines {first} and {again}); keep one")
        for key, first, again in repeated
    ]
    values = {f"{project.name}:{key}": value for key, value in project.defaults().items()}
    secret_keys = []
    for key, value in settings.items():
        try:
            namespace, name = parse_key(key, project.name)
        except ValueError as error:
            problems.append(Problem(key=str(key), message=str(error)))
            continue
        key = f"{namespace}:{name}"
        if is_encrypted(value):
            values[key] = SECRET_PLACEHOLDER
            secret_keys.append(key)
            continue
        declaration = project.declarations.get(name) if namespace == project.name else None
        if declaration is not None and (problem := shape_problem(value, declaration)):
            problems.append(Problem(key=name, message=problem))
            values.pop(key, None)
            continue
        values[key] = encode(value)
    return StackSettings(values=values, problems=problems, secret_keys=secret_keys)


def _problem_key(key: Any, project: str) -> str:
    """How a problem names a stack file's key: the project's own without the namespace."""
    try:
        namespace, name = parse_key(key, project)
    except ValueError:
        return str(key)
    return name if namespace == project else f"{namespace}:{name}"
