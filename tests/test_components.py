"""Each component on its own: the objects it creates, their wiring, its outputs and its checks."""

import json
import subprocess

import pulumi
import pytest
from conftest import ROOT, run_component
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors
from pulumi.runtime import mocks

from vllm_serving_components import (
    Autoscaler,
    ComponentArgsError,
    Exposure,
    GpuClaim,
    ModelStore,
    VLLMServer,
    exposure_problems,
)
from vllm_serving_components.gpu_claim import gpu_claim_problems, pod_fragment
from vllm_serving_components.model_store import (
    CLIENTS,
    INSTALL_AND_RUN,
    STAGE_SCRIPT,
    client_lock,
    moving_revision,
    job_key,
)
from vllm_serving_components.stage_model import MARKER_NAME
from stack.render import EchoMocks, run_under_mocks


def gpu_args(**changes):
    return {"backend": "nvidia", "count": 1, **changes}


def store_args(**changes):
    return {
        "namespace": "ns",
        "model_id": "Qwen/Qwen3-0.6B",
        "revision": "master",
        "image": "vllm/vllm-openai:v0.34.0",
        "size": "20Gi",
        **changes,
    }


def server_args(**changes):
    return {
        "namespace": "ns",
        "image": "vllm/vllm-openai:v0.11.0",
        "claim_name": "models",
        "mount_path": "/models",
        "model_path": "/models/Qwen/Qwen3-0.6B/master",
        "marker_name": MARKER_NAME,
        "served_model_name": "qwen3",
        "max_model_len": 8192,
        "gpu": pod_fragment(gpu_args()),
        "cpu": "4",
        "memory": "16Gi",
        "replicas": 1,
        **changes,
    }


def exposure_args(**changes):
    return {
        "namespace": "ns",
        "selector": {"app": "x"},
        "port": 8000,
        "target_port_name": "http",
        "server_takes_api_key": True,
        **changes,
    }


def autoscaler_args(**changes):
    return {
        "namespace": "ns",
        "deployment_name": "srv",
        "served_model_name": "qwen3",
        "min_replicas": 1,
        "max_replicas": 3,
        "prometheus_address": "http://prometheus:9090",
        "pod_selector": {"app": "x"},
        "metrics_port_name": "http",
        **changes,
    }


def assert_refused(component, args, problem_keys):
    """The component raises before registering anything, naming exactly these arguments."""
    monitor = mocks.MockMonitor(EchoMocks())
    with pytest.raises(ComponentArgsError) as raised:
        run_under_mocks(lambda: component("c", args), "test", "test", {}, monitor)
    assert sorted(raised.value.problems) == sorted(problem_keys)
    assert monitor.resources == {}
    return raised.value


# --- GpuClaim -----------------------------------------------------------------------------


def test_whole_gpus_fragment():
    fragment = pod_fragment(gpu_args(count=8, products=["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"], runtime_class_name="nvidia"))
    assert fragment["limits"] == {"nvidia.com/gpu": "8"}
    assert fragment["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    terms = fragment["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"]}]}
    ]
    assert fragment["runtime_class_name"] == "nvidia"
    assert fragment["scheduler_name"] is None
    assert fragment["annotations"] == {} and fragment["vllm_args"] == []


def test_whole_gpus_without_taint_toleration_or_product():
    fragment = pod_fragment(gpu_args(tolerate_gpu_taint=False))
    assert fragment["tolerations"] == [] and fragment["affinity"] is None


