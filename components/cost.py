"""What a deployment's GPUs cost a month: GPUs, GPU-hours and cost at the fewest and the most replicas.

Pure arithmetic for a plan, before anything runs. A replica's GPUs are the devices its pods
hold (whole GPUs, the GPUs a HAMi slice spans, MIG instances or DRA devices), over all the
nodes of a multi-node group. A HAMi slice is counted as the whole GPU it sits on, as the
device plugin's ``nvidia.com/gpu`` and the namespace's GPU quota count it: what a share of a
card costs depends on who else shares it, which a plan cannot know; a cluster that bills slices
by share prices its sliced products lower. Likewise a MIG instance is priced as its product's
GPU hour unless that product's price says otherwise.

A month is 730 hours (365 x 24 / 12). Pods may run on any of the products they are pinned to,
so a month is priced at the dearest of them: the plan never understates. Without a price for
every one of them, or without pinned products (any GPU), the GPUs and GPU-hours are given and
the cost is unknown, with the reason.

A program that exports its ``gpu_cost`` as the stack output ``COST_OUTPUT`` gets it in the
rendering's summary (``components.summary``) and in a review's comparison.
"""

from typing import Mapping, Optional, Sequence

from typing_extensions import TypedDict

HOURS_PER_MONTH = 730
"""Hours of an average month: 365 days x 24 hours / 12."""
COST_OUTPUT = "gpuCost"
"""The stack output that carries a GpuCost."""


class Bounds(TypedDict):
    """A figure at the fewest and at the most replicas."""

    min: float
    """At the fewest replicas."""
    max: float
    """At the most replicas."""


class GpuCost(TypedDict):
    """GPUs and their cost a month, at the fewest and the most replicas (JSON, a stack output)."""

    gpusPerReplica: int
    """Devices one replica holds, over all its pods."""
    replicas: Bounds
    """The fewest and the most replicas."""
    gpus: Bounds
    """GPUs at the fewest and the most replicas."""
    gpuHoursPerMonth: Bounds
    """GPU-hours in a month of HOURS_PER_MONTH."""
    costPerMonth: Optional[Bounds]
    """What those GPU-hours cost; None when a product has no price."""
    currency: str
    """The currency of every price, e.g. USD."""
    pricedAs: str
    """Which product's hourly price the cost uses, or why the cost is unknown."""


def bounds(fewest: float, most: float) -> Bounds:
    return {"min": fewest, "max": most}


def gpu_cost(
    gpus_per_replica: int,
    fewest: int,
    most: int,
    products: Sequence[str],
    prices: Mapping[str, float],
    currency: str = "USD",
) -> GpuCost:
    """The GPUs of ``fewest`` to ``most`` replicas of ``gpus_per_replica`` GPUs each, on any of
    ``products`` (empty: any GPU), priced per GPU-hour by ``prices`` (product -> price)."""
    hours = bounds(gpus_per_replica * fewest * HOURS_PER_MONTH, gpus_per_replica * most * HOURS_PER_MONTH)
    unpriced = [product for product in products if product not in prices]
    cost: Optional[Bounds] = None
    if not products:
        priced_as = "unknown: the pods may run on any GPU product; pin the products to price them"
    elif unpriced:
        priced_as = f"unknown: no price for {', '.join(unpriced)}"
    else:
        dearest = max(products, key=lambda product: prices[product])
        price = prices[dearest]
        cost = bounds(round(hours["min"] * price, 2), round(hours["max"] * price, 2))
        either = "" if len(products) == 1 else f", the dearest of the {len(products)} products the pods may run on"
        priced_as = f"{dearest} at {price:,.2f} {currency} per GPU-hour{either}"
    return {
        "gpusPerReplica": gpus_per_replica,
        "replicas": bounds(fewest, most),
        "gpus": bounds(gpus_per_replica * fewest, gpus_per_replica * most),
        "gpuHoursPerMonth": hours,
        "costPerMonth": cost,
        "currency": currency,
        "pricedAs": priced_as,
    }


def money(amount: Optional[float], currency: str) -> str:
    return "unknown" if amount is None else f"{amount:,.2f} {currency}"


def _sides(cost: GpuCost) -> tuple[str, ...]:
    """The replica bounds worth a row: one when the fewest and the most are the same."""
    return ("max",) if cost["replicas"]["min"] == cost["replicas"]["max"] else ("min", "max")


def _replicas(cost: GpuCost, side: str) -> str:
    replicas = int(cost["replicas"][side])  # type: ignore[literal-required]
    return f"{side} {replicas} replica{'' if replicas == 1 else 's'}"


def _spent(cost: GpuCost, side: str) -> Optional[float]:
    return cost["costPerMonth"][side] if cost["costPerMonth"] else None  # type: ignore[literal-required]


def cost_rows(cost: GpuCost) -> list[tuple[str, str, str, str]]:
    """(replicas, GPUs, GPU-hours per month, cost per month) at the fewest and the most replicas;
    one row when they are the same."""
    return [
        (_replicas(cost, side), f"{int(cost['gpus'][side]):,}", f"{int(cost['gpuHoursPerMonth'][side]):,}",  # type: ignore[literal-required]
         money(_spent(cost, side), cost["currency"]))
        for side in _sides(cost)
    ]


def gpus(number: int) -> str:
    return f"{number:,} GPU{'' if number == 1 else 's'}"


def cost_heading(cost: GpuCost) -> str:
    """What the figures rest on: GPUs per replica, the month, the price."""
    return f"GPU cost ({gpus(cost['gpusPerReplica'])} per replica, {HOURS_PER_MONTH} h a month; {cost['pricedAs']})"


def cost_lines(cost: GpuCost) -> list[str]:
    """The cost as lines of text: a heading with its basis, then one line per replica bound."""
    lines = [f"{cost_heading(cost)}:"]
    for side in _sides(cost):
        spent = _spent(cost, side)
        cost_text = "cost unknown" if spent is None else f"{money(spent, cost['currency'])} per month"
        hours = int(cost["gpuHoursPerMonth"][side])  # type: ignore[literal-required]
        lines.append(f"  {_replicas(cost, side)}: {gpus(int(cost['gpus'][side]))}, {hours:,} GPU-hours per month, {cost_text}")  # type: ignore[literal-required]
    return lines


def cost_change(before: Optional[GpuCost], after: Optional[GpuCost]) -> list[str]:
    """What changed from one GpuCost to another, one phrase per figure that changed; a side
    without a cost (an older program, a new stack) says so."""
    if before is None or after is None:
        return [] if before == after else [f"not computed at {'base' if before is None else 'head'}"]
    changes = []
    for label, key in (("GPUs", "gpus"), ("GPU-hours per month", "gpuHoursPerMonth"), ("cost per month", "costPerMonth")):
        for side in ("min", "max"):
            old = before[key][side] if before[key] else None  # type: ignore[literal-required]
            new = after[key][side] if after[key] else None  # type: ignore[literal-required]
            if old == new:
                continue
            if key == "costPerMonth":
                old_text, new_text = money(old, before["currency"]), money(new, after["currency"])
            else:
                old_text, new_text = f"{int(old):,}", f"{int(new):,}"
            changes.append(f"{label} at {side} replicas {old_text} → {new_text}")
    if before["pricedAs"] != after["pricedAs"]:
        changes.append(f"priced as {after['pricedAs']} (was {before['pricedAs']})")
    return changes
