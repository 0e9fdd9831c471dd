"""Rules checked before any resource is registered, reported against config keys.

Most rules belong to the components and run here on the arguments the stack would pass
them, each argument mapped back to the config key that set it. The rest are rules only the
stack can see: how its settings combine across components, and settings the stack file
sets that no component would ever see.
"""

import re

from vllm_serving_components import (
    PORT,
    PORT_NAME,
    autoscaler_problems,
    exposure_problems,
    gpu_claim_problems,
    image_pre_pull_problems,
    model_store_problems,
    node_cache_problems,
    vllm_server_problems,
)
from vllm_serving_components.load_time import TimeToReady
from vllm_serving_components.vllm_server import time_to_ready
from vllm_serving_components.gpu_claim import pod_fragment
from vllm_serving_components.grammar import registry
from vllm_serving_components.model_store import DEFAULTS as STORE_DEFAULTS
from vllm_serving_components.model_store import adapter_paths, model_path
from vllm_serving_components.stage_model import MARKER_NAME

from .component_args import (
    AUTOSCALER_KEYS,
    EXPOSURE_KEYS,
    GPU_KEYS,
    NODE_CACHE_KEYS,
    PRE_PULL_KEYS,
    SERVER_KEYS,
    StoreOutputs,
    autoscaler_args,
    exposure_args,
    gpu_claim_args,
    image_pre_pull_args,
    model_store_args,
    node_cache_args,
    most_replicas,
    nodes,
    store_keys,
    takes_api_key,
    vllm_server_args,
)
from .config import CREDENTIAL_KEYS, FIELD_OF_KEY, INVALID, Problem, StackConfig

PREFLIGHT_MODES = ("error", "warn", "off")
"""What the preflight does with what it finds (stack/preflight.py)."""
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
"""The namespaces Kubernetes creates itself (kubernetes.io/docs/concepts/overview/working-with-objects/namespaces,
"Initial namespaces")."""
AUTOSCALING_KEYS = tuple(key for key in FIELD_OF_KEY if key.startswith(("autoscaling", "monitoring")) and key != "autoscalingEnabled")


def config_words(text: str, keys: dict[str, str]) -> str:
    """A component's text with each argument it names replaced by the config key that sets it."""
    # Only identifiers with '_' or '.': single words (image, host) are also plain English.
    return re.sub(r"\b[a-z]+(?:[_.][a-z_]+)+\b", lambda word: keys.get(word.group(0), word.group(0)), text)


def stack_words(component: str, text: str) -> str:
    """What a component warns about, in config keys (for ``argument_words``)."""
    keys = {"GpuClaim": GPU_KEYS, "VLLMServer": SERVER_KEYS, "Exposure": EXPOSURE_KEYS, "Autoscaler": AUTOSCALER_KEYS}
    return config_words(text, keys.get(component, {}))


def as_config_problems(problems: dict[str, str], keys: dict[str, str]) -> list[Problem]:
    """A component's problems, keyed and worded by the config keys that set each argument."""
    return [Problem(key=keys[arg], message=config_words(message, keys)) for arg, message in problems.items()]


