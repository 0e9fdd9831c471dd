"""Building the `vllm serve` command line from typed settings."""

from typing import Sequence

SERVE_COMMAND = ["vllm", "serve"]

MANAGED_FLAGS = frozenset(
    {
        "--model",
        "--served-model-name",
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--gpu-memory-utilization",
        "--max-model-len",
        "--port",
        "--host",
        "--api-key",
    }
)
"""Flags the server sets from its own arguments; repeating them in extra args would conflict."""

REMOVED_FLAGS = frozenset(
    {
        "--swap-space",
        "--task",
        "--rope-scaling",
        "--rope-theta",
        "--disable-frontend-multiprocessing",
        "--cuda-graph-sizes",
    }
)
"""Flags that current vLLM releases no longer accept; the server would exit at start."""

REMOVED_FLAG_PREFIXES = ("--guided-decoding-",)


def flag_name(arg: str) -> str:
    """The flag an argument sets: `--max-num-seqs=8` -> `--max-num-seqs`."""
    return arg.split("=", 1)[0]


def extra_args_problems(extra_args: Sequence[str]) -> list[str]:
    """What is wrong with user-supplied vllm arguments, one sentence each."""
    problems = []
    for arg in extra_args:
        if not arg.startswith("-"):
            continue
        flag = flag_name(arg)
        if flag in MANAGED_FLAGS:
            problems.append(f"{flag} is set by the program from its own setting; remove it from the extra arguments")
        elif flag in REMOVED_FLAGS or flag.startswith(REMOVED_FLAG_PREFIXES):
            problems.append(f"{flag} was removed from vLLM; current releases refuse to start with it")
    return problems


def serve_args(
    *,
    model_path: str,
    served_model_name: str,
    port: int,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    gpu_memory_utilization: float,
    max_model_len: int,
    backend_args: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Arguments after `vllm serve`: the model path first, then flags, backend and user flags last."""
    return [
        model_path,
        "--served-model-name", served_model_name,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel_size),
        "--pipeline-parallel-size", str(pipeline_parallel_size),
        "--gpu-memory-utilization", format(gpu_memory_utilization, "g"),
        "--max-model-len", str(max_model_len),
        *backend_args,
        *extra_args,
    ]
