"""How long a new replica takes to be ready, from where it reads the weights and how fast.

One figure drives every wait of the server: the load budget (the weights' bytes over the read
rate of the path a pod loads from, plus the engine's start) is the startup probe's budget, and
with the image pull it is one step of a rollout (progressDeadlineSeconds) and the timeouts of
`pulumi up` (components.rollout). A faster path shortens them all.

The paths, slowest first:
- the model volume read by one loader (vLLM's eager or lazy safetensors loading): the rate a
  network file system gives one reader;
- the model volume read by a parallel loader (a network file system gives its bandwidth to many
  concurrent readers, not one);
- the node-local copy of the weights (components.node_cache), read from the node's own disk.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .rollout import ENGINE_START_MINUTES

UNKNOWN_SIZE_STARTUP_MINUTES = 30
"""The load budget when the weights' size is unknown: the probe's budget before it was derived."""


class LoadPath(NamedTuple):
    """Where a pod reads the weights from, and the slowest rate expected there."""

    source: str
    """What is read, as the plan states it: "node-local disk", "model volume, parallel reads", ..."""
    read_mb_per_s: int
    """The slowest rate, in MB/s, expected on that path."""
    setting: str
    """The argument that states the rate."""


def read_minutes(model_size_gb: float, read_mb_per_s: int) -> int:
    """Minutes to read the weights once at the given rate, rounded up."""
    return math.ceil(model_size_gb * 1000 / read_mb_per_s / 60)


def load_minutes(model_size_gb: float, read_mb_per_s: int) -> int:
    """Minutes a pod needs to load a model: one read of the weights at the given rate, then start.

    The tensor-parallel ranks of one pod share the node's page cache, so the volume is read
    about once per pod.
    """
    return read_minutes(model_size_gb, read_mb_per_s) + ENGINE_START_MINUTES


def derived_startup_minutes(model_size_gb: Optional[float], path: LoadPath) -> int:
    """The load budget the plan derives: the read on the path and the engine's start."""
    if model_size_gb is None:
        return UNKNOWN_SIZE_STARTUP_MINUTES
    return load_minutes(model_size_gb, path.read_mb_per_s)


class TimeToReady(NamedTuple):
    """A new replica's time to ready, in parts, as the plan states it."""

    image_pull_minutes: int
    """The image pull on a node that has never run the image (0 where it is pre-pulled)."""
    startup_minutes: int
    """The load budget: derived, or the override."""
    derived_minutes: int
    """The load budget derived from the weights' size and the path's rate."""
    overridden: bool
    """Whether startup_minutes is an override of the derived figure."""
    path: LoadPath
    """Where the weights are read from."""
    model_size_gb: Optional[float]
    """The weights' size, when known."""

    @property
    def minutes(self) -> int:
        return self.image_pull_minutes + self.startup_minutes

    def summary(self) -> dict[str, Any]:
        """The figures, as the component's output names them."""
        return {
            "minutes": self.minutes,
            "imagePullMinutes": self.image_pull_minutes,
            "loadMinutes": self.startup_minutes,
            "derivedLoadMinutes": self.derived_minutes,
            "loadOverridden": self.overridden,
            "readsFrom": self.path.source,
            "readMBps": self.path.read_mb_per_s,
            "text": self.describe(),
        }

    def describe(self) -> str:
        """One line: the total and its parts, and the override beside the derived figure."""
        if self.model_size_gb is None:
            load = f"load {self.derived_minutes} min (the weights' size is unknown)"
        else:
            load = (
                f"read {self.model_size_gb:g} GB from {self.path.source} at {self.path.read_mb_per_s} MB/s "
                f"{self.derived_minutes - ENGINE_START_MINUTES} min + engine start {ENGINE_START_MINUTES} min"
            )
        if self.overridden:
            load = f"load budget {self.startup_minutes} min as set (derived: {load})"
        return f"{self.minutes} min: image pull {self.image_pull_minutes} min + {load}"
