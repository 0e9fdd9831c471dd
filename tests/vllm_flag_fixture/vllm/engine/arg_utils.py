import argparse
import copy
import functools
import json
import sys
from dataclasses import MISSING, dataclass, fields, is_dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter

from vllm.config import (
    CacheConfig,
    ModelConfig,
    ParallelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.platforms import current_platform
from vllm.utils.argparse_utils import FlexibleArgumentParser

_CPU_OFFLOAD_DEPRECATION_MESSAGE = (
    "--cpu-offload-gb is deprecated and will be removed; "
    "use --offload-backend instead."
)


def load_general_plugins() -> None:
    """Plugins may add arguments at run time."""


class DeprecatedLogConfigFileAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def parse_type(return_type):
    def _parse_type(val: str):
        return return_type(val)

    return _parse_type


def optional_type(return_type):
    def _optional_type(val: str):
        if val == "" or val == "None":
            return None
        return parse_type(return_type)(val)

    return _optional_type


def union_dict_and_str(val: str):
    if not val.startswith("{"):
        return val
    return optional_type(json.loads)(val)


def is_type(type_hint, type) -> bool:
    return type_hint is type or get_origin(type_hint) is type


def contains_type(type_hints, type) -> bool:
    return any(is_type(type_hint, type) for type_hint in type_hints)


def get_type(type_hints, type):
    return next((th for th in type_hints if is_type(th, type)), None)


def literal_to_kwargs(type_hints) -> dict[str, Any]:
    options = get_args(get_type(type_hints, Literal))
    kwarg = "metavar" if contains_type(type_hints, str) else "choices"
    return {"type": type(options[0]), kwarg: sorted(options)}


def collection_to_kwargs(type_hints, type) -> dict[str, Any]:
    types = get_args(get_type(type_hints, type))
    return {
        "type": types[0],
        "nargs": "+" if type is not tuple or Ellipsis in types else len(types),
    }


def is_not_builtin(type_hint) -> bool:
    return type_hint.__module__ != "builtins"


def get_type_hints(type_hint) -> set:
    type_hints = set()
    origin = get_origin(type_hint)
    if origin in {Union, UnionType}:
        for arg in get_args(type_hint):
            type_hints.update(get_type_hints(arg))
    else:
        type_hints.add(type_hint)
    return type_hints


@functools.lru_cache(maxsize=30)
def _compute_kwargs(cls) -> dict[str, dict[str, Any]]:
    kwargs = {}
    for field in fields(cls):
        type_hints: set = get_type_hints(field.type)
        generator = (th for th in type_hints if is_dataclass(th))
        dataclass_cls = next(generator, None)
        if field.default is not MISSING:
            default = field.default
        else:
            default = field.default_factory()
        name = field.name
        kwargs[name] = {"default": default, "help": ""}
        if dataclass_cls is not None:

            def parse_dataclass(val: str, cls=dataclass_cls):
                return TypeAdapter(cls).validate_json(val)

            kwargs[name]["type"] = parse_dataclass
        elif type_hints == {bool, str, type(None)}:
            kwargs[name]["type"] = str
            kwargs[name]["nargs"] = "?"
            kwargs[name]["const"] = True
        elif contains_type(type_hints, bool):
            kwargs[name]["action"] = argparse.BooleanOptionalAction
        elif contains_type(type_hints, Literal):
            kwargs[name].update(literal_to_kwargs(type_hints))
        elif contains_type(type_hints, tuple):
            kwargs[name].update(collection_to_kwargs(type_hints, tuple))
        elif contains_type(type_hints, list):
            kwargs[name].update(collection_to_kwargs(type_hints, list))
        elif contains_type(type_hints, int):
            kwargs[name]["type"] = int
        elif contains_type(type_hints, float):
            kwargs[name]["type"] = float
        elif contains_type(type_hints, dict) and (
            contains_type(type_hints, str) or any(is_not_builtin(th) for th in type_hints)
        ):
            kwargs[name]["type"] = union_dict_and_str
        elif contains_type(type_hints, dict):
            kwargs[name]["type"] = parse_type(json.loads)
        elif contains_type(type_hints, str) or any(is_not_builtin(th) for th in type_hints):
            kwargs[name]["type"] = str
        else:
            raise ValueError(f"Unsupported type {type_hints} for argument {name}.")

        if type(None) in type_hints and not contains_type(type_hints, bool):
            kwargs[name]["type"] = optional_type(kwargs[name]["type"])
    return kwargs


def get_kwargs(cls) -> dict[str, dict[str, Any]]:
    return copy.deepcopy(_compute_kwargs(cls))


@dataclass
class EngineArgs:
    """Arguments for the engine."""

    model: str = "Qwen/Qwen3-0.6B"

    @staticmethod
    def add_cli_args(parser: FlexibleArgumentParser) -> FlexibleArgumentParser:
        model_kwargs = get_kwargs(ModelConfig)
        model_group = parser.add_argument_group(title="ModelConfig", description=ModelConfig.__doc__)
        if not ("serve" in sys.argv[1:] and "--help" in sys.argv[1:]):
            model_group.add_argument("--model", **model_kwargs["model"])
        model_group.add_argument("--task", **model_kwargs["task"], deprecated=True)
        model_group.add_argument("--dtype", **model_kwargs["dtype"])
        model_group.add_argument("--max-model-len", **model_kwargs["max_model_len"])
        model_group.add_argument("--enforce-eager", **model_kwargs["enforce_eager"])
        model_group.add_argument("--served-model-name", **model_kwargs["served_model_name"])
        model_group.add_argument("--hf-token", **model_kwargs["hf_token"])
        model_group.add_argument("--rope-scaling", **model_kwargs["rope_scaling"])
        model_group.add_argument("--hf-overrides", **model_kwargs["hf_overrides"])
        model_group.add_argument("--trust-remote-code", **model_kwargs["trust_remote_code"])
        model_group.add_argument("--disable-cascade-attn", **model_kwargs["disable_cascade_attn"])

        parallel_kwargs = get_kwargs(ParallelConfig)
        parallel_group = parser.add_argument_group(title="ParallelConfig")
        parallel_group.add_argument(
            "--pipeline-parallel-size", "-pp", **parallel_kwargs["pipeline_parallel_size"]
        )
        parallel_group.add_argument("--tensor-parallel-size", "-tp", **parallel_kwargs["tensor_parallel_size"])
        parallel_group.add_argument("--data-parallel-size", "-dp", **parallel_kwargs["data_parallel_size"])
        parallel_group.add_argument("--data-parallel-rank", "-dpn", type=int, help="Data parallel rank.")
        parallel_group.add_argument(
            "--enable-expert-parallel", "-ep", **parallel_kwargs["enable_expert_parallel"]
        )
        parallel_group.add_argument(
            "--disable-custom-all-reduce", **parallel_kwargs["disable_custom_all_reduce"]
        )
        parallel_group.add_argument(
            "--max-parallel-loading-workers", **parallel_kwargs["max_parallel_loading_workers"]
        )
        parallel_group.add_argument(
            "--num-redundant-experts",
            type=int,
            help="[DEPRECATED] --num-redundant-experts will be removed.",
            deprecated=True,
        )

        cache_kwargs = get_kwargs(CacheConfig)
        cache_group = parser.add_argument_group(title="CacheConfig")
        cache_group.add_argument("--block-size", **cache_kwargs["block_size"])
        cache_group.add_argument(
            "--gpu-memory-utilization",
            "--device-memory-utilization",
            dest="gpu_memory_utilization",
            **cache_kwargs["gpu_memory_utilization"],
        )
        cache_group.add_argument("--swap-space", **cache_kwargs["swap_space"])
        cache_group.add_argument("--kv-cache-dtype", **cache_kwargs["cache_dtype"])
        cache_group.add_argument(
            "--enable-prefix-caching", **{**cache_kwargs["enable_prefix_caching"], "default": None}
        )
        cache_group.add_argument(
            "--cpu-offload-gb",
            **{**cache_kwargs["cpu_offload_gb"], "help": _CPU_OFFLOAD_DEPRECATION_MESSAGE},
        )

        scheduler_kwargs = get_kwargs(SchedulerConfig)
        scheduler_group = parser.add_argument_group(title="SchedulerConfig")
        scheduler_group.add_argument("--max-num-seqs", **scheduler_kwargs["max_num_seqs"])
        scheduler_group.add_argument("--enable-chunked-prefill", **scheduler_kwargs["enable_chunked_prefill"])
        scheduler_group.add_argument("--cuda-graph-sizes", **scheduler_kwargs["cuda_graph_sizes"])
        for arg, type in [
            ("--guided-decoding-backend", str),
            ("--guided-decoding-disable-fallback", bool),
        ]:
            scheduler_group.add_argument(
                arg, type=type, help=f"[DEPRECATED] {arg} will be removed.", deprecated=True
            )

        vllm_kwargs = get_kwargs(VllmConfig)
        vllm_group = parser.add_argument_group(title="VllmConfig")
        vllm_group.add_argument("--compilation-config", "-cc", **vllm_kwargs["compilation_config"])
        vllm_kwargs["kv_transfer_config"]["type"] = optional_type(json.loads)
        vllm_group.add_argument("--kv-transfer-config", **vllm_kwargs["kv_transfer_config"])
        vllm_group.add_argument("--additional-config", **vllm_kwargs["additional_config"])
        vllm_group.add_argument("--optimization-level", **vllm_kwargs["optimization_level"])

        parser.add_argument(
            "--log-config-file",
            dest="log_config_file",
            default=argparse.SUPPRESS,
            action=DeprecatedLogConfigFileAction,
            help="Path to a logging config file.",
        )
        parser.add_argument("--disable-log-stats", action="store_true", help="Disable logging statistics.")
        parser.add_argument("--shutdown-timeout", type=int, default=0, help="Shutdown timeout in seconds.")
        return parser


@dataclass
class AsyncEngineArgs(EngineArgs):
    """Arguments for the asynchronous engine."""

    enable_log_requests: bool = False

    @staticmethod
    def add_cli_args(parser: FlexibleArgumentParser, async_args_only: bool = False) -> FlexibleArgumentParser:
        load_general_plugins()
        if not async_args_only:
            parser = EngineArgs.add_cli_args(parser)
        parser.add_argument(
            "--enable-log-requests",
            action=argparse.BooleanOptionalAction,
            default=AsyncEngineArgs.enable_log_requests,
            help="Enable logging requests.",
        )
        current_platform.pre_register_and_update(parser)
        return parser
