"""A local Kubernetes control plane for end-to-end tests: real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, with kwok simulating nodes and pod lifecycles.

Everything listens on loopback on free ports, inside the tests' own network namespace (netns.py),
lives in one temporary directory, and is stopped (process group killed) by ``LocalCluster.stop``. No container runtime, kubelet or GPU is needed:
kwok marks pods Running and Ready as soon as they are scheduled, and completes pods owned by a
Job, through its own Stage objects (the ``kwok.x-k8s.io/v1alpha1`` Stage CRD).
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
"""kwok's pod addresses: local addresses of the tests' network namespace (netns.py)."""
PLATFORM_CIDR = "10.250.0.0/24"
"""Addresses of the platform's servers the tests run as processes (KEDA's): local addresses of the
tests' network namespace too, outside kwok's range, and not loopback, which the API server refuses
in an EndpointSlice it routes to (--enable-aggregator-routing)."""
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The name the API server's aggregation layer presents to extension API servers
(--requestheader-allowed-names)."""
HAMI_SCHEDULER = "hami-scheduler"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
KWOK_NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it when the test process dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2, diagnose=None):
    """Poll ``check`` until it is true; raise TimeoutError naming ``what`` (plus ``diagnose()``)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last_error = e
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    extra = f"\n{diagnose()}" if diagnose else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s{detail}{extra}")


# --- certificates -------------------------------------------------------------------------

def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(subject, key, issuer_cert, issuer_key, *, ca=False, sans=(), client=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        names = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path
    ca: Path = field(init=False)
    serving_cert: Path = field(init=False)
    serving_key: Path = field(init=False)
    admin_cert: Path = field(init=False)
    admin_key: Path = field(init=False)
    sa_key: Path = field(init=False)
    sa_pub: Path = field(init=False)
    front_proxy_ca: Path = field(init=False)
    front_proxy_cert: Path = field(init=False)
    front_proxy_key: Path = field(init=False)

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        new_key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
        ca_key = new_key()
        ca_cert = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2e-ca")]), ca_key, None, None, ca=True)
        serving_key = new_key()
        serving = _certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key, ca_cert, ca_key,
            server=True,
            sans=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
        )
        admin_key = new_key()
        admin = _certificate(
            x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "e2e-admin"),
            ]),
            admin_key, ca_cert, ca_key, client=True,
        )
        sa_key = new_key()
        # The aggregation layer: a CA of its own for the client certificate the API server proxies
        # with, whose requests extension API servers trust for the X-Remote-* headers
        # (kubernetes.io/docs/tasks/extend-kubernetes/configure-aggregation-layer/).
        front_proxy_ca_key = new_key()
        front_proxy_ca = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2e-front-proxy-ca")]),
                                      front_proxy_ca_key, None, None, ca=True)
        front_proxy_key = new_key()
        front_proxy = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FRONT_PROXY_CLIENT)]),
                                   front_proxy_key, front_proxy_ca, front_proxy_ca_key, client=True)
        self._ca = (ca_cert, ca_key)
        files = {
            "ca.crt": _pem_cert(ca_cert),
            "apiserver.crt": _pem_cert(serving),
            "apiserver.key": _pem_key(serving_key),
            "admin.crt": _pem_cert(admin),
            "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "front-proxy-ca.crt": _pem_cert(front_proxy_ca),
            "front-proxy-client.crt": _pem_cert(front_proxy),
            "front-proxy-client.key": _pem_key(front_proxy_key),
        }
        for name, data in files.items():
            (self.dir / name).write_bytes(data)
            (self.dir / name).chmod(0o600)
        self.ca, self.serving_cert, self.serving_key = self.dir / "ca.crt", self.dir / "apiserver.crt", self.dir / "apiserver.key"
        self.admin_cert, self.admin_key = self.dir / "admin.crt", self.dir / "admin.key"
        self.sa_key, self.sa_pub = self.dir / "sa.key", self.dir / "sa.pub"
        self.front_proxy_ca = self.dir / "front-proxy-ca.crt"
        self.front_proxy_cert, self.front_proxy_key = self.dir / "front-proxy-client.crt", self.dir / "front-proxy-client.key"

    def issue(self, directory: Path, common_name: str, sans: tuple[str, ...]) -> Path:
        """A key and a certificate for both serving and client use, signed by the cluster's CA, as
        ca.crt, tls.crt and tls.key in ``directory`` (the layout KEDA reads its certificates in)."""
        ca_cert, ca_key = self._ca
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key, ca_cert, ca_key,
                            client=True, server=True, sans=sans)
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (("ca.crt", _pem_cert(ca_cert)), ("tls.crt", _pem_cert(cert)), ("tls.key", _pem_key(key))):
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o600)
        return directory


# --- objects the cluster starts with ------------------------------------------------------

def node(name: str, *, labels: dict, capacity: dict, taints: list | None = None, annotations: dict | None = None) -> dict:
    base = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    resources = {**base, **capacity}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {**KWOK_NODE_ANNOTATION, "node.alpha.kubernetes.io/ttl": "0", **(annotations or {})},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "type": "kwok", **labels,
            },
        },
        "spec": {"taints": taints or []},
        "status": {"capacity": resources, "allocatable": resources},
    }


GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
GPU_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": GPU_PRODUCT,
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81559",
}


A100_40GB_LABELS = {**GPU_LABELS, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.memory": "40960"}
H200_LABELS = {**GPU_LABELS, "nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/gpu.memory": "143771"}


def default_nodes() -> list[dict]:
    """Two whole-GPU nodes (device plugin), one HAMi node (vGPU slices), two nodes of 40 GB GPUs
    (the multinode stack's), two of H200s (the moe stack's), one CPU node for Jobs."""
    return [
        node("gpu-h100-0", labels=GPU_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node("gpu-h100-1", labels=GPU_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node("gpu-a100-40gb-0", labels=A100_40GB_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node("gpu-a100-40gb-1", labels=A100_40GB_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node("gpu-h200-0", labels=H200_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node("gpu-h200-1", labels=H200_LABELS, capacity={"nvidia.com/gpu": "8"}, taints=GPU_TAINT),
        node(
            "gpu-hami-0",
            labels={**GPU_LABELS, "gpu": "on"},
            # HAMi's device plugin registers each GPU (uuid,split,memory MiB,cores,type,numa,healthy).
            annotations={"hami.io/node-nvidia-register": "".join(
                f"GPU-e2e-{i},10,81559,100,{GPU_PRODUCT},0,true:" for i in range(8))},
            # HAMi advertises device-memory (MiB) and core-percent totals over all GPUs of the node.
            capacity={"nvidia.com/gpu": "8", "nvidia.com/gpumem": str(8 * 81559), "nvidia.com/gpucores": "800"},
            taints=GPU_TAINT,
        ),
        node("cpu-0", labels={"node-role.kubernetes.io/worker": ""}, capacity={}),
    ]


def storage_objects(tmp: Path) -> list[dict]:
    """Storage classes without a provisioner and PersistentVolumes that the stacks' claims bind to.

    Several volumes of each kind, so that claims created again after a destroy still bind
    (a released volume does not bind again)."""
    no_provisioner = "kubernetes.io/no-provisioner"
    objects: list[dict] = [
        {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": no_provisioner, "volumeBindingMode": "Immediate", "reclaimPolicy": "Retain",
        },
        {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "nfs-client"},
            "provisioner": no_provisioner, "volumeBindingMode": "Immediate", "reclaimPolicy": "Retain",
        },
    ]
    for i in range(6):
        objects.append(_pv(f"e2e-rwo-{i}", "standard", "20Gi", "ReadWriteOnce", tmp))
    # Room for the 1Ti claims of prod, multinode, moe, the three autoscaled stacks (prod-like,
    # multinode and scale-to-zero; a destroyed claim's volume is not bound again) and the upgraded
    # stack (two revisions of a 470 GB model), the example's, and the picker's three replicas.
    for i in range(12):
        objects.append(_pv(f"e2e-rwx-{i}", "nfs-client", "2Ti", "ReadWriteMany", tmp))
    return objects


def _pv(name: str, storage_class: str, size: str, mode: str, tmp: Path) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"e2e/pool": storage_class}},
        "spec": {
            "capacity": {"storage": size}, "accessModes": [mode], "storageClassName": storage_class,
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(tmp / "volumes" / name)},
        },
    }


INGRESS_CLASS = "nginx"
GATEWAY_NAMESPACE, GATEWAY = "gateways", "public"
CLUSTER_ISSUER = "letsencrypt-prod"


def routing_objects() -> list[dict]:
    """What the stacks' routes name and do not create, as a cluster with an ingress controller, a
    Gateway and cert-manager has them: nginx's IngressClass, the Gateway gateways/public and the
    ClusterIssuer letsencrypt-prod (cert-manager's CRD is among schemas/crds). The preflight looks
    for each; nothing acts on them (the stand-ins write the routes' status)."""
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": INGRESS_CLASS},
         "spec": {"controller": "k8s.io/ingress-nginx"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": GATEWAY, "namespace": GATEWAY_NAMESPACE},
         "spec": {"gatewayClassName": "e2e", "listeners": [
             {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": CLUSTER_ISSUER},
         "spec": {"selfSigned": {}}},
    ]


def namespace_with_key(namespace: str, secret: str, key: str = "api-key") -> list[dict]:
    """A namespace made before the first `up`, with the API key's Secret in it, as a user makes them
    (the stack adopts the namespace; the preflight checks the Secret and its key)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": namespace},
         "stringData": {key: "e2e-key"}},
    ]


JOB_POD_FAIL_STAGE = {
    # Weighted above kwok's pod-complete stage, so that while it exists every running pod of a
    # Job in the selected namespace fails instead of completing.
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": "e2e-job-pod-fail"},
    "spec": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "weight": 100,
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
            ]
        },
        "next": {
            "statusTemplate": (
                "{{ $now := Now }}\n"
                "containerStatuses:\n"
                "{{ range .spec.containers }}\n"
                "- image: {{ .image | Quote }}\n"
                "  name: {{ .name | Quote }}\n"
                "  ready: false\n"
                "  restartCount: 0\n"
                "  started: false\n"
                "  state:\n"
                "    terminated:\n"
                "      exitCode: 1\n"
                "      finishedAt: {{ $now | Quote }}\n"
                "      reason: Error\n"
                "      message: failed by the e2e-job-pod-fail stage\n"
                "      startedAt: {{ $now | Quote }}\n"
                "{{ end }}\n"
                "phase: Failed\n"
            )
        },
    },
}


def job_pod_fail_stage(namespace: str) -> dict:
    stage = yaml.safe_load(yaml.safe_dump(JOB_POD_FAIL_STAGE))
    stage["metadata"]["name"] = f"e2e-job-pod-fail-{namespace}"
    stage["spec"]["selector"]["matchExpressions"].append(
        {"key": ".metadata.namespace", "operator": "In", "values": [namespace]}
    )
    return stage


# --- the cluster --------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path


class LocalCluster:
    """Start with ``start()``, always ``stop()``. ``kubeconfig`` is an admin kubeconfig."""

    def __init__(self, bin_dir: Path, share_dir: Path, work: Path, crd_files: list[Path]):
        self.bin = bin_dir
        self.share = share_dir
        self.work = work
        self.crd_files = crd_files
        self.processes: list[Process] = []
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "hami", "kwok")}
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = work / "admin.kubeconfig"
        self.audit_log = work / "audit.log"
        self.timings: dict[str, float] = {}

    # processes
    def _spawn(self, name: str, args: list[str]):
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "wb")
        popen = subprocess.Popen(
            [str(self.bin / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.work, start_new_session=True, preexec_fn=_die_with_parent,
        )
        out.close()
        self.processes.append(Process(name, popen, log))

    def _check_alive(self):
        for p in self.processes:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{self.log_tail(p.name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        for p in self.processes:
            if p.name == name:
                return "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{self.log_tail(p.name, 15)}" for p in self.processes)

    def stop(self):
        for p in reversed(self.processes):
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in reversed(self.processes):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.popen.wait(timeout=10)

    # http checks against the API server with the admin identity
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _get(self, url: str, context: ssl.SSLContext | None) -> bool:
        with urllib.request.urlopen(url, context=context, timeout=5) as r:
            return r.status == 200

    def _local_healthz(self, port: int) -> bool:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._check_alive()
        return self._get(f"https://127.0.0.1:{port}/healthz", insecure)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True):
        result = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, objects: list[dict] | str, *args: str):
        text = objects if isinstance(objects, str) else yaml.safe_dump_all(objects)
        return self.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", *args, input=text)

    def _write_configs(self):
        ca_data = base64.b64encode(self.pki.ca.read_bytes()).decode()
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.server, "certificate-authority-data": ca_data}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": base64.b64encode(self.pki.admin_cert.read_bytes()).decode(),
                "client-key-data": base64.b64encode(self.pki.admin_key.read_bytes()).decode(),
            }}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))
        self.kubeconfig.chmod(0o600)
        (self.work / "admission.yaml").write_text(yaml.safe_dump({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
            "plugins": [{"name": "PodSecurity", "configuration": {
                "apiVersion": "pod-security.admission.config.k8s.io/v1", "kind": "PodSecurityConfiguration",
                "defaults": {"enforce": "baseline", "enforce-version": "latest",
                             "warn": "baseline", "warn-version": "latest",
                             "audit": "restricted", "audit-version": "latest"},
                "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": ["kube-system"]},
            }}],
        }))
        # Writes only, at metadata level: enough to see who changed what, and with what options
        # (a server-side dry run is a write with dryRun=All).
        (self.work / "audit-policy.yaml").write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
                      {"level": "None"}],
        }))
        for name, profile in (("scheduler", "default-scheduler"), ("hami-scheduler", HAMI_SCHEDULER)):
            (self.work / f"{name}.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": str(self.kubeconfig)},
                "leaderElection": {"leaderElect": False},
                "profiles": [{"schedulerName": profile}],
            }))

    def start(self, timeout: float = 120):
        t0 = time.monotonic()
        self.pki = Pki(self.work / "pki")
        self._write_configs()
        kc = str(self.kubeconfig)
        p = self.ports

        self._spawn("etcd", [
            "etcd", "--name=e2e", f"--data-dir={self.work / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p['etcd']}", f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-cluster=e2e=http://127.0.0.1:{p['etcd-peer']}",
            "--unsafe-no-fsync", "--log-level=warn", "--listen-metrics-urls=",
        ])
        wait_for("etcd", lambda: self._check_alive() or self._get(f"http://127.0.0.1:{p['etcd']}/health", None),
                 timeout, diagnose=self.logs)
        self.timings["etcd"] = time.monotonic() - t0

        self._spawn("kube-apiserver", [
            "kube-apiserver", f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1", f"--secure-port={p['apiserver']}", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={self.pki.serving_cert}", f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca}",
            f"--service-account-issuer={ISSUER}", f"--api-audiences={ISSUER}",
            f"--service-account-key-file={self.pki.sa_pub}", f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
            f"--admission-control-config-file={self.work / 'admission.yaml'}",
            "--enable-admission-plugins=PodSecurity",
            f"--cert-dir={self.work / 'apiserver-certs'}",
            f"--audit-policy-file={self.work / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=200", "--audit-log-mode=blocking",
            # The aggregation layer, for extension API servers (KEDA's metrics server): the client
            # certificate it proxies with, and the headers that carry the user it authenticated. No
            # kube-proxy runs, so it goes to the Service's endpoint rather than its cluster IP.
            f"--requestheader-client-ca-file={self.pki.front_proxy_ca}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.pki.front_proxy_cert}", f"--proxy-client-key-file={self.pki.front_proxy_key}",
            "--enable-aggregator-routing=true",
        ])
        ctx = self._ssl()
        wait_for("kube-apiserver /readyz", lambda: self._check_alive() or self._get(f"{self.server}/readyz", ctx),
                 timeout, diagnose=self.logs)
        self.timings["kube-apiserver"] = time.monotonic() - t0

        common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                  "--bind-address=127.0.0.1", "--leader-elect=false"]
        self._spawn("kube-controller-manager", [
            "kube-controller-manager", *common, f"--secure-port={p['kcm']}", f"--cert-dir={self.work / 'kcm-certs'}",
            f"--service-account-private-key-file={self.pki.sa_key}", f"--root-ca-file={self.pki.ca}",
            "--use-service-account-credentials=false", f"--service-cluster-ip-range={SERVICE_CIDR}",
        ])
        for name, port in (("scheduler", p["scheduler"]), ("hami-scheduler", p["hami"])):
            self._spawn(name, [
                "kube-scheduler", f"--config={self.work / (name + '.yaml')}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={self.work / (name + '-certs')}",
            ])

        # Custom resource definitions: kwok's Stage first (kwok reads its stages from the API),
        # then the ones the stacks use.
        crds = [self.share / "kwok" / "kwok.x-k8s.io_stages.yaml", *self.crd_files]
        self.kubectl("apply", "--server-side", "--field-manager=e2e", *sum((["-f", str(f)] for f in crds), []))
        # kubectl wait fails at once on a CRD the API server has not yet given any condition.
        wait_for("CRDs Established", lambda: self.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s", "crd", "--all", timeout=45, check=False).returncode == 0,
            timeout, interval=0.5, diagnose=self.logs)
        self.timings["crds"] = time.monotonic() - t0
        stages = sorted((self.share / "kwok" / "stages").glob("*.yaml"))
        self.kubectl("apply", "--server-side", "--field-manager=e2e", *sum((["-f", str(f)] for f in stages), []))

        self._spawn("kwok", [
            "kwok", f"--kubeconfig={kc}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}", "--node-ip=10.240.0.1", f"--server-address=127.0.0.1:{p['kwok']}",
            "--enable-crds=Stage",
            # Renew each node's Lease like a kubelet, or the node lifecycle controller marks the
            # nodes NotReady (and their pods not ready) after its grace period.
            "--node-lease-duration-seconds=40",
        ])
        for name, port in (("kube-controller-manager", p["kcm"]), ("scheduler", p["scheduler"]),
                           ("hami-scheduler", p["hami"])):
            wait_for(f"{name} /healthz", lambda port=port: self._local_healthz(port), timeout, diagnose=self.logs)
        wait_for("kwok /healthz", lambda: self._check_alive() or self._get(f"http://127.0.0.1:{p['kwok']}/healthz", None),
                 timeout, diagnose=self.logs)

        self.apply(default_nodes() + storage_objects(self.work) + routing_objects())
        wait_for("nodes Ready", self._nodes_ready, timeout, interval=0.5, diagnose=self.logs)
        wait_for("default service account", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0, timeout)
        self.timings["ready"] = time.monotonic() - t0

    def audit_mark(self) -> int:
        """A position in the audit log; ``audit_events(mark)`` returns what was logged after it."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def audit_events(self, mark: int = 0) -> list[dict]:
        with open(self.audit_log, "rb") as f:
            f.seek(mark)
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def _nodes_ready(self) -> bool:
        self._check_alive()
        out = self.kubectl("get", "nodes", "-o",
                           "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}"
                           "{.spec.taints[*].key}{'\\n'}{end}").stdout
        lines = [line for line in out.splitlines() if line.strip()]
        return len(lines) == len(default_nodes()) and all(
            line.startswith("True") and "node.kubernetes.io/not-ready" not in line for line in lines
        )
