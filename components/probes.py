"""Health probes for a server that may take most of an hour to load its model."""

import math

HEALTH_PATH = "/health"
STARTUP_PERIOD_SECONDS = 10
MAX_STARTUP_MINUTES = 24 * 60
"""A day: longer than any model load; the probe's failureThreshold stays far inside int32."""


def health_probes(port_name: str, startup_timeout_minutes: int) -> dict[str, dict]:
    """startupProbe, readinessProbe and livenessProbe on vLLM's /health."""
    return probes_with({"httpGet": {"path": HEALTH_PATH, "port": port_name}}, startup_timeout_minutes)


def probes_with(handler: dict, startup_timeout_minutes: int) -> dict[str, dict]:
    """startupProbe, readinessProbe and livenessProbe with one handler (httpGet or exec).

    The startup probe holds the other two back until the model has loaded, so liveness never
    kills a pod that is still loading; its budget is the startup timeout.
    """
    return {
        "startupProbe": {
            **handler,
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(startup_timeout_minutes * 60 / STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {**handler, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**handler, "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4},
    }
