"""The namespace the stack creates."""

from vllm_serving_components.vllm_server import server_capabilities

from .config import StackConfig


def pod_security_labels(config: StackConfig) -> dict[str, str]:
    """Pod Security admission for the namespace: every pod of the stack meets the restricted level,
    which the namespace enforces - unless the server adds a capability (IPC_LOCK for InfiniBand),
    which no level short of privileged admits; then the namespace only warns and audits against
    restricted."""
    if server_capabilities(config.nccl_ib_hca):
        return {"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}
    return {"pod-security.kubernetes.io/enforce": "restricted"}