def test_hami_slice_fragment():
    hami = {
        "memory_mib": 20000, "cores": 30, "gpu_types": ["A100", "H100"], "exclude_gpu_types": ["T4"],
        "node_policy": "binpack", "gpu_policy": "spread",
    }
    fragment = pod_fragment(gpu_args(backend="hami", count=2, hami=hami))
    assert fragment["limits"] == {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"}
    assert fragment["annotations"] == {
        "nvidia.com/use-gputype": "A100,H100",
        "nvidia.com/nouse-gputype": "T4",
        "hami.io/node-scheduler-policy": "binpack",
        "hami.io/gpu-scheduler-policy": "spread",
    }
    assert fragment["scheduler_name"] == "hami-scheduler"
    assert fragment["vllm_args"] == ["--enforce-eager", "--disable-custom-all-reduce"]


def test_hami_percentage_slice_on_one_gpu():
    fragment = pod_fragment(gpu_args(backend="hami", hami={"memory_percent": 50}))
    assert fragment["limits"] == {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}
    assert fragment["vllm_args"] == ["--enforce-eager"]


def test_hami_cores_only_keeps_cuda_graphs():
    assert pod_fragment(gpu_args(backend="hami", hami={"cores": 50}))["vllm_args"] == []


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (gpu_args(backend="amd"), ["backend"]),
        (gpu_args(count=0), ["count"]),
        (gpu_args(hami={"cores": 50}), ["hami.cores"]),
        (gpu_args(backend="hami", hami={"memory_mib": 1000, "memory_percent": 50}), ["hami.memory_percent"]),
        (gpu_args(backend="hami", hami={"memory_percent": 101, "cores": -1}), ["hami.cores", "hami.memory_percent"]),
        (gpu_args(backend="hami", hami={"node_policy": "fast"}), ["hami.node_policy"]),
    ],
)
def test_gpu_claim_refuses_bad_args(args, keys):
    assert sorted(gpu_claim_problems(args)) == keys
    assert_refused(GpuClaim, args, keys)


@pulumi.runtime.test
def test_gpu_claim_outputs(pulumi_mocks):
    claim = GpuClaim("gpu", gpu_args(count=4))
    assert claim.pod_fragment["limits"] == {"nvidia.com/gpu": "4"}
    return pulumi.Output.all(claim.gpu_count, claim.backend).apply(lambda v: assert_equal(v, [4, "nvidia"]))


def assert_equal(actual, expected):
    assert actual == expected


# --- ModelStore ---------------------------------------------------------------------------


def test_model_store_creates_claim_script_and_one_job_per_revision():
    rendering = run_component(lambda: ModelStore("m", store_args(storage_class="nfs-client", access_mode="ReadWriteMany")))
    assert sorted(o.kind for o in rendering.objects) == [
        "ConfigMap", "Job", "NetworkPolicy", "PersistentVolumeClaim", "ServiceAccount",
    ]
    claim = rendering.find("PersistentVolumeClaim", "m-models")
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "nfs-client",
    }
    assert rendering.find("ConfigMap", "m-stage-script")["data"] == {
        "stage_model.py": STAGE_SCRIPT.read_text(), "stage-client.txt": client_lock("modelscope").read_text(),
    }
    job = rendering.find("Job", f"m-stage-{job_key(store_args(), 'm')}")
    pod = job["spec"]["template"]["spec"]
    (stage,) = pod["containers"]
    assert stage["command"] == ["sh", "-c", INSTALL_AND_RUN, "stage-model"]
    assert stage["args"] == [
        "/opt/model-store/stage_model.py",
        "--model-id", "Qwen/Qwen3-0.6B", "--revision", "master",
        "--target", "/models/Qwen/Qwen3-0.6B/master", "--max-workers", "4", "--keep-revisions", "2",
    ]
    env = {e["name"]: e["value"] for e in stage["env"]}
    assert env["CLIENT_LOCK"] == "/opt/model-store/stage-client.txt"
    assert "--require-hashes --no-deps --only-binary=:all:" in INSTALL_AND_RUN and '-r "$CLIENT_LOCK"' in INSTALL_AND_RUN
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "m-models"}} in pod["volumes"]
    assert {"name": "models", "mountPath": "/models"} in stage["volumeMounts"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] == 240 * 60
    assert {e["name"] for e in stage["env"]} >= {"MODELSCOPE_CACHE", "MODELSCOPE_HOME"}


