"""NetworkPolicy specs: each component admits only the traffic its pods need.

Policies for the same pods add up (Kubernetes takes the union of what they allow), so each
component states its own part: Exposure who may reach the server's port, VLLMServer that the
server calls nothing but DNS, ModelStore that the download Job reaches only DNS and the hub.
A later need (pod-to-pod traffic in a multi-node group) is one more policy, not an edit.
"""

from urllib.parse import urlsplit

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (Kubernetes 1.21+); selects namespaces by name."""
DNS_EGRESS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def url_port(url: str) -> int:
    """The TCP port a URL connects to."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def ingress_from(selector: dict, port: str, namespaces: list[str]) -> dict:
    """Only pods of the selector's own namespace and of the named namespaces reach the port."""
    peers: list[dict] = [{"podSelector": {}}]
    if namespaces:
        peers.append(
            {"namespaceSelector": {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]}}
        )
    return {
        "podSelector": {"matchLabels": selector},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": [{"port": port, "protocol": "TCP"}]}],
    }


def gateway_ext_proc(selector: dict, port: int, gateway_namespaces: list[str], egress_tcp_ports: list[int]) -> dict:
    """An ext_proc server's policy: the Gateways' namespaces reach its gRPC port; it calls DNS and
    these TCP ports."""
    egress = [DNS_EGRESS]
    if egress_tcp_ports:
        egress.append({"ports": [{"port": tcp, "protocol": "TCP"} for tcp in egress_tcp_ports]})
    return {
        "podSelector": {"matchLabels": selector},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {"matchExpressions": [
                        {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": gateway_namespaces}]}}
                ],
                "ports": [{"port": port, "protocol": "TCP"}],
            }
        ],
        "egress": egress,
    }


def grpc_service_spec(selector: dict, port: int) -> dict:
    """A ClusterIP Service for the selected pods' port named grpc."""
    return {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP"}],
    }


def egress_only_to(selector: dict, tcp_ports: list[int]) -> dict:
    """The selected pods call DNS and these TCP ports (anywhere), and take no connections."""
    egress = [DNS_EGRESS]
    if tcp_ports:
        egress.append({"ports": [{"port": port, "protocol": "TCP"} for port in sorted(set(tcp_ports))]})
    return {
        "podSelector": {"matchLabels": selector},
        "policyTypes": ["Ingress", "Egress"],
        "egress": egress,
    }


def egress_dns_only(selector: dict) -> dict:
    """The selected pods call nothing but DNS; who may call them is another policy's business."""
    return {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"], "egress": [DNS_EGRESS]}


def isolated(selector: dict) -> dict:
    """The selected pods call nothing and take no connections."""
    return {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"]}

API_PORTS = [443, 6443]
"""The API server's: kubernetes.default.svc's port, and the port behind it that network policies
see after the Service's address translation on most network plugins."""
