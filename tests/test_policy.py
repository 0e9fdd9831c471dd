"""The policy pack in policy/: every rule on good and bad objects, both stacks' objects as the
pack sees them (each passes), one broken thing in a rendered object failing exactly its rule,
the wiring in policy/__main__.py (read, never imported: building the PolicyPack serves and
blocks), and the pack served as the Pulumi CLI starts it, driven over gRPC as the engine does."""

import ast
import copy
import json
import os
import select
import subprocess
import sys
from contextlib import contextmanager
from typing import Callable, Optional

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from conftest import ROOT, project_with_stack
from vllm_serving_components import exposure as component_exposure
from vllm_serving_components import gpu_claim as component_gpu_claim
from vllm_serving_components import labels as component_labels
from vllm_serving_components import pods as component_pods
from vllm_serving_components import vllm_args as component_vllm_args
from vllm_serving_components import vllm_server as component_vllm_server
from policy import rules
from policy.check import type_token
from stack.render import EchoMocks, RecordingMonitor, render_stack

POLICY_DIR = ROOT / "policy"
STACK_RULE = "public_routes_need_api_key"
OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
POLICY_NAMES = {
    "vllm-pinned-images": "pinned_images",
    "vllm-server-gpu-limits": "server_gets_gpus",
    "vllm-server-probes": "server_probes",
    "vllm-server-shm": "server_shm_for_parallelism",
    "vllm-no-plain-secret-env": "no_plain_secret_env",
    "vllm-non-root": "runs_as_non_root",
    "vllm-public-route-needs-api-key": STACK_RULE,
    "vllm-gpu-budget": "gpu_budget",
}


# --- objects as the pack sees them ----------------------------------------------------------


def urn_of(manifest: dict) -> str:
    return f"urn:pulumi:test::vllm-serving::{type_token(manifest)}::{manifest['metadata']['name']}"


def as_seen(props: dict):
    """Properties as pulumi-policy hands them to a validation: through the engine's protobuf
    Struct (every number a float), deserialized and wrapped in its unknown-checking proxy."""
    struct = struct_pb2.Struct()
    struct.update(props)
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def check(rule: Callable, manifest: dict, resource_type: Optional[str] = None) -> list[str]:
    """What a resource rule reports on an object, called the way the pack calls it."""
    resource_type = resource_type or type_token(manifest)
    reported: list[str] = []
    args = ResourceValidationArgs(resource_type, as_seen(manifest), urn_of(manifest), "x", OPTIONS, None)
    rules.resource_validation(rule)(args, lambda message, urn=None: reported.append(message))
    return reported


def check_stack(manifests: list[dict], config: Optional[dict] = None, depends: Optional[dict] = None) -> list[tuple[str, str]]:
    """(message, urn) the stack rule reports on these objects; depends maps an object's name to
    the names of objects it depends on."""
    resources = {
        manifest["metadata"]["name"] + "/" + manifest["kind"]: PolicyResource(
            type_token(manifest), as_seen(manifest), urn_of(manifest), manifest["metadata"]["name"], OPTIONS, None, None, [], {}
        )
        for manifest in manifests
    }
    for key, names in (depends or {}).items():
        resources[key].dependencies.extend(resources[name] for name in names)
    reported: list[tuple[str, str]] = []
    args = StackValidationArgs(list(resources.values()), config or {})
    rules.stack_validation(rules.public_routes_need_api_key)(args, lambda message, urn=None: reported.append((message, urn)))
    return reported


def failing(manifests: list[dict], config: Optional[dict] = None) -> set[str]:
    """The names of the rules some object fails."""
    names = {rule.__name__ for manifest in manifests for rule in rules.RESOURCE_RULES if check(rule, manifest)}
    return names | ({STACK_RULE} if check_stack(manifests, config) else set())


@pytest.fixture(autouse=True)
def no_stack_config(monkeypatch):
    """No stack configuration unless a test gives one, as outside a Pulumi operation."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_PROJECT", raising=False)


# --- hand-written objects -------------------------------------------------------------------

SECURE = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
HEALTH = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
KEY_ENV = {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}}
SELECTOR = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "qwen", "app.kubernetes.io/component": "server"}
SERVER_LABELS = {**SELECTOR, "app.kubernetes.io/part-of": "vllm-serving", "app.kubernetes.io/managed-by": "pulumi"}
JOB_LABELS = {**SERVER_LABELS, "app.kubernetes.io/component": "model-store"}
DIGEST = "sha256:" + "0123456789abcdef" * 4


def server_container(**changes) -> dict:
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.11.0",
        "command": ["vllm", "serve"],
        "args": ["/models/Qwen/Qwen3-0.6B/master", "--tensor-parallel-size", "2", "--port", "8000"],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, KEY_ENV],
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}},
        "startupProbe": {**HEALTH, "failureThreshold": 180},
        "readinessProbe": HEALTH,
        "livenessProbe": HEALTH,
        "securityContext": SECURE,
        "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    container.update(changes)
    return copy.deepcopy({key: value for key, value in container.items() if value is not None})


def init_container(**changes) -> dict:
    container = {"name": "check-model-store", "image": "vllm/vllm-openai:v0.11.0", "command": ["sh", "-c", "test -f x"],
                 "securityContext": SECURE}
    container.update(changes)
    return copy.deepcopy(container)


def pod_spec(containers: list, init: Optional[list] = None, volumes: Optional[list] = None, security: Optional[dict] = None) -> dict:
    spec = {
        "containers": containers,
        "volumes": volumes if volumes is not None else [
            {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}},
        ],
        "securityContext": security if security is not None else {"runAsNonRoot": True, "runAsUser": 10001},
    }
    if init:
        spec["initContainers"] = init
    return copy.deepcopy(spec)


def deployment(spec: Optional[dict] = None, labels: Optional[dict] = None, name: str = "qwen", namespace: str = "ai") -> dict:
    labels = SERVER_LABELS if labels is None else labels
    return copy.deepcopy({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "template": {"metadata": {"labels": labels}, "spec": spec or pod_spec([server_container()], [init_container()])},
        },
    })


def server(**container_changes) -> dict:
    """A Deployment of the vLLM server as this project makes it, with container changes."""
    return deployment(pod_spec([server_container(**container_changes)], [init_container()]))


def job(**container_changes) -> dict:
    container = {"name": "stage-model", "image": "vllm/vllm-openai:v0.11.0", "command": ["sh", "-c", "python3 stage.py"],
                 "securityContext": SECURE, **container_changes}
    return copy.deepcopy({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "qwen-stage", "namespace": "ai", "labels": JOB_LABELS},
        "spec": {"template": {"metadata": {"labels": JOB_LABELS},
                              "spec": {**pod_spec([container], volumes=[]), "restartPolicy": "Never"}}},
    })


def unrelated(**container_changes) -> dict:
    """Somebody else's web server in the same stack: latest image, root, no probes."""
    container = {"name": "web", "image": "nginx:latest", "env": [{"name": "ADMIN_PASSWORD", "value": "hunter2"}],
                 **container_changes}
    return deployment(pod_spec([container], volumes=[], security={}), labels={"app": "web"}, name="web")


