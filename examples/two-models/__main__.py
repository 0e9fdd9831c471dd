"""Two models in one namespace behind one host, from the same components as the vllm-serving stack.

- chat: Qwen3-0.6B, staged here by a ModelStore onto a claim of its own.
- coder: a model another project already staged onto an existing claim; no ModelStore, the
  server mounts that claim read-only and checks the store's completion marker.

Both run in a namespace that already exists (with the staged claim and the API key's Secret),
are public at one base URL, https://<host>/v1, through one Gateway, and check the API key of
that one Secret. The request body's `model` chooses the server: a BodyRouter copies it into a
header, and each server's route (to an InferencePool of its pods) takes only its own model's
name. A GET /v1/models has no body: a client names the model in that header itself
(README.md).
"""

import pulumi

from vllm_serving_components import PORT, PORT_NAME, BodyRouter, Exposure, GpuClaim, ModelStore, SecretKeyArgs, VLLMServer
from vllm_serving_components.stage_model import MARKER_NAME

IMAGE = "vllm/vllm-openai:v0.34.0"
CHAT_MODEL, CODER_MODEL = "qwen3-0.6b", "qwen2.5-coder-1.5b"
"""The served model names: what a request's `model` says."""

config = pulumi.Config()
api_key: SecretKeyArgs = {"name": config.get("apiKeySecretName") or "models-api-key", "key": "api-key"}
namespace = config.get("namespace") or "models"
gateway_name = config.get("gatewayName") or "public"
gateway_namespace = config.get("gatewayNamespace") or "gateways"


def expose(name: str, server: VLLMServer, model: str) -> Exposure:
    """The server at https://<host>/v1 for requests whose body names its model, through the shared Gateway."""
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
            "route": "inference",
            "model_name": model,
            "gateway_name": gateway_name,
            "gateway_namespace": gateway_namespace,
            "allowed_namespaces": [gateway_namespace, "monitoring"],
            "tls": True,
        },
    )


# One router for the Gateway: it sets X-Gateway-Model-Name from each request's body.
router = BodyRouter(
    "models-router",
    {"namespace": namespace, "gateway": "istio", "gateway_name": gateway_name, "gateway_namespace": gateway_namespace},
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
        "served_model_name": CHAT_MODEL,
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
        "served_model_name": CODER_MODEL,
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

chat_exposure = expose("chat", chat, CHAT_MODEL)
expose("coder", coder, CODER_MODEL)
# One base URL for both (each Exposure's is the same).
pulumi.export("endpoint", chat_exposure.endpoint)
pulumi.export("models", [CHAT_MODEL, CODER_MODEL])
