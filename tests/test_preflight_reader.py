"""The preflight's reader of a real cluster: it loads the kubeconfig as the Kubernetes provider does
(a path or the kubeconfig itself in kubernetes:kubeconfig, else $KUBECONFIG, the context and cluster
overrides) and maps the API server's answers to found, not found, forbidden and unreachable. The
server here is a local HTTP server on loopback answering as the API server does."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from vllm_serving_components.preflight import Forbidden, KubeReader, NotFound, Unreachable

ANSWERS = {
    "/api/v1/nodes": (403, {"kind": "Status", "reason": "Forbidden"}),
    "/api/v1/namespaces/a/secrets/key": (200, {"data": {"api-key": "eA=="}}),
}


class ApiServer(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the handler's name
        status, body = ANSWERS.get(self.path, (404, {"kind": "Status", "reason": "NotFound"}))
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), ApiServer)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def kubeconfig(servers: dict[str, str], current: str, token: str = "t0ken") -> dict:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": name, "cluster": {"server": url}} for name, url in servers.items()],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "u"}} for name in servers],
    }


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_the_kubeconfig_itself_its_answers_and_the_token(server):
    reader = KubeReader(yaml.safe_dump(kubeconfig({"local": url(server)}, "local")), None, None)
    assert reader.where == f"context local ({url(server)})"
    assert reader.get("/api/v1/namespaces/a/secrets/key") == {"data": {"api-key": "eA=="}}
    with pytest.raises(Forbidden, match="403"):
        reader.get("/api/v1/nodes")
    with pytest.raises(NotFound):
        reader.get("/apis/keda.sh/v1alpha1")
    assert server.seen[0] == ("/api/v1/namespaces/a/secrets/key", "Bearer t0ken")


def test_a_path_the_context_and_the_cluster_override(server, tmp_path):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig({"local": url(server), "gone": "http://127.0.0.1:9"}, "gone")))
    assert KubeReader(str(path), "local", None).where == f"context local ({url(server)})"
    # kubernetes:cluster replaces the context's cluster, as the provider's ConfigOverrides do.
    reader = KubeReader(str(path), None, "local")
    assert reader.where == f"context gone ({url(server)})"
    assert reader.get("/api/v1/namespaces/a/secrets/key")
    with pytest.raises(Unreachable):
        KubeReader(str(path), None, None).get("/version")


def test_without_the_setting_kubeconfig_comes_from_the_environment(server, tmp_path, monkeypatch):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig({"local": url(server)}, "local")))
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert KubeReader(None, None, None).where == f"context local ({url(server)})"


def test_a_kubeconfig_that_cannot_be_loaded_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(Unreachable, match="cannot load the kubeconfig"):
        KubeReader(None, None, None).get("/version")
    with pytest.raises(Unreachable, match="cannot load the kubeconfig"):
        KubeReader(yaml.safe_dump(kubeconfig({"a": "http://127.0.0.1:9"}, "a")), "nosuch", None).get("/version")
