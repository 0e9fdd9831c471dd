"""Two models in one namespace behind one host, from the same components as the vllm-serving stack.

- chat: Qwen3-0.6B, staged here by a ModelStore onto a claim of its own.
- coder: a model another project already staged onto an existing claim; no ModelStore, the
  server mounts that claim read-only and checks the store's completion marker.

Both run in a namespace that already exists (with the staged claim and the API key's Secret),
are public on one host through one Gateway, under /chat/v1 and /coder/v1 (Exposure's
path_prefix), and check the API key of that one Secret.
"""

import pulumi

from vllm_serving_components import PORT, PORT_NAME, Exposure, GpuClaim, ModelStore, SecretKeyArgs, VLLMServer
from vllm_serving_components.stage_model import MARKER_NAME

IMAGE = "vllm/vllm-openai:v0.34.0"

config = pulumi.Config()
api_key: SecretKeyArgs = {"name": config.get("apiKeySecretName") or "models-api-key", "key": "api-key"}
namespace = config.get("namespace") or "models"


def expose(name: str, server: VLLMServer) -> Exposure:
    """The server at https://<host>/<name>/v1, through the shared Gateway."""
    return Exposure(
        name,
        {
            "namespace": namespace,
            "selector": server.selector_labels,
            # Plain values: the component checks them when it is created (PORT is the server's).
            "port": PORT,
            "target_port_name": PORT_NAME,
            "server_takes_api_key": server.takes_api_key,
            "host": config.get("host") or "models.example.com",
            "route": "gateway",
            "gateway_name": config.get("gatewayName") or "public",
            "gateway_namespace": config.get("gatewayNamespace") or "gateways",
            "allowed_namespaces": [config.get("gatewayNamespace") or "gateways", "monitoring"],
            "path_prefix": name,
            "tls": True,
        },
    )


chat_store = ModelStore(
    "chat",
    {"namespace": namespace, "model_id": "Qwen/Qwen3-0.6B", "image": IMAGE, "size": "20Gi", "model_size_gb": 2},
)
chat = VLLMServer(
    "chat",
    {
        "namespace": namespace,
        "image": IMAGE,
        "served_model_name": "qwen3-0.6b",
        "max_model_len": 8192,
        "cpu": "4",
        "memory": "16Gi",
        "gpu": GpuClaim("chat-gpu", {"backend": "nvidia", "count": 1}).pod_fragment,
        "claim_name": chat_store.claim_name,
        "mount_path": chat_store.mount_path,
        "model_path": chat_store.model_path,
        "marker_name": chat_store.marker_name,
        "api_key_secret": api_key,
    },
)

coder = VLLMServer(
    "coder",
    {
        "namespace": namespace,
        "image": IMAGE,
        "served_model_name": "qwen2.5-coder-1.5b",
        "max_model_len": 16384,
        "cpu": "4",
        "memory": "16Gi",
        "gpu": GpuClaim("coder-gpu", {"backend": "nvidia", "count": 1}).pod_fragment,
        "claim_name": config.get("stagedClaim") or "shared-models",
        "mount_path": "/models",
        "model_path": config.get("stagedModelPath") or "/models/Qwen/Qwen2.5-Coder-1.5B-Instruct/master",
        "marker_name": MARKER_NAME,
        "api_key_secret": api_key,
    },
)

pulumi.export("chatEndpoint", expose("chat", chat).endpoint)
pulumi.export("coderEndpoint", expose("coder", coder).endpoint)
