#!/usr/bin/env python3
"""The Prometheus metrics a vLLM release's server registers, read from its wheel.

Usage::

    python tools/vllm_metric_table.py 0.11.0 0.34.0            # pip-download each wheel, write the tables
    python tools/vllm_metric_table.py 0.34.0 --wheel vllm-0.34.0-cp38-abi3-manylinux_2_28_x86_64.whl

Each release gets ``<out>/v<release>.json`` (default ``components/vllm_metrics``)::

    {"release": ..., "source": <wheel file name>, "sha256": <of the wheel>, "read": [<files>],
     "metrics": {"vllm:name": {"type": "gauge" | "counter" | "histogram", "labels": [...],
                               "series": [...], "documentation": ..., "buckets": [...],
                               "condition": ..., "where": "<file>:<line>"}, ...}}

``series`` are the names Prometheus scrapes, as prometheus_client writes them: a gauge under its
name; a counter as ``<name>_total`` (a registered ``_total`` suffix is stripped first); a
histogram as ``_bucket``, ``_count`` and ``_sum`` (the ``_created`` samples prometheus_client
adds are left out). ``labels`` is null when the label names are only known at run time (the
``*_info`` gauges, labelled by a config's fields). ``buckets`` (histograms) is the default
upper bounds, null when they depend on the running server (``max_model_len``) or are
prometheus_client's defaults; ``condition`` is the ``if`` test(s) around the registration in
its function (``not (...)`` for an ``else`` branch), null when it always runs: a metric behind
``self.show_hidden_metrics`` only exists with ``--show-hidden-metrics-for-version``.

How the metrics are found
-------------------------
Nothing is imported: every ``vllm/v1/metrics/*.py`` of the wheel is parsed with ``ast``. A
registration is a call, in a function or method, of a prometheus_client metric class
(``Gauge``, ``Counter``, ``Histogram``), reached as a name imported from ``prometheus_client``, as
``prometheus_client.X``, or as ``self._x_cls`` where the enclosing class (or a base class in
the same file) sets ``_x_cls`` to one of those. Its ``name=`` is a string, or a variable
assigned strings in the same function; ``labelnames=`` a list, a variable assigned one in the
function (``labelnames + ["reason"]`` too), an attribute ``self.x`` assigned a string there, or a
parameter: the label list that ``PrometheusStatLogger.__init__`` passes its helpers
(``labelnames = ["model_name", "engine"]``); ``buckets=`` a literal list, or a variable
assigned one or ``histogram_buckets("<family>", ...)`` (``vllm/v1/metrics/buckets.py``, whose
``_STATIC_FAMILY_DEFAULTS`` maps the family to a module constant).

Not covered: metrics registered outside ``vllm/v1/metrics`` (speculative decoding, KV
connectors, LoRA adapters' modules); the project reads none of them. Anything the reader
cannot work out in a registration raises ``MetricTableError`` naming the file and line; the
command exits non-zero instead of writing a partial table.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_flag_table import sha256_of, table_command  # noqa: E402 - the sibling tool

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "components" / "vllm_metrics"
SOURCES = "vllm/v1/metrics/"
BUCKETS_MODULE = "vllm/v1/metrics/buckets.py"
KINDS = {"Gauge": "gauge", "Counter": "counter", "Histogram": "histogram"}


class MetricTableError(Exception):
    pass


def wheel_sources(wheel: Path) -> dict[str, str]:
    """The .py files directly under vllm/v1/metrics/ in the wheel, by path."""
    with zipfile.ZipFile(wheel) as zf:
        return {
            name: zf.read(name).decode()
            for name in sorted(zf.namelist())
            if name.startswith(SOURCES) and name.endswith(".py") and "/" not in name[len(SOURCES):]
        }


def series(kind: str, name: str) -> list[str]:
    """The sample names prometheus_client writes for a metric (without _created)."""
    if kind == "counter":
        return [name.removesuffix("_total") + "_total"]
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_count", f"{name}_sum"]
    return [name]


def static_bucket_families(sources: dict[str, str]) -> dict[str, tuple[float, ...]]:
    """buckets.py: family -> default bounds, through _STATIC_FAMILY_DEFAULTS (absent before it existed)."""
    if BUCKETS_MODULE not in sources:
        return {}
    constants: dict[str, Any] = {}
    families: dict[str, tuple[float, ...]] = {}
    for node in ast.parse(sources[BUCKETS_MODULE]).body:
        target, value = _assignment(node)
        if target is None:
            continue
        if target == "_STATIC_FAMILY_DEFAULTS":
            assert isinstance(value, ast.Dict)
            for key, constant in zip(value.keys, value.values):
                families[ast.literal_eval(key)] = tuple(constants[constant.id])
        else:
            try:
                constants[target] = ast.literal_eval(value)
            except ValueError:
                pass
    return families


def _assignment(node: ast.AST) -> tuple[Optional[str], Optional[ast.expr]]:
    """(name, value) of `name = value` or `name: T = value`, else (None, None)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target = node.target
    else:
        return None, None
    if isinstance(target, ast.Name):
        return target.id, node.value
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return "self." + target.attr, node.value
    return None, None