def service(name: str = "qwen", selector: Optional[dict] = None, kind: str = "ClusterIP", namespace: str = "ai") -> dict:
    return copy.deepcopy({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {**SERVER_LABELS, "app.kubernetes.io/component": "api"}},
        "spec": {"type": kind, "selector": SELECTOR if selector is None else selector,
                 "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
    })


def ingress(service_name: str = "qwen", path: Optional[str] = "/v1", host: str = "vllm.example.com",
            annotations: Optional[dict] = None) -> dict:
    http_path = {"pathType": "Prefix" if path else "ImplementationSpecific",
                 "backend": {"service": {"name": service_name, "port": {"number": 8000}}}}
    if path:
        http_path["path"] = path
    return copy.deepcopy({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "qwen", "namespace": "ai", "annotations": annotations or {}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [http_path]}}]},
    })


def http_route(service_name: str = "qwen", matches: Optional[list] = None, filters: Optional[list] = None,
               namespace: Optional[str] = None) -> dict:
    rule: dict = {"backendRefs": [{"name": service_name, "port": 8000}]}
    if namespace:
        rule["backendRefs"][0]["namespace"] = namespace
    rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/v1"}}] if matches is None else matches
    if filters:
        rule["filters"] = filters
    return copy.deepcopy({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "qwen", "namespace": "ai"},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["vllm.example.com"], "rules": [rule]},
    })


def containers_of(manifest: dict) -> list[dict]:
    pod = manifest["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


# --- the rules agree with the components ----------------------------------------------------


def test_the_rules_speak_the_components_language():
    assert rules.SECRET_WORDS == component_pods.SECRET_WORDS
    assert rules.PART_OF == component_labels.PART_OF
    assert component_labels.selector_labels("x", rules.SERVER_COMPONENT)[rules.NAME_LABEL] == rules.APP_NAME
    assert rules.SERVER_COMPONENT == component_vllm_server.COMPONENT
    assert rules.API_KEY_ENV == component_vllm_server.API_KEY_ENV
    assert rules.API_PATH == component_exposure.API_PATH
    assert rules.GPU_RESOURCE == component_gpu_claim.GPU_RESOURCE
    assert component_vllm_args.SERVE_COMMAND == ["vllm", "serve"]
    assert rules.PINNED_EXAMPLE == component_vllm_server.DEFAULT_IMAGE


def test_type_tokens_are_those_the_program_registers(rendered):
    """The type tokens the tests build from manifests are the ones registered with the engine,
    the HTTPRoute custom resource's included."""
    monitor = RecordingMonitor(EchoMocks())
    rendering = render_stack("prod", monitor=monitor)
    types = (urn.split("::")[2].split("$")[-1] for urn in monitor.resources)
    registered = sorted(resource_type for resource_type in types if resource_type.startswith("kubernetes:"))
    # What a destroy keeps is registered as a Patch resource of its kind (components/kept.py).
    kept = {("Namespace", rendering.outputs["namespace"]), ("PersistentVolumeClaim", rendering.outputs["claimName"])}
    expected = sorted(type_token(o.manifest) + ("Patch" if (o.kind, o.name) in kept else "") for o in rendering.objects)
    assert registered == expected
    assert "kubernetes:networking.k8s.io/v1:Ingress" in registered
    assert rules.kind_of("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute") == ("gateway.networking.k8s.io", "HTTPRoute")
    assert rules.kind_of("kubernetes:core/v1:Service") == ("core", "Service")
    assert rules.kind_of("vllm-serving:index:VLLMServer") is None
    assert rules.kind_of("pulumi:providers:kubernetes") is None


# --- each rule on good and bad objects ------------------------------------------------------


def test_a_server_as_this_project_makes_it_passes_every_rule():
    objects = [server(), job(), service(), ingress()]
    assert {rule.__name__: check(rule, obj) for obj in objects for rule in rules.RESOURCE_RULES if check(rule, obj)} == {}
    assert check_stack(objects) == []


def test_unrelated_workloads_are_left_alone():
    """Somebody else's Deployment in the stack (latest image, root, secret in env, no GPU, no probes),
    and a public route to it, are not this pack's business."""
    web = unrelated()
    objects = [web, service("web", {"app": "web"}, kind="LoadBalancer"), ingress("web", path="/")]
    assert failing(objects) == set()


@pytest.mark.parametrize(
    "image",
    ["vllm/vllm-openai:v0.11.0", "registry.local:5000/mirror/vllm-openai:v0.11.0", f"vllm/vllm-openai@{DIGEST}",
     f"vllm/vllm-openai:latest@{DIGEST}", "localhost/vllm:1"],
)
def test_pinned_images_pass(image):
    assert check(rules.pinned_images, server(image=image)) == []


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("vllm/vllm-openai:latest", "moving tag latest"),
        ("vllm/vllm-openai", "without a tag"),
        ("registry.local:5000/vllm-openai", "without a tag"),
        ("vllm/vllm-openai@sha256:abc", "digest is not sha256"),
        ("", "has no image"),
        (None, "has no image"),
    ],
)
def test_unpinned_server_images_fail(image, words):
    (message,) = check(rules.pinned_images, server(image=image))
    assert message.startswith("Deployment ai/qwen: container vllm ")
    assert words in message and "pin a release tag, e.g. vllm/vllm-openai:v0.34.0, or a digest" in message


def test_init_containers_and_jobs_need_pinned_images_too():
    manifest = deployment(pod_spec([server_container()], [init_container(image="busybox")]))
    (message,) = check(rules.pinned_images, manifest)
    assert "init container check-model-store uses busybox without a tag" in message
    (message,) = check(rules.pinned_images, job(image="vllm/vllm-openai:latest"))
    assert message.startswith("Job ai/qwen-stage: container stage-model uses vllm/vllm-openai:latest")


@pytest.mark.parametrize(
    ("api_version", "kind", "template_path"),
    [
        ("apps/v1", "StatefulSet", ("spec", "template")),
        ("apps/v1", "DaemonSet", ("spec", "template")),
        ("batch/v1", "CronJob", ("spec", "jobTemplate", "spec", "template")),
        ("v1", "Pod", ()),
    ],
)
def test_every_workload_kind_is_read(api_version, kind, template_path):
    template = {"metadata": {"labels": SERVER_LABELS}, "spec": pod_spec([server_container(image="vllm/vllm-openai:latest")])}
    manifest: dict = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w", "namespace": "ai"}}
    if template_path:
        node = manifest
        for key in template_path[:-1]:
            node = node.setdefault(key, {})
        node[template_path[-1]] = template
    else:
        manifest.update(template)
        manifest["metadata"] = {"name": "w", "namespace": "ai", "labels": SERVER_LABELS}
    (message,) = check(rules.pinned_images, manifest)
    assert message.startswith(f"{kind} ai/w: container vllm uses vllm/vllm-openai:latest")


