"""The vllm-serving policy pack: this product's promises as mandatory policies for every
``pulumi preview`` and ``pulumi up`` run with ``--policy-pack policy``.

Only the wiring lives here: constructing PolicyPack starts the pack's server and blocks, so
the rules live in rules.py, where tests import them.
"""

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

import rules

PolicyPack(
    name="vllm-serving",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="vllm-pinned-images",
            description="Every container and init container runs an image pinned by a tag other than latest, or by digest.",
            validate=rules.resource_validation(rules.pinned_images),
        ),
        ResourceValidationPolicy(
            name="vllm-server-gpu-limits",
            description="The vLLM server container has a GPU limit of at least 1 (nvidia.com/gpu; a MIG instance or DRA claim).",
            validate=rules.resource_validation(rules.server_gets_gpus),
        ),
        ResourceValidationPolicy(
            name="vllm-server-probes",
            description="The vLLM server container has startup, readiness and liveness probes.",
            validate=rules.resource_validation(rules.server_probes),
        ),
        ResourceValidationPolicy(
            name="vllm-server-shm",
            description="A vLLM server with tensor or pipeline parallelism above 1 has a memory-backed /dev/shm.",
            validate=rules.resource_validation(rules.server_shm_for_parallelism),
        ),
        ResourceValidationPolicy(
            name="vllm-no-plain-secret-env",
            description="Environment variables whose names say secret come from a Secret (valueFrom.secretKeyRef), never value.",
            validate=rules.resource_validation(rules.no_plain_secret_env),
        ),
        ResourceValidationPolicy(
            name="vllm-non-root",
            description="Containers run as non-root, without privilege escalation, with every capability dropped.",
            validate=rules.resource_validation(rules.runs_as_non_root),
        ),
        StackValidationPolicy(
            name="vllm-public-route-needs-api-key",
            description="A public route to a vLLM server needs its API key and routes /v1 alone, "
            "unless the stack allows public access without a key.",
            validate=rules.stack_validation(rules.public_routes_need_api_key),
            config_schema=PolicyConfigSchema(
                properties={
                    rules.ALLOW_PUBLIC_WITHOUT_API_KEY: {
                        "type": "boolean",
                        "default": False,
                        "description": "Allow public routes to vLLM servers that take no API key, in every stack this "
                        "configuration is used for. A stack can allow it for itself with its own "
                        "allowPublicWithoutApiKey setting.",
                    }
                }
            ),
        ),
    ],
)
