"""Secure by default: the public route serves only the API and takes a key that never appears in
plain text; every pod runs unprivileged; network policies and a disruption budget."""

import json

import pytest
import yaml
from conftest import ROOT, project_with_stack, stack_file
from test_stacks import VARIANTS, render_variant

from vllm_serving_components.pods import RUN_AS
from stack.project import SECRET_PLACEHOLDER
from stack.render import REDACTED, render_stack, write_rendering
from vllm_serving_components.summary import object_details

ENCRYPTED_KEY = {"secure": "v1:AAABBBCCC="}


def pods(rendering):
    """Every pod spec the rendering creates in the stack's namespace, which enforces Pod Security
    restricted: the server's, the download Job's, and the node cache's copier and the image
    pre-pull's. (The node cache's preparing pods live in a namespace of their own, at privileged:
    tests/test_cold_start.py.)"""
    return [o.manifest["spec"]["template"]["spec"] for o in rendering.objects
            if o.kind in ("Deployment", "Job", "DaemonSet") and o.namespace == rendering.outputs["namespace"]]


def test_the_restricted_namespace_holds_every_pod_of_prod_but_the_cache_preparation(rendered):
    kinds = sorted(o.kind for o in rendered["prod"].objects if o.kind in ("Deployment", "Job", "DaemonSet"))
    assert kinds == ["DaemonSet", "DaemonSet", "DaemonSet", "Deployment", "Job"]
    assert len(pods(rendered["prod"])) == 4


def every_rendering(rendered, tmp_path_factory):
    yield from rendered.values()
    for variant in VARIANTS:
        yield render_variant(tmp_path_factory.mktemp(variant), variant)


def test_every_container_of_every_stack_runs_unprivileged(rendered, tmp_path_factory):
    for rendering in every_rendering(rendered, tmp_path_factory):
        for pod in pods(rendering):
            assert pod["securityContext"] == {
                "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            assert pod["automountServiceAccountToken"] is False
            assert pod["serviceAccountName"] in {o.name for o in rendering.objects if o.kind == "ServiceAccount"}
            for container in pod["containers"] + pod.get("initContainers", []):
                assert container["securityContext"] == {
                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                }
                assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_service_accounts_carry_no_token(rendered, stack):
    """The server's, the download Job's and the image pre-pull's; only the node cache's copier
    reads the API (its own DaemonSet, at a destroy), and its role may do nothing else."""
    accounts = {o.name: o.manifest for o in rendered[stack].objects if o.kind == "ServiceAccount"}
    copier = "vllm-qwen3-235b-node-cache"
    assert len(accounts) == (4 if stack == "prod" else 2)
    for name, account in accounts.items():
        assert account.get("automountServiceAccountToken") is (None if name == copier else False)
    if stack == "prod":
        assert rendered[stack].find("Role", copier)["rules"] == [
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [copier], "verbs": ["get"]}]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_created_namespace_enforces_the_restricted_level(rendered, stack):
    labels = rendered[stack].find("Namespace", rendered[stack].outputs["namespace"])["metadata"]["labels"]
    assert labels == {"pod-security.kubernetes.io/enforce": "restricted"}


def test_the_public_ingress_routes_only_the_api(rendered):
    (rule,) = rendered["prod"].only("Ingress")["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/v1", "Prefix")]


def test_the_gateway_route_covers_only_the_api(tmp_path):
    rendering = render_variant(tmp_path, "gateway-with-tls-and-api-key")
    (rule,) = rendering.only("HTTPRoute")["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]


def test_prod_takes_the_api_key_from_its_secret(rendered):
    env = rendered["prod"].only("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}} in env


def test_a_key_from_stack_config_is_a_secret_everywhere(tmp_path):
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    text = yaml.safe_dump({"config": {**dev, "vllm-serving:host": "vllm.example.com", "vllm-serving:apiKey": ENCRYPTED_KEY}})
    rendering = render_stack(stack_file(tmp_path, text, base=None), tmp_path)
    secret = rendering.find("Secret", "vllm-qwen3-0-6b-api-key")
    assert secret["stringData"] == {"api-key": REDACTED}
    env = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key"}}} in env
    assert rendering.outputs["apiKey"] == REDACTED
    written = write_rendering(rendering, tmp_path / "out")
    assert not [path for path in written if SECRET_PLACEHOLDER in path.read_text()]
    assert SECRET_PLACEHOLDER not in json.dumps([o.manifest for o in rendering.objects]) + json.dumps(rendering.outputs)


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"host": "vllm.example.com"}, "host", "takes no API key"),
        ({"apiKey": "sk-plain"}, "apiKey", "plain text"),
        ({"allowPublicWithoutApiKey": True}, "allowPublicWithoutApiKey", "no effect"),
        ({"host": "vllm.example.com", "apiKeySecretName": "k", "allowPublicWithoutApiKey": True}, "allowPublicWithoutApiKey", "no effect"),
        ({"allowedClientNamespaces": ["Ingress_Nginx"]}, "allowedClientNamespaces", "DNS label"),
        ({"hubToken": "sk-plain"}, "hubToken", "plain text"),
        ({"hubTokenSecretKey": "hf"}, "hubTokenSecretKey", "no effect without hubTokenSecretName"),
        ({"hubToken": ENCRYPTED_KEY, "hubTokenSecretName": "hub"}, "hubToken", "both give the hub token"),
        # A bad host is the one problem: allowPublicWithoutApiKey is not said to lack a host.
        ({"host": "Bad_Host", "allowPublicWithoutApiKey": True}, "host", "DNS name"),
    ],
)
def test_key_mistakes_are_refused_and_never_echo_the_key(tmp_path, settings, key, words):
    from stack.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, settings), tmp_path)
    assert [(p.key, words in p.message) for p in raised.value.problems] == [(key, True)]
    assert "sk-plain" not in str(raised.value)