def component_problems(config: StackConfig) -> list[Problem]:
    """Each component's own rules, applied to the arguments this stack would give it."""
    gpu_args = gpu_claim_args(config, config.namespace)
    gpu_problems = gpu_claim_problems(gpu_args, config.name)
    store_args = model_store_args(config, config.namespace)
    store_problems = model_store_problems(store_args, config.name)
    store = _store_for_checks(store_args, store_problems)
    server = vllm_server_args(config, config.namespace, _fragment_for_checks(gpu_args, gpu_problems), store)
    # ModelStore first: its name rule is the tightest (its Job's name adds the longest suffix), so
    # a name too long for any component is told the one limit that fits them all.
    problems = as_config_problems(store_problems, store_keys(config))
    problems += as_config_problems(gpu_problems, GPU_KEYS)
    server_problems = vllm_server_problems(server, config.name)
    problems += as_config_problems(server_problems, SERVER_KEYS)
    # Beside the server on its nodes, which the GPU settings select: checked once those are right.
    if not gpu_problems and (cache := node_cache_args(config, config.namespace, pod_fragment(gpu_args), store)):
        problems += as_config_problems(node_cache_problems(cache, config.name), NODE_CACHE_KEYS)
    if not gpu_problems and (pre_pull := image_pre_pull_args(config, config.namespace, pod_fragment(gpu_args))):
        problems += as_config_problems(image_pre_pull_problems(pre_pull, config.name), PRE_PULL_KEYS)
    problems += as_config_problems(
        exposure_problems(exposure_args(config, config.namespace, {}, PORT, PORT_NAME, takes_api_key(config)), config.name), EXPOSURE_KEYS
    )
    ready = _ready_for_checks(server, server_problems)
    if scaler := autoscaler_args(config, "deployment", {"app": "placeholder"}, PORT_NAME, ready):
        problems += as_config_problems(autoscaler_problems(scaler, config.name), AUTOSCALER_KEYS)
    return problems


READY_READS = ("startup_timeout_minutes", "image_pull_minutes", "model_size_gb", "min_read_mb_per_s",
               "parallel_read_mb_per_s", "node_cache", "load_strategy", "network_volume", "image", "vllm_release",
               "memory", "kv_offload_gib", "gpu", "nodes", "data_parallel_size", "layout")
"""The server arguments its time to ready reads."""


def _ready_for_checks(server, server_problems) -> TimeToReady:
    """The server's time to ready; a stand-in (its defaults) while what it reads is wrong."""
    if any(problem.split(".")[0] in READY_READS for problem in server_problems):
        return time_to_ready({"image_pull_minutes": 0})
    return time_to_ready(server)


def _fragment_for_checks(gpu_args, gpu_problems):
    """The GPU fragment the server's rules see: from the GPU settings, or from a pod's GPU count alone."""
    if not gpu_problems:
        return pod_fragment(gpu_args)
    return pod_fragment({"count": gpu_args["count"]}) if "count" not in gpu_problems else INVALID


def _store_for_checks(store_args, store_problems) -> StoreOutputs:
    """What ModelStore's outputs would be; a stand-in path while the model's own settings are wrong."""
    mount = STORE_DEFAULTS["mount_path"]
    if {"model_id", "revision", "source"} & store_problems.keys():
        path = f"{mount}/model/id/revision"
    else:
        path = model_path(store_args)
    if {"adapters", "adapters.name", "adapters.revision", "source"} & store_problems.keys():
        adapters = {adapter["name"]: f"{mount}/adapters/name/revision" for adapter in store_args["adapters"]}
    else:
        adapters = adapter_paths(store_args)
    return StoreOutputs(claim_name="claim", mount_path=mount, model_path=path, marker_name=MARKER_NAME, adapter_paths=adapters)


