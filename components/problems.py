"""The error a component raises for invalid arguments, before it creates anything."""


class ComponentArgsError(ValueError):
    """Invalid component arguments; ``problems`` maps each argument path to what is wrong."""

    def __init__(self, component: str, name: str, problems: dict[str, str]):
        self.problems = problems
        details = "; ".join(f"{arg} {problem}" for arg, problem in problems.items())
        super().__init__(f"{component} {name}: {details}")


def raise_for_problems(component: str, name: str, problems: dict[str, str]) -> None:
    if problems:
        raise ComponentArgsError(component, name, problems)
