"""Escaping at the boundaries where a value becomes another language's text.

Applied whatever validation came before: a value that reaches a container's command, args or
env, or a PromQL query, means exactly itself there.
"""

from typing import Mapping


def container_text(value: str) -> str:
    """A literal for a container's command, args or env value.

    The kubelet expands ``$(VAR)`` there from the container's environment, and turns ``$$``
    into ``$`` (k8s.io/kubernetes third_party/forked/golang/expansion/expand.go), so doubling
    every ``$`` makes the process see exactly ``value``: a model name of ``$(VLLM_API_KEY)``
    stays that text instead of becoming the key.
    """
    return value.replace("$", "$$")


def container_texts(values: list[str]) -> list[str]:
    return [container_text(value) for value in values]


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal (Go escaping rules, as PromQL's lexer uses)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def promql_selector(metric: str, labels: Mapping[str, str]) -> str:
    """``metric{label="value",...}`` with every value escaped."""
    matchers = ",".join(f"{name}={promql_string(value)}" for name, value in labels.items())
    return f"{metric}{{{matchers}}}"
