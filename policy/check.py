"""The policy pack's rules on a rendered folder, offline: no Pulumi CLI, no cluster.

    python -m stack.render prod && python -m policy.check rendered/prod

Reads ``all.yaml`` (what ``python -m stack.render`` and ``vllm_serving_components.testing``
write) and applies every policy of the pack (``rules.RESOURCE_POLICIES`` and ``STACK_POLICY``,
the list ``__main__.py`` serves) to the objects as the pack sees them under ``pulumi preview``:
each object under its Pulumi type token, every number a float. A rendered object's values are
all known, so no rule is skipped for an unknown value. Prints one line per violation, naming
the policy; exit 0 when every object keeps every promise, 1 when one does not, 2 on bad usage.
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from . import rules

ALL = "all.yaml"


def type_token(manifest: dict) -> str:
    """The Pulumi type of a Kubernetes object: kubernetes:<group>/<version>:<Kind>, core for the
    core group; a CustomResource's is made the same way from its apiVersion and kind."""
    group_version = manifest["apiVersion"]
    return f"kubernetes:{group_version if '/' in group_version else 'core/' + group_version}:{manifest['kind']}"


def as_the_pack_sees(value: Any) -> Any:
    """Every number a float, as the engine's protobuf Struct hands it to the pack."""
    if isinstance(value, bool) or not isinstance(value, (int, float, dict, list)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {key: as_the_pack_sees(item) for key, item in value.items()}
    return [as_the_pack_sees(item) for item in value]


def object_name(manifest: dict) -> str:
    metadata = manifest.get("metadata") or {}
    return "/".join(part for part in (manifest.get("kind"), metadata.get("namespace"), metadata.get("name")) if part)


def violations(manifests: list[dict], allow_public_without_api_key: bool = False) -> list[tuple[str, str, str]]:
    """(policy name, object, message) for every promise an object breaks; the object is "" for
    the stack policy, whose message names the objects."""
    found = []
    resources = []
    for manifest in manifests:
        resource_type, props = type_token(manifest), as_the_pack_sees(manifest)
        for policy in rules.RESOURCE_POLICIES:
            found += [(policy.name, object_name(manifest), message) for message in policy.rule(resource_type, props)]
        resources.append(rules.Resource(resource_type, props, urn=object_name(manifest), name=manifest["metadata"]["name"]))
    config = {rules.ALLOW_PUBLIC_WITHOUT_API_KEY: allow_public_without_api_key}
    found += [(rules.STACK_POLICY.name, "", violation.message) for violation in rules.STACK_POLICY.rule(resources, config)]
    return found


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m policy.check", description=__doc__.split("\n")[0])
    found.add_argument("folder", type=Path, help=f"a rendered folder holding {ALL}, e.g. rendered/prod")
    found.add_argument(
        "--allow-public-without-api-key", action="store_true",
        help=f"as the stack setting {rules.ALLOW_PUBLIC_WITHOUT_API_KEY}: true (or the pack's configuration)",
    )
    return found


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    path = args.folder / ALL
    if not path.is_file():
        print(f"error: {args.folder} has no {ALL}; render it first, e.g. python -m stack.render prod", file=sys.stderr)
        return 2
    manifests = [manifest for manifest in yaml.safe_load_all(path.read_text()) if manifest]
    found = violations(manifests, args.allow_public_without_api_key)
    for name, where, message in found:
        print(f"{name}: {where}: {message}" if where else f"{name}: {message}")
    policies = len(rules.RESOURCE_POLICIES) + 1
    print(f"{args.folder}: {len(manifests)} objects, {policies} policies, {len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
