"""Reference pages of the components, generated from what the component provider publishes.

    .venv/bin/python tools/reference_docs.py           # writes docs/reference/<Component>.md
    .venv/bin/python tools/reference_docs.py --check   # exit 1 if a page differs from what it would write

Each page lists the component's inputs (the Python name, the name in other languages, type,
whether required, default, meaning), the nested argument types it uses, and its outputs. Types,
required-ness and meanings come from the package schema that provider/__main__.py serves (Pulumi's
analyzer reading the Args TypedDicts and their attribute docstrings); defaults come from each
component module's DEFAULTS (and, for nested types, NESTED_DEFAULTS below). Change a docstring or
a default, run this, and commit the pages: tests/test_component_provider.py fails while they differ.
"""

import argparse
import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reference"
PROVIDER = ROOT / "provider" / "__main__.py"
PACKAGE = "vllm_serving_components"
NESTED_DEFAULTS = {
    "DraArgs": ("gpu_claim", "DRA_DEFAULTS"),
    "SignalArgs": ("autoscaler", "SIGNAL_DEFAULTS"),
}
"""Defaults of nested argument types: the type's name -> (module, mapping) in the package."""
ANY = "pulumi.json#/Any"


def load_provider() -> ModuleType:
    """provider/__main__.py as a module (it starts nothing when not run as __main__)."""
    spec = importlib.util.spec_from_file_location("vllm_serving_provider", PROVIDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_schema() -> dict:
    """The schema the provider serves to `pulumi package add`."""
    return json.loads(load_provider().provider().schema)


def text(description: Optional[str]) -> str:
    """A docstring as one line of a Markdown table."""
    return re.sub(r"\s+", " ", description or "").strip().replace("|", "\\|")


def type_name(prop: dict, token_prefix: str) -> str:
    ref = prop.get("$ref")
    if ref == ANY:
        return "any"
    if ref:
        name = ref.removeprefix(f"#/types/{token_prefix}")
        return f"[{name}](#{name.lower()})"
    if prop.get("type") == "array":
        return f"list of {type_name(prop['items'], token_prefix)}"
    if prop.get("type") == "object" and "additionalProperties" in prop:
        return f"map of {type_name(prop['additionalProperties'], token_prefix)}"
    return prop["type"]


def default_text(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def python_names(python_type: type) -> dict[str, str]:
    """camelCase schema name -> the Python key, as the analyzer maps them."""
    from pulumi.provider.experimental.util import camel_case

    return {camel_case(key): key for key in inspect.get_annotations(python_type)}


def inputs_table(
    properties: dict, required: list[str], python_type: type, defaults: Optional[dict], prefix: str
) -> list[str]:
    names = python_names(python_type)
    rows = [
        "| Input | Type | Required | Default | Takes an Output (Python / other languages) | Description |",
        "|---|---|---|---|---|---|",
    ]
    for name, prop in properties.items():
        python = names[name]
        if name in required:
            default = "-"
        elif defaults is not None and python in defaults:
            default = default_text(defaults[python])
        elif defaults is not None:
            raise ValueError(f"{python_type.__name__}.{python} is optional but has no default in DEFAULTS")
        else:
            default = "-"
        accepts = "no / known" if prop.get("plain") else "yes / yes"
        rows.append(
            f"| `{python}`{'' if python == name else f' / `{name}`'} | {type_name(prop, prefix)} | "
            f"{'yes' if name in required else 'no'} | {default} | {accepts} | {text(prop.get('description'))} |"
        )
    return rows


def outputs_table(properties: dict, prefix: str, names: dict[str, str]) -> list[str]:
    rows = ["| Output | Type | Description |", "|---|---|---|"]
    for name, prop in properties.items():
        python = names.get(name, name)
        rows.append(
            f"| `{python}`{'' if python == name else f' / `{name}`'} | {type_name(prop, prefix)} | "
            f"{text(prop.get('description'))} |"
        )
    return rows


def referenced_types(value: Any, prefix: str, schema: dict, found: list[str]) -> list[str]:
    """The package's own types a schema fragment refers to, depth first, each once."""
    if isinstance(value, dict):
        ref = value.get("$ref", "")
        if ref.startswith(f"#/types/{prefix}"):
            token = ref.removeprefix("#/types/")
            if token not in found:
                found.append(token)
                referenced_types(schema["types"][token], prefix, schema, found)
        for item in value.values():
            referenced_types(item, prefix, schema, found)
    elif isinstance(value, list):
        for item in value:
            referenced_types(item, prefix, schema, found)
    return found


def page(component: type, schema: dict) -> str:
    package = importlib.import_module(PACKAGE)
    name = schema["name"]
    prefix = f"{name}:index:"
    token = f"{prefix}{component.__name__}"
    resource = schema["resources"][token]
    module = sys.modules[component.__module__]
    args_type = inspect.get_annotations(component.__init__)["args"]
    lines = [
        f"# {component.__name__}",
        "",
        "<!-- Generated by tools/reference_docs.py from the Args docstrings; do not edit by hand. -->",
        "",
        text(resource.get("description")),
        "",
        f"- Type token: `{token}`",
        f"- Python: `from {PACKAGE} import {component.__name__}, {args_type.__name__}`; "
        f"`{component.__name__}(name, args, opts)` with `args` a `{args_type.__name__}`",
        "- Other languages: `pulumi package add` with the repository's `provider` folder (see provider/README.md);"
        " inputs and outputs take the camelCase names",
        "",
        "Takes an Output, per language. *yes*: the input may be any resource's output. In Python, *no*: a plain"
        " value only (a literal, a constant such as `PORT` and `PORT_NAME` from the package root, or a plain"
        " attribute such as `GpuClaim.pod_fragment` and `VLLMServer.takes_api_key`); a `pulumi.Output` there is"
        " refused (`port must be an integer, not Output`), since the component checks the value when it is"
        " created. In other languages (through the provider), *known*: an output whose value is known when the"
        " component is created, such as `${server.port}`, or a literal.",
        "",
        "## Inputs",
        "",
        *inputs_table(resource["inputProperties"], resource["requiredInputs"], args_type, module.DEFAULTS, prefix),
        "",
        "## Outputs",
        "",
        *outputs_table(resource["properties"], prefix, python_names(component)),
        "",
    ]
    nested = referenced_types([resource["inputProperties"], resource["properties"]], prefix, schema, [])
    if nested:
        lines += ["## Types", ""]
    for type_token in nested:
        spec = schema["types"][type_token]
        type_name_ = type_token.removeprefix(prefix)
        python_type = getattr(package, type_name_, None) or _find_type(type_name_)
        defaults = _nested_defaults(type_name_)
        lines += [
            f"### {type_name_}",
            "",
            text(spec.get("description")),
            "",
            *inputs_table(spec.get("properties", {}), spec.get("required", []), python_type, defaults, prefix),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _find_type(name: str) -> type:
    """A nested TypedDict the package does not export, from the component modules."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(f"{PACKAGE}.") and isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    raise LookupError(f"no type {name} in {PACKAGE}")


def _nested_defaults(name: str) -> Optional[dict]:
    if name not in NESTED_DEFAULTS:
        return None
    module, attribute = NESTED_DEFAULTS[name]
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), attribute)


def pages() -> dict[str, str]:
    """File name -> content of every reference page."""
    provider = load_provider()
    schema = json.loads(provider.provider().schema)
    return {f"{component.__name__}.md": page(component, schema) for component in provider.COMPONENTS}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page on disk differs from what would be written")
    args = parser.parse_args(argv)
    wanted = pages()
    if args.check:
        stale = sorted(name for name, content in wanted.items() if not (OUT / name).is_file() or (OUT / name).read_text() != content)
        extra = sorted(path.name for path in OUT.glob("*.md") if path.name not in wanted)
        for name in stale:
            print(f"docs/reference/{name} differs from the Args docstrings; run tools/reference_docs.py")
        for name in extra:
            print(f"docs/reference/{name} documents no component; remove it")
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, content in wanted.items():
        (OUT / name).write_text(content)
        print(f"wrote docs/reference/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