def test_model_store_with_the_image_own_client():
    rendering = run_component(lambda: ModelStore("m", store_args(install_client=False)))
    pod = rendering.only("Job")["spec"]["template"]["spec"]
    assert rendering.only("ConfigMap")["data"] == {"stage_model.py": STAGE_SCRIPT.read_text()}
    (stage,) = pod["containers"]
    assert stage["command"][:3] == ["python3", "/opt/model-store/stage_model.py", "--model-id"]
    assert "args" not in stage
    assert "CLIENT_LOCK" not in {e["name"] for e in stage["env"]}


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_the_job_installs_the_client_version_the_tests_use(source):
    pins = (ROOT / "requirements-dev.txt").read_text().split()
    assert set(CLIENTS[source]) <= set(pins)


def test_a_revision_that_can_move_is_warned_of_with_how_to_pin_it():
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert moving_revision(store_args(revision=commit)) is None
    assert moving_revision(store_args(source="huggingface", revision=commit)) is None
    default = moving_revision({**store_args(source="huggingface"), "revision": None})
    assert default.startswith("revision main is the hub's default branch: the Job stages whatever commit it names")
    assert "/models/Qwen/Qwen3-0.6B/main/.modelstore-complete.json" in default
    assert moving_revision(store_args(revision="v1.0")).startswith("revision v1.0 is a branch or tag, not a commit")
    assert moving_revision(store_args(revision=commit[:12])) is not None  # a short id is not unique for ever
    own_client = moving_revision(store_args(install_client=False))
    assert "pin a tag, or pin revision to a 40-character commit id (a first run records" in own_client
    assert own_client.endswith("with install_client true: the image's own modelscope may take no commit id")


def test_the_plan_warns_of_a_moving_revision_and_of_an_image_the_lock_is_not_for():
    assert run_component(lambda: ModelStore("m", store_args(revision="0" * 40))).warnings == []
    (warning,) = run_component(lambda: ModelStore("m", store_args())).warnings
    assert warning.startswith("ModelStore m: revision master is the hub's default branch")
    mirrored = store_args(revision="0" * 40, image="harbor.internal/hub/vllm/vllm-openai:v0.34.0")
    assert run_component(lambda: ModelStore("m", mirrored)).warnings == []
    (warning,) = run_component(lambda: ModelStore("m", store_args(revision="0" * 40, image="python:3.13"))).warnings
    assert warning == (
        "ModelStore m: the hub client's lock pins wheels for vllm/vllm-openai:v0.34.0's Python and platform; on image "
        "python:3.13 with another Python the Job's install fails on their hashes: stage with that image, or set "
        "install_client false to run the image's own client"
    )
    own_client = store_args(revision="0" * 40, image="python:3.13", install_client=False)
    assert run_component(lambda: ModelStore("m", own_client)).warnings == []


def test_the_job_is_named_by_all_it_runs():
    """A new revision or any change to how it is staged is a new Job (created before the old one
    goes), never the old Job replaced under its name; the same arguments name the same Job."""
    base = job_key(store_args(), "m")
    assert base == job_key(store_args(), "m") == job_key({**store_args(), "revision": None}, "m")
    others = [
        store_args(revision="v2"), store_args(allow_patterns=["*.json"]), store_args(ignore_patterns=["*.gguf"]),
        {**store_args(source="huggingface"), "revision": None}, store_args(image="other:v1"), store_args(verify=True),
        store_args(stall_timeout_seconds=60), store_args(install_client=False), store_args(timeout_minutes=30),
    ]
    keys = [job_key(args, "m") for args in others]
    assert base not in keys and len(set(keys)) == len(others)
    # What the Job does not run leaves its name alone: the claim's size.
    assert base == job_key(store_args(size="1Ti"), "m")


