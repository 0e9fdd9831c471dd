"""The namespace the stack creates."""

from .config import StackConfig


def pod_security_labels(config: StackConfig) -> dict[str, str]:
    """Pod Security admission for the namespace: every pod of the stack meets the restricted level,
    which the namespace enforces - unless NCCL over InfiniBand needs IPC_LOCK, which no level
    short of privileged admits (baseline adds only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
    KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT: kubernetes.io/docs/
    concepts/security/pod-security-standards); then the namespace only warns and audits against
    restricted."""
    if config.nccl_ib_hca:
        return {"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}
    return {"pod-security.kubernetes.io/enforce": "restricted"}
