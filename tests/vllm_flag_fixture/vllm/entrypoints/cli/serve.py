import argparse

from vllm.entrypoints.cli.types import CLISubcommand
from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

DESCRIPTION = "Launch a local OpenAI-compatible API server."
EPILOG = "See `vllm {subcmd} --help=all`."


class ServeSubcommand(CLISubcommand):
    """The `serve` subcommand."""

    name = "serve"

    @staticmethod
    def cmd(args: argparse.Namespace) -> None:
        if args.model_tag is not None:
            args.model = args.model_tag

    def subparser_init(self, subparsers: argparse._SubParsersAction) -> FlexibleArgumentParser:
        serve_parser = subparsers.add_parser(
            self.name, description=DESCRIPTION, usage="vllm serve [model_tag] [options]"
        )
        serve_parser = make_arg_parser(serve_parser)
        serve_parser.epilog = EPILOG.format(subcmd=self.name)
        return serve_parser


def cmd_init() -> list[CLISubcommand]:
    return [ServeSubcommand()]