def test_model_store_from_hugging_face_with_a_token_from_a_pulumi_secret():
    args = store_args(source="huggingface", revision=None, token=pulumi.Output.secret("hf_abc123"), verify=True,
                      stall_timeout_seconds=300, ignore_patterns=["*.gguf"])
    rendering = run_component(lambda: ModelStore("m", args))
    secret = rendering.find("Secret", "m-hub-token")
    job = rendering.only("Job")
    (stage,) = job["spec"]["template"]["spec"]["containers"]
    assert stage["args"][:5] == ["/opt/model-store/stage_model.py", "--model-id", "Qwen/Qwen3-0.6B", "--revision", "main"]
    assert stage["args"][5:7] == ["--target", "/models/Qwen/Qwen3-0.6B/main"]
    assert stage["args"][9:] == [
        "--source", "huggingface", "--keep-revisions", "2", "--ignore-pattern", "*.gguf", "--verify", "--stall-timeout", "300",
    ]
    env = {e["name"]: e for e in stage["env"]}
    assert env["CLIENT_LOCK"]["value"] == "/opt/model-store/stage-client.txt"
    assert rendering.only("ConfigMap")["data"]["stage-client.txt"] == client_lock("huggingface").read_text()
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "m-hub-token", "key": "token"}}}
    # The token is in no object but the Secret, and there redacted.
    assert "hf_abc123" not in str([o.manifest for o in rendering.objects])
    assert secret["stringData"] == {"token": "<redacted>"}
    assert "Secret/m-hub-token" in rendering.options("Job").depends_on
    egress = rendering.find("NetworkPolicy", "m-stage")["spec"]["egress"]
    assert {"port": 443, "protocol": "TCP"} in egress[-1]["ports"]


