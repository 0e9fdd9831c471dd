"""Check rendered Kubernetes objects against real schemas.

Built-in kinds are validated with kubernetes_validate's strict schemas for a
given Kubernetes version. Custom resources are validated against the
openAPIV3Schema of the matching CRD in schemas/crds/, tightened to behave like
the API server's strict field validation.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

SUPPORTED_KUBERNETES_VERSIONS = (
    "1.30.0",
    "1.31.0",
    "1.32.0",
    "1.33.0",
    "1.34.0",
    "1.35.0",
    "1.36.0",
    "1.37.0",
)

CRD_DIR = Path(__file__).resolve().parent.parent / "schemas" / "crds"

_CR_METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}},
}
_INT_OR_STRING_BRANCHES = [{"type": "integer"}, {"type": "string"}]
# libyaml parses the larger CRDs over ten times faster than the pure-Python loader.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# kubernetes_validate.validate() re-reads and re-parses its JSON schemas (over
# 1 MB of definitions per version) and re-lists its schema directory on every
# call. It looks both helpers up as module globals, so memoising them here
# makes warm calls over ten times faster without changing what is validated.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)
kubernetes_validate.utils.all_versions = functools.lru_cache(maxsize=1)(
    kubernetes_validate.utils.all_versions
)


def schema_errors(obj: dict, kubernetes_version: str) -> list[str]:
    """Return the schema violations of one rendered object, each as "<JSON path>: <message>".

    An empty list means the object is valid. Built-in kinds report at most one
    violation (kubernetes_validate stops at the first); custom resources report
    all of them. CEL rules (x-kubernetes-validations) are not evaluated.
    """
    if kubernetes_version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise ValueError(
            f"unsupported Kubernetes version {kubernetes_version!r}; "
            f"expected one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}"
        )
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"$: apiVersion and kind must be strings, got {api_version!r} and {kind!r}"]
    group, _, version = api_version.rpartition("/")
    if (group, kind) in _crds():
        return _custom_resource_errors(obj, group, kind, version)
    return _builtin_errors(obj, kubernetes_version)


def _builtin_errors(obj: dict, kubernetes_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [_format(error)]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"$: {error.message}, and no CRD in {CRD_DIR} defines it"]
    return []


def _custom_resource_errors(obj: dict, group: str, kind: str, version: str) -> list[str]:
    validator = _crd_validator(group, kind, version)
    if validator is None:
        served = ", ".join(_served_versions(_crds()[(group, kind)]))
        return [f"$.apiVersion: {kind} CRD does not serve version {version!r} (served: {served})"]
    errors = sorted(validator.iter_errors(obj), key=lambda error: error.json_path)
    return [_format(error) for error in errors]


def _format(error: jsonschema.ValidationError) -> str:
    return f"{error.json_path}: {error.message}"


@functools.cache
def _crds() -> dict[tuple[str, str], dict]:
    """Parse every CRD in CRD_DIR once, keyed by (group, kind)."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as stream:
            crd = yaml.load(stream, Loader=_YAML_LOADER)
        crds[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd
    return crds


def _served_versions(crd: dict) -> list[str]:
    return [entry["name"] for entry in crd["spec"]["versions"] if entry.get("served")]


@functools.cache
def _crd_validator(group: str, kind: str, version: str) -> jsonschema.Draft202012Validator | None:
    """Build the validator for one served CRD version, or None if it is not served."""
    crd = _crds()[(group, kind)]
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served"):
            schema = _strict_schema(entry["schema"]["openAPIV3Schema"])
            # The API server validates metadata itself; CRDs only say "type: object".
            schema["properties"]["metadata"] = _CR_METADATA_SCHEMA
            # apiVersion and kind are implicit in a structural schema (Istio's CRDs leave them out).
            for field in ("apiVersion", "kind"):
                schema["properties"].setdefault(field, {"type": "string"})
            schema["required"] = sorted({*schema.get("required", []), "metadata"})
            jsonschema.Draft202012Validator.check_schema(schema)
            return jsonschema.Draft202012Validator(schema)
    return None


def _strict_schema(schema: dict) -> dict:
    """Return a deep copy of an OpenAPI v3 structural schema, rewritten as plain JSON Schema."""
    strict = copy.deepcopy(schema)
    _tighten(strict)
    return strict


def _tighten(node: dict) -> None:
    if node.get("x-kubernetes-int-or-string"):
        node["type"] = ["integer", "string"]
        if node.get("anyOf") == _INT_OR_STRING_BRANCHES:
            del node["anyOf"]  # now redundant; keeping it would report each error twice
    if node.get("nullable"):
        _allow_null(node)
    if isinstance(node.get("pattern"), str):
        node["pattern"] = _python_regex(node["pattern"])
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for child in _structural_children(node):
        _tighten(child)


def _python_regex(pattern: str) -> str:
    """A Go (RE2) pattern as Python's re reads it: inline flags such as ^(?i)... go first."""
    match = re.match(r"\^\(\?([a-z]+)\)", pattern)
    return f"(?{match[1]})^{pattern[match.end():]}" if match else pattern


def _allow_null(node: dict) -> None:
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        node["type"] = [*types, "null"]
    if "enum" in node:
        node["enum"] = [*node["enum"], None]


def _structural_children(node: dict) -> Iterator[dict[str, Any]]:
    # anyOf/allOf/oneOf/not branches are left alone: in structural schemas they
    # only add value checks and may list a subset of the properties.
    yield from node.get("properties", {}).values()
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield node[key]
