"""Loading the stack's configuration: every per-key and cross-key rule, before any resource."""

from typing import Any

import pulumi

from .checks import cross_field_problems
from .config import ConfigError, Problem, StackConfig, namespaced_values, parse_values, running_config, secret_keys
from .project import PROJECT_DIR, read_project


def parse_stack_config(
    project: str,
    values: dict[str, Any],
    defaults: dict[str, str],
    found: tuple[Problem, ...] = (),
    secret: frozenset[str] = frozenset(),
) -> StackConfig:
    """Validate config values (as Pulumi passes them) into a StackConfig, or raise ConfigError.

    ``defaults`` are Pulumi.yaml's, as the CLI passes them; ``found`` are problems already
    found in the stack file, reported together with the rest; ``secret`` the keys held encrypted.
    """
    config, parsed = parse_values(values, defaults, secret)
    found_keys = {problem.key for problem in found}
    problems = [*found, *(problem for problem in parsed if problem.key not in found_keys)]
    unreadable = {problem.key for problem in problems}
    problems += cross_field_problems(config, unreadable)
    if problems:
        raise ConfigError(project, problems, values, secret)
    return config


def load_stack_config() -> StackConfig:
    """The running stack's validated configuration."""
    project = pulumi.get_project()
    config = running_config()
    values, foreign = namespaced_values(project, config)
    defaults = read_project(PROJECT_DIR).defaults()
    return parse_stack_config(project, values, defaults, tuple(foreign), secret_keys(project, config))
