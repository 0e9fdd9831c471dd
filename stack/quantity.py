"""Kubernetes resource quantities (``500m``, ``160Gi``, ``1e3``), for comparing settings."""

import re
from decimal import Decimal

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:([KMGTPE]i|[mkMGTPE])|[eE]([-+]?[0-9]+))?$")
_FACTORS = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": Decimal(1024) ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}


def parse_quantity(text: str) -> Decimal:
    """The quantity's value in base units; ValueError if it is not a Kubernetes quantity."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 8, 32Gi or 500G")
    number, suffix, exponent = match.groups()
    if exponent is not None:
        return Decimal(number) * Decimal(10) ** int(exponent)
    return Decimal(number) * _FACTORS[suffix or ""]