def test_model_store_token_from_an_existing_secret():
    args = store_args(token_secret={"name": "hub", "key": "modelscope"})
    rendering = run_component(lambda: ModelStore("m", args))
    (stage,) = rendering.only("Job")["spec"]["template"]["spec"]["containers"]
    assert {"name": "MODELSCOPE_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "modelscope"}}} in stage["env"]
    assert [o.kind for o in rendering.objects].count("Secret") == 0


def test_model_store_on_an_existing_claim_with_mirror_and_patterns():
    args = store_args(size=None, existing_claim="shared", endpoint="http://mirror:8080", allow_patterns=["*.json", "*.safetensors"])
    rendering = run_component(lambda: ModelStore("m", args))
    assert sorted(o.kind for o in rendering.objects) == ["ConfigMap", "Job", "NetworkPolicy", "ServiceAccount"]
    pod = rendering.only("Job")["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "shared"}} in pod["volumes"]
    assert pod["containers"][0]["args"][-6:] == [
        "--endpoint", "http://mirror:8080", "--allow-pattern", "*.json", "--allow-pattern", "*.safetensors",
    ]


@pytest.mark.parametrize(
    ("changes", "keys"),
    [
        ({"model_id": "no-owner"}, ["model_id"]),
        ({"size": None}, ["size"]),
        ({"existing_claim": "shared", "storage_class": "nfs"}, ["size", "storage_class"]),
        ({"access_mode": "ReadWriteAll"}, ["access_mode"]),
        ({"timeout_minutes": 0, "max_workers": 0}, ["max_workers", "timeout_minutes"]),
        ({"source": "github"}, ["source"]),
        ({"stall_timeout_seconds": 5}, ["stall_timeout_seconds"]),
        ({"token": "x", "token_secret": {"name": "hub", "key": "token"}}, ["token"]),
        ({"token_secret": {"name": "Hub", "key": "token"}}, ["token_secret.name"]),
        ({"ignore_patterns": ["a\nb"]}, ["ignore_patterns"]),
    ],
)
def test_model_store_refuses_bad_args(changes, keys):
    assert_refused(ModelStore, store_args(**changes), keys)


@pulumi.runtime.test
def test_model_store_outputs(pulumi_mocks):
    store = ModelStore("m", store_args(revision="v1.0"))
    expected = ["m-models", "/models", "/models/Qwen/Qwen3-0.6B/v1.0", MARKER_NAME]
    outputs = pulumi.Output.all(store.claim_name, store.mount_path, store.model_path, store.marker_name)
    return outputs.apply(lambda values: assert_equal(values, expected))


# --- VLLMServer ---------------------------------------------------------------------------


def server_pod(**changes):
    rendering = run_component(lambda: VLLMServer("srv", server_args(**changes)))
    deployment = rendering.only("Deployment")
    return deployment, deployment["spec"]["template"]["spec"]


def test_the_engine_ready_timeout_follows_the_startup_budget_on_releases_that_read_it():
    """vLLM 0.34.0 gives up on engines that are not ready after VLLM_ENGINE_READY_TIMEOUT_S
    (600 s by default), which a 470 GB load exceeds: the server sets it to the startup probe's
    budget. 0.11.0 has no such variable."""
    _, pod = server_pod(image="vllm/vllm-openai:v0.34.0", startup_timeout_minutes=45)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    startup = pod["containers"][0]["startupProbe"]
    assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == str(45 * 60)
    assert int(env["VLLM_ENGINE_READY_TIMEOUT_S"]) <= startup["periodSeconds"] * startup["failureThreshold"]
    _, old = server_pod(startup_timeout_minutes=45)
    assert "VLLM_ENGINE_READY_TIMEOUT_S" not in {e["name"] for e in old["containers"][0]["env"]}
    problems = assert_refused(
        VLLMServer, server_args(image="vllm/vllm-openai:v0.34.0", env={"VLLM_ENGINE_READY_TIMEOUT_S": "60"}), ["env"]
    ).problems
    assert "VLLM_ENGINE_READY_TIMEOUT_S, which the server sets itself" in problems["env"]


def test_prefetch_loading_only_on_releases_that_have_it():
    _, pod = server_pod(image="vllm/vllm-openai:v0.34.0", load_strategy="prefetch")
    args = pod["containers"][0]["args"]
    assert args[args.index("--safetensors-load-strategy") + 1] == "prefetch"
    problems = assert_refused(VLLMServer, server_args(image="vllm/vllm-openai:v0.11.0", load_strategy="prefetch"), ["load_strategy"]).problems
    assert problems["load_strategy"].startswith("prefetch is not a --safetensors-load-strategy of vLLM 0.11.0")
    assert_refused(VLLMServer, server_args(image="vllm/vllm-openai:v0.34.0", load_strategy="torchao"), ["load_strategy"])


def test_server_deployment_wiring():
    deployment, pod = server_pod()
    (server,) = pod["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["replicas"] == 1
    assert server["command"] == ["vllm", "serve"]
    assert server["args"][:3] == ["/models/Qwen/Qwen3-0.6B/master", "--served-model-name", "qwen3"]
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    assert server["resources"]["requests"] == server["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert all(e["name"] != "VLLM_API_KEY" for e in server["env"])
    (check,) = pod["initContainers"]
    assert check["command"][:2] == ["sh", "-c"] and "exit 1" in check["command"][2]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_server_merges_the_gpu_fragment():
    hami = pod_fragment(gpu_args(backend="hami", count=2, products=["A100"], runtime_class_name="nvidia", hami={"memory_percent": 40, "gpu_types": ["A100"]}))
    deployment, pod = server_pod(gpu=hami, tensor_parallel_size=2, memory="64Gi")
    assert pod["schedulerName"] == "hami-scheduler"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["affinity"] == hami["affinity"]
    assert pod["tolerations"] == hami["tolerations"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"nvidia.com/use-gputype": "A100"}
    server = pod["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpumem-percentage"] == "40"
    assert server["args"][-2:] == ["--enforce-eager", "--disable-custom-all-reduce"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}} in pod["volumes"]


@pytest.mark.parametrize(("marker_present", "exit_code"), [(True, 0), (False, 1)])
def test_store_check_refuses_an_incomplete_store(tmp_path, marker_present, exit_code):
    model = tmp_path / "Qwen" / "Qwen3-0.6B" / "master"
    model.mkdir(parents=True)
    _, pod = server_pod(mount_path=str(tmp_path), model_path=str(model))
    (check,) = pod["initContainers"]
    if marker_present:
        (model / MARKER_NAME).write_text("{}")
    env = {e["name"]: e["value"] for e in check["env"]}
    result = subprocess.run(check["command"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == exit_code
    assert ("model store complete" in result.stdout) == marker_present
    assert ("the model download Job has not completed" in result.stderr) != marker_present


def test_server_with_api_key_explicit_shm_and_autoscaled_replicas():
    deployment, pod = server_pod(
        api_key_secret={"name": "vllm-key", "key": "token"}, shm_size="8Gi", replicas=None, extra_args=["--enable-prefix-caching"]
    )
    server = pod["containers"][0]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-key", "key": "token"}}} in server["env"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert "replicas" not in deployment["spec"]
    assert server["args"][-1] == "--enable-prefix-caching"


@pytest.mark.parametrize(
    ("changes", "keys"),
    [
        ({"tensor_parallel_size": 2}, ["tensor_parallel_size"]),
        ({"gpu_memory_utilization": 0}, ["gpu_memory_utilization"]),
        ({"gpu_memory_utilization": 1.01}, ["gpu_memory_utilization"]),
        ({"max_model_len": 0}, ["max_model_len"]),
        ({"min_replicas": 2}, ["min_replicas"]),
        ({"max_surge": -1}, ["max_surge"]),
        ({"startup_timeout_minutes": 0}, ["startup_timeout_minutes"]),
        ({"extra_args": ["--served-model-name", "x"]}, ["extra_args"]),
    ],
)
def test_server_refuses_bad_args(changes, keys):
    assert_refused(VLLMServer, server_args(**changes), keys)


@pulumi.runtime.test
def test_server_outputs(pulumi_mocks):
    server = VLLMServer("srv", server_args())
    outputs = pulumi.Output.all(server.deployment_name, server.port, server.port_name, server.selector_labels)
    return outputs.apply(
        lambda v: assert_equal(
            v,
            ["srv", 8000, "http", {
                "app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "srv", "app.kubernetes.io/component": "server",
            }],
        )
    )


# --- Exposure -----------------------------------------------------------------------------


def test_exposure_without_host_is_a_service_only():
    rendering = run_component(lambda: Exposure("api", exposure_args()))
    assert sorted(o.kind for o in rendering.objects) == ["NetworkPolicy", "Service"]
    service = rendering.only("Service")
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"app": "x"},
        "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
    }


def test_exposure_with_host_on_nginx_without_tls():
    rendering = run_component(lambda: Exposure("api", exposure_args(host="vllm.example.com", stream_timeout_seconds=900, max_body_size="16m")))
    ingress = rendering.only("Ingress")
    assert "tls" not in ingress["spec"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "900",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "900",
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
    }
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": rendering.only("Service")["metadata"]["name"], "port": {"number": 8000}}


def test_exposure_on_another_ingress_class_with_an_existing_certificate():
    args = exposure_args(host="vllm.example.com", ingress_class="traefik", tls=True, tls_secret_name="wildcard")
    ingress = run_component(lambda: Exposure("api", args)).only("Ingress")
    assert ingress["metadata"]["annotations"] == {}
    assert ingress["spec"]["tls"] == [{"hosts": ["vllm.example.com"], "secretName": "wildcard"}]


def test_exposure_through_a_gateway():
    args = exposure_args(
        host="vllm.example.com", route="gateway", tls=True,
        gateway_name="public", gateway_namespace="gateways", gateway_listener="https", stream_timeout_seconds=1800,
    )
    rendering = run_component(lambda: Exposure("api", args))
    assert sorted(o.kind for o in rendering.objects) == ["HTTPRoute", "NetworkPolicy", "Service"]
    route = rendering.only("HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"] == {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["vllm.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                "backendRefs": [{"name": rendering.only("Service")["metadata"]["name"], "port": 8000}],
                "timeouts": {"request": "1800s"},
            }
        ],
    }
    assert schema_errors(route, SUPPORTED_KUBERNETES_VERSIONS[-1]) == []


def test_exposure_under_a_path_prefix_on_a_shared_host():
    args = exposure_args(host="models.example.com", route="gateway", tls=True, gateway_name="public", path_prefix="qwen")
    rendering = run_component(lambda: Exposure("api", args))
    route = rendering.only("HTTPRoute")
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/qwen/v1"}}]
    assert rule["filters"] == [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}}}
    ]
    assert schema_errors(route, SUPPORTED_KUBERNETES_VERSIONS[-1]) == []


