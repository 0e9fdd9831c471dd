"""KEDA in the local cluster: its operator and metrics API server (the release e2e/build-tools.sh
builds, KEDA_VERSION), run as processes inside the tests' network namespace, and registered with
the API server's aggregation layer as the ``v1beta1.external.metrics.k8s.io`` APIService, so that
the HPA controller of kube-controller-manager reads the ScaledObjects' metrics as it does in a
cluster.

What KEDA's manifests do (config/manager, config/metrics-server in the release's module), done
here without pods:

- every CRD of the release installed;
- one certificate for the operator's gRPC metrics service and the metrics server, which call each
  other with mutual TLS (pkg/metricsservice/utils/tls.go reads ca.crt, tls.crt and tls.key from the
  certificate directory); KEDA's cert rotation is off, as its manifests allow;
- the metrics server at a non-loopback address of the namespace (PLATFORM_CIDR), behind a Service
  without selector and its EndpointSlice, which the aggregation layer routes to
  (--enable-aggregator-routing), checking the server's certificate with the APIService's caBundle.

Both processes act with the admin kubeconfig, and watch only the namespaces given (WATCH_NAMESPACE),
so the other tests' ScaledObjects stay with their stand-ins.
"""

from __future__ import annotations

import base64
import json
from contextlib import ExitStack
from pathlib import Path

from .cluster import LocalCluster, free_port, wait_for
from .inference_extension import process

NAMESPACE = "keda"
OPERATOR_ADDRESS = "10.250.0.10"
METRICS_SERVER_ADDRESS = "10.250.0.11"
GRPC_PORT = 9666
METRICS_SERVER_PORT = 6443
METRICS_SERVER_SERVICE = "keda-metrics-apiserver"
OPERATOR_SERVICE = "keda-operator"
APISERVICE = "v1beta1.external.metrics.k8s.io"
START_TIMEOUT = 180


def apiservice(ca_bundle: bytes) -> list[dict]:
    """The Service, EndpointSlice and APIService of KEDA's metrics server."""
    labels = {"app.kubernetes.io/name": METRICS_SERVER_SERVICE, "app.kubernetes.io/part-of": "keda-operator"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": METRICS_SERVER_SERVICE, "namespace": NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_SERVER_PORT, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{METRICS_SERVER_SERVICE}-e2e", "namespace": NAMESPACE,
                         "labels": {**labels, "kubernetes.io/service-name": METRICS_SERVER_SERVICE,
                                    "endpointslice.kubernetes.io/managed-by": "e2e"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [METRICS_SERVER_ADDRESS], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": METRICS_SERVER_PORT, "protocol": "TCP"}],
        },
        {
            # config/metrics-server/api_service.yaml, with the CA that signed the server's certificate
            # (KEDA's cert rotation patches it in; here it is given).
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": APISERVICE, "labels": labels},
            "spec": {
                "service": {"name": METRICS_SERVER_SERVICE, "namespace": NAMESPACE, "port": 443},
                "group": "external.metrics.k8s.io", "version": "v1beta1",
                "groupPriorityMinimum": 100, "versionPriority": 100,
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
        },
    ]


class Keda:
    """KEDA's operator and metrics server for ``namespaces``; a context manager that starts them,
    waits until the APIService is Available, and stops them (and removes the APIService) on exit."""

    def __init__(self, cluster: LocalCluster, bin_dir: Path, work: Path, namespaces: list[str]):
        self.cluster, self.bin, self.work, self.namespaces = cluster, bin_dir, work, namespaces
        self.logs = {"operator": work / "keda-operator.log", "metrics-server": work / "keda-metrics-server.log"}
        self._stack = ExitStack()

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for name, log in self.logs.items() if log.exists())

    def _running(self) -> bool:
        for name, popen in self.processes.items():
            if popen.poll() is not None:
                raise RuntimeError(f"KEDA's {name} exited with {popen.returncode}:\n{self.log_tails()}")
        return True

    def available(self) -> bool:
        out = self.cluster.kubectl("get", "apiservice", APISERVICE, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def __enter__(self) -> "Keda":
        crds = sorted((self.bin.parent / "share" / "keda" / "crds").glob("*.yaml"))
        assert crds, "the tools hold no KEDA CRDs: rebuild them (e2e/build-tools.sh)"
        self.cluster.kubectl("apply", "--server-side", "--field-manager=e2e", *sum((["-f", str(f)] for f in crds), []))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             *[f"crd/{f.name.split('_', 1)[1].removesuffix('.yaml')}.{f.name.split('_', 1)[0]}"
                               for f in crds], timeout=90)
        certs = self.cluster.pki.issue(self.work / "keda-certs", "keda", (
            f"{OPERATOR_SERVICE}.{NAMESPACE}.svc.cluster.local", f"{OPERATOR_SERVICE}.{NAMESPACE}.svc",
            f"{METRICS_SERVER_SERVICE}.{NAMESPACE}.svc", f"{METRICS_SERVER_SERVICE}.{NAMESPACE}.svc.cluster.local",
            OPERATOR_ADDRESS, METRICS_SERVER_ADDRESS,
        ))
        self.cluster.apply(apiservice((certs / "ca.crt").read_bytes()))
        kubeconfig = str(self.cluster.kubeconfig)
        env = {"KUBECONFIG": kubeconfig, "WATCH_NAMESPACE": ",".join(self.namespaces), "POD_NAMESPACE": NAMESPACE,
               "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE}
        self.processes = {}
        try:
            self.processes["operator"] = self._stack.enter_context(process(self.bin / "keda-operator", [
                "--zap-log-level=info", "--zap-encoder=console",
                f"--metrics-bind-address=127.0.0.1:{free_port()}", f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-service-bind-address={OPERATOR_ADDRESS}:{GRPC_PORT}",
                f"--cert-dir={certs}", f"--ca-dir={certs}", "--enable-cert-rotation=false",
            ], env, self.logs["operator"]))
            self.processes["metrics-server"] = self._stack.enter_context(process(self.bin / "keda-adapter", [
                "--zap-log-level=info", "--zap-encoder=console",
                f"--bind-address={METRICS_SERVER_ADDRESS}", f"--secure-port={METRICS_SERVER_PORT}",
                f"--cert-dir={certs}", f"--tls-cert-file={certs / 'tls.crt'}", f"--tls-private-key-file={certs / 'tls.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--metrics-service-address={OPERATOR_ADDRESS}:{GRPC_PORT}", f"--port={free_port()}",
            ], env, self.logs["metrics-server"]))
            wait_for(f"APIService {APISERVICE} Available", lambda: self._running() and self.available(), START_TIMEOUT,
                     interval=1, diagnose=self.log_tails)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cluster.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false", check=False)
        self._stack.close()
