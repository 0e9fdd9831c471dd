"""LoRA adapters served beside the base model: vLLM's flags for them, and the rules they follow.

Facts from vLLM 0.34.0 (the same flags exist in 0.11.0's flag table):
- ``--enable-lora`` turns adapter support on; ``--lora-modules`` takes the adapters to load at
  start, one ``name=path`` item each (an item holding ',' is read as JSON instead), all after one
  flag (vllm/entrypoints/common/cli_args.py LoRAParserAction). The server loads each at start
  and refuses to start when one fails (vllm/entrypoints/openai/models/serving.py init_static_loras),
  and lists it in /v1/models beside the base model; a request selects it by its name in ``model``.
- ``--max-loras`` (default 1, at least 1) is how many adapters one batch may use, and so how many
  slots of GPU memory are preallocated; ``--max-lora-rank`` (default 16) is one of 1, 8, 16, 32,
  64, 128, 256, 320 or 512 and must be at least every adapter's rank (vllm/config/lora.py
  LoRAConfig, MaxLoRARanks).
"""

from typing import Annotated, Any, NotRequired, Optional, TypedDict

import pulumi
from pydantic import AfterValidator, Field

from . import grammar
from .arguments import Problems, check, is_unknown, rule
from .capacity import MAX_LORA_RANKS, LoraSlots
from .escaping import container_text


class LoraAdapterArgs(TypedDict):
    """One LoRA adapter the server loads at start."""

    name: str
    """What clients pass as `model` to use it; not the served_model_name."""
    path: pulumi.Input[str]
    """Its staged directory (ModelStore.adapter_paths[name]), inside mount_path, holding the store's marker."""
    rank: int
    """Its rank (r in its adapter_config.json), 1 to 512; --max-lora-rank is the smallest of vLLM's
    values that holds the largest."""


def _rank(value: int) -> int:
    if value > MAX_LORA_RANKS[-1]:
        raise ValueError(
            f"is above {MAX_LORA_RANKS[-1]}, vLLM's largest --max-lora-rank (one of "
            f"{', '.join(map(str, MAX_LORA_RANKS))}): an adapter of this rank cannot be loaded"
        )
    return value


RULES: dict[str, Any] = {
    "lora_adapters.name": rule(grammar.adapter_name),
    "lora_adapters.path": rule(grammar.absolute_path),
    "lora_adapters.rank": Annotated[int, Field(ge=1), AfterValidator(_rank)],
    "max_loras": Annotated[int, Field(ge=1, le=1024)],
}
"""VLLMServer's rules of its lora_adapters and max_loras."""


def max_lora_rank(adapters: list[LoraAdapterArgs]) -> int:
    """The smallest --max-lora-rank vLLM takes that holds every adapter's rank."""
    largest = max(adapter["rank"] for adapter in adapters)
    return next(rank for rank in MAX_LORA_RANKS if rank >= largest)


def lora_slots(adapters: list[LoraAdapterArgs], max_loras: Optional[int]) -> Optional[LoraSlots]:
    """The slots vLLM preallocates: max_loras (default: one per adapter) at --max-lora-rank; None without adapters."""
    if not adapters:
        return None
    return LoraSlots(max_loras or len(adapters), max_lora_rank(adapters))


def lora_flags(adapters: list[LoraAdapterArgs], max_loras: Optional[int]) -> list[pulumi.Input[str]]:
    """--enable-lora --lora-modules name=path ... --max-loras N --max-lora-rank R, not yet escaped for
    a container (an item is an Output while its path is); nothing without adapters."""
    slots = lora_slots(adapters, max_loras)
    if slots is None:
        return []
    modules = [pulumi.Output.concat(a["name"], "=", a["path"]) if is_unknown(a["path"]) else f"{a['name']}={a['path']}" for a in adapters]
    return ["--enable-lora", "--lora-modules", *modules, "--max-loras", str(slots.slots), "--max-lora-rank", str(slots.rank)]


@check("lora_adapters", "max_loras", "served_model_name", "mount_path")
def adapters_problems(args: dict) -> Problems:
    """Names apart from each other and from the model, paths on the model volume, slots within the adapters."""
    adapters, problems = args["lora_adapters"], {}
    names = [adapter["name"] for adapter in adapters]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        problems["lora_adapters"] = f"names {', '.join(repeated)} more than once; give each adapter a name of its own"
    elif args["served_model_name"] in names:
        problems["lora_adapters"] = (
            f"names an adapter {args['served_model_name']}, the served_model_name: a request's `model` would not "
            "tell them apart; rename the adapter"
        )
    mount = args["mount_path"]
    outside = [a["name"] for a in adapters if isinstance(a["path"], str) and not a["path"].startswith(f"{mount}/")]
    if outside:
        problems.setdefault(
            "lora_adapters", f"{', '.join(outside)}: the path must be a directory inside mount_path ({mount}), on the model volume"
        )
    if args["max_loras"] is not None:
        if not adapters:
            problems["max_loras"] = "has no effect without lora_adapters; remove it"
        elif args["max_loras"] > len(adapters):
            problems["max_loras"] = (
                f"({args['max_loras']}) is more than the {len(adapters)} adapter(s): each slot takes GPU memory "
                f"whether used or not; at most {len(adapters)}"
            )
    return problems


ADAPTER_CHECK = (
    'for adapter in $ADAPTER_PATHS; do if [ ! -f "$adapter/$MARKER" ]; then '
    'echo "model store incomplete: $adapter/$MARKER is missing; the download Job has not staged this adapter" >&2; '
    "exit 1; fi; done; "
)
"""The init container's check of every adapter's marker, before the model's."""


def adapter_check_env(adapters: list[LoraAdapterArgs]) -> list[dict]:
    """ADAPTER_PATHS for ADAPTER_CHECK: the adapters' directories, space-separated (a path has no space)."""
    paths = [adapter["path"] for adapter in adapters]
    if all(isinstance(path, str) for path in paths):
        value: pulumi.Input[str] = container_text(" ".join(paths))
    else:
        value = pulumi.Output.all(*paths).apply(lambda known: container_text(" ".join(known)))
    return [{"name": "ADAPTER_PATHS", "value": value}]