@pytest.mark.parametrize(
    ("changes", "keys"),
    [
        ({"route": "istio"}, ["route"]),
        ({"host": "vllm.example.com", "path_prefix": "qwen"}, ["path_prefix"]),
        ({"host": "vllm.example.com", "route": "gateway", "gateway_name": "gw", "path_prefix": "../x"}, ["path_prefix"]),
        ({"path_prefix": "qwen"}, ["path_prefix"]),
        ({"route": "gateway", "host": "vllm.example.com"}, ["gateway_name"]),
        (
            {"route": "gateway", "host": "vllm.example.com", "gateway_name": "gw", "tls": True, "cluster_issuer": "le"},
            ["cluster_issuer"],
        ),
        ({"host": "http://vllm.example.com"}, ["host"]),
        ({"host": "vllm.example.com:443"}, ["host"]),
        ({"tls": True}, ["tls"]),
        ({"stream_timeout_seconds": 0}, ["stream_timeout_seconds"]),
        ({"max_body_size": "1 GB"}, ["max_body_size"]),
    ],
)
def test_exposure_refuses_bad_args(changes, keys):
    assert_refused(Exposure, exposure_args(**changes), keys)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"server_takes_api_key": False}, "the server takes no API key: give the server api_key or api_key_secret"),
        ({"server_takes_api_key": None}, "not told whether the server takes an API key: pass server_takes_api_key"),
    ],
)
def test_exposure_refuses_a_public_host_in_front_of_a_server_without_a_key(changes, words):
    """A library user gets the stack's protection: no open Ingress unless asked for in so many words."""
    args = exposure_args(host="vllm.example.com", **changes)
    with pytest.raises(ComponentArgsError) as raised:
        Exposure("api", args)
    assert list(raised.value.problems) == ["host"]
    assert words in raised.value.problems["host"]
    assert exposure_problems({**args, "allow_without_api_key": True}) == {}