def stack_problems(config: StackConfig, bad: set[str]) -> list[Problem]:
    """Rules about how settings of different components combine, and settings with no effect.

    A rule runs only on keys that are readable and pass their components' rules (``bad`` holds
    the rest).
    """

    def ok(*keys: str) -> bool:
        return config.valid(*keys) and not bad.intersection(keys)

    problems = []
    if ok("gpuCount", "gpusPerNode") and config.gpus_per_node and config.gpu_count > config.gpus_per_node:
        if config.gpu_count % config.gpus_per_node:
            problems.append(
                Problem(
                    key="gpuCount",
                    message=f"({config.gpu_count}) is not a whole number of nodes of gpusPerNode ({config.gpus_per_node}); "
                    "a replica spans whole nodes",
                )
            )
    layout_known = not config.gpus_per_node or ok("gpuCount", "gpusPerNode")
    if layout_known and ok("autoscalingEnabled", "autoscalingMaxReplicas", "replicas", "storageAccessMode", "existingClaim"):
        pods = most_replicas(config) * nodes(config)
        if pods > 1 and not config.existing_claim and config.storage_access_mode != "ReadWriteMany":
            problems.append(
                Problem(
                    key="storageAccessMode",
                    message=(
                        f"is {config.storage_access_mode} but up to {pods} server pods must mount the model "
                        "volume, possibly on different nodes; use ReadWriteMany (e.g. storageClass nfs-client) "
                        "or an existingClaim every node can mount"
                    ),
                )
            )
    if ok("gpuQuota", "gpuCount", "autoscalingEnabled", "autoscalingMaxReplicas", "replicas") and config.gpu_quota:
        key = "autoscalingMaxReplicas" if config.autoscaling_enabled else "replicas"
        most = most_replicas(config)
        if most * config.gpu_count > config.gpu_quota:
            problems.append(
                Problem(
                    key=key,
                    message=f"x gpuCount ({most} x {config.gpu_count} = {most * config.gpu_count} GPUs) is above "
                    f"gpuQuota ({config.gpu_quota}); the replicas beyond it could never start: lower it or raise the quota",
                )
            )
    problems += surge_problems(config, ok)
    if config.autoscaling_enabled is True and "replicas" in config.explicit:
        problems.append(
            Problem(
                key="replicas",
                message="is owned by the autoscaler when autoscalingEnabled is true; "
                "set autoscalingMinReplicas and autoscalingMaxReplicas instead",
            )
        )
    if config.autoscaling_enabled is False:
        problems += [
            Problem(key=key, message="has no effect while autoscalingEnabled is false; remove it or enable autoscaling")
            for key in AUTOSCALING_KEYS
            if key in config.explicit
        ]
    if ok("namespace", "createNamespace") and config.create_namespace and config.namespace in SYSTEM_NAMESPACES:
        problems.append(
            Problem(
                key="createNamespace",
                message=f"is true but namespace {config.namespace} is one Kubernetes creates itself "
                f"({', '.join(SYSTEM_NAMESPACES)}); the stack would take it over and set its Pod Security level: "
                "use a namespace of your own, or set createNamespace to false",
            )
        )
    if config.image_registry not in (None, INVALID):
        try:
            registry(config.image_registry)
        except ValueError as error:
            problems.append(Problem(key="imageRegistry", message=str(error)))
    if ok("preflight") and config.preflight not in PREFLIGHT_MODES:
        problems.append(Problem(key="preflight", message=f"must be one of {', '.join(PREFLIGHT_MODES)}: error fails the run on a "
                                "missing prerequisite, warn only reports it, off does not read the cluster"))
    problems += credential_problems(config)
    problems += tls_secret_problems(config, ok)
    problems += price_problems(config, ok)
    return problems


def price_problems(config: StackConfig, ok) -> list[Problem]:
    """Each priced product is one the pods may run on (a misspelt product would leave the cost
    unknown), and the currency is a code."""
    problems = []
    if ok("gpuPriceCurrency") and not re.fullmatch("[A-Z]{3}", config.gpu_price_currency):
        problems.append(Problem(key="gpuPriceCurrency", message="must be an ISO 4217 currency code of three capital letters, e.g. USD or EUR"))
    if not ok("gpuHourlyPrice", "gpuProducts") or not config.gpu_hourly_price:
        return problems
    if not config.gpu_products:
        message = ("prices GPU products but gpuProducts is empty, so the pods may run on any GPU and no price "
                   "applies; pin the products with gpuProducts, or remove gpuHourlyPrice")
        return [*problems, Problem(key="gpuHourlyPrice", message=message)]
    unknown = [product for product in config.gpu_hourly_price if product not in config.gpu_products]
    if unknown:
        problems.append(
            Problem(
                key="gpuHourlyPrice",
                message=f"prices {', '.join(unknown)}, which gpuProducts does not list ({', '.join(config.gpu_products)}); "
                "give each product as its node label nvidia.com/gpu.product spells it, or add it to gpuProducts",
            )
        )
    return problems


