import argparse


class CLISubcommand:
    """Base class for CLI subcommands."""

    name: str

    @staticmethod
    def cmd(args: argparse.Namespace) -> None:
        raise NotImplementedError

    def subparser_init(self, subparsers: argparse._SubParsersAction):
        raise NotImplementedError
