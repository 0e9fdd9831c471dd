"""Loading the stack's configuration: every per-key and cross-key rule, before any resource."""

from typing import Any

import pulumi
from pydantic import ValidationError

from .checks import cross_field_problems
from .config import ConfigError, StackConfig, project_values, validation_problems


def parse_stack_config(project: str, values: dict[str, Any]) -> StackConfig:
    """Validate raw config values (as Pulumi passes them) into a StackConfig, or raise ConfigError."""
    try:
        config = StackConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(project, validation_problems(error), values) from None
    problems = cross_field_problems(config)
    if problems:
        raise ConfigError(project, problems, values)
    return config


def load_stack_config() -> StackConfig:
    """The running stack's validated configuration."""
    project = pulumi.get_project()
    return parse_stack_config(project, project_values(project))