def test_allowing_an_open_endpoint_needs_a_host_and_a_server_without_a_key():
    assert exposure_problems(exposure_args(allow_without_api_key=True)) == {
        "allow_without_api_key": "has no effect with an API key or without a host; remove it"
    }
    with_key = exposure_args(host="vllm.example.com", allow_without_api_key=True)
    assert list(exposure_problems(with_key)) == ["allow_without_api_key"]


def test_a_server_tells_exposure_whether_it_takes_a_key():
    def build():
        keyed = VLLMServer("keyed", server_args(api_key_secret={"name": "k", "key": "api-key"}))
        open_server = VLLMServer("open", server_args())
        assert (keyed.takes_api_key, open_server.takes_api_key) == (True, False)
        Exposure("keyed", exposure_args(host="a.example.com", server_takes_api_key=keyed.takes_api_key))
        with pytest.raises(ComponentArgsError, match="takes no API key"):
            Exposure("open", exposure_args(host="b.example.com", server_takes_api_key=open_server.takes_api_key))

    assert [obj.name for obj in run_component(build).objects if obj.kind == "Ingress"] == ["keyed"]


@pulumi.runtime.test
def test_endpoint_with_tls(pulumi_mocks):
    exposure = Exposure("api", exposure_args(host="vllm.example.com", tls=True, cluster_issuer="le"))
    return exposure.endpoint.apply(lambda url: assert_equal(url, "https://vllm.example.com/v1"))


@pulumi.runtime.test
def test_endpoint_under_a_path_prefix(pulumi_mocks):
    args = exposure_args(host="models.example.com", route="gateway", tls=True, gateway_name="public", path_prefix="qwen")
    exposure = Exposure("api", args)
    return exposure.endpoint.apply(lambda url: assert_equal(url, "https://models.example.com/qwen/v1"))


@pulumi.runtime.test
def test_endpoint_without_host_is_the_service_url(pulumi_mocks):
    exposure = Exposure("api", exposure_args())
    return pulumi.Output.all(exposure.endpoint, exposure.in_cluster_endpoint).apply(
        lambda urls: assert_equal(urls, ["http://api.ns.svc.cluster.local:8000/v1"] * 2)
    )


# --- Autoscaler ---------------------------------------------------------------------------


