import json
import sys
from argparse import Action, ArgumentParser, BooleanOptionalAction, _ArgumentGroup

import regex as re


class EnableDisableAction(BooleanOptionalAction):
    """Pairs `--enable-x` with `--disable-x`."""

    _inverse_prefixes = {"--enable-": "--disable-", "--disable-": "--enable-"}

    def __init__(self, option_strings, dest, *args, **kwargs):
        super().__init__(option_strings, dest, *args, **kwargs)
        inverses = [
            inverse + opt.removeprefix(prefix)
            for opt in option_strings
            for prefix, inverse in self._inverse_prefixes.items()
            if opt.startswith(prefix)
        ]
        self.option_strings = [*self.option_strings, *inverses]


class FlexibleArgumentParser(ArgumentParser):
    """ArgumentParser that allows both underscore and dash in names."""

    def __init__(self, *args, **kwargs):
        self._deprecated: set[Action] = set()
        super().__init__(*args, **kwargs)
        self.register("action", BooleanOptionalAction, EnableDisableAction)

    def add_argument(self, *args, **kwargs):
        deprecated = sys.version_info < (3, 13) and kwargs.pop("deprecated", False)
        action = super().add_argument(*args, **kwargs)
        if deprecated:
            self._deprecated.add(action)
        return action

    class _FlexibleArgumentGroup(_ArgumentGroup):
        def add_argument(self, *args, **kwargs):
            kwargs.pop("deprecated", False)
            return super().add_argument(*args, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = self._FlexibleArgumentGroup(self, *args, **kwargs)
        self._action_groups.append(group)
        return group

    def parse_args(self, args=None, namespace=None):
        if args is None:
            args = sys.argv[1:]

        def repl(match) -> str:
            return match.group(0).replace("_", "-")

        pattern = re.compile(r"(?<=--)[^\.]*")
        processed_args = []
        for i, arg in enumerate(args):
            if arg.startswith("--"):
                if "=" in arg:
                    key, value = arg.split("=", 1)
                    processed_args.append(f"{pattern.sub(repl, key, count=1)}={value}")
                else:
                    processed_args.append(pattern.sub(repl, arg, count=1))
            elif arg.startswith("-O") and arg != "-O":
                level = arg[3:] if arg[2] == "=" else arg[2:]
                processed_args += ["--optimization-level", level]
            else:
                processed_args.append(arg)

        dict_args: dict[str, dict] = {}
        rest = []
        for arg in processed_args:
            if arg.startswith("-") and "." in arg and "=" in arg:
                key, value = arg.split("=", 1)
                top, *keys = key.split(".")
                dict_args.setdefault(top, {})[".".join(keys)] = json.loads(value)
            else:
                rest.append(arg)
        for key, value in dict_args.items():
            rest += [key, json.dumps(value)]
        return super().parse_args(rest, namespace)
