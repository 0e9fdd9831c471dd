"""The policy pack's rules on a rendered folder, offline: no Pulumi CLI, no cluster.

    python -m stack.render prod && python -m policy.check rendered/prod

Reads ``all.yaml`` (what ``python -m stack.render`` and ``vllm_serving_components.testing``
write) and applies every policy of the pack (``rules.RESOURCE_POLICIES`` and ``STACK_POLICIES``,
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


def violations(
    manifests: list[dict], allow_public_without_api_key: bool = False, budget: Optional[dict] = None
) -> list[tuple[str, str, str]]:
    """(policy name, object, message) for every promise an object breaks; the object is "" for
    the stack policies, whose messages name the objects. ``budget`` is the GPU budget policy's
    configuration (maxGpus, maxMonthlyGpuCost, gpuHourlyPrice)."""
    found = []
    resources = []
    for manifest in manifests:
        resource_type, props = type_token(manifest), as_the_pack_sees(manifest)
        for policy in rules.RESOURCE_POLICIES:
            found += [(policy.name, object_name(manifest), message) for message in policy.rule(resource_type, props)]
        resources.append(rules.Resource(resource_type, props, urn=object_name(manifest), name=manifest["metadata"]["name"]))
    config = {rules.ALLOW_PUBLIC_WITHOUT_API_KEY: allow_public_without_api_key}
    found += [(rules.STACK_POLICY.name, "", violation.message) for violation in rules.STACK_POLICY.rule(resources, config)]
    found += [(rules.BUDGET_POLICY.name, "", violation.message) for violation in rules.BUDGET_POLICY.rule(resources, budget or {})]
    return found


def price(text: str) -> tuple[str, float]:
    """PRODUCT=price, as --gpu-hourly-price takes it."""
    product, _, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not product or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not PRODUCT=price (0 or more), e.g. NVIDIA-H100-80GB-HBM3=2.50")
    return product, value


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m policy.check", description=__doc__.split("\n")[0])
    found.add_argument("folder", type=Path, help=f"a rendered folder holding {ALL}, e.g. rendered/prod")
    found.add_argument(
        "--allow-public-without-api-key", action="store_true",
        help=f"as the stack setting {rules.ALLOW_PUBLIC_WITHOUT_API_KEY}: true (or the pack's configuration)",
    )
    found.add_argument("--max-gpus", type=int, default=0, help=f"as the budget policy's {rules.MAX_GPUS} (0: no cap)")
    found.add_argument(
        "--max-monthly-gpu-cost", type=float, default=0.0, help=f"as the budget policy's {rules.MAX_MONTHLY_GPU_COST} (0: no cap)"
    )
    found.add_argument(
        "--gpu-hourly-price", type=price, action="append", default=[], metavar="PRODUCT=PRICE",
        help=f"as the budget policy's {rules.GPU_HOURLY_PRICE}, once per product",
    )
    return found


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    path = args.folder / ALL
    if not path.is_file():
        print(f"error: {args.folder} has no {ALL}; render it first, e.g. python -m stack.render prod", file=sys.stderr)
        return 2
    manifests = [manifest for manifest in yaml.safe_load_all(path.read_text()) if manifest]
    budget = {
        rules.MAX_GPUS: args.max_gpus,
        rules.MAX_MONTHLY_GPU_COST: args.max_monthly_gpu_cost,
        rules.GPU_HOURLY_PRICE: dict(args.gpu_hourly_price),
    }
    found = violations(manifests, args.allow_public_without_api_key, budget)
    for name, where, message in found:
        print(f"{name}: {where}: {message}" if where else f"{name}: {message}")
    policies = len(rules.RESOURCE_POLICIES) + len(rules.STACK_POLICIES)
    print(f"{args.folder}: {len(manifests)} objects, {policies} policies, {len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
