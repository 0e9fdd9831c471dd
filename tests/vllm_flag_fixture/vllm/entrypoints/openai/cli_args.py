"""Arguments of the OpenAI-compatible server."""

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from vllm.config import config
from vllm.engine.arg_utils import AsyncEngineArgs, optional_type
from vllm.utils.argparse_utils import FlexibleArgumentParser


@dataclass
class LoRAModulePath:
    name: str
    path: str


class LoRAParserAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [LoRAModulePath(*v.split("=", 1)) for v in values])


class ToolParserManager:
    tool_parsers: dict[str, Any] = {}


@config
class BaseFrontendArgs:
    """Arguments shared by the frontends."""

    lora_modules: list[LoRAModulePath] | None = None
    """LoRA modules as name=path."""
    chat_template: str | None = None
    """The chat template."""
    enable_auto_tool_choice: bool = False
    """Enable auto tool choice."""
    tool_call_parser: str | None = None
    """The tool call parser."""

    @classmethod
    def _customize_cli_kwargs(cls, frontend_kwargs: dict[str, Any]) -> dict[str, Any]:
        frontend_kwargs["lora_modules"]["type"] = optional_type(str)
        frontend_kwargs["lora_modules"]["action"] = LoRAParserAction
        valid_tool_parsers = list(ToolParserManager.tool_parsers.keys())
        frontend_kwargs["tool_call_parser"]["metavar"] = f"{{{','.join(valid_tool_parsers)}}}"
        return frontend_kwargs

    @classmethod
    def add_cli_args(cls, parser: FlexibleArgumentParser) -> FlexibleArgumentParser:
        from vllm.engine.arg_utils import get_kwargs

        frontend_kwargs = get_kwargs(cls)
        frontend_kwargs = cls._customize_cli_kwargs(frontend_kwargs)
        frontend_group = parser.add_argument_group(
            title=cls.__name__.replace("Args", ""), description=cls.__doc__
        )
        for key, value in frontend_kwargs.items():
            extra_flags = value.pop("flags", [])
            frontend_group.add_argument(*extra_flags, f"--{key.replace('_', '-')}", **value)
        return parser


@config
class FrontendArgs(BaseFrontendArgs):
    """Arguments of the HTTP frontend."""

    host: str | None = None
    """Host name."""
    port: int = 8000
    """Port number."""
    api_key: list[str] | None = None
    """API keys."""
    allowed_origins: list[str] = field(default_factory=list)
    """Allowed origins."""
    middleware: list[str] = field(default_factory=lambda: [])
    """Additional ASGI middleware."""
    disable_uvicorn_access_log: bool = False
    """Disable the uvicorn access log."""
    uvicorn_log_level: Literal["info", "debug"] = "info"
    """Log level for uvicorn."""

    @classmethod
    def _customize_cli_kwargs(cls, frontend_kwargs: dict[str, Any]) -> dict[str, Any]:
        frontend_kwargs = super()._customize_cli_kwargs(frontend_kwargs)
        frontend_kwargs["allowed_origins"]["type"] = json.loads
        del frontend_kwargs["allowed_origins"]["nargs"]
        frontend_kwargs["middleware"]["action"] = "append"
        frontend_kwargs["middleware"]["type"] = str
        if "nargs" in frontend_kwargs["middleware"]:
            del frontend_kwargs["middleware"]["nargs"]
        frontend_kwargs["port"]["flags"] = ["-P"]
        return frontend_kwargs


def make_arg_parser(parser: FlexibleArgumentParser) -> FlexibleArgumentParser:
    parser.add_argument("model_tag", type=str, nargs="?", help="The model tag to serve.")
    parser.add_argument("--headless", action="store_true", default=False, help="Run headless.")
    parser.add_argument("--api-server-count", "-asc", type=int, default=None, help="API servers.")
    parser.add_argument("--config", help="Read CLI options from a config file.")
    parser = FrontendArgs.add_cli_args(parser)
    parser = AsyncEngineArgs.add_cli_args(parser)
    return parser
