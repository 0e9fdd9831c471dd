"""How long a server takes to load, stop and roll out: the numbers behind its timeouts.

pulumi-kubernetes waits for a Deployment until the whole rollout is complete (the new
ReplicaSet's ready replicas equal the spec; provider pkg/await/deployment.go), so the update
timeout must cover every replica restarting in turn, not one pod.
"""

import math

ENGINE_START_MINUTES = 5
"""Beyond reading the weights: engine start, memory profiling, CUDA graph capture."""
SHUTDOWN_SECONDS = 30
"""After the drain, time for vLLM to stop before the kubelet kills it."""
MARGIN_MINUTES = 5
"""Scheduling, controller and probe delays around each wait."""


def load_minutes(model_size_gb: float, read_mb_per_s: int) -> int:
    """Minutes a pod needs to load a model: one read of the weights at the given rate, then start.

    The tensor-parallel ranks of one pod share the node's page cache, so the volume is read
    about once per pod.
    """
    return math.ceil(model_size_gb * 1000 / read_mb_per_s / 60) + ENGINE_START_MINUTES


def termination_grace_seconds(drain_seconds: int) -> int:
    return drain_seconds + SHUTDOWN_SECONDS


def ready_within_minutes(startup_minutes: int, image_pull_minutes: int) -> int:
    """Minutes within which a new pod is ready: its image pull, its startup budget and a margin."""
    return image_pull_minutes + startup_minutes + MARGIN_MINUTES


def rollout_timeouts(
    *,
    max_replicas: int,
    max_surge: int,
    max_unavailable: int,
    startup_minutes: int,
    image_pull_minutes: int,
    drain_seconds: int,
) -> tuple[int, int]:
    """(create, update) timeouts in minutes.

    Create: the first pods start together, so one pod's image pull and startup budget.
    Update: pods are replaced in waves of max_surge + max_unavailable; each wave waits for
    the old pod to drain and stop, the new one to pull its image and load.
    """
    create = ready_within_minutes(startup_minutes, image_pull_minutes)
    waves = math.ceil(max_replicas / (max_surge + max_unavailable))
    stop = math.ceil(termination_grace_seconds(drain_seconds) / 60)
    update = waves * (stop + image_pull_minutes + startup_minutes) + MARGIN_MINUTES
    return create, update