class ModuleReader:
    """The registrations of one module."""

    def __init__(self, path: str, text: str, base_labels: Optional[list[str]], families: dict):
        self.path = path
        self.tree = ast.parse(text)
        self.base_labels = base_labels
        self.families = families
        self.imported: dict[str, str] = {}  # local name -> kind
        self.module_aliases: set[str] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client":
                for alias in node.names:
                    if alias.name in KINDS:
                        self.imported[alias.asname or alias.name] = KINDS[alias.name]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "prometheus_client":
                        self.module_aliases.add(alias.asname or alias.name)
        self.classes = {node.name: node for node in ast.walk(self.tree) if isinstance(node, ast.ClassDef)}

    def error(self, node: ast.AST, what: str) -> MetricTableError:
        return MetricTableError(f"{self.path}:{node.lineno}: {what}: {ast.unparse(node)[:120]}")

    def kind_of(self, expr: ast.expr) -> Optional[str]:
        """The metric kind a class expression names, if it is a prometheus_client class."""
        if isinstance(expr, ast.Name):
            return self.imported.get(expr.id)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in self.module_aliases:
            return KINDS.get(expr.attr)
        return None

    def class_kinds(self, cls: Optional[ast.ClassDef]) -> dict[str, str]:
        """Class attributes (with bases in this module) bound to prometheus_client classes."""
        if cls is None:
            return {}
        kinds: dict[str, str] = {}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in self.classes:
                kinds |= self.class_kinds(self.classes[base.id])
        for node in cls.body:
            target, value = _assignment(node)
            if target is not None and (kind := self.kind_of(value)):
                kinds[target] = kind
        return kinds

    def metrics(self) -> list[dict]:
        found: list[dict] = []
        for cls in [None, *self.classes.values()]:
            body = self.tree.body if cls is None else cls.body
            kinds = self.class_kinds(cls)
            for function in body:
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found += self.function_metrics(function, kinds)
        return found

    def function_metrics(self, function: ast.FunctionDef, kinds: dict[str, str]) -> list[dict]:
        assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(function):
            target, value = _assignment(node)
            if target is not None:
                assigned.setdefault(target, []).append(value)
        parameters = {a.arg for a in [*function.args.args, *function.args.kwonlyargs]}
        found: list[dict] = []

        def visit(statements: list[ast.stmt], conditions: tuple[str, ...]) -> None:
            for statement in statements:
                if isinstance(statement, ast.If):
                    test = ast.unparse(statement.test)
                    visit(statement.body, (*conditions, test))
                    visit(statement.orelse, (*conditions, f"not ({test})"))
                    continue
                if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                # loops, with and try blocks: their statements run under the same conditions
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(statement, block, None) or [], conditions)
                for handler in getattr(statement, "handlers", None) or []:
                    visit(handler.body, conditions)
                for call in _calls_outside_blocks(statement):
                    kind = self.call_kind(call, kinds)
                    if kind is not None:
                        found.extend(self.registration(call, kind, conditions, assigned, parameters))

        visit(function.body, ())
        return found

    def call_kind(self, call: ast.Call, kinds: dict[str, str]) -> Optional[str]:
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            return kinds.get(func.attr)
        return self.kind_of(func)

    def registration(self, call, kind, conditions, assigned, parameters) -> list[dict]:
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        if "name" not in keywords:
            raise self.error(call, "a metric registered without name=")
        names = self.strings(keywords["name"], assigned, call)
        labels = self.labels(keywords.get("labelnames"), assigned, parameters, call)
        documentation = keywords.get("documentation")
        doc = documentation.value if isinstance(documentation, ast.Constant) else None
        buckets = self.buckets(keywords.get("buckets"), assigned, call) if kind == "histogram" else None
        entry = {
            "type": kind,
            "labels": labels,
            "documentation": doc,
            "condition": " and ".join(f"({c})" if len(conditions) > 1 else c for c in conditions) or None,
            "where": f"{self.path}:{call.lineno}",
        }
        if kind == "histogram":
            entry["buckets"] = buckets
        return [{"name": name, **entry, "series": series(kind, name)} for name in names]

    def strings(self, expr: ast.expr, assigned, call) -> list[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.Name) and expr.id in assigned:
            values = [v.value for v in assigned[expr.id] if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if values:
                return values
        raise self.error(call, "a metric name that is not a string or a variable assigned strings")

    def labels(self, expr, assigned, parameters, call) -> Optional[list[str]]:
        if expr is None:
            return []
        if isinstance(expr, (ast.List, ast.Tuple)):
            return [self.label(e, assigned, call) for e in expr.elts]
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            left = self.labels(expr.left, assigned, parameters, call)
            right = self.labels(expr.right, assigned, parameters, call)
            if left is not None and right is not None:
                return left + right
        if isinstance(expr, ast.Name):
            if len(assigned.get(expr.id, [])) == 1:
                return self.labels(assigned[expr.id][0], assigned, parameters, call)
            if expr.id in parameters and expr.id not in assigned and self.base_labels is not None:
                return list(self.base_labels)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "keys":
            return None  # a dict built at run time
        raise self.error(call, "label names the reader cannot work out")

    def label(self, expr, assigned, call) -> str:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        key = ast.unparse(expr)
        if len(assigned.get(key, [])) == 1 and isinstance(value := assigned[key][0], ast.Constant):
            return value.value
        raise self.error(call, "a label name that is not a string")

    def buckets(self, expr, assigned, call) -> Optional[list[float]]:
        if expr is None:
            return None  # prometheus_client's defaults
        if isinstance(expr, (ast.List, ast.Tuple)):
            return [ast.literal_eval(e) for e in expr.elts]
        if isinstance(expr, ast.Name) and len(assigned.get(expr.id, [])) == 1:
            return self.buckets(assigned[expr.id][0], assigned, call)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
            if expr.func.id == "histogram_buckets" and expr.args and isinstance(expr.args[0], ast.Constant):
                family = expr.args[0].value
                return list(self.families[family]) if family in self.families else None
            if expr.func.id in ("build_1_2_5_buckets", "build_buckets"):
                return None  # from max_model_len
        raise self.error(call, "histogram buckets the reader cannot work out")


def _calls_outside_blocks(statement: ast.stmt) -> list[ast.Call]:
    """The calls of one statement, not those in its nested statement blocks (visited apart)."""
    calls: list[ast.Call] = []
    blocks = {id(s) for name in ("body", "orelse", "finalbody", "handlers") for s in getattr(statement, name, []) or []}

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if id(child) in blocks:
                continue
            if isinstance(child, ast.Call):
                calls.append(child)
            walk(child)

    if isinstance(statement, ast.Call):
        calls.append(statement)
    walk(statement)
    return calls


def base_labels(sources: dict[str, str]) -> Optional[list[str]]:
    """`labelnames = [...]` in PrometheusStatLogger.__init__: what it hands its helper loggers."""
    tree = ast.parse(sources.get(SOURCES + "loggers.py", ""))
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name == "PrometheusStatLogger":
            for function in cls.body:
                if isinstance(function, ast.FunctionDef) and function.name == "__init__":
                    for node in ast.walk(function):
                        target, value = _assignment(node)
                        if target == "labelnames":
                            return [ast.literal_eval(e) for e in value.elts]
    return None


def read_metrics(sources: dict[str, str]) -> dict[str, dict]:
    labels, families = base_labels(sources), static_bucket_families(sources)
    metrics: dict[str, dict] = {}
    for path, text in sources.items():
        for found in ModuleReader(path, text, labels, families).metrics():
            name = found.pop("name")
            if name in metrics:
                raise MetricTableError(f"{found['where']}: {name} is registered again (first at {metrics[name]['where']})")
            metrics[name] = found
    return dict(sorted(metrics.items()))


def table_document(wheel: Path, release: str) -> dict[str, Any]:
    sources = wheel_sources(wheel)
    if not sources:
        raise MetricTableError(f"{wheel.name} has no {SOURCES}*.py")
    return {
        "release": release,
        "source": wheel.name,
        "sha256": sha256_of(wheel),
        "read": sorted(sources),
        "metrics": read_metrics(sources),
    }


def main(argv: list[str] | None = None) -> int:
    return table_command(
        argv,
        description=__doc__.split("\n\n")[0],
        default_out=DEFAULT_OUT,
        document_of=table_document,
        errors=(MetricTableError,),
        describe=lambda document: f"{len(document['metrics'])} metrics",
    )


if __name__ == "__main__":
    sys.exit(main())
