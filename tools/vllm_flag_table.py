#!/usr/bin/env python3
"""The command-line options that `vllm serve` of a vLLM release accepts, read from its wheel.

Usage::

    python tools/vllm_flag_table.py 0.11.0 0.33.0            # pip-download each wheel, write the tables
    python tools/vllm_flag_table.py 0.11.0 --wheel vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl
    python tools/vllm_flag_table.py 0.33.0 --out components/vllm_flags --download-dir /tmp/wheels

Each release gets ``<out>/v<release>.json`` (default ``components/vllm_flags``)::

    {"release": ..., "source": <wheel file name>, "sha256": <of the wheel>,
     "normalisation": {...}, "options": {"--flag": {"dest": ..., "takes_value": ...}, ...}}

An option entry has ``dest`` (the argparse destination; every spelling of one option shares it,
so ``-tp`` and ``--tensor-parallel-size`` agree, as do ``--x`` and ``--no-x``) and ``takes_value``:
``"none"`` (store_true/store_false/store_const/count/help/BooleanOptionalAction), ``"required"``
(one or more values) or ``"optional"`` (``nargs='?'`` or ``'*'``). Optional keys: ``"json": true``
when the value is parsed as JSON (a config dataclass, a dict, ``json.loads``), ``"deprecated":
true`` when the source marks the option deprecated, ``"rewritten_to"`` for a spelling that
``FlexibleArgumentParser.parse_args`` rewrites into another option before argparse sees it.

How the options are found
-------------------------
Nothing from vLLM is imported or installed: the ``.py`` files are read out of the wheel (a zip)
and parsed with ``ast``. The reader then follows the code that builds the ``serve`` sub-parser,
executing only the parts that matter for option strings, much as Python would:

* ``vllm/entrypoints/cli/serve.py``: the ``CLISubcommand`` whose ``name`` is ``"serve"``; its
  ``subparser_init`` creates the sub-parser with ``subparsers.add_parser`` (argparse adds
  ``-h``/``--help``) and hands it to ``make_arg_parser``.
* ``make_arg_parser`` (``vllm/entrypoints/openai/cli_args.py`` in 0.11; ``vllm/entrypoints/
  common/cli_args.py`` later): the positional ``model_tag`` (left out of the table), literal
  ``add_argument`` calls (``--headless``, ``--api-server-count``/``-asc``, ``--config``, ...),
  then ``FrontendArgs.add_cli_args`` and ``AsyncEngineArgs.add_cli_args``.
* ``FrontendArgs`` (a config dataclass; in later releases with a ``BaseFrontendArgs`` base and
  ``_customize_cli_kwargs`` hooks reached through ``cls``/``super()``): every dataclass field
  becomes ``--field-name`` through ``get_kwargs`` and a loop over ``frontend_kwargs.items()``;
  the edits of that dict (``["type"] = json.loads``, ``del ...["nargs"]``, ``["action"] =
  "append"``, ``.pop("flags", [])``) are applied.
* ``EngineArgs.add_cli_args``/``AsyncEngineArgs.add_cli_args`` (``vllm/engine/arg_utils.py``):
  ``group.add_argument("--flag", "-short", **xxx_kwargs["field"])`` where ``xxx_kwargs =
  get_kwargs(SomeConfig)``, dict merges ``**{**xxx_kwargs["f"], "default": None}``, literal
  calls, loops over literal lists, and the ``sys.argv`` test around ``--model`` (evaluated for
  a plain ``vllm serve MODEL ...`` run: true, so ``--model`` is listed).
* ``get_kwargs``/``_compute_kwargs`` (``vllm/engine/arg_utils.py``): the ``if``/``elif`` chain
  over a field's type hints is itself interpreted, so the release's own rules decide: a
  dataclass-typed field takes a JSON value; a ``bool`` field gets
  ``argparse.BooleanOptionalAction`` (``--x`` and ``--no-x``); in releases that have the rule,
  a field of exactly ``bool | str | None`` gets ``nargs="?"``; lists/tuples get ``nargs``; the
  rest take one value. Type hints are flattened the way the release's ``get_type_hints`` does
  (``X | Y`` unions only where it handles ``types.UnionType``).
* The config dataclasses in ``vllm/config/*.py`` (and the modules they import type aliases,
  ``Literal`` sets and enums from): fields are collected like ``dataclasses.fields`` (bases
  first, ``ClassVar``/``InitVar`` left out); a class counts as a dataclass when decorated with
  ``dataclasses.dataclass``, ``pydantic.dataclasses.dataclass`` or a vLLM decorator that calls
  one (``vllm/config/utils.py:config`` does in 0.33; in 0.11 and 0.12 it returns the class as
  is and the classes carry ``@dataclass`` as well).
  The docstring under a field (what ``get_attr_docs`` turns into ``help``) is kept for the
  deprecation check.
* ``FlexibleArgumentParser`` (``vllm/utils/__init__.py`` in 0.11, ``vllm/utils/argparse_utils.py``
  later): ``self.register("action", BooleanOptionalAction, EnableDisableAction)`` in
  ``__init__`` adds the ``--enable-x``/``--disable-x`` inverse spellings listed in the action's
  ``_inverse_prefixes``; ``parse_args`` gives the ``normalisation`` flags (``replace("_",
  "-")`` before the first ``.`` of the part before ``=``; ``split(".")`` of dotted JSON keys)
  and the ``-O`` style rewrites.
* ``current_platform.pre_register_and_update(parser)``: the platform is only known at run
  time, so every in-tree ``vllm/platforms/*.py`` implementation is checked to add no argument.

Deprecated means: ``deprecated=True`` passed to ``add_argument``, an action class whose name
says ``Deprecated``, or a help text / field docstring that says so (``[DEPRECATED]``,
``(Deprecated)``, a line starting ``Deprecated``, "is/has been deprecated").

``normalisation`` says what ``vllm serve`` accepts beyond the listed spellings:
``underscores_to_dashes``: ``--a_b`` is ``--a-b``, ``--a_b=v_w`` is ``--a-b=v_w`` (only the
text after ``--`` up to the first ``.`` of the part before ``=`` changes); ``equals_value``:
``--flag=value`` (argparse itself); ``dotted_json_keys``: ``--json-flag.key.sub value``,
``--json-flag.key=value`` and ``--json-flag.items+ a,b`` are merged into ``--json-flag
'{...}'`` before parsing; ``enable_disable_pairs``: every BooleanOptionalAction option named
``--enable-x``/``--disable-x`` also takes the other prefix (already listed in the table);
``abbreviations``: argparse's ``allow_abbrev`` is on, so a unique prefix of a long option works.
Left out of the table, as they are not options: ``--help=<keyword>`` (``--help`` with a search
keyword), and ``parse_args``'s handling of ``--model`` after ``serve`` (0.11 refuses an exact
``--model`` token; 0.33 moves its value into the positional ``model_tag`` with a warning).

Anything the reader does not understand where it matters (an ``add_argument`` whose option
strings, ``action``, ``nargs`` or ``dest`` it cannot work out, a condition or loop around one
that it cannot evaluate, an unknown call that receives the parser or a kwargs dict, two actions
claiming one option string, an ``add_argument`` call in a function that ran that was neither
run nor in a branch whose condition was evaluated the other way) raises ``FlagTableError``
naming the file, line and call; the command exits non-zero instead of writing a partial table.

Not covered: options that out-of-tree plugins (``load_general_plugins``, platform plugins) add
at run time; the ``vllm`` top-level parser's own ``-v``/``--version``; argparse's unique-prefix
abbreviations (reported as ``normalisation.abbreviations``, not expanded into the table).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "components" / "vllm_flags"

TAKES_VALUE = ("none", "required", "optional")

#: argv of the run the parser is built for: `sys.argv` tests in the source see this.
SERVE_ARGV = ["vllm", "serve", "MODEL"]

DEPRECATION_RE = re.compile(
    r"\[DEPRECATED\]"
    r"|\(deprecated\)"
    r"|(?:^|\n)\s*deprecated\b"
    r"|\b(?:is|are|has\s+been|have\s+been)\s+(?:now\s+)?deprecated\b",
    re.IGNORECASE,
)

NONE_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count", "help", "version"}
VALUE_ACTIONS = {None, "store", "append", "extend"}
ARGPARSE_NONE_ACTION_CLASSES = {
    "argparse._StoreTrueAction", "argparse._StoreFalseAction", "argparse._StoreConstAction",
    "argparse._AppendConstAction", "argparse._CountAction", "argparse._HelpAction",
    "argparse._VersionAction",
}
BOOLEAN_OPTIONAL = "argparse.BooleanOptionalAction"

DATACLASS_MAKERS = {"dataclasses.dataclass", "pydantic.dataclasses.dataclass"}
TYPING = ("typing.", "typing_extensions.")
OPTIONAL_FORMS = {"typing.Optional", "typing_extensions.Optional"}
UNION_FORMS = {"typing.Union", "typing_extensions.Union"}
ANNOTATED_FORMS = {
    "typing.Annotated", "typing_extensions.Annotated",
    "pydantic.SkipValidation", "pydantic.functional_validators.SkipValidation",
}
LITERAL_FORMS = {"typing.Literal", "typing_extensions.Literal"}
CLASSVAR_FORMS = {"typing.ClassVar", "typing_extensions.ClassVar", "dataclasses.InitVar", "dataclasses.KW_ONLY"}
TYPEDDICT_FORMS = {"typing.TypedDict", "typing_extensions.TypedDict"}
GENERIC_BUILTINS = {
    "typing.List": "list", "typing.Dict": "dict", "typing.Tuple": "tuple", "typing.Set": "set",
    "typing.FrozenSet": "frozenset", "typing.Type": "type", "typing.DefaultDict": "dict",
}
BUILTIN_TYPES = {"bool", "int", "float", "str", "bytes", "dict", "list", "tuple", "set", "frozenset",
                 "type", "object", "complex", "NoneType"}


class FlagTableError(Exception):
    """Source the reader does not understand; the message names the file, line and code."""


# --------------------------------------------------------------------------- source files

class SourceTree:
    """The .py files of a source tree: a directory or a zip (a wheel)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._files = {p.relative_to(self.path).as_posix(): p for p in self.path.rglob("*.py")}
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._files = {name: name for name in self._zip.namelist() if name.endswith(".py")}
        else:
            raise FlagTableError(f"{self.path}: neither a directory nor a zip file")
        self._dirs = {name.rsplit("/", 1)[0] for name in self._files if "/" in name}

    def read(self, relpath: str) -> str:
        if self._zip is not None:
            return self._zip.read(self._files[relpath]).decode("utf-8")
        return self._files[relpath].read_text(encoding="utf-8")

    def module_file(self, modname: str) -> str | None:
        base = modname.replace(".", "/")
        for candidate in (base + ".py", base + "/__init__.py"):
            if candidate in self._files:
                return candidate
        return None

    def is_package_dir(self, modname: str) -> bool:
        return modname.replace(".", "/") in self._dirs

    def files_under(self, prefix: str) -> list[str]:
        return sorted(name for name in self._files if name.startswith(prefix))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class Module:
    """One parsed module and the names its top level binds at run time."""

    def __init__(self, name: str, path: str, source: str):
        self.name, self.path = name, path
        self.is_package = path.endswith("__init__.py")
        self.package = name if self.is_package else name.rpartition(".")[0]
        self.tree = ast.parse(source, path)
        self.bindings: dict[str, tuple] = {}
        self.star: list[str] = []
        self._collect(self.tree.body, self.bindings)

    def absolute(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        parts = self.package.split(".")
        if level > 1:
            parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def _collect(self, body: list[ast.stmt], out: dict[str, tuple]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        out[alias.asname] = ("module", alias.name)
                    else:
                        top = alias.name.split(".")[0]
                        out[top] = ("module", top)
            elif isinstance(node, ast.ImportFrom):
                base = self.absolute(node.module, node.level)
                for alias in node.names:
                    if alias.name == "*":
                        self.star.append(base)
                    else:
                        out[alias.asname or alias.name] = ("from", base, alias.name)
            elif isinstance(node, ast.ClassDef):
                out[node.name] = ("class", node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[node.name] = ("func", node)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = ("value", node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                out[node.target.id] = ("value", node.value)
            elif isinstance(node, ast.If):
                if _is_type_checking(node.test):
                    self._collect(node.orelse, out)  # what runs; the TYPE_CHECKING body does not
                else:
                    fallback: dict[str, tuple] = {}
                    self._collect(node.orelse, fallback)
                    self._collect(node.body, fallback)
                    out.update(fallback)
            elif isinstance(node, ast.Try):
                fallback = {}
                for handler in node.handlers:
                    self._collect(handler.body, fallback)
                self._collect(node.body, fallback)
                out.update(fallback)


@dataclass(frozen=True)
class Ext:
    """Something outside the tree (stdlib, typing, torch, ...), by qualified name."""
    qualname: str


@dataclass(frozen=True)
class ModRef:
    name: str


@dataclass(frozen=True, eq=False)
class ClassRef:
    mod: Module
    node: ast.ClassDef

    @property
    def qualname(self) -> str:
        return f"{self.mod.name}.{self.node.name}"


@dataclass(frozen=True, eq=False)
class FuncRef:
    mod: Module
    node: ast.FunctionDef
    owner: ClassRef | None = None

    @property
    def kind(self) -> str:
        names = {d.id for d in self.node.decorator_list if isinstance(d, ast.Name)}
        if "staticmethod" in names:
            return "static"
        if "classmethod" in names:
            return "class"
        return "instance" if self.owner else "function"


@dataclass(frozen=True, eq=False)
class ValueRef:
    mod: Module
    expr: ast.expr
    name: str


def where(mod: Module, node: ast.AST) -> str:
    code = ast.unparse(node).replace("\n", " ")
    if len(code) > 160:
        code = code[:157] + "..."
    return f"{mod.path}:{getattr(node, 'lineno', '?')}: {code}"


class Index:
    """Name resolution across the modules of a source tree, loading modules on demand."""

    def __init__(self, tree: SourceTree):
        self.tree = tree
        self._modules: dict[str, Module | None] = {}
        self._classes: dict[tuple[int, int], ClassRef] = {}

    def module(self, name: str) -> Module | None:
        if name not in self._modules:
            path = self.tree.module_file(name)
            self._modules[name] = Module(name, path, self.tree.read(path)) if path else None
        return self._modules[name]

    def in_tree(self, name: str) -> bool:
        return self.module(name) is not None or self.tree.is_package_dir(name)

    def class_ref(self, mod: Module, node: ast.ClassDef) -> ClassRef:
        key = (id(mod), id(node))
        if key not in self._classes:
            self._classes[key] = ClassRef(mod, node)
        return self._classes[key]

    def resolve(self, mod: Module, name: str, _depth: int = 0) -> Any:
        if _depth > 50:
            raise FlagTableError(f"{mod.path}: import cycle resolving {name!r}")
        binding = mod.bindings.get(name)
        if binding is None:
            for star in mod.star:
                star_mod = self.module(star)
                if star_mod is not None and (name in star_mod.bindings or star_mod.star):
                    try:
                        return self.resolve(star_mod, name, _depth + 1)
                    except FlagTableError:
                        continue
            if hasattr(builtins, name):
                return Ext(f"builtins.{name}")
            raise FlagTableError(f"{mod.path}: cannot resolve the name {name!r}")
        kind = binding[0]
        if kind == "module":
            return ModRef(binding[1]) if self.in_tree(binding[1]) else Ext(binding[1])
        if kind == "from":
            return self.import_from(binding[1], binding[2], _depth + 1)
        if kind == "class":
            return self.class_ref(mod, binding[1])
        if kind == "func":
            return FuncRef(mod, binding[1])
        return ValueRef(mod, binding[1], name)

    def import_from(self, base: str, attr: str, _depth: int = 0) -> Any:
        if not self.in_tree(base):
            return Ext(f"{base}.{attr}")
        base_mod = self.module(base)
        if base_mod is not None and (attr in base_mod.bindings or base_mod.star):
            try:
                return self.resolve(base_mod, attr, _depth)
            except FlagTableError:
                if not self.in_tree(f"{base}.{attr}"):
                    raise
        if self.in_tree(f"{base}.{attr}"):
            return ModRef(f"{base}.{attr}")
        raise FlagTableError(f"cannot import {attr!r} from {base!r}")

    def attribute(self, ref: Any, attr: str) -> Any:
        if isinstance(ref, Ext):
            return Ext(f"{ref.qualname}.{attr}")
        if isinstance(ref, ModRef):
            return self.import_from(ref.name, attr)
        if isinstance(ref, ClassRef):
            found = self.class_member(ref, attr)
            if found is None:
                raise FlagTableError(f"{ref.mod.path}: class {ref.node.name} has no member {attr!r}")
            return found
        if isinstance(ref, ValueRef):
            lazy = self.lazy_module(ref)
            if lazy is not None:
                return self.attribute(lazy, attr)
            target = self.ref_of(ref.mod, ref.expr)
            if target is None:
                raise FlagTableError(f"{where(ref.mod, ref.expr)}: cannot follow attribute {attr!r}")
            return self.attribute(target, attr)
        raise FlagTableError(f"cannot take attribute {attr!r} of {ref!r}")

    def lazy_module(self, ref: ValueRef) -> Any:
        """`x = LazyLoader("x", globals(), "package.module")`: a proxy for that module."""
        expr = ref.expr
        if (isinstance(expr, ast.Call) and ast.unparse(expr.func).split(".")[-1] == "LazyLoader"
                and len(expr.args) == 3 and isinstance(expr.args[2], ast.Constant)):
            name = expr.args[2].value
            return ModRef(name) if self.in_tree(name) else Ext(name)
        return None

    def ref_of(self, mod: Module, expr: ast.expr) -> Any:
        """What a Name/Attribute expression at module level refers to (None for other expressions)."""
        if isinstance(expr, ast.Name):
            return self.resolve(mod, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.ref_of(mod, expr.value)
            return None if base is None else self.attribute(base, expr.attr)
        return None

    # classes ---------------------------------------------------------------------------

    def bases(self, cref: ClassRef) -> list[Any]:
        out = []
        for base in cref.node.bases:
            target = base.value if isinstance(base, ast.Subscript) else base
            try:
                ref = self.ref_of(cref.mod, target)
            except FlagTableError:
                ref = Ext(f"?{ast.unparse(base)}")
            out.append(ref)
        return out

    def mro(self, cref: ClassRef) -> list[Any]:
        """Depth-first, left-to-right linearisation (enough for the single inheritance in use)."""
        out: list[Any] = []

        def visit(ref: Any) -> None:
            if any(ref is seen or ref == seen for seen in out):
                return
            out.append(ref)
            if isinstance(ref, ClassRef):
                for base in self.bases(ref):
                    visit(base)

        visit(cref)
        return out

    def class_member(self, cref: ClassRef, attr: str, after: ClassRef | None = None) -> Any:
        classes = [c for c in self.mro(cref) if isinstance(c, ClassRef)]
        if after is not None:
            classes = classes[classes.index(after) + 1:]
        for cls in classes:
            for stmt in cls.node.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == attr:
                    return FuncRef(cls.mod, stmt, cls)
                if isinstance(stmt, ast.ClassDef) and stmt.name == attr:
                    return self.class_ref(cls.mod, stmt)
                if isinstance(stmt, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == attr for t in stmt.targets):
                    return ValueRef(cls.mod, stmt.value, attr)
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and stmt.target.id == attr and stmt.value is not None):
                    return ValueRef(cls.mod, stmt.value, attr)
        return None

    def _makes_dataclass(self, mod: Module, decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        try:
            ref = self.ref_of(mod, target)
        except FlagTableError:
            return False
        if isinstance(ref, Ext):
            return ref.qualname in DATACLASS_MAKERS
        if isinstance(ref, FuncRef):
            for node in ast.walk(ref.node):
                if isinstance(node, ast.Call):
                    try:
                        called = self.ref_of(ref.mod, node.func)
                    except FlagTableError:
                        continue
                    if isinstance(called, Ext) and called.qualname in DATACLASS_MAKERS:
                        return True
        return False

    def decorated_dataclass(self, cref: ClassRef) -> bool:
        return any(self._makes_dataclass(cref.mod, d) for d in cref.node.decorator_list)

    def is_dataclass(self, cref: ClassRef) -> bool:
        return any(isinstance(c, ClassRef) and self.decorated_dataclass(c) for c in self.mro(cref))

    def _ext_in_mro(self, cref: ClassRef, names: set[str]) -> bool:
        return any(isinstance(c, Ext) and c.qualname in names for c in self.mro(cref))

    def is_typeddict(self, cref: ClassRef) -> bool:
        return self._ext_in_mro(cref, TYPEDDICT_FORMS)

    def is_dict_subclass(self, cref: ClassRef) -> bool:
        return not self.is_typeddict(cref) and self._ext_in_mro(cref, {"builtins.dict", "typing.Dict"})

    def dataclass_fields(self, cref: ClassRef) -> dict[str, "Field"]:
        fields: dict[str, Field] = {}
        for cls in reversed([c for c in self.mro(cref) if isinstance(c, ClassRef)]):
            if not self.decorated_dataclass(cls):
                continue
            body = cls.node.body
            for i, stmt in enumerate(body):
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                if self._is_pseudo_field(cls.mod, stmt.annotation):
                    continue
                doc = ""
                if i + 1 < len(body) and isinstance(body[i + 1], ast.Expr) and isinstance(
                        body[i + 1].value, ast.Constant) and isinstance(body[i + 1].value.value, str):
                    doc = body[i + 1].value.value
                fields[stmt.target.id] = Field(stmt.target.id, stmt.annotation, cls.mod, doc, cls)
        return fields

    def _is_pseudo_field(self, mod: Module, annotation: ast.expr) -> bool:
        """ClassVar, InitVar and KW_ONLY annotations are not dataclass fields."""
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            return annotation.value.split("[")[0].split(".")[-1] in {"ClassVar", "InitVar", "KW_ONLY"}
        target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
        try:
            ref = self.ref_of(mod, target)
        except FlagTableError:
            return False
        return isinstance(ref, Ext) and ref.qualname in CLASSVAR_FORMS


@dataclass
class Field:
    name: str
    annotation: ast.expr
    mod: Module
    doc: str
    owner: ClassRef


# --------------------------------------------------------------------------- type hints

@dataclass(frozen=True)
class Hint:
    """One member of the set `get_type_hints(field.type)` gives."""
    kind: str  # builtin | literal | class | external | uniontype | string | forwardref
    name: str
    args: tuple = ()
    dataclass: bool = False
    dict_subclass: bool = False
    builtin_module: bool = False  # `th.__module__ == "builtins"`


NONE_HINT = Hint("builtin", "NoneType", builtin_module=True)


class TypeReader:
    """Evaluates annotation expressions into hint sets, as the release's get_type_hints would."""

    def __init__(self, index: Index, flatten_pep604: bool):
        self.index = index
        self.flatten_pep604 = flatten_pep604
        self._stack: list[int] = []

    def hints(self, mod: Module, annotation: ast.expr) -> list[Hint]:
        out: list[Hint] = []
        for hint in self._flatten(self._eval(mod, annotation)):
            if hint not in out:
                out.append(hint)
        return out

    def _flatten(self, value: tuple) -> Iterator[Hint]:
        kind = value[0]
        if kind in ("union", "annotated") or (kind == "pep604" and self.flatten_pep604):
            for member in value[1]:
                yield from self._flatten(member)
        elif kind == "pep604":
            yield Hint("uniontype", " | ".join(h.name for h in self._flatten(("union", value[1]))))
        else:
            yield value[1]

    def _typing_form(self, value: tuple) -> bool:
        if value[0] in ("union", "annotated"):
            return True
        hint = value[1] if value[0] == "hint" else None
        return hint is not None and (hint.kind == "literal" or (
            hint.kind == "external" and hint.name.startswith(TYPING)))

    def _eval(self, mod: Module, expr: ast.expr) -> tuple:
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return ("hint", NONE_HINT)
            if isinstance(expr.value, str):
                return ("hint", Hint("string", expr.value, builtin_module=True))
            raise FlagTableError(f"{where(mod, expr)}: not a type")
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            left, right = self._eval(mod, expr.left), self._eval(mod, expr.right)
            if self._typing_form(left) or self._typing_form(right):
                return ("union", [left, right])  # typing forms implement | as typing.Union
            return ("pep604", [left, right])
        if isinstance(expr, ast.Subscript):
            return self._subscript(mod, expr)
        if isinstance(expr, (ast.Name, ast.Attribute)):
            return self._ref_type(mod, expr, self.index.ref_of(mod, expr))
        raise FlagTableError(f"{where(mod, expr)}: type expression not understood")

    def _ref_type(self, mod: Module, expr: ast.expr, ref: Any) -> tuple:
        if isinstance(ref, Ext):
            name = ref.qualname
            if name.startswith("builtins."):
                short = name.split(".", 1)[1]
                return ("hint", Hint("builtin", short, builtin_module=True))
            if name in GENERIC_BUILTINS:
                return ("hint", Hint("builtin", GENERIC_BUILTINS[name]))
            return ("hint", Hint("external", name))
        if isinstance(ref, ClassRef):
            return ("hint", Hint("class", ref.qualname, dataclass=self.index.is_dataclass(ref),
                                 dict_subclass=self.index.is_dict_subclass(ref)))
        if isinstance(ref, ValueRef):
            key = id(ref.expr)
            if key in self._stack:
                raise FlagTableError(f"{where(ref.mod, ref.expr)}: recursive type alias")
            value = ref.expr
            if isinstance(value, ast.Call):  # NewType(...), TypeVar(...), TypeAliasType(...)
                func = ast.unparse(value.func).split(".")[-1]
                if func == "TypeAliasType" and len(value.args) >= 2:
                    value = value.args[1]
                else:
                    return ("hint", Hint("external", f"{ref.mod.name}.{ref.name}"))
            self._stack.append(key)
            try:
                return self._eval(ref.mod, value)
            finally:
                self._stack.pop()
        if isinstance(ref, ModRef):
            raise FlagTableError(f"{where(mod, expr)}: a module used as a type")
        raise FlagTableError(f"{where(mod, expr)}: cannot resolve type")

    def _subscript(self, mod: Module, expr: ast.Subscript) -> tuple:
        base = self.index.ref_of(mod, expr.value)
        items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        name = base.qualname if isinstance(base, Ext) else None
        if name in OPTIONAL_FORMS:
            return ("union", [self._eval_arg(mod, items[0]), ("hint", NONE_HINT)])
        if name in UNION_FORMS:
            return ("union", [self._eval_arg(mod, item) for item in items])
        if name in ANNOTATED_FORMS:
            return ("annotated", [self._eval_arg(mod, items[0])])
        if name in LITERAL_FORMS:
            return ("hint", Hint("literal", "Literal", tuple(self._literal_value(mod, i) for i in items)))
        inner = self._ref_type(mod, expr.value, base)
        hint = inner[1] if inner[0] == "hint" else None
        if hint is None:
            return inner
        args = tuple(ast.unparse(i) for i in items)
        return ("hint", Hint(hint.kind, hint.name, args, hint.dataclass, hint.dict_subclass,
                             hint.builtin_module))

    def _eval_arg(self, mod: Module, expr: ast.expr) -> tuple:
        """A typing-form argument: a string there becomes a typing.ForwardRef (not a builtin)."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return ("hint", Hint("forwardref", expr.value))
        return self._eval(mod, expr)

    def _literal_value(self, mod: Module, expr: ast.expr) -> Any:
        if isinstance(expr, ast.Constant):
            return expr.value
        return ast.unparse(expr)


# --------------------------------------------------------------------------- get_kwargs rules

@dataclass
class TypeV:
    """A value given as argparse `type`: only whether it parses JSON matters here."""
    json: bool


@dataclass
class Unknown:
    why: str

    def __repr__(self) -> str:
        return f"<unknown: {self.why}>"


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _calls_named(node: ast.AST, name: str) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            func = n.func
            if (isinstance(func, ast.Name) and func.id == name) or (
                    isinstance(func, ast.Attribute) and func.attr == name):
                return True
    return False


class KwargsRules:
    """vLLM's `get_kwargs(cls)`: the argparse kwargs each config dataclass field gets.

    The `for field in fields(cls)` loop of `_compute_kwargs` is read from the source. Its
    `if`/`elif` chain over the field's type hints is evaluated for each field; the chosen
    branch's `kwargs[name][...] = ...` assignments and `kwargs[name].update(f(...))` calls
    (with `f`'s returned dict literal) give `action`, `nargs`, `const` and `type`.
    """

    def __init__(self, index: Index, get_kwargs: FuncRef):
        self.index = index
        self.get_kwargs = get_kwargs
        self.mod = get_kwargs.mod
        self.func, self.loop = self._find_loop(get_kwargs)
        hints_func = self._resolve_func(self.mod, "get_type_hints")
        self.types = TypeReader(index, flatten_pep604=hints_func is not None and "UnionType" in _names_in(hints_func.node))
        self.hints_var: str | None = None
        self.dict_subclass_as_dict = False
        self.dataclass_vars: set[str] = set()
        self.kwargs_var: str | None = None
        self.key_var: str | None = None
        self.chain: ast.If | None = None
        self.after: list[ast.stmt] = []
        self._read_loop()
        self._cache: dict[int, dict[str, dict[str, Any]]] = {}

    def _resolve_func(self, mod: Module, name: str) -> FuncRef | None:
        try:
            ref = self.index.resolve(mod, name)
        except FlagTableError:
            return None
        return ref if isinstance(ref, FuncRef) else None

    def _find_loop(self, func: FuncRef, depth: int = 0) -> tuple[FuncRef, ast.For]:
        for node in ast.walk(func.node):
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and isinstance(
                    node.iter.func, ast.Name) and node.iter.func.id == "fields":
                return func, node
        if depth < 3:
            for node in ast.walk(func.node):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    callee = self._resolve_func(func.mod, node.func.id)
                    if callee is not None and callee.node is not func.node:
                        try:
                            return self._find_loop(callee, depth + 1)
                        except FlagTableError:
                            continue
        raise FlagTableError(f"{func.mod.path}: {func.node.name}: no `for field in fields(cls)` loop found")

    def _read_loop(self) -> None:
        mod = self.func.mod
        for stmt in self.loop.body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                value = stmt.value
                if value is None:
                    continue
                if len(targets) == 1 and isinstance(targets[0], ast.Name):
                    name = targets[0].id
                    if _calls_named(value, "get_type_hints"):
                        self.hints_var = name
                    elif name == self.hints_var:
                        if isinstance(value, ast.SetComp) and _calls_named(value, "is_dict_subclass"):
                            self.dict_subclass_as_dict = True
                        else:
                            raise FlagTableError(f"{where(mod, stmt)}: type hints rewritten in an unknown way")
                    elif _calls_named(value, "is_dataclass") or _names_in(value) & self.dataclass_vars:
                        self.dataclass_vars.add(name)
                elif (len(targets) == 1 and isinstance(targets[0], ast.Subscript)
                      and isinstance(targets[0].value, ast.Name) and isinstance(value, ast.Dict)
                      and self.kwargs_var is None):
                    self.kwargs_var = targets[0].value.id
                    key = targets[0].slice
                    self.key_var = key.id if isinstance(key, ast.Name) else None
            elif isinstance(stmt, ast.If):
                if self.chain is None and _names_in(stmt.test) & self.dataclass_vars:
                    self.chain = stmt
                elif self.chain is not None:
                    self.after.append(stmt)
        if not (self.hints_var and self.kwargs_var and self.chain):
            raise FlagTableError(f"{where(mod, self.loop)}: the type-hint rules of get_kwargs were not recognised")
        for stmt in self.after:
            effects = self._effects(stmt.body + stmt.orelse, None, None, {})
            touched = set(effects) & {"action", "nargs", "const"}
            if touched:
                raise FlagTableError(f"{where(mod, stmt)}: sets {sorted(touched)} after the type chain; not understood")

    # evaluating the chain ----------------------------------------------------------------

    def kwargs_for(self, cref: ClassRef) -> dict[str, dict[str, Any]]:
        """`_compute_kwargs(cls)`: field name -> argparse kwargs (help is the field docstring)."""
        if id(cref) not in self._cache:
            if not self.index.is_dataclass(cref):
                raise FlagTableError(f"{cref.mod.path}: get_kwargs({cref.node.name}): not a dataclass")
            out = {}
            for name, field in self.index.dataclass_fields(cref).items():
                out[name] = self._field_kwargs(field)
            self._cache[id(cref)] = out
        return copy.deepcopy(self._cache[id(cref)])

    def _field_kwargs(self, field: Field) -> dict[str, Any]:
        hints = self.types.hints(field.mod, field.annotation)
        if self.dict_subclass_as_dict:
            hints = [Hint("builtin", "dict", builtin_module=True) if h.dict_subclass else h for h in hints]
        dc = next((h for h in hints if h.dataclass), None)
        env = {"hints": hints, "dc": dc, "name": field.name}
        node: ast.If | None = self.chain
        body: list[ast.stmt] = []
        while node is not None:
            if self._cond(node.test, env):
                body = node.body
                break
            if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
                node = node.orelse[0]
            else:
                body, node = node.orelse, None
        effects = self._effects(body, env, field, {})
        if "raise" in effects:
            raise FlagTableError(
                f"{field.owner.mod.path}: {field.owner.node.name}.{field.name}: get_kwargs raises for "
                f"type {ast.unparse(field.annotation)}")
        kwargs: dict[str, Any] = {"default": Unknown("default"), "help": field.doc}
        for key, values in effects.items():
            if len(values) > 1 and key in ("action", "nargs"):
                outcomes = {repr(v) if key == "action" else _takes_value_of(None, v) for v in values}
                if len(outcomes) != 1:
                    raise FlagTableError(
                        f"{field.owner.mod.path}: {field.owner.node.name}.{field.name}: {key} is one of {values}")
            kwargs[key] = values[0]
        return kwargs

    def _hint_of_type_name(self, expr: ast.expr) -> Hint | str:
        if isinstance(expr, ast.Name):
            if expr.id == "Literal":
                return "Literal"
            if expr.id in BUILTIN_TYPES:
                return Hint("builtin", expr.id, builtin_module=True)
        if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "type"
                and len(expr.args) == 1 and isinstance(expr.args[0], ast.Constant) and expr.args[0].value is None):
            return NONE_HINT
        raise FlagTableError(f"{where(self.func.mod, expr)}: type name not understood")

    def _cond(self, test: ast.expr, env: dict) -> bool:
        mod = self.func.mod
        hints: list[Hint] = env["hints"]
        if isinstance(test, ast.BoolOp):
            results = (self._cond(v, env) for v in test.values)
            return all(results) if isinstance(test.op, ast.And) else any(results)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return not self._cond(test.operand, env)
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, op, right = test.left, test.ops[0], test.comparators[0]
            if isinstance(left, ast.Name) and left.id in self.dataclass_vars and isinstance(
                    right, ast.Constant) and right.value is None and isinstance(op, (ast.Is, ast.IsNot)):
                return (env["dc"] is None) == isinstance(op, ast.Is)
            if isinstance(left, ast.Name) and left.id == self.hints_var and isinstance(
                    op, (ast.Eq, ast.NotEq)) and isinstance(right, ast.Set):
                wanted = {self._hint_of_type_name(e) for e in right.elts}
                same = {_plain(h) for h in hints} == {_plain(h) for h in wanted}
                return same == isinstance(op, ast.Eq)
            if isinstance(right, ast.Name) and right.id == self.hints_var and isinstance(op, (ast.In, ast.NotIn)):
                wanted = self._hint_of_type_name(left)
                found = any(_plain(h) == _plain(wanted) for h in hints)
                return found == isinstance(op, ast.In)
            if isinstance(left, ast.Name) and left.id == self.key_var:
                name = env["name"]
                if isinstance(op, (ast.Eq, ast.NotEq)) and isinstance(right, ast.Constant):
                    return (name == right.value) == isinstance(op, ast.Eq)
                if isinstance(op, (ast.In, ast.NotIn)):
                    values = self._const_collection(right)
                    if values is not None:
                        return (name in values) == isinstance(op, ast.In)
        if isinstance(test, ast.Call) and isinstance(test.func, ast.Name):
            func = test.func.id
            if func == "contains_type" and len(test.args) == 2 and isinstance(
                    test.args[0], ast.Name) and test.args[0].id == self.hints_var:
                wanted = self._hint_of_type_name(test.args[1])
                if wanted == "Literal":
                    return any(h.kind == "literal" for h in hints)
                return any(h.kind == "builtin" and h.name == wanted.name for h in hints)
            if func == "any" and len(test.args) == 1 and isinstance(test.args[0], ast.GeneratorExp):
                gen = test.args[0]
                if (_calls_named(gen.elt, "is_not_builtin") and isinstance(gen.generators[0].iter, ast.Name)
                        and gen.generators[0].iter.id == self.hints_var):
                    return any(not h.builtin_module for h in hints)
        raise FlagTableError(f"{where(mod, test)}: get_kwargs condition not understood")

    def _const_collection(self, expr: ast.expr) -> set | None:
        if isinstance(expr, (ast.Set, ast.List, ast.Tuple)) and all(isinstance(e, ast.Constant) for e in expr.elts):
            return {e.value for e in expr.elts}
        if isinstance(expr, ast.Name):
            for stmt in ast.walk(self.func.node):
                if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id for t in stmt.targets):
                    return self._const_collection(stmt.value)
        return None

    def _is_field_kwargs(self, expr: ast.expr) -> bool:
        return (isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name)
                and expr.value.id == self.kwargs_var)

    def _effects(self, body: list[ast.stmt], env: dict | None, field: Field | None,
                 local_funcs: dict[str, ast.FunctionDef]) -> dict[str, list[Any]]:
        """Key -> possible values set by these statements on kwargs[name]."""
        out: dict[str, list[Any]] = {}

        def add(key: str, value: Any) -> None:
            values = out.setdefault(key, [])
            if value not in values:
                values.append(value)

        for stmt in body:
            if isinstance(stmt, ast.FunctionDef):
                local_funcs[stmt.name] = stmt
            elif isinstance(stmt, ast.Raise):
                add("raise", True)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                    stmt.targets[0], ast.Subscript) and self._is_field_kwargs(stmt.targets[0].value):
                key = stmt.targets[0].slice
                if not isinstance(key, ast.Constant):
                    raise FlagTableError(f"{where(self.func.mod, stmt)}: computed kwargs key")
                for value in self._values(key.value, stmt.value, local_funcs):
                    add(key.value, value)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Subscript) and self._is_field_kwargs(
                    stmt.target.value):
                key = stmt.target.slice
                if isinstance(key, ast.Constant) and key.value in ("action", "nargs", "const"):
                    raise FlagTableError(f"{where(self.func.mod, stmt)}: not understood")
            elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                  and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "update"
                  and self._is_field_kwargs(stmt.value.func.value)):
                for key, value in self._update_effects(stmt.value):
                    add(key, value)
            elif isinstance(stmt, ast.If):
                decided = None
                if env is not None:
                    try:
                        decided = self._cond(stmt.test, env)
                    except FlagTableError:
                        decided = None
                branches = [stmt.body] if decided is True else [stmt.orelse] if decided is False else [
                    stmt.body, stmt.orelse]
                for branch in branches:
                    for key, values in self._effects(branch, env, field, local_funcs).items():
                        for value in values:
                            add(key, value)
        return out

    def _values(self, key: str, expr: ast.expr, local_funcs: dict) -> list[Any]:
        if key == "type":
            return [TypeV(self._json_type(self.func.mod, expr, local_funcs))]
        if isinstance(expr, ast.IfExp):
            return self._values(key, expr.body, local_funcs) + self._values(key, expr.orelse, local_funcs)
        if isinstance(expr, ast.Constant):
            return [expr.value]
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "len":
            return [1]  # a positive count: takes values
        if isinstance(expr, (ast.Name, ast.Attribute)):
            try:
                ref = self.index.ref_of(self.func.mod, expr)
            except FlagTableError:
                return [Unknown(ast.unparse(expr))]
            return [RefV(ref)]
        return [Unknown(ast.unparse(expr))]

    def _update_effects(self, call: ast.Call) -> list[tuple[str, Any]]:
        if len(call.args) != 1 or not isinstance(call.args[0], ast.Call) or not isinstance(call.args[0].func, ast.Name):
            raise FlagTableError(f"{where(self.func.mod, call)}: kwargs update not understood")
        callee = self._resolve_func(self.func.mod, call.args[0].func.id)
        if callee is None:
            raise FlagTableError(f"{where(self.func.mod, call)}: cannot find {call.args[0].func.id}")
        out: list[tuple[str, Any]] = []
        for node in ast.walk(callee.node):
            if isinstance(node, ast.Return) and node.value is not None:
                if not isinstance(node.value, ast.Dict):
                    raise FlagTableError(f"{where(callee.mod, node)}: returns something other than a dict literal")
                for key, value in zip(node.value.keys, node.value.values):
                    for key_name in self._possible_keys(callee, key):
                        if key_name == "type":
                            out.append(("type", TypeV(self._json_type(callee.mod, value, {}))))
                        elif key_name in ("action", "nargs", "const"):
                            for v in self._values(key_name, value, {}):
                                out.append((key_name, v))
        return out

    def _possible_keys(self, callee: FuncRef, key: ast.expr | None) -> list[str]:
        if isinstance(key, ast.Constant):
            return [key.value]
        if isinstance(key, ast.Name):
            for node in ast.walk(callee.node):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == key.id for t in node.targets):
                    value = node.value
                    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                    if all(isinstance(o, ast.Constant) for o in options):
                        return [o.value for o in options]
        raise FlagTableError(f"{callee.mod.path}: {callee.node.name}: dict key not understood")

    def _json_type(self, mod: Module, expr: ast.expr, local_funcs: dict, depth: int = 0) -> bool:
        """Whether an argparse `type` expression parses its string as JSON."""
        for node in ast.walk(expr):
            if isinstance(node, ast.Attribute) and (node.attr.endswith("validate_json") or (
                    node.attr == "loads" and ast.unparse(node.value) == "json")):
                return True
            if isinstance(node, ast.Name) and depth < 3:
                if node.id in local_funcs:
                    if self._json_type(mod, local_funcs[node.id], local_funcs, depth + 1):
                        return True
                    continue
                try:
                    ref = self.index.resolve(mod, node.id)
                except FlagTableError:
                    continue
                if isinstance(ref, Ext) and ref.qualname == "json.loads":
                    return True
                if isinstance(ref, FuncRef) and self._json_type(ref.mod, ref.node, {}, depth + 1):
                    return True
        return False


def _plain(hint: Hint | str) -> Any:
    if isinstance(hint, str):
        return hint
    return (hint.kind, hint.name, hint.args)


def _takes_value_of(action: Any, nargs: Any) -> str:
    """takes_value for a plain (non-boolean-optional) action string and nargs."""
    if action in NONE_ACTIONS:
        return "none"
    if nargs in ("?", "*"):
        return "optional"
    if nargs == 0:
        return "none"
    return "required"


# --------------------------------------------------------------------------- parser class

@dataclass
class ParserFacts:
    """What FlexibleArgumentParser does beyond argparse, read from its source."""
    cls: ClassRef
    inverse_prefixes: dict[str, str]
    normalisation: dict[str, bool]
    rewrites: dict[str, str]


def read_parser_class(index: Index, cref: ClassRef) -> ParserFacts:
    inverse: dict[str, str] = {}
    init = index.class_member(cref, "__init__")
    abbreviations = True
    if isinstance(init, FuncRef):
        for node in ast.walk(init.node):
            if isinstance(node, ast.keyword) and node.arg == "allow_abbrev":
                abbreviations = not (isinstance(node.value, ast.Constant) and node.value.value is False)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                    and len(node.args) == 3 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "action"):
                registered = index.ref_of(init.mod, node.args[1])
                replacement = index.ref_of(init.mod, node.args[2])
                if not (isinstance(registered, Ext) and registered.qualname == BOOLEAN_OPTIONAL):
                    raise FlagTableError(f"{where(init.mod, node)}: registers an action not understood")
                if not isinstance(replacement, ClassRef) or not any(
                        isinstance(c, Ext) and c.qualname == BOOLEAN_OPTIONAL for c in index.mro(replacement)):
                    raise FlagTableError(f"{where(init.mod, node)}: replacement action not understood")
                prefixes = index.class_member(replacement, "_inverse_prefixes")
                if not isinstance(prefixes, ValueRef) or not isinstance(prefixes.expr, ast.Dict):
                    raise FlagTableError(f"{where(init.mod, node)}: {replacement.node.name} has no "
                                         "_inverse_prefixes dict; its option strings are not understood")
                inverse = ast.literal_eval(prefixes.expr)
    parse_args = index.class_member(cref, "parse_args")
    underscores = dotted = False
    rewrites: dict[str, str] = {}
    if isinstance(parse_args, FuncRef):
        for node in ast.walk(parse_args.node):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                consts = [a.value for a in node.args if isinstance(a, ast.Constant)]
                if node.func.attr == "replace" and consts[:2] == ["_", "-"]:
                    underscores = True
                if node.func.attr == "split" and consts[:1] == ["."]:
                    dotted = True
            if isinstance(node, ast.If):
                prefix = _short_prefix_test(node.test)
                if prefix:
                    target = _first_option_token(node.body)
                    if target:
                        rewrites[prefix] = target
    return ParserFacts(cref, inverse, {
        "underscores_to_dashes": underscores,
        "equals_value": True,
        "dotted_json_keys": dotted,
        "enable_disable_pairs": bool(inverse),
        "abbreviations": abbreviations,
    }, rewrites)


def _short_prefix_test(test: ast.expr) -> str | None:
    """`arg.startswith("-O") and ...` -> "-O" (a single-dash spelling parse_args rewrites)."""
    for node in ast.walk(test):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            value = node.args[0].value
            if value.startswith("-") and not value.startswith("--") and len(value) > 1:
                return value
    return None


def _first_option_token(body: list[ast.stmt]) -> str | None:
    for stmt in body:
        for node in ast.walk(stmt):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                text = node.values[0].value
            if text and text.startswith("-"):
                return re.split(r"[.=]", text, maxsplit=1)[0]
    return None


# --------------------------------------------------------------------------- interpreter

class ParserV:
    def __init__(self, kind: str):
        self.kind = kind


class TableV:
    """What get_kwargs(cls) returns: field name -> kwargs dict (mutable, like the real one)."""

    def __init__(self, cls: ClassRef, fields: dict[str, "DictV"]):
        self.cls, self.fields = cls, fields


class DictV:
    """A kwargs dict. From get_kwargs it is inexact: only the keys that decide option strings
    (TRACKED_KEYS) plus default/help are modelled, so other keys may be there unseen."""

    def __init__(self, data: dict[str, Any], origin: str, exact: bool = True):
        self.data, self.origin, self.exact = data, origin, exact

    def known(self, key: Any) -> bool:
        return self.exact or key in TRACKED_KEYS or key in self.data


TRACKED_KEYS = ("action", "nargs", "const", "type", "dest", "deprecated", "flags")


@dataclass
class RefV:
    ref: Any


@dataclass
class MethodV:
    obj: Any
    name: str


@dataclass
class BoundV:
    func: FuncRef
    cls: ClassRef | None
    instance: Any = None


@dataclass
class SuperV:
    owner: ClassRef
    cls: ClassRef


@dataclass
class InstanceV:
    cls: ClassRef


TRACKED_TYPES = (ParserV, TableV, DictV)


class Frame:
    def __init__(self, mod: Module, func: FuncRef | None, env: dict[str, Any], cls: ClassRef | None):
        self.mod, self.func, self.env, self.cls = mod, func, env, cls


class _Return(Exception):
    def __init__(self, value: Any):
        self.value = value


class Interpreter:
    """Runs the parser-building functions over abstract values and records each add_argument."""

    def __init__(self, index: Index, rules: KwargsRules, facts: ParserFacts):
        self.index, self.rules, self.facts = index, rules, facts
        self.options: dict[str, dict[str, Any]] = {}
        self.positionals: list[str] = []
        self._depth = 0
        self.entered: dict[int, FuncRef] = {}
        self.ran_sites: set[int] = set()
        self.skipped_sites: set[int] = set()

    # entry -----------------------------------------------------------------------------

    def call(self, func: FuncRef, args: list[Any], kwargs: dict[str, Any], cls: ClassRef | None = None,
             instance: Any = None, site: str = "") -> Any:
        if self._depth > 30:
            raise FlagTableError(f"{site}: calls nested too deeply")
        node = func.node
        params = node.args
        env: dict[str, Any] = {}
        positional = [a.arg for a in params.posonlyargs + params.args]
        values = list(args)
        if func.kind == "class":
            values.insert(0, RefV(cls or func.owner))
        elif func.kind == "instance":
            values.insert(0, instance if instance is not None else Unknown("self"))
        defaults = params.defaults
        for i, name in enumerate(positional):
            if i < len(values):
                env[name] = values[i]
            elif name in kwargs:
                env[name] = kwargs[name]
            else:
                j = i - (len(positional) - len(defaults))
                if j < 0:
                    raise FlagTableError(f"{site}: missing argument {name!r} for {node.name}")
                env[name] = self._const(func.mod, defaults[j])
        for arg, default in zip(params.kwonlyargs, params.kw_defaults):
            env[arg.arg] = kwargs.get(arg.arg, self._const(func.mod, default) if default else Unknown(arg.arg))
        frame = Frame(func.mod, func, env, cls or func.owner)
        self.entered[id(node)] = func
        self._depth += 1
        try:
            self.run(frame, node.body)
        except _Return as ret:
            return ret.value
        finally:
            self._depth -= 1
        return None

    def _const(self, mod: Module, expr: ast.expr) -> Any:
        try:
            return ast.literal_eval(expr)
        except ValueError:
            return Unknown(ast.unparse(expr))

    # statements ------------------------------------------------------------------------

    def run(self, frame: Frame, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.statement(frame, stmt)

    def statement(self, frame: Frame, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                return
            self.eval(frame, stmt.value)
        elif isinstance(stmt, ast.Assign):
            value = self.eval(frame, stmt.value)
            for target in stmt.targets:
                self.assign(frame, target, value, stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.assign(frame, stmt.target, self.eval(frame, stmt.value), stmt)
        elif isinstance(stmt, ast.AugAssign):
            self.aug_assign(frame, stmt)
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                self.delete(frame, target, stmt)
        elif isinstance(stmt, ast.Return):
            raise _Return(self.eval(frame, stmt.value) if stmt.value is not None else None)
        elif isinstance(stmt, ast.If):
            test = self.truth(self.eval(frame, stmt.test))
            if test is None:
                if self.touches(frame, stmt.body) or self.touches(frame, stmt.orelse):
                    raise FlagTableError(f"{where(frame.mod, stmt.test)}: condition around parser code not understood")
                return
            self.run(frame, stmt.body if test else stmt.orelse)
            for skipped in (stmt.orelse if test else stmt.body):
                self.skipped_sites.update(id(n) for n in _add_argument_calls(skipped))
        elif isinstance(stmt, ast.For):
            iterable = self.eval(frame, stmt.iter)
            if not isinstance(iterable, (list, tuple)):
                if self.touches(frame, stmt.body):
                    raise FlagTableError(f"{where(frame.mod, stmt.iter)}: loop around parser code not understood")
                return
            for item in list(iterable):
                self.assign(frame, stmt.target, item, stmt)
                self.run(frame, stmt.body)
            self.run(frame, stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.Try)):
            self.run(frame, stmt.body)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if isinstance(stmt, ast.ImportFrom):
                    base = frame.mod.absolute(stmt.module, stmt.level)
                    try:
                        ref = self.index.import_from(base, alias.name)
                    except FlagTableError:
                        ref = Ext(f"{base}.{alias.name}")
                    frame.env[alias.asname or alias.name] = RefV(ref)
                else:
                    name = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else alias.name.split(".")[0]
                    frame.env[name] = RefV(ModRef(target) if self.index.in_tree(target) else Ext(target))
        elif isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            frame.env[stmt.name] = Unknown(f"local {stmt.name}")
        elif isinstance(stmt, (ast.While,)):
            if self.touches(frame, stmt.body):
                raise FlagTableError(f"{where(frame.mod, stmt)}: while loop around parser code not understood")
        # raise, assert, pass, global, ...: nothing to do for option strings

    def touches(self, frame: Frame, body: list[ast.stmt]) -> bool:
        """Whether these statements could add options or change tracked kwargs."""
        tracked = {name for name, value in frame.env.items() if isinstance(value, TRACKED_TYPES)}
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Attribute) and node.attr in ("add_argument", "add_argument_group", "register"):
                    return True
                if isinstance(node, ast.Name) and node.id in tracked:
                    return True
        return False

    def assign(self, frame: Frame, target: ast.expr, value: Any, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            frame.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (list, tuple)) and len(value) == len(target.elts):
                for t, v in zip(target.elts, value):
                    self.assign(frame, t, v, stmt)
            else:
                for t in target.elts:
                    self.assign(frame, t, Unknown("unpacked"), stmt)
        elif isinstance(target, ast.Subscript):
            obj = self.eval(frame, target.value)
            key = self.eval(frame, target.slice)
            if isinstance(obj, DictV):
                if not isinstance(key, str):
                    raise FlagTableError(f"{where(frame.mod, stmt)}: computed kwargs key")
                obj.data[key] = self.kwarg_value(frame, key, stmt.value if hasattr(stmt, "value") else None, value)
            elif isinstance(obj, TableV):
                if not isinstance(value, DictV):
                    raise FlagTableError(f"{where(frame.mod, stmt)}: kwargs table entry replaced")
                obj.fields[key] = value
            elif isinstance(obj, dict) and isinstance(key, str):
                obj[key] = value
        # attribute targets (parser.epilog = ...) do not change option strings

    def kwarg_value(self, frame: Frame, key: str, expr: ast.expr | None, value: Any) -> Any:
        if key == "type" and expr is not None:
            return self.type_value(frame, expr, value)
        return value

    def type_value(self, frame: Frame, expr: ast.expr, value: Any) -> TypeV:
        if isinstance(value, TypeV):
            return value
        if isinstance(value, RefV):
            ref = value.ref
            if isinstance(ref, Ext):
                return TypeV(ref.qualname == "json.loads")
            if isinstance(ref, FuncRef):
                return TypeV(self.rules._json_type(ref.mod, ref.node, {}))
        return TypeV(self.rules._json_type(frame.mod, expr, {}))

    def aug_assign(self, frame: Frame, stmt: ast.AugAssign) -> None:
        target = stmt.target
        if isinstance(target, ast.Name):
            current = frame.env.get(target.id, Unknown(target.id))
            addition = self.eval(frame, stmt.value)
            if isinstance(stmt.op, ast.Add) and isinstance(current, list) and isinstance(addition, (list, tuple)):
                current.extend(addition)
            elif isinstance(stmt.op, ast.Add) and isinstance(current, str) and isinstance(addition, str):
                frame.env[target.id] = current + addition
            else:
                frame.env[target.id] = Unknown(ast.unparse(stmt))
        elif isinstance(target, ast.Subscript):
            obj = self.eval(frame, target.value)
            key = self.eval(frame, target.slice)
            if isinstance(obj, DictV):
                if key in ("action", "nargs", "dest", "const", "deprecated", "flags") or not isinstance(key, str):
                    raise FlagTableError(f"{where(frame.mod, stmt)}: update of {key!r} not understood")
                obj.data[key] = Unknown(ast.unparse(stmt))
            elif isinstance(obj, (TableV, ParserV)):
                raise FlagTableError(f"{where(frame.mod, stmt)}: not understood")

    def delete(self, frame: Frame, target: ast.expr, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Subscript):
            obj = self.eval(frame, target.value)
            key = self.eval(frame, target.slice)
            if isinstance(obj, DictV):
                if key not in obj.data and obj.known(key):
                    raise FlagTableError(f"{where(frame.mod, stmt)}: deletes a key that is not there ({obj.origin})")
                obj.data.pop(key, None)
            elif isinstance(obj, TableV):
                obj.fields.pop(key, None)
        elif isinstance(target, ast.Name):
            frame.env.pop(target.id, None)

    # expressions -----------------------------------------------------------------------

    @staticmethod
    def truth(value: Any) -> bool | None:
        if isinstance(value, (Unknown, RefV, MethodV, BoundV, SuperV, InstanceV, TypeV)):
            return None
        if isinstance(value, (ParserV, TableV)):
            return True
        if isinstance(value, DictV):
            return bool(value.data)
        return bool(value)

    def eval(self, frame: Frame, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                value = self.eval(frame, part.value) if isinstance(part, ast.FormattedValue) else part.value
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    return Unknown(ast.unparse(node))
                parts.append(str(value))
            return "".join(parts)
        if isinstance(node, ast.Name):
            return self.name(frame, node)
        if isinstance(node, ast.Attribute):
            return self.attribute(frame, node)
        if isinstance(node, ast.Subscript):
            return self.subscript(frame, node)
        if isinstance(node, ast.Call):
            return self.eval_call(frame, node)
        if isinstance(node, (ast.List, ast.Tuple)):
            items: list[Any] = []
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    value = self.eval(frame, elt.value)
                    if not isinstance(value, (list, tuple)):
                        return Unknown(ast.unparse(node))
                    items.extend(value)
                else:
                    items.append(self.eval(frame, elt))
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            data: dict[str, Any] = {}
            exact = True
            for key, value in zip(node.keys, node.values):
                if key is None:
                    merged = self.eval(frame, value)
                    if isinstance(merged, DictV):
                        data.update(copy.deepcopy(merged.data))
                        exact = exact and merged.exact
                    elif isinstance(merged, dict):
                        data.update(merged)
                    else:
                        return Unknown(ast.unparse(node))
                else:
                    key_value = self.eval(frame, key)
                    if not isinstance(key_value, str):
                        return Unknown(ast.unparse(node))
                    data[key_value] = self.kwarg_value(frame, key_value, value, self.eval(frame, value))
            return DictV(data, ast.unparse(node)[:60], exact)
        if isinstance(node, ast.Compare):
            return self.compare(frame, node)
        if isinstance(node, ast.BoolOp):
            values = [self.truth(self.eval(frame, v)) for v in node.values]
            if isinstance(node.op, ast.And):
                if False in values:
                    return False
                return None if None in values else True
            if True in values:
                return True
            return None if None in values else False
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            value = self.truth(self.eval(frame, node.operand))
            return None if value is None else not value
        if isinstance(node, ast.IfExp):
            test = self.truth(self.eval(frame, node.test))
            if test is None:
                return Unknown(ast.unparse(node))
            return self.eval(frame, node.body if test else node.orelse)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.eval(frame, node.left), self.eval(frame, node.right)
            if isinstance(left, (str, list, tuple)) and type(left) is type(right):
                return left + right
        return Unknown(ast.unparse(node)[:80])

    def name(self, frame: Frame, node: ast.Name) -> Any:
        if node.id in frame.env:
            return frame.env[node.id]
        try:
            ref = self.index.resolve(frame.mod, node.id)
        except FlagTableError:
            return Unknown(f"name {node.id}")
        return self.ref_value(ref)

    def ref_value(self, ref: Any) -> Any:
        if isinstance(ref, ValueRef):
            try:
                return ast.literal_eval(ref.expr)
            except ValueError:
                pass
            if isinstance(ref.expr, (ast.Name, ast.Attribute)):
                try:
                    target = self.index.ref_of(ref.mod, ref.expr)
                except FlagTableError:
                    return Unknown(ref.name)
                return self.ref_value(target) if target is not None else Unknown(ref.name)
            return Unknown(ref.name)
        if isinstance(ref, Ext) and ref.qualname == "sys.argv":
            return list(SERVE_ARGV)
        return RefV(ref)

    def attribute(self, frame: Frame, node: ast.Attribute) -> Any:
        base = self.eval(frame, node.value)
        attr = node.attr
        if isinstance(base, RefV):
            if isinstance(base.ref, ClassRef) and attr == "__name__":
                return base.ref.node.name
            if isinstance(base.ref, ClassRef) and attr == "__doc__":
                return ast.get_docstring(base.ref.node) or ""
            try:
                ref = self.index.attribute(base.ref, attr)
            except FlagTableError:
                return Unknown(ast.unparse(node))
            if isinstance(ref, FuncRef) and isinstance(base.ref, ClassRef):
                return BoundV(ref, base.ref)
            return self.ref_value(ref)
        if isinstance(base, InstanceV):
            ref = self.index.class_member(base.cls, attr)
            if isinstance(ref, FuncRef):
                return BoundV(ref, base.cls, base)
            return self.ref_value(ref) if ref is not None else Unknown(ast.unparse(node))
        if isinstance(base, SuperV):
            ref = self.index.class_member(base.cls, attr, after=base.owner)
            if isinstance(ref, FuncRef):
                return BoundV(ref, base.cls)
            return Unknown(ast.unparse(node))
        if isinstance(base, (ParserV, DictV, TableV, str, list, tuple)):
            return MethodV(base, attr)
        return Unknown(ast.unparse(node)[:80])

    def subscript(self, frame: Frame, node: ast.Subscript) -> Any:
        base = self.eval(frame, node.value)
        if isinstance(node.slice, ast.Slice):
            if isinstance(base, (list, tuple, str)):
                parts = [self.eval(frame, p) if p is not None else None
                         for p in (node.slice.lower, node.slice.upper, node.slice.step)]
                if all(p is None or isinstance(p, int) for p in parts):
                    return base[slice(*parts)]
            return Unknown(ast.unparse(node))
        key = self.eval(frame, node.slice)
        if isinstance(base, TableV):
            if key not in base.fields:
                raise FlagTableError(f"{where(frame.mod, node)}: {base.cls.node.name} has no field {key!r}")
            return base.fields[key]
        if isinstance(base, DictV):
            if key not in base.data and not base.known(key):
                return Unknown(f"{base.origin}[{key!r}]")
            if key not in base.data:
                raise FlagTableError(f"{where(frame.mod, node)}: kwargs {base.origin} have no key {key!r}")
            return base.data[key]
        if isinstance(base, (list, tuple, str)) and isinstance(key, int):
            return base[key]
        return Unknown(ast.unparse(node)[:80])

    def compare(self, frame: Frame, node: ast.Compare) -> Any:
        left = self.eval(frame, node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(frame, right_node)
            if isinstance(op, (ast.In, ast.NotIn)):
                if isinstance(right, DictV) and not right.known(left):
                    return None
                container = right.data if isinstance(right, DictV) else right.fields if isinstance(
                    right, TableV) else right
                if not isinstance(container, (list, tuple, str, dict, set)) or isinstance(left, Unknown):
                    return None
                result = left in container
                result = result if isinstance(op, ast.In) else not result
            elif isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)):
                plain = (str, int, float, bool, type(None))
                if not (isinstance(left, plain) and isinstance(right, plain)):
                    return None
                result = left == right if isinstance(op, (ast.Eq, ast.Is)) else left != right
            else:
                return None
            if not result:
                return False
            left = right
        return True

    # calls -----------------------------------------------------------------------------

    def eval_call(self, frame: Frame, node: ast.Call) -> Any:
        func = self.eval(frame, node.func)
        args: list[Any] = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                value = self.eval(frame, arg.value)
                if isinstance(value, (list, tuple)):
                    args.extend(value)
                else:
                    args.append(Unknown(f"*{ast.unparse(arg.value)}"))
            else:
                args.append(self.eval(frame, arg))
        kwargs: dict[str, Any] = {}
        keyword_nodes: dict[str, ast.expr] = {}
        duplicate = None
        for kw in node.keywords:
            if kw.arg is None:
                value = self.eval(frame, kw.value)
                if isinstance(value, DictV):
                    items = value.data.items()
                elif isinstance(value, dict):
                    items = value.items()
                else:
                    kwargs["**"] = Unknown(ast.unparse(kw.value))
                    continue
                for key, item in items:
                    duplicate = duplicate or (key if key in kwargs else None)
                    kwargs[key] = item
            else:
                duplicate = duplicate or (kw.arg if kw.arg in kwargs else None)
                kwargs[kw.arg] = self.kwarg_value(frame, kw.arg, kw.value, self.eval(frame, kw.value))
                keyword_nodes[kw.arg] = kw.value
        site = where(frame.mod, node)
        if duplicate is not None:
            raise FlagTableError(f"{site}: keyword {duplicate!r} given twice (a TypeError at run time)")
        tracked_args = any(isinstance(v, TRACKED_TYPES) for v in [*args, *kwargs.values()])

        if isinstance(func, MethodV):
            return self.method(frame, node, func, args, kwargs, site)
        if isinstance(func, RefV):
            ref = func.ref
            if isinstance(ref, FuncRef):
                if ref.node is self.rules.get_kwargs.node:
                    return self.get_kwargs(args, site)
                if tracked_args:
                    return self.call(ref, args, kwargs, site=site)
                return Unknown(f"result of {ref.node.name}()")
            if isinstance(ref, Ext):
                return self.builtin(ref.qualname, frame, args, kwargs, tracked_args, site)
            if isinstance(ref, ClassRef):
                return InstanceV(ref)
        if isinstance(func, BoundV):
            if tracked_args:
                return self.call(func.func, args, kwargs, cls=func.cls, instance=func.instance, site=site)
            return Unknown(f"result of {func.func.node.name}()")
        if isinstance(func, SuperV):
            return Unknown("super")
        if tracked_args:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else ast.unparse(node.func)
            if name == "pre_register_and_update":
                self.check_platform_hooks(site)
                return None
            raise FlagTableError(f"{site}: passes the parser or its kwargs to code that cannot be followed")
        return Unknown(ast.unparse(node)[:80])

    def builtin(self, name: str, frame: Frame, args: list[Any], kwargs: dict, tracked: bool, site: str) -> Any:
        if name == "builtins.super":
            if frame.func is None or frame.func.owner is None:
                raise FlagTableError(f"{site}: super() outside a method")
            cls = frame.cls if isinstance(frame.cls, ClassRef) else frame.func.owner
            return SuperV(frame.func.owner, cls)
        if name in ("builtins.list", "builtins.tuple") and len(args) == 1 and isinstance(args[0], (list, tuple)):
            return list(args[0]) if name.endswith("list") else tuple(args[0])
        if name in ("builtins.dict", "copy.copy", "copy.deepcopy") and len(args) == 1 and isinstance(args[0], DictV):
            return DictV(copy.deepcopy(args[0].data), args[0].origin, args[0].exact)
        if name in ("copy.copy", "copy.deepcopy") and len(args) == 1 and isinstance(args[0], TableV):
            return TableV(args[0].cls, copy.deepcopy(args[0].fields))
        if tracked:
            raise FlagTableError(f"{site}: passes the parser or its kwargs to {name}")
        return Unknown(f"{name}()")

    def get_kwargs(self, args: list[Any], site: str) -> TableV:
        if len(args) != 1 or not isinstance(args[0], RefV) or not isinstance(args[0].ref, ClassRef):
            raise FlagTableError(f"{site}: get_kwargs of something that is not a known class")
        cref = args[0].ref
        fields = self.rules.kwargs_for(cref)
        return TableV(cref, {name: DictV(data, f"{cref.node.name}.{name}", exact=False)
                             for name, data in fields.items()})

    def method(self, frame: Frame, node: ast.Call, func: MethodV, args: list, kwargs: dict, site: str) -> Any:
        obj, name = func.obj, func.name
        if isinstance(obj, ParserV):
            if name == "add_argument":
                self.add_argument(frame, node, args, kwargs, site)
                return Unknown("action")
            if name in ("add_argument_group", "add_mutually_exclusive_group"):
                return ParserV("group")
            if name == "add_parser" and obj.kind == "subparsers":
                parser = ParserV("parser")
                if kwargs.get("add_help", True) is not False:
                    self.record(["-h", "--help"], "help", "none", False, False, site)
                return parser
            if name in ("set_defaults",):
                return None
            raise FlagTableError(f"{site}: parser method {name!r} not understood")
        if isinstance(obj, DictV):
            data = obj.data
            if args and not obj.known(args[0]) and args[0] not in data:
                return Unknown(f"{obj.origin}.{name}({args[0]!r})")
            if name == "pop":
                key = args[0]
                if key in data:
                    return data.pop(key)
                if len(args) > 1:
                    return args[1]
                raise FlagTableError(f"{site}: pops a key that is not there")
            if name == "get":
                return data.get(args[0], args[1] if len(args) > 1 else None)
            if name == "update":
                if args and isinstance(args[0], DictV):
                    data.update(copy.deepcopy(args[0].data))
                    return None
                raise FlagTableError(f"{site}: kwargs update not understood")
            if name == "setdefault":
                return data.setdefault(args[0], args[1] if len(args) > 1 else None)
            if name == "copy":
                return DictV(dict(data), obj.origin, obj.exact)
            if name in ("keys", "values", "items"):
                return list(getattr(data, name)())
            return Unknown(f"{name}()")
        if isinstance(obj, TableV):
            if name == "items":
                return list(obj.fields.items())
            if name == "keys":
                return list(obj.fields)
            if name == "values":
                return list(obj.fields.values())
            if name in ("get", "pop"):
                key = args[0]
                if name == "pop":
                    return obj.fields.pop(key, args[1] if len(args) > 1 else None)
                return obj.fields.get(key, args[1] if len(args) > 1 else None)
            raise FlagTableError(f"{site}: kwargs table method {name!r} not understood")
        if isinstance(obj, str):
            if name in ("replace", "lower", "upper", "strip", "removeprefix", "removesuffix", "format", "join") and all(
                    isinstance(a, (str, int)) for a in args) and not kwargs:
                return getattr(obj, name)(*args)
            return Unknown(f"str.{name}()")
        if isinstance(obj, list):
            if name in ("append", "extend", "remove", "insert") and not any(isinstance(a, Unknown) for a in args):
                getattr(obj, name)(*args)
                return None
        return Unknown(f"{name}()")

    # options ---------------------------------------------------------------------------

    def add_argument(self, frame: Frame, node: ast.Call, args: list, kwargs: dict, site: str) -> None:
        self.ran_sites.add(id(node))
        if not args or not all(isinstance(a, str) for a in args):
            raise FlagTableError(f"{site}: option strings not understood: {args!r}")
        if "**" in kwargs:
            raise FlagTableError(f"{site}: keyword arguments not understood: {kwargs['**']!r}")
        if not args[0].startswith("-"):
            if len(args) != 1:
                raise FlagTableError(f"{site}: positional argument with several names")
            self.positionals.append(args[0])
            return
        for key in ("action", "nargs", "dest", "deprecated"):
            if isinstance(kwargs.get(key), Unknown):
                raise FlagTableError(f"{site}: {key} not understood: {kwargs[key]!r}")
        action = kwargs.get("action")
        nargs = kwargs.get("nargs")
        deprecated = kwargs.get("deprecated", False) is True
        help_text = kwargs.get("help")
        if isinstance(help_text, str) and DEPRECATION_RE.search(help_text):
            deprecated = True
        type_value = kwargs.get("type")
        is_json = isinstance(type_value, TypeV) and type_value.json
        kind, takes = self.action_kind(action, nargs, site)
        if isinstance(action, RefV) and isinstance(action.ref, ClassRef) and "deprecat" in action.ref.node.name.lower():
            deprecated = True
        strings = list(args)
        if kind in ("boolean_optional", "enable_disable"):
            expanded = []
            for s in strings:
                expanded.append(s)
                if s.startswith("--"):
                    expanded.append("--no-" + s[2:])
            if kind == "enable_disable":
                for s in strings:
                    for prefix, inverse in self.facts.inverse_prefixes.items():
                        if s.startswith(prefix):
                            expanded.append(inverse + s[len(prefix):])
            strings = expanded
            is_json = False
        dest = kwargs.get("dest")
        if dest is None:
            long = next((s for s in args if s.startswith("--")), args[0])
            dest = long.lstrip("-").replace("-", "_")
        if not isinstance(dest, str):
            raise FlagTableError(f"{site}: dest not understood")
        self.record(strings, dest, takes, is_json, deprecated, site)

    def action_kind(self, action: Any, nargs: Any, site: str) -> tuple[str, str]:
        if nargs is not None and not isinstance(nargs, (str, int)):
            raise FlagTableError(f"{site}: nargs not understood: {nargs!r}")
        if action is None or isinstance(action, str):
            if action not in NONE_ACTIONS and action not in VALUE_ACTIONS:
                raise FlagTableError(f"{site}: action {action!r} not understood")
            return "plain", _takes_value_of(action, nargs)
        if isinstance(action, RefV):
            ref = action.ref
            if isinstance(ref, Ext):
                if ref.qualname == BOOLEAN_OPTIONAL:
                    return ("enable_disable" if self.facts.inverse_prefixes else "boolean_optional"), "none"
                if ref.qualname in ARGPARSE_NONE_ACTION_CLASSES:
                    return "plain", "none"
                raise FlagTableError(f"{site}: action {ref.qualname} not understood")
            if isinstance(ref, ClassRef):
                mro = self.index.mro(ref)
                if any(isinstance(c, Ext) and c.qualname == BOOLEAN_OPTIONAL for c in mro):
                    return "boolean_optional", "none"  # a subclass is not replaced by the registry
                if any(isinstance(c, Ext) and c.qualname in ARGPARSE_NONE_ACTION_CLASSES for c in mro):
                    return "plain", "none"
                if any(isinstance(c, Ext) and c.qualname in ("argparse.Action",) for c in mro):
                    for cls in mro:
                        if isinstance(cls, ClassRef) and any(
                                isinstance(s, ast.FunctionDef) and s.name == "__init__" for s in cls.node.body):
                            raise FlagTableError(f"{site}: action {ref.node.name} has its own __init__")
                    return "plain", _takes_value_of(None, nargs)
            raise FlagTableError(f"{site}: action {ref!r} not understood")
        raise FlagTableError(f"{site}: action {action!r} not understood")

    def record(self, strings: list[str], dest: str, takes: str, is_json: bool, deprecated: bool, site: str) -> None:
        for s in strings:
            if s in self.options:
                raise FlagTableError(f"{site}: option string {s} added twice (an argparse conflict at run time)")
            entry: dict[str, Any] = {"dest": dest, "takes_value": takes}
            if is_json:
                entry["json"] = True
            if deprecated:
                entry["deprecated"] = True
            self.options[s] = entry

    def check_all_sites_ran(self) -> None:
        """Every add_argument call in a function that ran must have run or be in a branch not taken."""
        for func in self.entered.values():
            for call in _add_argument_calls(func.node):
                if id(call) not in self.ran_sites and id(call) not in self.skipped_sites:
                    raise FlagTableError(f"{where(func.mod, call)}: this add_argument call was never reached")

    def check_platform_hooks(self, site: str) -> None:
        """The platform is chosen at run time: no in-tree platform may add options there."""
        for path in self.index.tree.files_under("vllm/platforms/"):
            modname = path[:-3].replace("/", ".").removesuffix(".__init__")
            mod = self.index.module(modname)
            if mod is None:
                continue
            for node in ast.walk(mod.tree):
                if isinstance(node, ast.FunctionDef) and node.name == "pre_register_and_update":
                    if _calls_named(node, "add_argument") or _calls_named(node, "add_argument_group"):
                        raise FlagTableError(f"{site}: {mod.path}:{node.lineno} adds arguments in "
                                             "pre_register_and_update; not followed")


def _add_argument_calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "add_argument"]


# --------------------------------------------------------------------------- table

SERVE_MODULE = "vllm.entrypoints.cli.serve"


def read_flag_table(source: str | Path) -> dict[str, Any]:
    """The options of `vllm serve` in a source tree (a directory holding `vllm/` or a wheel).

    Returns ``{"normalisation": {...}, "options": {option string: entry}}``; raises
    FlagTableError on source it does not understand.
    """
    tree = SourceTree(source)
    index = Index(tree)
    serve = index.module(SERVE_MODULE)
    if serve is None:
        raise FlagTableError(f"{source}: no {SERVE_MODULE.replace('.', '/')}.py")
    command = None
    for node in serve.tree.body:
        if isinstance(node, ast.ClassDef):
            cref = index.class_ref(serve, node)
            name = index.class_member(cref, "name")
            if isinstance(name, ValueRef) and isinstance(name.expr, ast.Constant) and name.expr.value == "serve":
                command = cref
    if command is None:
        raise FlagTableError(f"{serve.path}: no subcommand class with name = 'serve'")
    init = index.class_member(command, "subparser_init")
    if not isinstance(init, FuncRef):
        raise FlagTableError(f"{serve.path}: {command.node.name} has no subparser_init")

    parser_ref = index.resolve(serve, "FlexibleArgumentParser")
    if not isinstance(parser_ref, ClassRef):
        raise FlagTableError(f"{serve.path}: FlexibleArgumentParser not found in the tree")
    facts = read_parser_class(index, parser_ref)

    get_kwargs = None
    for modname in ("vllm.engine.arg_utils",):
        mod = index.module(modname)
        if mod is not None and isinstance(mod.bindings.get("get_kwargs"), tuple):
            ref = index.resolve(mod, "get_kwargs")
            if isinstance(ref, FuncRef):
                get_kwargs = ref
    if get_kwargs is None:
        raise FlagTableError("vllm/engine/arg_utils.py: get_kwargs not found")
    rules = KwargsRules(index, get_kwargs)

    interp = Interpreter(index, rules, facts)
    result = interp.call(init, [ParserV("subparsers")], {}, cls=command, instance=InstanceV(command),
                         site=f"{serve.path}: {command.node.name}.subparser_init")
    if not isinstance(result, ParserV):
        raise FlagTableError(f"{serve.path}: subparser_init did not return the parser")
    if not interp.options:
        raise FlagTableError(f"{serve.path}: no options found")
    interp.check_all_sites_ran()

    options = interp.options
    for alias, target in facts.rewrites.items():
        if alias not in options and target in options:
            entry = {k: v for k, v in options[target].items() if k != "deprecated"}
            options[alias] = {**entry, "rewritten_to": target}
    return {"normalisation": facts.normalisation, "options": dict(sorted(options.items()))}


def wheel_version(wheel: Path) -> str | None:
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".dist-info/METADATA"):
                for line in zf.read(name).decode("utf-8", "replace").splitlines():
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def table_document(wheel: Path, release: str) -> dict[str, Any]:
    found = wheel_version(wheel)
    if found != release:
        raise FlagTableError(f"{wheel.name}: holds vllm {found}, not {release}")
    table = read_flag_table(wheel)
    return {"release": release, "source": wheel.name, "sha256": sha256_of(wheel), **table}


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def download_wheel(release: str, directory: Path) -> Path:
    existing = sorted(directory.glob(f"vllm-{release}-*.whl"))
    if not existing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps", "--only-binary", ":all:",
             "--disable-pip-version-check", "-d", str(directory)],
            check=True,
        )
        existing = sorted(directory.glob(f"vllm-{release}-*.whl"))
    if len(existing) != 1:
        raise FlagTableError(f"{directory}: expected one vllm-{release} wheel, found {[p.name for p in existing]}")
    return existing[0]


def table_command(
    argv: list[str] | None,
    *,
    description: str,
    default_out: Path,
    document_of: Callable[[Path, str], dict[str, Any]],
    errors: tuple[type[Exception], ...],
    describe: Callable[[dict[str, Any]], str],
) -> int:
    """The command line of a per-release table generator: read each release's wheel (given, or
    pip-downloaded), write <out>/v<release>.json, or exit 1 naming what could not be read."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("releases", nargs="+", help="vLLM releases, e.g. 0.11.0 0.33.0")
    parser.add_argument("--wheel", type=Path, help="read this wheel instead of downloading (one release only)")
    parser.add_argument("--out", type=Path, default=default_out, help="directory for v<release>.json")
    parser.add_argument("--download-dir", type=Path, help="keep downloaded wheels here (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.wheel and len(args.releases) != 1:
        parser.error("--wheel goes with exactly one release")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vllm-wheels-") as tmp:
        download_dir = args.download_dir or Path(tmp)
        download_dir.mkdir(parents=True, exist_ok=True)
        for release in args.releases:
            try:
                wheel = args.wheel or download_wheel(release, download_dir)
                document = document_of(wheel, release)
            except (*errors, subprocess.CalledProcessError) as exc:
                print(f"error: vllm {release}: {exc}", file=sys.stderr)
                return 1
            target = args.out / f"v{release}.json"
            target.write_text(dump(document))
            print(f"{target}: {describe(document)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return table_command(
        argv,
        description=__doc__.split("\n\n")[0],
        default_out=DEFAULT_OUT,
        document_of=table_document,
        errors=(FlagTableError,),
        describe=lambda document: f"{len(document['options'])} option strings",
    )


if __name__ == "__main__":
    sys.exit(main())