def test_leader_worker_sets_are_read_template_by_template():
    template = {"metadata": {"labels": SERVER_LABELS}, "spec": pod_spec([server_container(image="vllm/vllm-openai:latest")])}
    manifest = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": "w"},
                "spec": {"leaderWorkerTemplate": {"leaderTemplate": template, "workerTemplate": template}}}
    assert [message.split(":")[0] for message in check(rules.pinned_images, manifest)] == [
        "LeaderWorkerSet w (leaderTemplate)", "LeaderWorkerSet w (workerTemplate)"]


@pytest.mark.parametrize(
    "limits",
    [
        {"nvidia.com/gpu": "1"},
        {"nvidia.com/gpu": 8},
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "50"},
        {"nvidia.com/mig-3g.40gb": "1"},
    ],
    ids=["one", "eight", "hami-slice", "mig"],
)
def test_servers_with_gpus_pass(limits):
    assert check(rules.server_gets_gpus, server(resources={"limits": {"cpu": "4", **limits}})) == []


def test_a_server_with_a_dra_claim_passes():
    spec = pod_spec([server_container(resources={"limits": {"cpu": "4"}, "claims": [{"name": "gpus"}]})])
    spec["resourceClaims"] = [{"name": "gpus", "resourceClaimTemplateName": "qwen-gpus"}]
    assert check(rules.server_gets_gpus, deployment(spec)) == []
    del spec["resourceClaims"]
    assert len(check(rules.server_gets_gpus, deployment(spec))) == 1


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        ({"cpu": "4"}, "has no nvidia.com/gpu limit, so it would start without a GPU"),
        ({"nvidia.com/gpu": "0"}, "has limits nvidia.com/gpu: 0, so it would start without a GPU"),
        ({"nvidia.com/gpumem": "12288", "nvidia.com/gpucores": "50"}, "HAMi slice limits (nvidia.com/gpumem, nvidia.com/gpucores) but no nvidia.com/gpu limit"),
        ({"nvidia.com/mig-3g.40gb": "0"}, "has no nvidia.com/gpu limit"),
    ],
)
def test_servers_without_gpus_fail(limits, words):
    (message,) = check(rules.server_gets_gpus, server(resources={"limits": limits}))
    assert message.startswith("Deployment ai/qwen: vLLM server container vllm ")
    assert words in message


def test_only_vllm_servers_need_gpus():
    assert check(rules.server_gets_gpus, job()) == []
    manifest = server()
    assert "resources" not in manifest["spec"]["template"]["spec"]["initContainers"][0]
    assert check(rules.server_gets_gpus, manifest) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"command": None, "args": ["/models/m", "--port", "8000"]},  # the vllm-openai image's entrypoint is vllm serve
        {"command": ["/usr/local/bin/vllm"], "args": ["serve", "/models/m"]},
        {"command": ["python3", "-m", "vllm.entrypoints.openai.api_server"], "args": ["--model", "/models/m"]},
        {"command": ["sh", "-c", "exec vllm serve /models/m --port 8000"], "args": None},
    ],
    ids=["image-entrypoint", "vllm-path", "api-server-module", "shell"],
)
def test_servers_are_recognised_by_what_they_run_without_the_projects_labels(changes):
    manifest = deployment(pod_spec([server_container(resources={}, **changes)]), labels={"app": "llm"})
    assert len(check(rules.server_gets_gpus, manifest)) == 1


def test_a_labelled_server_pod_is_judged_even_when_its_command_changed():
    manifest = server(command=["python3", "serve.py"], resources={})
    assert len(check(rules.server_gets_gpus, manifest)) == 1
    # Another image's container without a command, in a pod nobody labelled a server, is no server.
    other = deployment(pod_spec([server_container(command=None, image="redis:7", resources={})]), labels={"app": "cache"})
    assert check(rules.server_gets_gpus, other) == []


def test_servers_with_every_probe_pass():
    assert check(rules.server_probes, server()) == []


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_servers_missing_a_probe_fail(probe):
    (message,) = check(rules.server_probes, server(**{probe: None}))
    assert message.startswith(f"Deployment ai/qwen: vLLM server container vllm has no {probe}; probe GET /health")
    (message,) = check(rules.server_probes, server(**{probe: {"periodSeconds": 10}}))
    assert f"has no {probe}" in message


def test_a_server_without_any_probe_is_told_all_three():
    (message,) = check(rules.server_probes, server(startupProbe=None, readinessProbe=None, livenessProbe=None))
    assert "has no startupProbe, readinessProbe, livenessProbe" in message
    assert check(rules.server_probes, job()) == []


def test_a_headless_server_has_no_api_to_probe():
    """A data-expert worker: vllm serve --headless starts engines and no API server."""
    bare = {"startupProbe": None, "readinessProbe": None, "livenessProbe": None, "ports": None}
    script = 'exec "$0" "$@" --data-parallel-address "$LWS_LEADER_ADDRESS" --headless --data-parallel-start-rank 8'
    worker = server_container(command=["sh", "-c", script, "vllm"], args=["serve", "/m", "--data-parallel-size", "16"], **bare)
    assert check(rules.server_probes, deployment(pod_spec([worker]))) == []
    (message,) = check(rules.server_probes, deployment(pod_spec([server_container(**bare)])))
    assert "has no startupProbe, readinessProbe, livenessProbe" in message


@pytest.mark.parametrize(
    "args",
    [
        ["/m", "--tensor-parallel-size", "2"],
        ["/m", "--tensor-parallel-size=8"],
        ["/m", "-tp", "2"],
        ["/m", "-tp=2"],
        ["/m", "--tensor_parallel_size", "4"],
        ["/m", "--tensor-parallel", "2"],
        ["/m", "--pipeline-parallel-size", "2"],
        ["/m", "-pp=2"],
        ["/m", "-tp", "1", "--pipeline_parallel_size=2"],
        ["/m", "--data-parallel-size", "8", "--enable-expert-parallel"],
        ["/m", "-dp", "2"],
    ],
)
def test_parallel_servers_without_memory_shm_fail(args):
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    container = server_container(args=args, volumeMounts=[{"name": "models", "mountPath": "/models"}])
    (message,) = check(rules.server_shm_for_parallelism, deployment(pod_spec([container], volumes=volumes)))
    assert message.startswith("Deployment ai/qwen: vLLM server container vllm runs with --")
    assert "but has no memory-backed /dev/shm" in message and "emptyDir {medium: Memory" in message


def test_parallelism_in_a_shell_command_is_read_too():
    container = server_container(command=["sh", "-c", "exec vllm serve /m --tensor-parallel-size 4"], args=None,
                                 volumeMounts=[])
    assert len(check(rules.server_shm_for_parallelism, deployment(pod_spec([container])))) == 1


