"""The Gateway API Inference Extension's parts of Exposure's inference route: the InferencePool
that selects the server's pods, and the Endpoint Picker (EPP) that scores them per request.

The facts below are from the extension's v1.5.0 module (sigs.k8s.io/gateway-api-inference-extension,
the newest release whose EPP is in the module: from v1.6 it lives in llm-d's router):
- The EPP finds its pool by --pool-name and --pool-namespace (pkg/epp/server/options.go); an
  endpoint is a Ready pod that the pool's selector matches, at each of its targetPorts; it scrapes
  each endpoint's /metrics (vllm:num_requests_waiting, vllm:kv_cache_usage_perc, ...).
- Its config (EndpointPickerConfig, inference.networking.x-k8s.io/v1alpha1, picker_config below) is its
  built-in default, written out (pkg/epp/config/loader/defaults.go): queue 2, KV cache 2, prefix
  cache 3; with LoRA adapters served, also LoRA affinity 1 (LORA_SCORER).
- It serves ext-proc over gRPC on 9002, TLS with a self-signed certificate by default (the
  Gateway's side of the protocol), gRPC health on 9003, its metrics on 9090. Its metrics endpoint
  asks the API to authenticate every scrape unless --metrics-endpoint-auth=false, and it exports
  traces to localhost:4317 unless --tracing=false: both are turned off, as its chart does for traces.
- It needs get/list/watch on pods and inferencepools in the pool's namespace, nothing more
  without leader election (config/charts/epplib/templates/_rbac.yaml).
- Its health service answers SERVING once the pool has synced; the chart probes the service name
  inference-extension (cmd/epp/runner/health.go: without leader election every name gets the same answer).
- What happens when the EPP cannot answer is the Gateway's business, told by the pool's
  endpointPickerRef.failureMode: FailOpen (any ready endpoint) or FailClose (the request fails;
  the CRD's default).
"""

from .network import API_PORTS, gateway_ext_proc
from .pods import ext_proc_container, locked_down, projected_api_access

POOL_API_VERSION = "inference.networking.k8s.io/v1"
POOL_GROUP = "inference.networking.k8s.io"
PICKER_IMAGE = "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
GRPC_PORT = 9002
HEALTH_PORT = 9003
METRICS_PORT = 9090
FAILURE_MODES = ("FailOpen", "FailClose")
CONFIG_FILE = "epp.yaml"
CONFIG_DIR = "/config"
LORA_SCORER = "lora-affinity-scorer"
"""EPP v1.5.0's LoRA affinity scorer (pkg/epp/framework/plugins/scheduling/scorer/loraaffinity): a pod
that has the request's `model` (an adapter's name) loaded scores 1, one with a free adapter slot
0.8, one loading it 0.6, a full one 0. It reads the adapters each pod runs and waits for, and its
slots, from vLLM's vllm:lora_requests_info (labels running_lora_adapters, waiting_lora_adapters,
max_lora), which the core-metrics-extractor scrapes for vLLM by default (pkg/epp/framework/plugins/
datalayer/extractor/metrics/factories.go loraSpec). It has no parameters; weight 1 is the loader's
default for a scorer (pkg/epp/config/loader/defaults.go DefaultScorerWeight)."""


FLOW_CONTROL_GATE = "flowControl"
"""EPP v1.5.0's flow control layer, on by this feature gate of its config (pkg/epp/flowcontrol/config.go
FeatureGate; site-src/guides/flow-control.md). While the pool is saturated, by its default
utilization detector when every pod has more than 5 requests waiting or more than 80% of its KV
cache in use (pkg/epp/framework/plugins/flowcontrol/saturationdetector/utilization/config.go), the
picker holds new requests in its own queues, up to 1 GB of request bodies per priority band
(pkg/epp/flowcontrol/registry/config.go), instead of piling them onto the servers' queues; each
is dispatched, to the pod that scores best then, when a pod has room, or fails when its client
gives up. Without the gate, every request goes to a pod at once.

The detector's saturation is the mean over the pods of each one's larger ratio, waiting/5 or KV
use/0.8 (utilization/detector.go Saturation): one pod with 40 requests waiting makes a pool of
three saturated (8/3) while the other two are idle, and then every request waits in the picker
until that queue drains or the request's deadline passes (measured in tests/e2e/
test_endpoint_picker.py). So it is not on by default."""


def picker_config(lora_affinity: bool, flow_control: bool) -> str:
    """The EPP's EndpointPickerConfig: its built-in default, written out (requests go where the queue
    is short, the KV cache has room and the prompt's prefix was sent before), with LoRA adapters
    served the LoRA affinity scorer too, and with flow_control its flow control layer."""
    gates = f"featureGates:\n- {FLOW_CONTROL_GATE}\n" if flow_control else ""
    scorer = f"- type: {LORA_SCORER}\n" if lora_affinity else ""
    weighted = f"  - pluginRef: {LORA_SCORER}\n    weight: 1\n" if lora_affinity else ""
    return f"""\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
{gates}plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
{scorer}- type: metrics-data-source
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
{weighted}dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
"""


def picker_name(name: str) -> str:
    return f"{name}-epp"


def pool_spec(selector: dict, port: int, name: str, failure_mode: str) -> dict:
    """The server's pods (leaders only, for a multi-node server: the selector is the Service's), on
    its port, with the EPP that picks among them."""
    return {
        "selector": {"matchLabels": selector},
        "targetPorts": [{"number": port}],
        "endpointPickerRef": {
            "kind": "Service",
            "name": picker_name(name),
            "port": {"number": GRPC_PORT},
            "failureMode": failure_mode,
        },
    }


def picker_args(name: str, namespace: str) -> list[str]:
    return [
        "--pool-name", name,
        "--pool-namespace", namespace,
        "--config-file", f"{CONFIG_DIR}/{CONFIG_FILE}",
        "--grpc-port", str(GRPC_PORT),
        "--grpc-health-port", str(HEALTH_PORT),
        "--metrics-port", str(METRICS_PORT),
        "--metrics-endpoint-auth=false",
        "--tracing=false",
    ]  # fmt: skip


def picker_pod_spec(name: str, namespace: str, image: str, labels: dict) -> dict:
    """The EPP: unprivileged, its config from a ConfigMap, a projected token for its Role."""
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}
    container = ext_proc_container(
        "epp", image, picker_args(name, namespace), (GRPC_PORT, HEALTH_PORT, METRICS_PORT), resources, "inference-extension"
    )
    container["volumeMounts"] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    spec = {"containers": [container], "volumes": [{"name": "config", "configMap": {"name": picker_name(name)}}]}
    return projected_api_access(locked_down(spec, service_account=picker_name(name)), "epp")


def picker_role_rules() -> list[dict]:
    return [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [POOL_GROUP], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
    ]


def picker_network_policy(selector: dict, server_port: int, gateway_namespaces: list[str]) -> dict:
    """The Gateways' namespaces reach the ext-proc port; the EPP calls DNS, the API server and the
    server's port (its metrics)."""
    return gateway_ext_proc(selector, GRPC_PORT, gateway_namespaces, [*API_PORTS, server_port])
