"""What every component does with its arguments: fill in defaults, refuse invalid ones."""

from typing import Any, Mapping


class ComponentArgsError(ValueError):
    """Invalid component arguments; ``problems`` maps each argument path to what is wrong."""

    def __init__(self, component: str, name: str, problems: dict[str, str]):
        self.problems = problems
        details = "; ".join(f"{arg} {problem}" for arg, problem in problems.items())
        super().__init__(f"{component} {name}: {details}")


def raise_for_problems(component: str, name: str, problems: dict[str, str]) -> None:
    if problems:
        raise ComponentArgsError(component, name, problems)


def with_defaults(args: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments with every optional one present; None means "use the default"."""
    return {**defaults, **{key: value for key, value in args.items() if value is not None}}