@pytest.mark.parametrize(
    ("volume", "mount_path", "passes"),
    [
        ({"emptyDir": {"medium": "Memory"}}, "/dev/shm", True),
        ({"emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}}, "/dev/shm/", True),
        ({"emptyDir": {}}, "/dev/shm", False),
        ({"hostPath": {"path": "/dev/shm"}}, "/dev/shm", False),
        ({"emptyDir": {"medium": "Memory"}}, "/shm", False),
    ],
)
def test_only_a_memory_backed_dev_shm_serves_parallel_servers(volume, mount_path, passes):
    container = server_container(volumeMounts=[{"name": "dshm", "mountPath": mount_path}])
    manifest = deployment(pod_spec([container], volumes=[{"name": "dshm", **volume}]))
    assert (check(rules.server_shm_for_parallelism, manifest) == []) is passes


@pytest.mark.parametrize(
    "args",
    [["/m"], ["/m", "--tensor-parallel-size", "1"], ["/m", "-tp", "2", "-tp", "1"], ["/m", "--data-parallel-size-local", "2"]],
)
def test_single_gpu_servers_need_no_shm(args):
    container = server_container(args=args, volumeMounts=[])
    assert check(rules.server_shm_for_parallelism, deployment(pod_spec([container], volumes=[]))) == []


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "HF_TOKEN", "value": "hf_abc"},
        {"name": "hf_token", "value": "hf_abc"},
        {"name": "VLLM_API_KEY", "value": "sk-1"},
        {"name": "DB_PASSWORD", "value": ""},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "GCP_CREDENTIALS"},
    ],
)
def test_secret_looking_env_in_plain_text_fails(entry):
    (message,) = check(rules.no_plain_secret_env, server(env=[entry]))
    assert message.startswith("Deployment ai/qwen: container vllm ")
    assert entry["name"] in message and "valueFrom.secretKeyRef" in message


def test_secret_env_from_secrets_and_plain_env_pass():
    env = [KEY_ENV, {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
           {"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "HOME", "value": "/tmp/home"}]
    assert check(rules.no_plain_secret_env, server(env=env)) == []
    (message,) = check(rules.no_plain_secret_env, job(env=[{"name": "MODELSCOPE_API_TOKEN", "value": "ms-1"}]))
    assert message.startswith("Job ai/qwen-stage: container stage-model sets MODELSCOPE_API_TOKEN with value")


def test_non_root_containers_pass():
    assert check(rules.runs_as_non_root, server()) == []
    # runAsNonRoot on every container instead of the pod.
    containers = [server_container(securityContext={**SECURE, "runAsNonRoot": True})]
    init = [init_container(securityContext={**SECURE, "runAsNonRoot": True})]
    assert check(rules.runs_as_non_root, deployment(pod_spec(containers, init, security={}))) == []


@pytest.mark.parametrize(
    ("container_context", "pod_context", "words"),
    [
        (SECURE, {}, "runAsNonRoot is not true"),
        ({**SECURE, "runAsNonRoot": False}, {"runAsNonRoot": True}, "runAsNonRoot is not true"),
        ({**SECURE, "runAsUser": 0}, {"runAsNonRoot": True, "runAsUser": 10001}, "its runAsUser is 0 (root)"),
        (SECURE, {"runAsNonRoot": True, "runAsUser": 0}, "the pod's runAsUser is 0 (root)"),
        ({"capabilities": {"drop": ["ALL"]}}, {"runAsNonRoot": True}, "allowPrivilegeEscalation is not false"),
        ({**SECURE, "allowPrivilegeEscalation": True}, {"runAsNonRoot": True}, "allowPrivilegeEscalation is not false"),
        ({"allowPrivilegeEscalation": False}, {"runAsNonRoot": True}, "capabilities.drop does not hold ALL"),
        ({**SECURE, "capabilities": {"drop": ["NET_RAW"]}}, {"runAsNonRoot": True}, "capabilities.drop does not hold ALL"),
    ],
)
def test_root_or_privileged_containers_fail(container_context, pod_context, words):
    manifest = deployment(pod_spec([server_container(securityContext=container_context)], security=pod_context))
    (message,) = check(rules.runs_as_non_root, manifest)
    assert message.startswith("Deployment ai/qwen: container vllm may run as root or gain privileges: ")
    assert words in message and "allowPrivilegeEscalation: false and capabilities: {drop: [ALL]}" in message


def test_a_root_init_container_fails_on_its_own():
    init = [init_container(securityContext={**SECURE, "runAsUser": 0})]
    (message,) = check(rules.runs_as_non_root, deployment(pod_spec([server_container()], init)))
    assert message.startswith("Deployment ai/qwen: init container check-model-store may run as root")


# --- the stack rule: no public route without a key ------------------------------------------


@pytest.mark.parametrize("route", [ingress(), http_route()], ids=["ingress", "http-route"])
def test_a_public_route_to_a_server_with_its_key_passes(route):
    assert check_stack([server(), service(), route]) == []


@pytest.mark.parametrize("route", [ingress(), http_route()], ids=["ingress", "http-route"])
def test_a_public_route_to_a_server_without_a_key_fails(route):
    for env in ([], [{"name": "VLLM_API_KEY", "value": "sk-plain"}]):
        (message, urn), = check_stack([server(env=env), service(), route])
        assert urn == urn_of(route)
        assert message.startswith(f"{route['kind']} ai/qwen makes Service qwen public on host vllm.example.com, and its "
                                  "pods (Deployment ai/qwen) run vLLM without an API key")
        assert "apiKeySecretName" in message and "allowPublicWithoutApiKey: true" in message


def inference_pool(name: str = "qwen") -> dict:
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": "ai"},
        "spec": {"selector": {"matchLabels": SELECTOR}, "targetPorts": [{"number": 8000}],
                 "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}},
    }


def route_to_pool(name: str = "qwen") -> dict:
    route = http_route()
    route["spec"]["rules"][0]["backendRefs"] = [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name}]
    return route


def test_a_public_route_to_an_inference_pool_is_followed_to_its_servers():
    """The pool's selector picks the pods as a Service's does: the key is required there too."""
    assert check_stack([server(), inference_pool(), route_to_pool()]) == []
    (message, _), = check_stack([server(env=[]), inference_pool(), route_to_pool()])
    assert message.startswith("HTTPRoute ai/qwen makes InferencePool qwen public on host vllm.example.com, and its pods "
                              "(Deployment ai/qwen) run vLLM without an API key")
    # A Service of the same name is not the pool: nothing else is followed.
    assert check_stack([server(env=[]), service(), route_to_pool("other")]) == []


def test_the_policy_config_allows_public_routes_without_a_key():
    objects = [server(env=[]), service(), ingress()]
    assert check_stack(objects, config={"allowPublicWithoutApiKey": True}) == []
    assert len(check_stack(objects, config={"allowPublicWithoutApiKey": False})) == 1


def test_the_stacks_own_setting_allows_public_routes_without_a_key(monkeypatch):
    objects = [server(env=[]), service(), ingress()]
    monkeypatch.setenv("PULUMI_PROJECT", "vllm-serving")
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"vllm-serving:allowPublicWithoutApiKey": "true"}))
    assert check_stack(objects) == []
    # Another project's key, or false, allows nothing.
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"other:allowPublicWithoutApiKey": "true"}))
    assert len(check_stack(objects)) == 1
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"vllm-serving:allowPublicWithoutApiKey": "false"}))
    assert len(check_stack(objects)) == 1
    monkeypatch.setenv("PULUMI_CONFIG", "not json")
    assert len(check_stack(objects)) == 1


