"""What every component does with its arguments: check all of them at once, fill in defaults.

A component describes its arguments once, as a TypedDict (what the Pulumi component host and
type checkers read). ``ArgsSpec`` derives a pydantic validator from it, adds the component's
format rules (``rules``: a pydantic type per argument path) and cross-argument rules
(``checks``), and reports every problem in one pass, before anything is registered:
unknown arguments (with the nearest known name), missing required ones, wrong types,
formats and ranges, and rules between arguments. Values that are still unknown
(``pulumi.Output`` or awaitables) pass; their content is checked by no one until the
provider sees them.
"""

import contextlib
import difflib
import inspect
import types
import typing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterator, Mapping, Optional, Union, get_args, get_origin

import pulumi
import pulumi.output as pulumi_output
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator
from typing_extensions import NotRequired, Required, TypedDict, is_typeddict

from . import grammar
from .grammar import INT32_MAX, single_line

Problems = dict[str, str]
"""What is wrong, keyed by argument path (``count``, ``hami.cores``, or ``name`` for the resource name)."""

STRICT = ConfigDict(extra="forbid", strict=True)


class ComponentArgsError(ValueError):
    """Invalid component arguments; ``problems`` maps each argument path to what is wrong."""

    def __init__(self, component: str, name: str, problems: Problems):
        self.problems = problems
        details = "; ".join(f"{arg}{_lines(problem)}" for arg, problem in problems.items())
        super().__init__(f"{component} {name}: {details}")


Words = Callable[[str, str], str]
"""(component, text naming its arguments) -> the text as the caller names them."""
_WORDS: ContextVar[Optional[Words]] = ContextVar("argument_words", default=None)


@contextlib.contextmanager
def argument_words(words: Words) -> Iterator[None]:
    """Within this block, components word their warnings as ``words`` renames their arguments:
    a program that feeds them from its own settings (the stack, from config keys) names those."""
    token = _WORDS.set(words)
    try:
        yield
    finally:
        _WORDS.reset(token)


def worded(component: str, text: str) -> str:
    """A warning about a component's arguments, in the words of the program that gave them."""
    words = _WORDS.get()
    return words(component, text) if words else text


def _lines(message: str) -> str:
    """A message of several problems (one per line) on lines of their own, indented."""
    return "\n  " + message.replace("\n", "\n  ") if "\n" in message else f" {message}"


def is_unknown(value: Any) -> bool:
    """A value known only once resources exist: an Output or an awaitable."""
    return isinstance(value, pulumi.Output) or inspect.isawaitable(value)


def _pass_unknown(value: Any, handler: Callable[[Any], Any]) -> Any:
    return value if is_unknown(value) else handler(value)


PassUnknown = WrapValidator(_pass_unknown)
Text = Annotated[str, AfterValidator(single_line)]
"""Every string argument: a newline or other control character is never meant."""


def rule(check: Callable[[str], str]) -> Any:
    """A string type for an argument, checked by one of the ``grammar`` functions."""
    return Annotated[str, AfterValidator(single_line), AfterValidator(check)]


def int_range(low: int, high: int = INT32_MAX) -> Any:
    """An integer from low to high; Kubernetes' counts and thresholds are int32."""
    return Annotated[int, Field(ge=low, le=high)]


DnsLabel = rule(grammar.dns_label)
DnsSubdomain = rule(grammar.dns_subdomain)
LabelValue = rule(grammar.label_value)
Labels = dict[rule(grammar.label_key), LabelValue]  # type: ignore[misc]
Token = rule(grammar.token)
CommandWord = rule(grammar.command_word)
"""A value that becomes a word of a command line: never one its parser reads as an option."""
Image = rule(grammar.image_reference)
CpuQuantity = rule(grammar.cpu_quantity)
ByteQuantity = rule(grammar.byte_quantity)
HttpUrl = rule(grammar.http_url)


