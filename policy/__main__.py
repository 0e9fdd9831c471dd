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
        *(
            StackValidationPolicy(
                name=policy.name,
                description=policy.description,
                validate=rules.stack_validation(policy.rule),
                config_schema=PolicyConfigSchema(properties=policy.config),
            )
            for policy in rules.STACK_POLICIES
        ),
    ],
)