@pytest.mark.parametrize(
    ("route", "words"),
    [
        (ingress(path="/"), "sends path / on host vllm.example.com to the vLLM server (Deployment ai/qwen)"),
        (ingress(path=None), "path (none: every path)"),
        (ingress(annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}),
         "paths rewritten by nginx.ingress.kubernetes.io/rewrite-target"),
        (http_route(matches=[{"path": {"type": "PathPrefix", "value": "/"}}]), "path / (PathPrefix)"),
        (http_route(matches=[]), "path / (PathPrefix)"),
        (http_route(matches=[{"headers": [{"name": "x", "value": "y"}]}]), "path / (PathPrefix)"),
        (http_route(matches=[{"path": {"type": "RegularExpression", "value": "/(v1|invocations)/.*"}}]),
         "RegularExpression"),
        (http_route(filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]),
         "paths rewritten by a URLRewrite filter"),
        # A prefix swapped for /v1x, or a prefix swap after a match that is not a PathPrefix.
        (http_route(matches=[{"path": {"type": "PathPrefix", "value": "/qwen/v1"}}],
                    filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1x"}}}]),
         "paths rewritten by a URLRewrite filter"),
        (http_route(matches=[{"path": {"type": "RegularExpression", "value": "/qwen/.*"}}],
                    filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}}}]),
         "paths rewritten by a URLRewrite filter"),
    ],
    ids=["ingress-root", "ingress-no-path", "ingress-rewrite", "route-root", "route-no-matches", "route-header-match",
         "route-regex", "route-rewrite", "route-rewrite-beside-v1", "route-rewrite-after-regex"],
)
def test_a_route_beyond_v1_fails_even_with_a_key(route, words):
    (message, urn), = check_stack([server(), service(), route])
    assert words in message and "Route the path prefix /v1 only" in message
    assert urn == urn_of(route)


@pytest.mark.parametrize(
    "matches",
    [[{"path": {"type": "Exact", "value": "/v1/chat/completions"}}],
     [{"path": {"type": "RegularExpression", "value": "^/v1/.*"}}]],
)
def test_routes_under_v1_pass(matches):
    assert check_stack([server(), service(), http_route(matches=matches)]) == []


