"""The vllm-serving policy pack: this product's promises as mandatory policies for every
``pulumi preview`` and ``pulumi up`` run with ``--policy-pack policy``.

Only the wiring lives here: constructing PolicyPack starts the pack's server and blocks, so
the rules (and the list of policies) live in rules.py, where tests and the offline check
(``python -m policy.check rendered/<stack>``) import them.
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
        *(
            ResourceValidationPolicy(name=policy.name, description=policy.description, validate=rules.resource_validation(policy.rule))
            for policy in rules.RESOURCE_POLICIES
        ),
        StackValidationPolicy(
            name=rules.STACK_POLICY.name,
            description=rules.STACK_POLICY.description,
            validate=rules.stack_validation(rules.STACK_POLICY.rule),
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
        StackValidationPolicy(
            name=rules.BUDGET_POLICY.name,
            description=rules.BUDGET_POLICY.description,
            validate=rules.stack_validation(rules.BUDGET_POLICY.rule),
            config_schema=PolicyConfigSchema(
                properties={
                    rules.MAX_GPUS: {
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                        "description": "The most GPUs (devices) a stack's vLLM servers may take at their most replicas; 0 for no cap.",
                    },
                    rules.MAX_MONTHLY_GPU_COST: {
                        "type": "number",
                        "minimum": 0,
                        "default": 0,
                        "description": "The most those GPUs may cost a month (730 h) at the dearest product each workload "
                        "may run on, in the currency of gpuHourlyPrice; 0 for no cap.",
                    },
                    rules.GPU_HOURLY_PRICE: {
                        "type": "object",
                        "additionalProperties": {"type": "number", "minimum": 0},
                        "default": {},
                        "description": "The price of a GPU-hour by product, as the node label nvidia.com/gpu.product "
                        "names it, e.g. {\"NVIDIA-H100-80GB-HBM3\": 2.5}. The pack's own prices: a stack's "
                        "gpuHourlyPrice does not lower its cap.",
                    },
                }
            ),
        ),
    ],
)