def test_an_error_never_repeats_the_value_of_a_key_held_encrypted():
    from stack.config import ConfigError
    from stack.loading import parse_stack_config
    from stack.project import encode, read_project

    project = read_project(ROOT)
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    values = {**project.defaults(), **{key.split(":", 1)[1]: encode(value) for key, value in dev.items()}}
    values["modelEndpoint"] = "https://user:hunter2@hub.example.com/x y"
    with pytest.raises(ConfigError) as held:
        parse_stack_config(project.name, values, project.defaults(), secret=frozenset({"modelEndpoint"}))
    assert [p.key for p in held.value.problems] == ["modelEndpoint"] and "hunter2" not in str(held.value)
    with pytest.raises(ConfigError) as plain:  # the control: a plain value is shown
        parse_stack_config(project.name, values, project.defaults())
    assert "hunter2" in str(plain.value)


def test_a_hub_token_from_stack_config_reaches_the_job_by_reference_alone(tmp_path):
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    text = yaml.safe_dump({"config": {**dev, "vllm-serving:modelSource": "huggingface", "vllm-serving:hubToken": ENCRYPTED_KEY}})
    rendering = render_stack(stack_file(tmp_path, text, base=None), tmp_path)
    assert rendering.find("Secret", "vllm-qwen3-0-6b-hub-token")["stringData"] == {"token": REDACTED}
    (stage,) = rendering.only("Job")["spec"]["template"]["spec"]["containers"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "vllm-qwen3-0-6b-hub-token", "key": "token"}}} in stage["env"]
    assert "--source" in stage["args"] and stage["args"][stage["args"].index("--revision") + 1] == "main"
    # The server reads the revision the Job staged.
    server = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "/models/Qwen/Qwen3-0.6B/main" in server["args"]
    assert SECRET_PLACEHOLDER not in json.dumps([o.manifest for o in rendering.objects])


def test_a_public_host_without_a_key_on_explicit_request(tmp_path):
    settings = {"host": "vllm.example.com", "allowPublicWithoutApiKey": True}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    env = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(e["name"] != "VLLM_API_KEY" for e in env)


def test_the_server_port_admits_only_its_namespace_the_ingress_and_prometheus(rendered):
    prod = rendered["prod"]
    policy = prod.find("NetworkPolicy", "vllm-qwen3-235b")["spec"]
    assert policy["podSelector"]["matchLabels"] == prod.only("Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ingress-nginx", "monitoring"]}
        ]}},
    ]


def test_the_server_calls_only_dns(rendered):
    policy = rendered["prod"].find("NetworkPolicy", "vllm-qwen3-235b-egress")["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["egress"] == [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]


@pytest.mark.parametrize(
    ("settings", "ports"),
    [
        ({}, [443]),
        ({"modelEndpoint": "http://mirror.internal:8080", "downloaderPackageIndex": "https://pypi.internal:8443/simple"}, [8080, 8443]),
        ({"downloaderInstallClient": False, "modelEndpoint": "https://mirror.internal"}, [443]),
    ],
)
def test_the_download_job_reaches_only_dns_the_hub_and_the_index(tmp_path, settings, ports):
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    policy = rendering.find("NetworkPolicy", "vllm-qwen3-0-6b-stage")["spec"]
    job_labels = rendering.only("Job")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in policy
    assert policy["egress"][1:] == [{"ports": [{"port": port, "protocol": "TCP"} for port in ports]}]


def test_no_network_policies_on_request(tmp_path):
    rendering = render_stack(project_with_stack(tmp_path, {"networkPolicies": False}), tmp_path)
    assert "NetworkPolicy" not in {o.kind for o in rendering.objects}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_drain_never_evicts_the_last_replica(rendered, stack):
    # dev runs one replica, prod's autoscaler may keep one: while one is all there is, no pod may
    # be evicted (50% of 1 rounds up to 1); of two, one may (50% of 2 is 1).
    budget = rendered[stack].only("PodDisruptionBudget")
    assert budget["spec"] == {
        "minAvailable": "50%",
        "selector": {"matchLabels": rendered[stack].only("Deployment")["spec"]["selector"]["matchLabels"]},
    }
    (obj,) = [o for o in rendered[stack].objects if o.kind == "PodDisruptionBudget"]
    assert dict(object_details(obj, rendered[stack].objects))["drain"] == (
        "minAvailable 50%; at 1 replica a drain waits: no pod may be evicted until another replica runs"
    )
    # Named apart from the other form: a stack that moves between the two replaces its budget
    # instead of applying one form over the other, which a preview cannot (pdb_name).
    assert obj.name == f"{rendered[stack].only('Deployment')['metadata']['name']}-min-available"


@pytest.mark.parametrize(
    ("settings", "drain"),
    [
        ({"acceptServiceGap": True}, "maxUnavailable 1; at 1 replica a drain may evict 1 pod at once and stop the last replica (service gap)"),
        ({"replicas": 2, "storageAccessMode": "ReadWriteMany"}, "maxUnavailable 1; at 2 replicas a drain evicts at most 1 pod at once, a replica keeps serving"),
    ],
)
def test_a_drain_evicts_one_pod_at_a_time_with_two_replicas_or_the_gap_accepted(tmp_path, settings, drain):
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    (obj,) = [o for o in rendering.objects if o.kind == "PodDisruptionBudget"]
    assert obj.manifest["spec"]["maxUnavailable"] == 1 and "minAvailable" not in obj.manifest["spec"]
    assert dict(object_details(obj, rendering.objects))["drain"] == drain
    assert obj.name == rendering.only("Deployment")["metadata"]["name"]