@dataclass(frozen=True)
class Check:
    """A rule between arguments; it runs only when every argument it reads is valid and known.

    An argument the rule only tests for being set is not one it reads: the rule then runs
    even when that argument's value is wrong (which is reported on its own).
    """

    reads: tuple[str, ...]
    run: Callable[[dict[str, Any]], Problems]


def check(*reads: str) -> Callable[[Callable[[dict[str, Any]], Problems]], Check]:
    """Declare a cross-argument rule and the arguments whose values it reads."""
    return lambda run: Check(reads=reads, run=run)


def with_defaults(args: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments with every optional one present; None means "use the default"."""
    return {**defaults, **{key: value for key, value in args.items() if value is not None}}


class ArgsSpec:
    """One component's arguments: their types, formats, defaults and cross-argument rules."""

    def __init__(
        self,
        component: str,
        args_type: type,
        defaults: Mapping[str, Any],
        rules: Optional[Mapping[str, Any]] = None,
        checks: tuple[Check, ...] = (),
        name_rule: Optional[Callable[[str], str]] = None,
    ):
        self.component = component
        self.args_type = args_type
        self.defaults = dict(defaults)
        self.rules = dict(rules or {})
        self.checks = checks
        self.name_rule = name_rule
        self.fields: dict[str, set[str]] = {}
        """Field names of every TypedDict level, keyed by its dotted path ("" is the top)."""
        self.key_paths: set[str] = set()
        """Paths of mapping arguments' keys (``env[key]``), which rules may also name."""
        self._adapter = TypeAdapter(self._validating_typeddict(args_type, ""))
        unused = set(self.rules) - self._paths()
        if unused:
            raise TypeError(f"{component}: rules for arguments it does not have: {sorted(unused)}")

    def problems(self, args: Any, name: Optional[str] = None) -> Problems:
        """Every problem with the arguments (and the resource name, if given)."""
        problems: Problems = {}
        if name is not None and self.name_rule is not None:
            try:
                if not isinstance(name, str):
                    raise ValueError("must be a string")
                self.name_rule(single_line(name))
            except ValueError as error:
                problems["name"] = str(error)
        if not isinstance(args, Mapping):
            problems["args"] = f"must be a mapping of argument names to values, not {type(args).__name__}"
            return problems
        try:
            self._adapter.validate_python(self._without_none(args, self.args_type))
        except ValidationError as error:
            for path, message in self._messages(error):
                problems[path] = f"{problems[path]}; {message}" if path in problems else message
        resolved = with_defaults(args, self.defaults)
        for rule in self.checks:
            if any(_touches(path, problems) or is_unknown(_get(resolved, path)) for path in rule.reads):
                continue
            for path, message in rule.run(resolved).items():
                problems.setdefault(path, message)
        return problems

    def resolve(self, name: str, args: Any) -> dict[str, Any]:
        """The arguments with defaults filled in; ComponentArgsError naming every problem otherwise."""
        if problems := self.problems(args, name):
            raise ComponentArgsError(self.component, name, problems)
        return with_defaults(args, self.defaults)

    def _validating_typeddict(self, typed_dict: type, prefix: str) -> type:
        hints = _hints(typed_dict)
        self.fields[prefix] = set(hints)
        fields = {}
        for field, annotation in hints.items():
            path = f"{prefix}{field}"
            converted = self._validating_type(annotation, path)
            fields[field] = Required[converted] if field in typed_dict.__required_keys__ else NotRequired[converted]
        validating = TypedDict(f"Validating{typed_dict.__name__}", fields)  # type: ignore[misc]
        validating.__pydantic_config__ = STRICT  # type: ignore[attr-defined]
        return validating

    def _validating_type(self, annotation: Any, path: str) -> Any:
        origin, params = get_origin(annotation), get_args(annotation)
        if origin in (Union, types.UnionType):
            known = [p for p in params if get_origin(p) is not pulumi.Output and get_origin(p) is not _Awaitable]
            converted = [p if p is type(None) else self._validating_type(p, path) for p in known]
            plain = converted[0] if len(converted) == 1 else Union[tuple(converted)]  # type: ignore[valid-type]
            return Annotated[plain, PassUnknown] if len(known) < len(params) else plain
        if path in self.rules:
            return self.rules[path]
        if is_typeddict(annotation):
            return self._validating_typeddict(annotation, f"{path}.")
        if origin is list:
            return list[self._validating_type(params[0], path)]  # type: ignore[misc]
        if origin is dict:
            self.key_paths.add(f"{path}[key]")
            key = self.rules.get(f"{path}[key]") or self._validating_type(params[0], path)
            return dict[key, self._validating_type(params[1], path)]  # type: ignore[misc]
        if annotation is str:
            return Text
        return annotation

    def _paths(self) -> set[str]:
        return {f"{prefix}{field}" for prefix, names in self.fields.items() for field in names} | self.key_paths

    def _without_none(self, args: Mapping[str, Any], typed_dict: type) -> dict[str, Any]:
        """Optional arguments given as None mean "the default", as if they were left out."""
        hints = _hints(typed_dict)
        kept = {}
        for key, value in args.items():
            if value is None and key not in typed_dict.__required_keys__:
                continue
            nested = next((t for t in (hints.get(key), *get_args(hints.get(key))) if is_typeddict(t)), None)
            if nested is not None and isinstance(value, Mapping):
                value = self._without_none(value, nested)
            kept[key] = value
        return kept

    def _messages(self, error: ValidationError) -> list[tuple[str, str]]:
        messages = []
        for item in error.errors():
            if item["type"] == "extra_forbidden":
                path = ".".join(str(part) for part in item["loc"])
                parent, _, field = path.rpartition(".")
                known = sorted(self.fields.get(f"{parent}." if parent else "", ()))
                close = difflib.get_close_matches(field, known, n=1)
                hint = f"; did you mean {close[0]}?" if close else f"; the arguments are {', '.join(known)}"
                messages.append((path, f"is not an argument of {self.component}{hint}"))
                continue
            path, rest = self._split_location(item["loc"])
            where = "".join(_where(part, rest[index + 1 :]) for index, part in enumerate(rest) if part != "[key]")
            messages.append((path, where + _message(item)))
        return messages

    def _split_location(self, loc: tuple) -> tuple[str, tuple]:
        """The argument path a pydantic error location names, and the list or dict part below it."""
        path, level = "", ""
        for index, part in enumerate(loc):
            if not (isinstance(part, str) and part in self.fields.get(level, ())):
                return path, loc[index:]
            path = f"{level}{part}"
            level = f"{path}."
        return path, ()


_Awaitable = get_origin(typing.Awaitable[int])


def _hints(typed_dict: type) -> dict[str, Any]:
    # pulumi.Input[T] refers to "Output[T]" by name, resolved in pulumi.output's namespace.
    return typing.get_type_hints(typed_dict, localns={"Output": pulumi.Output, "T": pulumi_output.T})


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "typed_dict_type": "a mapping",
}


def _message(item: dict) -> str:
    """pydantic's error as a short sentence about the argument."""
    kind, context = item["type"], item.get("ctx") or {}
    if kind == "missing" or (item.get("input") is None and kind in _TYPE_WORDS):
        return "is required"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, not {type(item['input']).__name__}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {context[key]}"
    if kind == "literal_error":
        return f"must be one of {context['expected'].replace(repr(''), '(empty)').replace(chr(39), '')}"
    if kind == "value_error":
        return str(context["error"])
    return item["msg"]


def _where(part: Any, after: tuple) -> str:
    """Where below an argument a problem is: "item [2]: ", "key 'a/b': " or "'a': ".

    Items count from 0, as ``pulumi config set --path 'key[0]'`` and Python do."""
    if isinstance(part, int):
        return f"item [{part}]: "
    return f"key {part!r}: " if after[:1] == ("[key]",) else f"{part!r}: "


def _get(args: Mapping[str, Any], path: str) -> Any:
    value: Any = args
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _touches(path: str, problems: Problems) -> bool:
    return any(found == path or found.startswith(f"{path}.") for found in problems)
