"""Building the `vllm serve` command line, and checking flags against the release that runs it.

Which flags exist depends on the vLLM release: one table per release in ``vllm_flags/``,
generated from the release's published wheel by ``tools/vllm_flag_table.py``. Extra
arguments are read the way vLLM's own parser reads them (``--a_b`` is ``--a-b``,
``--flag=value`` is ``--flag value``), so no spelling slips past the check.
"""

import difflib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .grammar import image_tag

SERVE_COMMAND = ["vllm", "serve"]
FLAG_TABLES = Path(__file__).with_name("vllm_flags")
TABLE_TOOL = "python tools/vllm_flag_table.py"

FIXED_BY_PROGRAM = "the program fixes it (the server listens on port 8000 of every interface, for the Service and probes)"
MANAGED_DESTS = {
    "model": "set model_path instead",
    "model_tag": "set model_path instead",
    "served_model_name": "set served_model_name instead",
    "host": FIXED_BY_PROGRAM,
    "port": FIXED_BY_PROGRAM,
    "tensor_parallel_size": "set tensor_parallel_size instead",
    "pipeline_parallel_size": "set pipeline_parallel_size instead",
    "gpu_memory_utilization": "set gpu_memory_utilization instead",
    "max_model_len": "set max_model_len instead",
    "data_parallel_size": "set layout data-expert and data_parallel_size instead",
    "enable_expert_parallel": "set layout data-expert instead",
    **dict.fromkeys(
        (
            "data_parallel_size_local",
            "data_parallel_address",
            "data_parallel_rpc_port",
            "data_parallel_start_rank",
            "data_parallel_rank",
            "data_parallel_backend",
            "data_parallel_hybrid_lb",
            "data_parallel_external_lb",
            "headless",
            "nnodes",
            "node_rank",
            "master_addr",
            "master_port",
            "distributed_executor_backend",
        ),
        "the layout places the engines on the pods (components.layout)",
    ),
    "kv_offloading_size": "set kv_offload_gib instead, which also adds the buffer to the pods' memory",
    "kv_offloading_backend": "set kv_offload_gib instead (vLLM's native backend)",
    **dict.fromkeys(
        ("enable_lora", "lora_modules", "max_lora_rank"),
        "set lora_adapters instead, which also stages them and counts their memory",
    ),
    "max_loras": "set max_loras instead, which the capacity estimate counts",
}
"""vLLM options the server sets from its own arguments (option dest -> what to do instead)."""
API_KEY_DEST = "api_key"


@dataclass(frozen=True)
class Option:
    dest: str
    """The parser's destination; every spelling of one option shares it."""
    takes_value: str
    """none, required or optional."""
    json: bool = False
    """Takes a JSON object, whose keys vLLM also accepts one at a time (--flag.key value)."""


@dataclass(frozen=True)
class FlagTable:
    release: str
    options: dict[str, Option]
    underscores_to_dashes: bool
    abbreviations: bool
    dotted_json_keys: bool

    def lookup(self, flag: str) -> tuple[str, Optional[Option]]:
        """The option a flag names after vLLM's normalisation, and the normalised flag.

        argparse also takes an unambiguous prefix of a long option (allow_abbrev), so
        ``--api-k`` is ``--api-key``.
        """
        key, dot, path = flag.partition(".")
        if self.underscores_to_dashes and key.startswith("--"):
            flag = key.replace("_", "-") + dot + path
        if dot and self.dotted_json_keys and key.startswith("-"):
            # --compilation-config.level 3 sets one key of a JSON option.
            base, option = self.lookup(flag.partition(".")[0])
            return base, (Option(option.dest, "required") if option and option.json else None)
        if flag in self.options or not (self.abbreviations and flag.startswith("--") and len(flag) > 2):
            return flag, self.options.get(flag)
        completions = [option for option in self.options if option.startswith(flag)]
        return (completions[0], self.options[completions[0]]) if len(completions) == 1 else (flag, None)

    def nearest(self, flag: str) -> Optional[str]:
        close = difflib.get_close_matches(flag, list(self.options), n=1, cutoff=0.6)
        return close[0] if close else None


def available_releases() -> list[str]:
    return sorted(path.stem.removeprefix("v") for path in FLAG_TABLES.glob("v*.json"))


@functools.cache
def flag_table(release: str) -> Optional[FlagTable]:
    """The flag table of a vLLM release, or None when none has been generated."""
    path = FLAG_TABLES / f"v{release}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    options = {flag: Option(o["dest"], o["takes_value"], o.get("json", False)) for flag, o in data["options"].items()}
    rules = data["normalisation"]
    return FlagTable(
        data["release"], options, rules["underscores_to_dashes"], rules["abbreviations"], rules["dotted_json_keys"]
    )