def test_autoscaler_scaled_object_pod_monitor_alerts_and_dashboard():
    args = autoscaler_args(pod_monitor_labels={"release": "kps"}, signals=[{"kind": "queue", "target": 3}])
    rendering = run_component(lambda: Autoscaler("srv", args))
    assert sorted(o.kind for o in rendering.objects) == ["ConfigMap", "PodMonitor", "PrometheusRule", "ScaledObject"]
    scaled = rendering.only("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "srv"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 3)
    assert scaled["triggers"] == [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": "http://prometheus:9090",
                "query": 'sum(vllm:num_requests_waiting{namespace="ns",model_name="qwen3"})',
                "threshold": "3",
                "ignoreNullValues": "false",
            },
        }
    ]
    assert "fallback" not in scaled
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    monitor = rendering.only("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"] == {
        "selector": {"matchLabels": {"app": "x"}},
        "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
    }
    rule = rendering.only("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} == {
        "VLLMPodsNotReady", "VLLMQueueHigh", "VLLMKVCacheNearlyFull", "VLLMPreemptions", "VLLMScalingMetricMissing",
    }
    dashboard = rendering.only("ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["srv.json"])["panels"][0]["targets"][0]["expr"] == scaled["triggers"][0]["metadata"]["query"]


def test_autoscaler_without_pod_monitor_alerts_or_dashboard():
    args = autoscaler_args(pod_monitor=False, alerts=False, dashboard=False)
    assert [o.kind for o in run_component(lambda: Autoscaler("srv", args)).objects] == ["ScaledObject"]


@pytest.mark.parametrize(
    ("changes", "keys"),
    [
        ({"min_replicas": 0}, ["min_replicas"]),
        ({"min_replicas": 4}, ["max_replicas"]),
        ({"signals": [{"kind": "queue", "target": 0}]}, ["signals"]),
        ({"signals": [{"kind": "kv_cache", "target": 1.5}]}, ["signals"]),
        ({"signals": [{"kind": "queue", "target": 5, "window": "5m"}]}, ["signals"]),
        ({"signals": [{"kind": "latency", "target": 2, "window": "five"}]}, ["signals"]),
        ({"signals": [{"kind": "tokens", "target": 2}]}, ["signals"]),
        ({"signals": []}, ["signals"]),
        ({"scale_down_stabilization_seconds": 7200}, ["scale_down_stabilization_seconds"]),
        ({"scale_up_period_seconds": 3600}, ["scale_up_period_seconds"]),
        ({"prometheus_address": "prometheus:9090"}, ["prometheus_address"]),
        ({"pod_selector": None, "metrics_port_name": None}, ["metrics_port_name", "pod_selector"]),
        ({"scale_to_zero": True, "min_replicas": 0}, ["activation_query"]),
        ({"engine": "hpa", "fallback_replicas": 1}, ["fallback_replicas"]),
        ({"fallback_replicas": 1, "signals": [{"kind": "cpu", "target": 80}]}, ["fallback_replicas"]),
    ],
)
def test_autoscaler_refuses_bad_args(changes, keys):
    assert_refused(Autoscaler, autoscaler_args(**changes), keys)


@pulumi.runtime.test
def test_autoscaler_outputs(pulumi_mocks):
    scaler = Autoscaler("srv", autoscaler_args())
    return pulumi.Output.all(scaler.scaler_name, scaler.queries, scaler.adapter_rules).apply(
        lambda v: assert_equal(v, ["srv", ['sum(vllm:num_requests_waiting{namespace="ns",model_name="qwen3"})'], ""])
    )


def test_the_reference_says_which_python_arguments_take_an_output_and_the_component_agrees():
    page = (ROOT / "docs" / "reference" / "Exposure.md").read_text()
    assert "| `port` | integer | yes | - | no / known |" in page
    assert "| `selector` | map of string | yes | - | yes / yes |" in page
    assert exposure_problems(exposure_args(port=pulumi.Output.from_input(8000))) == {"port": "must be an integer, not Output"}
    assert exposure_problems(exposure_args(selector=pulumi.Output.from_input({"app": "x"}))) == {}
