"""Offline render: run the stack program under Pulumi's mock runtime and write what it creates.

    python -m stack.render dev [--out rendered/dev]
    python -m stack.render --stack-file /elsewhere/Pulumi.staging.yaml

No cluster, credentials or Pulumi CLI are needed. The program and components run exactly as
under ``pulumi up``; every Kubernetes object they register is written as YAML that
``kubectl apply`` accepts, one file per object plus ``all.yaml``, with the stack outputs in
``outputs.json``, each object's resource options in ``options.json`` and what a reviewer checks
(images, GPUs, CPU and memory, storage, hosts, replicas, options) in ``summary.md``, the table
printed. Secret values are never written.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Optional

from pulumi.runtime import mocks

from vllm_serving_components import ComponentArgsError
from vllm_serving_components.summary import TABLE_WIDTH, object_key
from vllm_serving_components.testing import (
    DUMPER,
    REDACTED,
    EchoMocks,
    RecordingMonitor,
    Rendering,
    plain,
    redact,
    run_program,
    run_under_mocks,
    write_and_show,
    write_rendering,
)

from .config import ConfigError, namespaced_values
from .loading import parse_stack_config
from .project import PROJECT_DIR, StackFileError, read_project, stack_config

# What tests and stack.review use from here; the runtime lives in vllm_serving_components.testing.
__all__ = [
    "DUMPER",
    "REDACTED",
    "EchoMocks",
    "RecordingMonitor",
    "Rendering",
    "object_key",
    "plain",
    "redact",
    "render_stack",
    "run_under_mocks",
    "write_rendering",
]


def render_stack(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    monitor: Optional[mocks.MockMonitor] = None,
    stack_file: Optional[Path] = None,
) -> Rendering:
    """Run the stack's own __main__.py under mocks and collect its Kubernetes objects and outputs.

    ``stack_file`` reads the stack's config from that file instead of the project's
    Pulumi.<stack>.yaml (a stack kept elsewhere, rendered with this project's schema and program).
    Raises ConfigError (invalid config, nothing registered) or StackFileError.
    """
    project = read_project(project_dir)
    program = project_dir / "__main__.py"
    if not program.is_file():
        raise StackFileError(f"{project_dir} has no __main__.py; point --project-dir at this program's folder")
    settings = stack_config(project, stack, stack_file)
    if settings.problems:
        # The CLI would refuse the file; report that together with every other problem.
        values, foreign = namespaced_values(project.name, settings.values)
        secret = frozenset(key.split(":", 1)[1] for key in settings.secret_keys if key.startswith(f"{project.name}:"))
        parse_stack_config(project.name, values, project.defaults(), (*settings.problems, *foreign), secret)
    return run_program(project_dir, project.name, stack, settings.values, monitor, settings.secret_keys)


def stack_of_file(path: Path) -> Optional[str]:
    """The stack a stack file is named for: Pulumi.<stack>.yaml."""
    match = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    return match.group(1) if match else None


def _missing_project(project_dir: Path) -> str:
    """Why --project-dir cannot be rendered from, and what to do instead."""
    if not project_dir.is_dir():
        return f"{project_dir} has no Pulumi.yaml: there is no such directory; point --project-dir at the folder that holds Pulumi.yaml"
    stacks = sorted(project_dir.glob("Pulumi.*.yaml"))
    example = stacks[0] if stacks else project_dir / "Pulumi.<stack>.yaml"
    found = f" (it holds stack files: {', '.join(path.name for path in stacks)})" if stacks else ""
    return (
        f"{project_dir} has no Pulumi.yaml, the project file with the config schema and the program{found}; "
        f"point --project-dir at the folder that holds Pulumi.yaml, or render a stack file kept elsewhere "
        f"with this project's program: python -m stack.render --stack-file {example}"
    )


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m stack.render", description=__doc__.split("\n")[0])
    found.add_argument(
        "stack", nargs="?",
        help="stack name: reads Pulumi.<stack>.yaml from the project (with --stack-file: the name to render it as; "
        "default: from the file's name)",
    )
    found.add_argument(
        "--stack-file", type=Path,
        help="a stack file kept elsewhere (Pulumi.<stack>.yaml), rendered with this project's Pulumi.yaml and program",
    )
    found.add_argument("--out", type=Path, help="output directory (default <project dir>/rendered/<stack>)")
    found.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR,
        help="the directory of Pulumi.yaml and the program (default: this project)",
    )
    found.add_argument("--width", type=int, default=TABLE_WIDTH, help=f"columns of the printed table (default {TABLE_WIDTH})")
    return found


def main(argv: Optional[list[str]] = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    stack = args.stack
    if args.stack_file is not None:
        if not args.stack_file.is_file():
            print(f"error: --stack-file {args.stack_file}: no such file", file=sys.stderr)
            return 2
        stack = stack or stack_of_file(args.stack_file)
        if not stack:
            print(
                f"error: --stack-file {args.stack_file}: cannot tell the stack from the file's name; "
                "name it Pulumi.<stack>.yaml or give the stack name too",
                file=sys.stderr,
            )
            return 2
    elif not stack:
        arguments.print_usage(sys.stderr)
        print("error: give a stack name (reads Pulumi.<stack>.yaml) or --stack-file", file=sys.stderr)
        return 2
    project_dir = args.project_dir.resolve()
    if not (project_dir / "Pulumi.yaml").is_file():
        print(f"error: stack {stack}: {_missing_project(project_dir)}", file=sys.stderr)
        return 2
    try:
        rendering = render_stack(stack, project_dir, stack_file=args.stack_file and args.stack_file.resolve())
    except (ConfigError, StackFileError, ComponentArgsError) as error:
        print(f"error: stack {stack}: {error}", file=sys.stderr)
        return 2
    write_and_show(rendering, args.out or args.project_dir / "rendered" / stack, args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