def tls_secret_problems(config: StackConfig, ok) -> list[Problem]:
    """The Ingress's TLS Secret is the certificate's alone: cert-manager's ingress-shim writes the
    Secret that spec.tls names (and a Certificate of that name), so it must be no Secret the stack
    creates or reads for a credential."""
    keys = ("host", "tls", "exposureRoute", "tlsSecretName", "apiKey", "apiKeySecretName", "hubToken", "hubTokenSecretName")
    if not ok(*keys) or not (config.host and config.tls) or config.exposure_route != "ingress":
        return []
    tls_secret = config.tls_secret_name or f"{config.name}-tls"
    credentials = {
        "apiKey": f"{config.name}-api-key" if config.api_key is not None else None,
        "apiKeySecretName": config.api_key_secret_name,
        "hubToken": f"{config.name}-hub-token" if config.hub_token is not None else None,
        "hubTokenSecretName": config.hub_token_secret_name,
    }
    problems = []
    for key, secret in credentials.items():
        if secret != tls_secret:
            continue
        if config.tls_secret_name:
            message = f"is {tls_secret}, the Secret that {key} also uses"
            key = "tlsSecretName"
        else:
            message = f"is {tls_secret}, the Ingress's TLS Secret (the default, <name>-tls)"
        problems.append(Problem(key=key, message=f"{message}: cert-manager writes the certificate into the TLS Secret; "
                                "give the two Secrets different names"))
    return problems


def surge_problems(config: StackConfig, ok) -> list[Problem]:
    """A rollout's surge replica counts against the GPU quota: at the fewest replicas, one more must fit.

    Above the fewest, a quota sized for the most replicas leaves the room; at the most, the
    rollout stops one old replica first (components.rollout).
    """
    keys = ("gpuQuota", "gpuCount", "maxSurge", "autoscalingEnabled", "autoscalingMinReplicas", "replicas")
    if not ok(*keys) or not config.gpu_quota or not config.max_surge:
        return []
    fewest = max(config.autoscaling_min_replicas, 1) if config.autoscaling_enabled else config.replicas
    needed = (fewest + 1) * config.gpu_count
    if needed <= config.gpu_quota:
        return []
    fewest_key = "autoscalingMinReplicas" if config.autoscaling_enabled else "replicas"
    return [
        Problem(
            key="maxSurge",
            message=f"({config.max_surge}) starts a replica beside the {fewest} of {fewest_key} during a rollout: "
            f"({fewest} + 1) x gpuCount ({config.gpu_count}) = {needed} GPUs, above gpuQuota ({config.gpu_quota}), so "
            f"the quota refuses it and the rollout stalls. Raise gpuQuota to {needed}, or set maxSurge 0"
            + (" (a rollout at one replica then stops it first: acceptServiceGap)" if fewest == 1 else ""),
        )
    ]


SECRET_KEY_OF = {"apiKeySecretKey": "apiKeySecretName", "hubTokenSecretKey": "hubTokenSecretName"}
"""The key inside a Secret, and the setting naming that Secret."""


def credential_problems(config: StackConfig) -> list[Problem]:
    """Credentials only as Pulumi secrets; a Secret's key only with the Secret's name."""
    problems = [
        Problem(key=key, message=f"is in plain text in the stack file; set it encrypted: pulumi config set --secret {key} ...")
        for key in CREDENTIAL_KEYS
        if config.value(key) not in (None, INVALID) and key not in config.secret
    ]
    problems += [
        Problem(key=key, message=f"has no effect without {name}; set both or neither")
        for key, name in SECRET_KEY_OF.items()
        if key in config.explicit and config.value(name) is None
    ]
    return problems


def cross_field_problems(config: StackConfig, unreadable: set[str]) -> list[Problem]:
    """Component and stack rules, one problem per key, leaving out keys whose value could not be read.

    A key that feeds several components (name, namespace, image) is reported once, with the
    first component's words.
    """
    found: dict[str, Problem] = {}
    for problem in component_problems(config):
        if problem.key not in unreadable:
            found.setdefault(problem.key, problem)
    for problem in stack_problems(config, unreadable | found.keys()):
        found.setdefault(problem.key, problem)
    return list(found.values())
