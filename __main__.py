"""The stack program: read and validate config, compose the components, export the endpoint."""

import pulumi
import pulumi_kubernetes as k8s

from vllm_serving_components import (
    PORT,
    PORT_NAME,
    Autoscaler,
    Exposure,
    GpuClaim,
    ImagePrePull,
    ModelStore,
    NodeCache,
    VLLMServer,
)
from vllm_serving_components.arguments import argument_words
from vllm_serving_components.cost import COST_OUTPUT
from vllm_serving_components.kept import kept_metadata, kept_options
from stack.checks import stack_words
from stack.component_args import (
    autoscaler_args,
    exposure_args,
    gpu_claim_args,
    image_pre_pull_args,
    model_store_args,
    node_cache_args,
    vllm_server_args,
)
from vllm_serving_components.vllm_server import time_to_ready
from stack.cost import stack_cost
from stack.loading import load_stack_config
from stack.namespace import pod_security_labels
from stack.preflight import run_preflight

config = load_stack_config()
name = config.name
# The cluster read for every prerequisite the plan needs, before any resource is registered.
run_preflight(config)

namespace: pulumi.Input[str] = config.namespace
if config.create_namespace:
    # Kept on destroy: deleting a namespace deletes everything in it, the model claim and
    # whatever else came to live there. The next up adopts it (components/kept.py).
    namespace = k8s.core.v1.NamespacePatch(
        config.namespace,
        metadata=kept_metadata("Namespace", {"name": config.namespace, "labels": pod_security_labels(config)}),
        opts=kept_options("kubernetes:core/v1:Namespace"),
    ).metadata.name

# Whatever a component warns about names the config keys that set its arguments.
with argument_words(stack_words):
    gpu = GpuClaim(name, gpu_claim_args(config, namespace))
    store = ModelStore(name, model_store_args(config, namespace, gpu.pod_fragment["tolerations"]))
    stored = {
        "claim_name": store.claim_name,
        "mount_path": store.mount_path,
        "model_path": store.model_path,
        "marker_name": store.marker_name,
        "adapter_paths": store.adapter_paths,
    }
    if pre_pull := image_pre_pull_args(config, namespace, gpu.pod_fragment):
        ImagePrePull(name, pre_pull)
    cache = None
    if caching := node_cache_args(config, namespace, gpu.pod_fragment, stored):
        cache = NodeCache(name, caching).mount
    server_args = vllm_server_args(config, namespace, gpu.pod_fragment, stored, cache)
    server = VLLMServer(name, server_args)
    exposure = Exposure(name, exposure_args(config, namespace, server.selector_labels, PORT, PORT_NAME, server.takes_api_key))
    if scaling := autoscaler_args(config, server.deployment_name, server.selector_labels, PORT_NAME, time_to_ready(server_args)):
        scaler = Autoscaler(name, scaling)
        if config.autoscaling_engine == "hpa":
            pulumi.export("adapterRules", scaler.adapter_rules)

pulumi.export("endpoint", exposure.endpoint)
pulumi.export("inClusterEndpoint", exposure.in_cluster_endpoint)
pulumi.export("servedModelName", config.served_model_name)
pulumi.export("namespace", namespace)
pulumi.export("modelPath", store.model_path)
pulumi.export("claimName", store.claim_name)
pulumi.export("deploymentName", server.deployment_name)
pulumi.export("gpuCapacity", server.capacity)
pulumi.export(COST_OUTPUT, stack_cost(config))
pulumi.export("timeToReady", server.time_to_ready.apply(lambda ready: ready["text"]))
if config.api_key is not None:
    pulumi.export("apiKey", pulumi.Output.secret(config.api_key))
