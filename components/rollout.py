"""How a server rolls out and how long it takes: the policy behind its strategy, disruption
budget and timeouts.

pulumi-kubernetes waits for a Deployment until the whole rollout is complete (the new
ReplicaSet's ready replicas equal the spec; provider pkg/await/deployment.go), so the update
timeout must cover every replica restarting in turn, not one pod.

Never below one serving replica (docs/rollouts.md says why):
- A rollout starts a new replica before it stops an old one (maxSurge 1). maxUnavailable is the
  percentage that rounds down to 0 at one replica and to at least 1 at the most replicas
  (ceil(100 / most)%): the Deployment controller and LeaderWorkerSet both scale a percentage by
  the current replicas and round maxUnavailable down (kubernetes pkg/controller/deployment/util
  ResolveFenceposts; lws pkg/controllers/leaderworkerset_controller.go rollingUpdateParameters).
  Below the most replicas a quota sized for them leaves room for the surge replica; at the most,
  where it has none, one old replica stops first and the others keep serving.
- Without a surge (maxSurge 0) the only choice is maxUnavailable 1: at one replica a rollout
  stops it before its successor is ready. That is the service gap the plan warns about. A
  percentage cannot help there: when both resolve to 0 the Deployment controller takes 1
  anyway, and LeaderWorkerSet's webhook refuses the update.
- A drain follows the same rule through the PodDisruptionBudget: with at least two replicas
  always running, one pod at a time (maxUnavailable 1); when one may be all there is,
  minAvailable is the percentage that keeps a lone replica's every pod (a drain waits) and lets
  one replica of two go. The disruption controller rounds minAvailable up (pkg/controller/
  disruption getExpectedPodCount). Accepting the gap restores maxUnavailable 1.
"""

import math
from typing import Union

ENGINE_START_MINUTES = 5
"""Beyond reading the weights: engine start, memory profiling, CUDA graph capture."""
SHUTDOWN_SECONDS = 30
"""After the drain, time for vLLM to stop before the kubelet kills it."""
MARGIN_MINUTES = 5
"""Scheduling, controller and probe delays around each wait."""

IntOrPercent = Union[int, str]


def termination_grace_seconds(drain_seconds: int) -> int:
    return drain_seconds + SHUTDOWN_SECONDS


def group_wait_seconds(image_pull_minutes: int) -> int:
    """How long the pods of a multi-node group wait for each other to join its leader.

    They are created together; one may still be pulling its image on a fresh node while another
    runs, so the wait covers one image pull and the scheduling margin.
    """
    return (image_pull_minutes + MARGIN_MINUTES) * 60


def ready_within_minutes(startup_minutes: int, image_pull_minutes: int) -> int:
    """Minutes within which a new pod is ready: its image pull, its startup budget and a margin."""
    return image_pull_minutes + startup_minutes + MARGIN_MINUTES


def wave_minutes(startup_minutes: int, image_pull_minutes: int, drain_seconds: int) -> int:
    """One step of a rollout: an old pod drains and stops, a new one pulls its image and loads.

    The Deployment's progressDeadlineSeconds is this step: within it a rollout always makes
    progress (a pod becomes ready, or a ReplicaSet scales).
    """
    stop = math.ceil(termination_grace_seconds(drain_seconds) / 60)
    return stop + ready_within_minutes(startup_minutes, image_pull_minutes)


def rolling_update(*, most_replicas: int, max_surge: int) -> dict[str, IntOrPercent]:
    """maxSurge and maxUnavailable that keep one replica serving whenever a surge replica fits."""
    if max_surge == 0:
        return {"maxSurge": 0, "maxUnavailable": 1}
    if most_replicas == 1:
        return {"maxSurge": max_surge, "maxUnavailable": 0}
    return {"maxSurge": max_surge, "maxUnavailable": f"{math.ceil(100 / most_replicas)}%"}


def scaled(value: IntOrPercent, replicas: int, round_up: bool) -> int:
    """An int-or-percent as the controllers scale it (apimachinery GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return value
    exact = int(value.rstrip("%")) * replicas / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def rollout_stops_the_last(*, fewest_replicas: int, max_surge: int) -> bool:
    """Whether a rollout at the fewest replicas stops the only one before its successor is ready."""
    return max_surge == 0 and fewest_replicas == 1


def disruption_budget(*, fewest_replicas: int, pods_per_replica: int, accept_gap: bool) -> dict[str, IntOrPercent]:
    """The PodDisruptionBudget's limit over every pod of the server.

    One eviction at a time when two replicas always run (or the gap is accepted). Else the
    share of pods that must stay: all pods of a lone replica, one replica fewer of two:
    (n - 1) / n < share <= (2n - 1) / (2n) for n pods per replica.
    """
    if fewest_replicas >= 2 or accept_gap:
        return {"maxUnavailable": 1}
    return {"minAvailable": f"{100 * (2 * pods_per_replica - 1) // (2 * pods_per_replica)}%"}


def rollout_timeouts(
    *,
    max_replicas: int,
    rolling: dict[str, IntOrPercent],
    startup_minutes: int,
    image_pull_minutes: int,
    drain_seconds: int,
) -> tuple[int, int]:
    """(create, update) timeouts in minutes.

    Create: the first pods start together, so one pod's image pull and startup budget.
    Update: at the most replicas, pods are replaced in waves of maxUnavailable (a surge replica
    may find no room there), or of maxSurge where none may be down; each wave waits for the old
    pod to drain and stop, the new one to pull its image and load.
    """
    create = ready_within_minutes(startup_minutes, image_pull_minutes)
    at_once = scaled(rolling["maxUnavailable"], max_replicas, False) or scaled(rolling["maxSurge"], max_replicas, True)
    waves = math.ceil(max_replicas / at_once)
    update = waves * wave_minutes(startup_minutes, image_pull_minutes, drain_seconds)
    return create, update