@pytest.mark.parametrize(
    "path",
    [{"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}, {"type": "ReplaceFullPath", "replaceFullPath": "/v1/models"}],
)
def test_a_path_prefix_rewritten_into_v1_passes(path):
    """Exposure's path_prefix: /qwen/v1 on a shared host, the prefix swapped for /v1."""
    route = http_route(matches=[{"path": {"type": "PathPrefix", "value": "/qwen/v1"}}],
                       filters=[{"type": "URLRewrite", "urlRewrite": {"path": path}}])
    assert check_stack([server(), service(), route]) == []


def test_a_default_backend_exposes_every_path():
    route = ingress()
    route["spec"]["defaultBackend"] = {"service": {"name": "qwen", "port": {"number": 8000}}}
    ((message, _),) = check_stack([server(), service(), route])
    assert "every path (defaultBackend)" in message


def test_a_load_balancer_service_is_a_public_route():
    (message, urn), = check_stack([server(env=[]), service(kind="LoadBalancer")])
    assert message.startswith("Service ai/qwen makes Service qwen public on every node or load balancer address")
    (message, _), = check_stack([server(), service(kind="NodePort")])
    assert "every path (the Service itself is reachable from outside)" in message
    assert check_stack([server(env=[]), service()]) == []


def test_routes_are_followed_by_service_name_namespace_and_selector():
    keyless = server(env=[])
    # A route to a Service of the same name in another namespace reaches nothing here.
    assert check_stack([keyless, service(namespace="other"), ingress()]) == []
    # A Service selecting other pods, or none.
    assert check_stack([keyless, service(selector={"app": "web"}), ingress()]) == []
    assert check_stack([keyless, service(selector={}), ingress()]) == []
    # A route to another Service.
    assert check_stack([keyless, service(), ingress("elsewhere")]) == []
    # An HTTPRoute's backend in the Service's namespace, named explicitly.
    other = deployment(pod_spec([server_container(env=[])]), namespace="models")
    assert len(check_stack([other, service(namespace="models"), http_route(namespace="models")])) == 1


def test_an_unknown_selector_is_followed_through_the_services_dependencies():
    """In a preview the Service's selector may not be known yet (it comes from the server's
    output); the Service depends on the server's Deployment, which is followed instead."""
    objects = [server(env=[]), service(selector=UNKNOWN_OBJECT_VALUE), ingress()]
    assert len(check_stack(objects, depends={"qwen/Service": ["qwen/Deployment"]})) == 1
    assert check_stack(objects) == []


# --- values unknown during preview ----------------------------------------------------------


def test_plain_turns_pulumi_policys_unknowns_into_unknown():
    seen = as_seen({"a": UNKNOWN_STRING_VALUE, "b": [1, UNKNOWN_STRING_VALUE], "c": {"d": "x"}})
    with pytest.raises(UnknownValueError):
        seen["a"]
    assert rules.plain(seen) == {"a": rules.UNKNOWN, "b": [1.0, rules.UNKNOWN], "c": {"d": "x"}}
    assert rules.plain({"a": UNKNOWN_STRING_VALUE}) == {"a": rules.UNKNOWN}


def test_a_preview_of_a_new_stack_with_unknowns_passes_and_fails_what_it_can_see():
    """Before its first update the namespace, the model path and the claim are not known."""
    manifest = server(args=[UNKNOWN_STRING_VALUE, "--tensor-parallel-size", "2"])
    manifest["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    manifest["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = UNKNOWN_STRING_VALUE
    assert failing([manifest]) == set()
    unknown_image = server(image=UNKNOWN_STRING_VALUE)
    assert check(rules.pinned_images, unknown_image) == []
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:latest"
    (message,) = check(rules.pinned_images, manifest)
    assert message.startswith("Deployment qwen: container vllm uses vllm/vllm-openai:latest")
    keyless = server(env=[])
    keyless["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    assert len(check_stack([keyless, service(), ingress()])) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from([UNKNOWN_STRING_VALUE, "vllm", "serve", "-tp", "2", "/dev/shm", "Memory", "ALL", "/v1", "qwen"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "template", "containers", "initContainers", "name", "namespace", "labels",
                         "command", "args", "env", "value", "valueFrom", "image", "resources", "limits", "volumes",
                         "volumeMounts", "mountPath", "emptyDir", "medium", "securityContext", "selector", "rules",
                         "http", "paths", "path", "backend", "service", "backendRefs", "matches", "hostnames", "type"]),
        children, max_size=5),
    max_leaves=25,
)
TYPES = st.sampled_from(["kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job", "kubernetes:core/v1:Pod",
                         "kubernetes:core/v1:Service", "kubernetes:networking.k8s.io/v1:Ingress",
                         "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "pulumi:providers:kubernetes"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TYPES, st.dictionaries(st.sampled_from(["metadata", "spec", "kind"]), JSON, max_size=3)), max_size=4))
def test_no_rule_raises_on_any_shape(resources):
    """A rule that raised would fail the preview with a traceback instead of a message."""
    for resource_type, props in resources:
        for rule in rules.RESOURCE_RULES:
            assert all(isinstance(message, str) for message in rule(resource_type, rules.plain(as_seen(props))))
    stack = [rules.Resource(resource_type, rules.plain(as_seen(props))) for resource_type, props in resources]
    assert isinstance(rules.public_routes_need_api_key(stack, {}), list)


# --- both stacks, as rendered through the real program --------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_object_of_the_stack_passes_every_rule(rendered, stack):
    manifests = [obj.manifest for obj in rendered[stack].objects]
    assert {(obj.kind, obj.name, rule.__name__): check(rule, obj.manifest)
            for obj in rendered[stack].objects for rule in rules.RESOURCE_RULES if check(rule, obj.manifest)} == {}
    assert check_stack(manifests) == []
    # The rules did look at the stack's server.
    (server_pod,) = [pod for m in manifests for pod in rules.pods_of(type_token(m), rules.plain(as_seen(m))) if pod.servers()]
    assert server_pod.labelled_server


GATEWAY = {"host": "vllm.example.com", "exposureRoute": "gateway", "gatewayName": "public", "apiKeySecretName": "vllm-api-key"}


@pytest.mark.parametrize(
    "settings",
    [
        GATEWAY,
        {"host": "vllm.example.com", "apiKeySecretName": "vllm-api-key", "tls": True},
        {"gpuBackend": "nvidia", "gpuCount": 2, "tensorParallelSize": 2, "hamiMemoryMiB": 0, "hamiCores": 0, "memory": "32Gi",
         "extraArgs": ["--enable-prefix-caching"], "serverSecretEnv": ["HF_TOKEN=hub-token:token"]},
    ],
    ids=["gateway-with-key", "ingress-with-key", "nvidia-tensor-parallel"],
)
def test_stack_variants_pass_every_rule(tmp_path, settings):
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    manifests = [obj.manifest for obj in rendering.objects]
    assert failing(manifests) == set()
    if settings is GATEWAY:
        (route,) = [m for m in manifests if m["kind"] == "HTTPRoute"]
        assert type_token(route) == "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
        # The same stack without its key: the HTTPRoute custom resource is followed to the server.
        keyless = [copy.deepcopy(m) for m in manifests]
        for container in containers_of(_only(keyless, "Deployment")):
            container["env"] = [e for e in container.get("env", []) if e["name"] != "VLLM_API_KEY"]
        assert failing(keyless) == {STACK_RULE}


@pytest.mark.parametrize(
    ("settings", "takes_away_the_gpu"),
    [
        ({"gpuBackend": "mig", "gpuMigProfile": "3g.40gb", "hamiMemoryMiB": 0, "hamiCores": 0},
         lambda c: [c["resources"][side].pop("nvidia.com/mig-3g.40gb") for side in ("limits", "requests")]),
        ({"gpuBackend": "dra", "kubernetesVersion": "1.34", "hamiMemoryMiB": 0, "hamiCores": 0},
         lambda c: c["resources"].pop("claims")),
    ],
    ids=["mig", "dra"],
)
def test_mig_and_dra_servers_get_their_gpus(tmp_path, settings, takes_away_the_gpu):
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    manifests = [copy.deepcopy(obj.manifest) for obj in rendering.objects]
    assert failing(manifests) == set()
    takes_away_the_gpu(_server_container(manifests))
    assert failing(manifests) == {"server_gets_gpus"}


def test_a_stack_that_allows_public_access_without_a_key_passes_only_with_its_setting(tmp_path, monkeypatch):
    settings = {"host": "vllm.example.com", "allowPublicWithoutApiKey": True}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    manifests = [obj.manifest for obj in rendering.objects]
    ((message, urn),) = check_stack(manifests)
    assert "Ingress ai-serving-dev/vllm-qwen3-0-6b makes Service vllm-qwen3-0-6b public on host vllm.example.com" in message
    monkeypatch.setenv("PULUMI_PROJECT", "vllm-serving")
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"vllm-serving:allowPublicWithoutApiKey": "true"}))
    assert failing(manifests) == set()


def _only(manifests: list[dict], kind: str) -> dict:
    (manifest,) = [m for m in manifests if m["kind"] == kind]
    return manifest


def _server_container(manifests: list[dict]) -> dict:
    return _only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


