from typing import Any, Protocol

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass


def config(cls=None, *, config: ConfigDict | None = None, **kwargs: Any):
    """Make a pydantic dataclass that forbids extra fields."""

    def decorator(cls):
        return dataclass(cls, config=ConfigDict(extra="forbid"), **kwargs)

    if cls is None:
        return decorator
    return decorator(cls)


class SupportsHash(Protocol):
    def compute_hash(self) -> str: ...