def release_of(image: str, vllm_release: Optional[str]) -> Optional[str]:
    """The vLLM release an image runs: vllm_release if given, else the image's v<release> tag."""
    if vllm_release:
        return vllm_release
    tag = image_tag(image) or ""
    match = re.fullmatch(r"v(\d+\.\d+\.\d+(?:\.post\d+)?)", tag)
    return match[1] if match else None


def release_problem(image: str, vllm_release: Optional[str]) -> Optional[str]:
    """Why no flag table can check this image's flags, or None when one can."""
    release = release_of(image, vllm_release)
    known = ", ".join(available_releases())
    if release is None:
        return (
            f"has no v<release> tag that names its vLLM release; set vllm_release to the release it runs "
            f"(tables exist for {known})"
        )
    if flag_table(release) is None:
        return (
            f"runs vLLM {release}, which has no flag table to check the server's flags against; generate one "
            f"with `{TABLE_TOOL} {release}`, or set vllm_release to a release that has one ({known})"
        )
    return None


def extra_args_problems(extra_args: Sequence[str], table: FlagTable) -> list[str]:
    """What is wrong with user-supplied vllm arguments, one sentence each, naming each item as
    ``extra_args[index]`` counted from 0 (as ``pulumi config set --path 'extraArgs[0]'`` counts).

    A value after a flag already reported is not reported again. Never quotes a value: an item
    may hold a secret.
    """
    problems = []
    index = 0
    while index < len(extra_args):
        item = extra_args[index]
        where = f"extra_args[{index}]"
        index += 1
        if not item.startswith("-") or item == "-":
            problems.append(
                f"{where} is not a flag and follows no flag that takes a value; the model is given by the "
                "program, and each flag's value goes in the item after it"
            )
            continue
        name, has_equals, _ = item.partition("=")
        first_word = name.split()[0] if name.split() else name
        flag, option = table.lookup(first_word)
        reported = None
        if option is not None and option.dest == API_KEY_DEST:
            reported = (
                f"{where} sets {flag}, which would store the API key in plain text in the Deployment; "
                "give the key through api_key_secret instead"
            )
        elif first_word != name:
            reported = f"{where} holds a flag and more after a space; put {flag}'s value in the next item"
        elif option is None:
            nearest = table.nearest(flag)
            hint = f"; did you mean {nearest}?" if nearest else ""
            reported = f"{where} {flag} is not a flag of vLLM {table.release}{hint}"
        elif option.dest in MANAGED_DESTS:
            reported = f"{where} {flag} is set by the program; {MANAGED_DESTS[option.dest]}"
        if reported:
            problems.append(reported)
            # Its value, if it has one in the next item, is part of the same mistake.
            takes_value = option is None or option.takes_value != "none"
            if takes_value and not has_equals and first_word == name and index < len(extra_args):
                index += 0 if _is_flag(extra_args[index]) else 1
            continue
        assert option is not None  # an unknown flag is reported above
        if option.takes_value == "none" and has_equals:
            problems.append(f"{where} {flag} takes no value")
        elif option.takes_value == "required" and not has_equals:
            if index >= len(extra_args) or _is_flag(extra_args[index]):
                problems.append(f"{where} {flag} needs a value in the item after it")
            else:
                index += 1
        elif option.takes_value == "optional" and not has_equals and index < len(extra_args):
            index += 0 if _is_flag(extra_args[index]) else 1
    return problems


def _is_flag(item: str) -> bool:
    """An item argparse reads as an option rather than a value (negative numbers are values)."""
    return item.startswith("-") and not re.fullmatch(r"-\d+(\.\d*)?|-\.\d+", item)


def unknown_flags(args: Sequence[str], table: FlagTable) -> list[str]:
    """Flags among the program's own arguments that this release does not have."""
    flags = (arg.partition("=")[0] for arg in args if arg.startswith("--"))
    return [flag for flag in flags if table.lookup(flag)[1] is None]


def serve_flags(
    *,
    served_model_name: str,
    port: int,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    gpu_memory_utilization: float,
    max_model_len: int,
    backend_args: Sequence[str] = (),
    lora_args: Sequence[Any] = (),
    extra_args: Sequence[str] = (),
) -> list[Any]:
    """The flags after `vllm serve <model path>`: the program's own, then the backend's and the
    adapters' (whose paths may be known only later), the user's last."""
    return [
        "--served-model-name", served_model_name,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel_size),
        "--pipeline-parallel-size", str(pipeline_parallel_size),
        "--gpu-memory-utilization", format(gpu_memory_utilization, "g"),
        "--max-model-len", str(max_model_len),
        *backend_args,
        *lora_args,
        *extra_args,
    ]