BREAKS = [
    ("server image latest", lambda m: _server_container(m).update(image="vllm/vllm-openai:latest"), "pinned_images"),
    ("init image untagged", lambda m: _only(m, "Deployment")["spec"]["template"]["spec"]["initContainers"][0].update(
        image="vllm/vllm-openai"), "pinned_images"),
    ("job image latest", lambda m: _only(m, "Job")["spec"]["template"]["spec"]["containers"][0].update(
        image="vllm/vllm-openai:latest"), "pinned_images"),
    ("no gpu limit", lambda m: [_server_container(m)["resources"][side].pop("nvidia.com/gpu") for side in ("limits", "requests")],
     "server_gets_gpus"),
    ("no startup probe", lambda m: _server_container(m).pop("startupProbe"), "server_probes"),
    ("no liveness probe", lambda m: _server_container(m).pop("livenessProbe"), "server_probes"),
    ("no /dev/shm", lambda m: _server_container(m).update(
        volumeMounts=[v for v in _server_container(m)["volumeMounts"] if v["mountPath"] != "/dev/shm"]),
     "server_shm_for_parallelism"),
    ("plain token in the job", lambda m: _only(m, "Job")["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "MODELSCOPE_API_TOKEN", "value": "ms-secret"}), "no_plain_secret_env"),
    ("root user", lambda m: _server_container(m)["securityContext"].update(runAsUser=0), "runs_as_non_root"),
    ("root job pod", lambda m: _only(m, "Job")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
     "runs_as_non_root"),
    ("privilege escalation", lambda m: _server_container(m)["securityContext"].pop("allowPrivilegeEscalation"),
     "runs_as_non_root"),
    ("no api key", lambda m: _server_container(m).update(
        env=[e for e in _server_container(m)["env"] if e["name"] != "VLLM_API_KEY"]), STACK_RULE),
    ("route of /", lambda m: _only(m, "Ingress")["spec"]["rules"][0]["http"]["paths"][0].update(path="/"), STACK_RULE),
    ("load balancer", lambda m: _only(m, "Service")["spec"].update(type="LoadBalancer"), STACK_RULE),
]


@pytest.mark.parametrize(("what", "breaks", "rule"), BREAKS, ids=[what for what, _, _ in BREAKS])
def test_breaking_one_thing_in_prod_fails_exactly_its_rule(rendered, what, breaks, rule):
    manifests = [copy.deepcopy(obj.manifest) for obj in rendered["prod"].objects]
    breaks(manifests)
    assert failing(manifests) == {rule}


def test_what_dev_does_not_promise_breaks_nothing_there(rendered):
    """dev serves on one GPU slice, in the cluster only: no /dev/shm is needed, and there is no key
    to remove; a LoadBalancer would make it public without one."""
    manifests = [copy.deepcopy(obj.manifest) for obj in rendered["dev"].objects]
    container = _server_container(manifests)
    container["volumeMounts"] = [v for v in container["volumeMounts"] if v["mountPath"] != "/dev/shm"]
    assert failing(manifests) == set()
    assert "nvidia.com/gpumem" in container["resources"]["limits"]
    container["resources"]["limits"].pop("nvidia.com/gpu")
    container["resources"]["requests"].pop("nvidia.com/gpu")
    assert failing(manifests) == {"server_gets_gpus"}
    manifests = [copy.deepcopy(obj.manifest) for obj in rendered["dev"].objects]
    _only(manifests, "Service")["spec"]["type"] = "LoadBalancer"
    assert failing(manifests) == {STACK_RULE}


# --- the GPU budget ---------------------------------------------------------------------------

PROD_PRICES = {"NVIDIA-H100-80GB-HBM3": 2.5, "NVIDIA-A100-SXM4-80GB": 1.8, "NVIDIA-H200": 3.2}
PROD_MONTH = 16 * 730 * 3.2
"""prod at its most replicas: 2 x 8 GPUs, a month at the dearest of its products."""


def check_budget(manifests: list[dict], config: dict) -> list[str]:
    """What the budget policy reports on these objects under this policy configuration."""
    resources = [
        PolicyResource(type_token(m), as_seen(m), urn_of(m), m["metadata"]["name"], OPTIONS, None, None, [], {}) for m in manifests
    ]
    reported: list[str] = []
    rules.stack_validation(rules.gpu_budget)(StackValidationArgs(resources, config), lambda message, urn=None: reported.append(message))
    return reported


@pytest.mark.parametrize(("cap", "over"), [(17, False), (16, False), (15, True), (0, False)])
def test_the_gpu_cap_under_at_and_over(rendered, cap, over):
    prod = [obj.manifest for obj in rendered["prod"].objects]
    found = check_budget(prod, {"maxGpus": cap})
    assert bool(found) == over
    if over:
        assert found == [
            "The stack's vLLM servers take up to 16 GPUs at their most replicas (Deployment ai-serving/vllm-qwen3-235b: "
            "8 GPUs x 2 replicas), above maxGpus (15). Lower the most replicas (autoscalingMaxReplicas or replicas) or the "
            "GPUs per replica (gpuCount), or raise maxGpus in the policy configuration of this policy (maxGpus, "
            "maxMonthlyGpuCost, gpuHourlyPrice)."
        ]


@pytest.mark.parametrize(("cap", "over"), [(PROD_MONTH + 1, False), (PROD_MONTH, False), (PROD_MONTH - 1, True)])
def test_the_monthly_cost_cap_under_at_and_over(rendered, cap, over):
    prod = [obj.manifest for obj in rendered["prod"].objects]
    found = check_budget(prod, {"maxMonthlyGpuCost": cap, "gpuHourlyPrice": PROD_PRICES})
    assert bool(found) == over
    if over:
        assert found[0].startswith(f"The stack's GPUs cost up to 37,376.00 a month at their most replicas (Deployment "
                                   f"ai-serving/vllm-qwen3-235b: 8 GPUs x 2 replicas; 730 h at the dearest product each may "
                                   f"run on), above maxMonthlyGpuCost ({PROD_MONTH - 1:g}).")


def test_a_cost_cap_needs_a_price_for_every_product(rendered):
    prod = [obj.manifest for obj in rendered["prod"].objects]
    (found,) = check_budget(prod, {"maxMonthlyGpuCost": 10**6, "gpuHourlyPrice": {"NVIDIA-H200": 3.2}})
    assert "Deployment ai-serving/vllm-qwen3-235b runs on NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3, with no price" in found
    dev = [obj.manifest for obj in rendered["dev"].objects]
    (found,) = check_budget(dev, {"maxMonthlyGpuCost": 10**6, "gpuHourlyPrice": PROD_PRICES})
    assert "runs on any GPU (no nvidia.com/gpu.product pinned)" in found
    assert check_budget(dev, {"maxGpus": 1}) == [] and check_budget(dev, {}) == []


@pytest.mark.parametrize("stack", ["dev", "prod", "multinode", "moe"])
def test_the_pack_counts_the_gpus_the_stack_plans(stack):
    """A HAMi slice, a Deployment, a LeaderWorkerSet group: the pack's count is the stack's own gpuCost."""
    rendering = render_stack(stack, ROOT)
    most = rendering.outputs["gpuCost"]["gpus"]["max"]
    manifests = [obj.manifest for obj in rendering.objects]
    assert check_budget(manifests, {"maxGpus": most}) == []
    (found,) = check_budget(manifests, {"maxGpus": most - 0.5})
    assert f"take up to {most} GPUs" in found


def test_dra_devices_and_a_value_preview_cannot_know(tmp_path, rendered):
    settings = {"gpuBackend": "dra", "kubernetesVersion": "1.34", "gpuCount": 2, "tensorParallelSize": 2, "memory": "64Gi"}
    rendering = render_stack(project_with_stack(tmp_path, settings, drop=("hamiMemoryMiB", "hamiCores")), tmp_path)
    manifests = [obj.manifest for obj in rendering.objects]
    (found,) = check_budget(manifests, {"maxGpus": 1})
    assert "take up to 2 GPUs" in found
    prod = [copy.deepcopy(obj.manifest) for obj in rendered["prod"].objects]
    _only(prod, "ScaledObject")["spec"]["maxReplicaCount"] = UNKNOWN_STRING_VALUE
    assert check_budget(prod, {"maxGpus": 1}) == [], "pulumi up checks it once known"


# --- the pack's wiring ----------------------------------------------------------------------


def test_main_builds_the_pack_from_the_rules_module():
    """policy/__main__.py wires each policy of rules.py (the list the offline check also runs) into
    one mandatory policy, and nothing else (read, never run: the PolicyPack would serve and block;
    test_the_served_pack_enforces_every_policy_as_mandatory runs it)."""
    source = (POLICY_DIR / "__main__.py").read_text()
    tree = ast.parse(source)
    compile(tree, "policy/__main__.py", "exec")
    imports = {(node.module, alias.name) for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert ("pulumi_policy", "PolicyPack") in imports
    assert any(isinstance(node, ast.Import) and [a.name for a in node.names] == ["rules"] for node in tree.body)
    (pack,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "PolicyPack"]
    keywords = {keyword.arg: keyword.value for keyword in pack.keywords}
    assert ast.unparse(keywords["enforcement_level"]) == "EnforcementLevel.MANDATORY"
    assert ast.literal_eval(keywords["name"]) == "vllm-serving"
    assert "for policy in rules.RESOURCE_POLICIES" in source
    assert "validate=rules.resource_validation(policy.rule)" in source
    assert "for policy in rules.STACK_POLICIES" in source
    assert "validate=rules.stack_validation(policy.rule)" in source
    assert "config_schema=PolicyConfigSchema(properties=policy.config)" in source
    policies = (*rules.RESOURCE_POLICIES, *rules.STACK_POLICIES)
    assert {policy.name: policy.rule.__name__ for policy in policies} == POLICY_NAMES
    assert all(policy.description for policy in policies)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rules":
            assert hasattr(rules, node.attr), node.attr


def test_the_pack_is_pinned_and_runs_in_its_own_environment():
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python" and project["runtime"]["options"]["virtualenv"] == "venv"
    pins = dict(line.split("==") for line in (POLICY_DIR / "requirements.txt").read_text().split() if "==" in line)
    program = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    dev = dict(line.split("==") for line in (ROOT / "requirements-dev.txt").read_text().split() if "==" in line)
    assert pins == {"pulumi": program["pulumi"], "pulumi-policy": dev["pulumi-policy"]}
    assert "venv/" in (POLICY_DIR / ".gitignore").read_text().split()


# --- the pack as the Pulumi CLI runs it -----------------------------------------------------


@contextmanager
def served_pack(stack_config: Optional[dict] = None):
    """policy/ served as the CLI's pulumi-analyzer-policy-python starts it (python -m pulumi.policy
    <engine> . in the pack's folder, the stack's config in PULUMI_CONFIG), with a client for it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULUMI_")}
    env.update({"PULUMI_PROJECT": "vllm-serving", "PULUMI_STACK": "prod", "PULUMI_DRY_RUN": "true",
                "PULUMI_CONFIG": json.dumps(stack_config or {})})
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=POLICY_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        port = process.stdout.readline().strip() if ready else b""
        if not port.isdigit():
            process.kill()
            pytest.fail(f"the pack did not start: {process.stderr.read().decode()}")
        with grpc.insecure_channel(f"127.0.0.1:{int(port)}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.kill()
        process.wait(timeout=30)


def _struct(props: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(props)
    return struct


def _stack_request(manifests: list[dict]) -> analyzer_pb2.AnalyzeStackRequest:
    return analyzer_pb2.AnalyzeStackRequest(resources=[
        analyzer_pb2.AnalyzerResource(type=type_token(m), urn=urn_of(m), name=m["metadata"]["name"], properties=_struct(m))
        for m in manifests
    ])


def test_the_served_pack_enforces_every_policy_as_mandatory(rendered):
    prod = [copy.deepcopy(obj.manifest) for obj in rendered["prod"].objects]
    deployment_manifest = _only(prod, "Deployment")
    with served_pack() as pack:
        info = pack.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        assert info.name == "vllm-serving"
        assert {policy.name for policy in info.policies} == set(POLICY_NAMES)
        assert {policy.enforcementLevel for policy in info.policies} == {analyzer_pb2.MANDATORY}
        stack_policies = {p.name: p for p in info.policies if p.policy_type == analyzer_pb2.POLICY_TYPE_STACK}
        assert set(stack_policies) == {"vllm-public-route-needs-api-key", "vllm-gpu-budget"}
        schema = json_format.MessageToDict(stack_policies["vllm-public-route-needs-api-key"].configSchema.properties)
        assert schema["allowPublicWithoutApiKey"]["type"] == "boolean"
        budget_schema = json_format.MessageToDict(stack_policies["vllm-gpu-budget"].configSchema.properties)
        assert {key: budget_schema[key]["type"] for key in budget_schema} == {
            "maxGpus": "integer", "maxMonthlyGpuCost": "number", "gpuHourlyPrice": "object"
        }

        for manifest in prod:
            request = analyzer_pb2.AnalyzeRequest(type=type_token(manifest), urn=urn_of(manifest), properties=_struct(manifest))
            assert list(pack.Analyze(request, timeout=30).diagnostics) == []
        assert list(pack.AnalyzeStack(_stack_request(prod), timeout=30).diagnostics) == []

        _server_container([deployment_manifest])["image"] = "vllm/vllm-openai:latest"
        request = analyzer_pb2.AnalyzeRequest(type=type_token(deployment_manifest), urn=urn_of(deployment_manifest),
                                              properties=_struct(deployment_manifest))
        (diagnostic,) = pack.Analyze(request, timeout=30).diagnostics
        assert diagnostic.policyName == "vllm-pinned-images"
        assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
        assert "Deployment ai-serving/vllm-qwen3-235b: container vllm uses vllm/vllm-openai:latest" in diagnostic.message

        container = _server_container(prod)
        container["env"] = [e for e in container["env"] if e["name"] != "VLLM_API_KEY"]
        (diagnostic,) = pack.AnalyzeStack(_stack_request(prod), timeout=30).diagnostics
        assert diagnostic.policyName == "vllm-public-route-needs-api-key"
        assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
        assert diagnostic.urn == urn_of(_only(prod, "Ingress"))

        # --policy-pack-config with allowPublicWithoutApiKey: true.
        allow = analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY,
                                          properties=_struct({"allowPublicWithoutApiKey": True}))
        pack.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={"vllm-public-route-needs-api-key": allow}), timeout=30)
        assert list(pack.AnalyzeStack(_stack_request(prod), timeout=30).diagnostics) == []

        # --policy-pack-config capping the GPUs below prod's 16.
        cap = analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY, properties=_struct({"maxGpus": 15}))
        pack.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={"vllm-public-route-needs-api-key": allow,
                                                                           "vllm-gpu-budget": cap}), timeout=30)
        (diagnostic,) = pack.AnalyzeStack(_stack_request(prod), timeout=30).diagnostics
        assert diagnostic.policyName == "vllm-gpu-budget" and diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
        assert "take up to 16 GPUs at their most replicas" in diagnostic.message

    with served_pack({"vllm-serving:allowPublicWithoutApiKey": "true"}) as pack:
        assert list(pack.AnalyzeStack(_stack_request(prod), timeout=30).diagnostics) == []


@pytest.mark.parametrize(
    "name", ["HF_TOKEN", "API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "TOKENIZERS_PARALLELISM", "NCCL_IB_HCA", "KEYCLOAK_URL"]
)
def test_the_pack_and_the_components_agree_on_what_looks_secret(name):
    from vllm_serving_components.pods import looks_secret

    assert rules.looks_secret(name) == looks_secret(name)
    assert looks_secret(name) == (name in {"HF_TOKEN", "API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD"})
