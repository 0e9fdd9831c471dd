"""Cold start: the time to ready the plan states and derives every wait from, the parallel loader
on network volumes, the node-local copy of the weights (NodeCache) and the image pre-pulled on
the GPU nodes (ImagePrePull)."""

import os

import pulumi
import pytest
from conftest import project_with_stack, run_component
from test_components import assert_refused, gpu_args, server_args

from vllm_serving_components import ImagePrePull, NodeCache, VLLMServer, node_cache_problems
from vllm_serving_components.gpu_claim import pod_fragment
from vllm_serving_components.image_pre_pull import PRIORITY
from vllm_serving_components.load_time import LoadPath, TimeToReady, derived_startup_minutes, load_minutes
from vllm_serving_components.node_cache import CACHE_SCRIPT, MOUNT_PATH, copy_minutes, revision_name, volume_key
from vllm_serving_components.stage_model import MARKER_NAME
from vllm_serving_components.vllm_server import (
    MODEL_LINK,
    load_flags,
    load_path,
    progress_deadline_seconds,
    server_timeouts,
    startup_budget_minutes,
    time_to_ready,
)
from stack.render import render_stack

H100 = ["NVIDIA-H100-80GB-HBM3"]
CACHE_MOUNT = {"claim_name": "srv-node-cache", "mount_path": MOUNT_PATH,
               "model_path": f"{MOUNT_PATH}/Qwen--Qwen3-235B--master", "read_mb_per_s": 1000}


def big_server(**changes):
    """Prod's shape: 470 GB over 8 GPUs of 80 GB on a network volume."""
    return server_args(**{
        "image": "vllm/vllm-openai:v0.34.0",
        "model_path": "/models/Qwen/Qwen3-235B/master",
        "gpu": pod_fragment(gpu_args(count=8, products=H100)),
        "tensor_parallel_size": 8,
        "model_size_gb": 470,
        "memory": "160Gi",
        "network_volume": True,
        **changes,
    })


def cache_args(**changes):
    return {
        "namespace": "ns",
        "cache_namespace": "ns-node-cache",
        "image": "vllm/vllm-openai:v0.34.0",
        "claim_name": "srv-models",
        "mount_path": "/models",
        "model_path": "/models/Qwen/Qwen3-235B/master",
        "marker_name": MARKER_NAME,
        "model_size_gb": 470,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_affinity": pod_fragment(gpu_args(count=8, products=H100))["affinity"],
        **changes,
    }


# --- time to ready --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_gb", "rate", "minutes"),
    [(470, 200, 40 + 5), (470, 1000, 8 + 5), (470, 800, 10 + 5), (2, 200, 1 + 5)],
)
def test_the_load_budget_is_the_read_at_the_paths_rate_plus_the_engines_start(size_gb, rate, minutes):
    assert derived_startup_minutes(size_gb, LoadPath("x", rate, "r")) == load_minutes(size_gb, rate) == minutes


def test_an_unknown_size_keeps_the_old_budget():
    assert derived_startup_minutes(None, LoadPath("x", 200, "r")) == 30


def test_the_path_is_the_node_cache_then_the_parallel_loader_then_one_reader():
    assert load_path(big_server()) == LoadPath("the model volume", 200, "min_read_mb_per_s")
    # 470 GB do not fit in 160Gi: eager, one reader per file, whatever the volume gives many.
    assert load_path(big_server(parallel_read_mb_per_s=800)).read_mb_per_s == 200
    fits = big_server(parallel_read_mb_per_s=800, memory="600Gi")
    assert load_path(fits) == LoadPath("the model volume, parallel reads", 800, "parallel_read_mb_per_s")
    assert load_path(big_server(node_cache=CACHE_MOUNT, parallel_read_mb_per_s=800)) == LoadPath(
        "node-local disk", 1000, "node_cache.read_mb_per_s")


def test_a_faster_path_shortens_the_probe_the_deadline_and_the_timeouts():
    slow, fast = big_server(), big_server(node_cache=CACHE_MOUNT)
    assert (startup_budget_minutes(slow), startup_budget_minutes(fast)) == (45, 13)
    assert progress_deadline_seconds(fast) < progress_deadline_seconds(slow)
    # One replica: create is the pull, the load and a margin; the update one wave, which first
    # stops the old pod (3 minutes of drain and stop).
    assert server_timeouts(slow) == (15 + 45 + 5, 3 + 15 + 45 + 5)
    assert server_timeouts(fast) == (15 + 13 + 5, 3 + 15 + 13 + 5)


def test_a_budget_set_stays_an_override_reported_beside_the_derived_figure():
    ready = time_to_ready(big_server(node_cache=CACHE_MOUNT, startup_timeout_minutes=60))
    assert ready == TimeToReady(15, 60, 13, True, LoadPath("node-local disk", 1000, "node_cache.read_mb_per_s"), 470)
    assert ready.describe() == (
        "75 min: image pull 15 min + load budget 60 min as set (derived: read 470 GB from node-local disk at "
        "1000 MB/s 8 min + engine start 5 min)"
    )
    assert startup_budget_minutes(big_server(startup_timeout_minutes=60)) == 60


def test_a_budget_set_below_the_derived_one_is_refused_naming_the_path():
    refused = assert_refused(VLLMServer, big_server(startup_timeout_minutes=30), ["startup_timeout_minutes"])
    assert refused.problems["startup_timeout_minutes"] == (
        "(30) is shorter than the 45 minutes a 470 GB model needs to load from the model volume at "
        "min_read_mb_per_s (200 MB/s); leave it unset to derive it, raise it, or raise min_read_mb_per_s if the "
        "path is faster"
    )


def test_prod_states_its_time_to_ready(rendered):
    assert rendered["prod"].outputs["timeToReady"] == (
        "28 min: image pull 15 min + read 470 GB from node-local disk at 1000 MB/s 8 min + engine start 5 min"
    )
    probe = rendered["prod"].only("Deployment")["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 13 * 60


# --- the loader on a network volume ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "flags"),
    [
        ({"memory": "600Gi"}, ["--safetensors-load-strategy", "prefetch"]),
        ({"memory": "600Gi", "prefetch_threads": 16}, ["--safetensors-load-strategy", "prefetch",
                                                       "--safetensors-prefetch-num-threads", "16"]),
        ({}, ["--safetensors-load-strategy", "eager"]),  # 470 GB in 160Gi: the cache would evict it
        ({"memory": "600Gi", "image": "vllm/vllm-openai:v0.11.0"}, ["--safetensors-load-strategy", "eager"]),
        ({"memory": "600Gi", "node_cache": CACHE_MOUNT}, []),  # a local disk: vLLM's memory-mapped default
        ({"memory": "600Gi", "network_volume": False}, []),
        ({"load_strategy": "lazy"}, ["--safetensors-load-strategy", "lazy"]),
    ],
)
def test_the_loader_reads_a_network_volume_with_many_readers_where_it_fits(changes, flags):
    assert load_flags(big_server(**changes)) == flags


def test_prefetch_threads_without_prefetch_is_refused():
    refused = assert_refused(VLLMServer, big_server(prefetch_threads=16), ["prefetch_threads"])
    assert "the pods load with eager" in refused.problems["prefetch_threads"]


# --- the server on a node cache -------------------------------------------------------------


def test_the_server_loads_the_nodes_copy_and_falls_back_with_a_warning():
    rendering = run_component(lambda: VLLMServer("srv", big_server(node_cache=CACHE_MOUNT)))
    pod = rendering.only("Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["node-cache"] == {"name": "node-cache", "persistentVolumeClaim": {"claimName": "srv-node-cache", "readOnly": True}}
    server = pod["containers"][0]
    assert server["args"][0] == MODEL_LINK
    mounts = {mount["name"]: mount for mount in server["volumeMounts"]}
    assert mounts["node-cache"]["readOnly"] and mounts["model-link"]["readOnly"]
    check = pod["initContainers"][0]
    env = {entry["name"]: entry["value"] for entry in check["env"]}
    assert env["CACHED_PATH"] == CACHE_MOUNT["model_path"] and env["MODEL_LINK"] == MODEL_LINK
    assert "warning: this node has no complete copy" in check["command"][2]


@pytest.mark.parametrize(
    ("cached", "stored", "points_to", "says"),
    [
        (True, True, "cache", "loading the node-local copy"),
        (False, True, "store", "warning: this node has no complete copy"),
        (False, False, None, "model store incomplete"),
    ],
)
def test_the_init_containers_choice_runs_as_written(tmp_path, cached, stored, points_to, says):
    """The init container's script, run by sh on real directories."""
    import subprocess

    from vllm_serving_components.vllm_server import CACHE_CHOICE

    dirs = {"cache": tmp_path / "cache", "store": tmp_path / "store"}
    for key, present in (("cache", cached), ("store", stored)):
        dirs[key].mkdir()
        if present:
            (dirs[key] / MARKER_NAME).write_text("{}")
    link = tmp_path / "link" / "current"
    link.parent.mkdir()
    run = subprocess.run(["sh", "-c", CACHE_CHOICE], capture_output=True, text=True, timeout=10, env={
        "PATH": "/usr/bin:/bin", "CACHED_PATH": str(dirs["cache"]), "MODEL_PATH": str(dirs["store"]),
        "MARKER": MARKER_NAME, "MODEL_LINK": str(link)})
    assert says in run.stdout + run.stderr
    assert (run.returncode == 0) == (points_to is not None)
    if points_to:
        assert link.resolve() == dirs[points_to].resolve()


# --- NodeCache ------------------------------------------------------------------------------


def test_the_node_cache_objects():
    rendering = run_component(lambda: NodeCache("srv", cache_args()))
    namespace = rendering.only("Namespace")
    assert namespace["metadata"]["name"] == "ns-node-cache"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"

    key = volume_key(cache_args(), "/var/lib/vllm-serving/ns-node-cache/srv")
    volume = rendering.only("PersistentVolume")
    assert volume["metadata"]["name"] == f"ns-node-cache-srv-{key}"
    assert volume["spec"]["hostPath"] == {"path": "/var/lib/vllm-serving/ns-node-cache/srv", "type": "DirectoryOrCreate"}
    assert volume["spec"]["claimRef"] == {"namespace": "ns", "name": f"srv-node-cache-{key}"}
    assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == H100
    claim = rendering.only("PersistentVolumeClaim")
    assert (claim["spec"]["volumeName"], claim["spec"]["storageClassName"]) == (f"ns-node-cache-srv-{key}", "")
    assert {"name": "node-cache", "persistentVolumeClaim": {"claimName": f"srv-node-cache-{key}"}} in (
        rendering.find("DaemonSet", "srv-node-cache")["spec"]["template"]["spec"]["volumes"])
    assert rendering.only("ConfigMap")["data"] == {CACHE_SCRIPT.name: CACHE_SCRIPT.read_text()}
    assert rendering.only("Role")["rules"] == [
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["srv-node-cache"], "verbs": ["get"]}]

    prepare = rendering.find("DaemonSet", "srv-node-cache-prepare")
    assert prepare["metadata"]["namespace"] == "ns-node-cache"
    prepare_pod = prepare["spec"]["template"]["spec"]
    assert prepare_pod["volumes"] == [{"name": "host", "hostPath": {"path": "/var/lib/vllm-serving", "type": "DirectoryOrCreate"}}]
    (init,) = prepare_pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert {"name": "DIRECTORY", "value": "/host/ns-node-cache/srv"} in init["env"]
    assert prepare_pod["containers"][0]["command"] == ["sleep", "infinity"]

    copier = rendering.find("DaemonSet", "srv-node-cache")
    assert copier["metadata"]["namespace"] == "ns"
    assert copier["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    pod = copier["spec"]["template"]["spec"]
    # Its account's token, projected, not automounted: its role may get its own DaemonSet alone.
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "srv-node-cache"
    projected = next(v for v in pod["volumes"] if v["name"] == "api-access")["projected"]["sources"]
    assert projected[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["tolerations"] == cache_args()["tolerations"]
    (copy,) = pod["containers"]
    assert copy["command"] == [
        "python3", "/scripts/cache_model.py", "--source", "/models/Qwen/Qwen3-235B/master", "--cache-root", MOUNT_PATH,
        "--name", "Qwen--Qwen3-235B--master", "--keep-stored", "/models", "--marker-name", MARKER_NAME,
        "--reserve-gb", "20", "--stay", "--remove-when-gone",
        "https://kubernetes.default.svc/apis/apps/v1/namespaces/ns/daemonsets/srv-node-cache",
    ]
    assert copy["readinessProbe"]["exec"]["command"] == ["test", "-f", f"{MOUNT_PATH}/Qwen--Qwen3-235B--master/{MARKER_NAME}"]
    mounts = {mount["name"]: mount for mount in copy["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and "readOnly" not in mounts["node-cache"]
    assert mounts["api-access"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"

    policies = {policy["metadata"]["name"]: policy["spec"] for policy in
                (o.manifest for o in rendering.objects if o.kind == "NetworkPolicy")}
    assert policies["srv-node-cache"]["egress"][1] == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert policies["srv-node-cache-prepare"] == {
        "podSelector": {"matchLabels": prepare["spec"]["selector"]["matchLabels"]}, "policyTypes": ["Ingress", "Egress"]}

    options = rendering.options("DaemonSet", "srv-node-cache")
    assert options.timeouts == {"create": f"{copy_minutes(cache_args())}m", "update": f"{copy_minutes(cache_args())}m"}
    assert set(options.depends_on) == {f"PersistentVolumeClaim/srv-node-cache-{key}", "DaemonSet/srv-node-cache-prepare",
                                       "RoleBinding/srv-node-cache", "ConfigMap/srv-node-cache-script"}


def test_the_copy_waits_for_one_read_of_the_weights_from_the_volume():
    assert copy_minutes(cache_args()) == 15 + 40 + 5
    assert copy_minutes(cache_args(model_size_gb=None)) == 15 + 5


def test_a_node_cache_that_would_fill_every_node_is_refused():
    refused = assert_refused(NodeCache, cache_args(node_affinity=None), ["node_affinity"])
    assert "must select the GPU nodes" in refused.problems["node_affinity"]
    assert node_cache_problems(cache_args(node_affinity=None, pod={"node_selector": {"gpu": "on"}})) == {}


def test_a_revision_outside_the_store_is_no_name():
    assert revision_name("/models", "/models/a/b/c") == "a--b--c"
    with pytest.raises(ValueError):
        revision_name("/models", "/elsewhere/a")


@pulumi.runtime.test
def test_the_mount_is_known_once_the_copier_is(pulumi_mocks):
    cache = NodeCache("srv", cache_args())
    return pulumi.Output.all(cache.mount["model_path"], cache.mount["claim_name"]).apply(
        lambda values: _check(values == [f"{MOUNT_PATH}/Qwen--Qwen3-235B--master",
                                         f"srv-node-cache-{volume_key(cache_args(), '/var/lib/vllm-serving/ns-node-cache/srv')}"],
                              values))


@pytest.mark.parametrize(
    ("changes", "renamed"),
    [
        ({"host_path": "/mnt/nvme"}, True),
        ({"size": "2Ti"}, True),
        ({"node_affinity": pod_fragment(gpu_args(count=8, products=["NVIDIA-H200"]))["affinity"]}, True),
        ({"reserve_gb": 50, "read_mb_per_s": 3000, "model_path": "/models/Qwen/Qwen3-235B/v2"}, False),
    ],
)
def test_what_a_volume_may_not_change_makes_a_new_one(changes, renamed):
    """The host path, the node affinity and the claim's size are immutable once created: a change
    names a new volume and claim (the next `up` creates them and rolls onto them) rather than
    updating them in place, which the API server refuses; anything else keeps both."""
    def names(args):
        rendering = run_component(lambda: NodeCache("srv", args))
        return rendering.only("PersistentVolume")["metadata"]["name"], rendering.only("PersistentVolumeClaim")["metadata"]["name"]

    assert (names(cache_args(**changes)) != names(cache_args())) is renamed


def _check(condition: bool, detail) -> None:
    assert condition, detail


# --- ImagePrePull ---------------------------------------------------------------------------


def pre_pull_args(**changes):
    return {
        "namespace": "ns",
        "image": "vllm/vllm-openai:v0.34.0",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_affinity": pod_fragment(gpu_args(count=8, products=H100))["affinity"],
        **changes,
    }


def test_the_pre_pull_keeps_the_image_on_the_gpu_nodes_at_the_lowest_priority():
    rendering = run_component(lambda: ImagePrePull("srv", pre_pull_args()))
    priority = rendering.only("PriorityClass")
    assert (priority["metadata"]["name"], priority["value"], priority["preemptionPolicy"]) == (
        "srv-image-pre-pull", PRIORITY, "Never")
    pod = rendering.only("DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "vllm/vllm-openai:v0.34.0"
    assert container["command"] == ["sleep", "infinity"]
    assert container["resources"] == {"requests": {"cpu": "1m", "memory": "16Mi"}, "limits": {"cpu": "1m", "memory": "16Mi"}}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["priorityClassName"] == "srv-image-pre-pull"
    assert pod["tolerations"] == pre_pull_args()["tolerations"]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"] == H100
    assert pod["automountServiceAccountToken"] is False
    assert "PriorityClass/srv-image-pre-pull" in rendering.options("DaemonSet").depends_on


def test_the_pre_pull_takes_an_existing_priority_class():
    rendering = run_component(lambda: ImagePrePull("srv", pre_pull_args(priority_class_name="low")))
    assert [o for o in rendering.objects if o.kind == "PriorityClass"] == []
    assert rendering.only("DaemonSet")["spec"]["template"]["spec"]["priorityClassName"] == "low"


@pytest.mark.parametrize(
    ("changes", "key"),
    [({"node_affinity": None}, "node_affinity"), ({"pod": {"node_selector": {"gpu": "on"}, "priority_class_name": "x"}}, "pod.priority_class_name")],
)
def test_pre_pull_mistakes_are_refused(changes, key):
    assert_refused(ImagePrePull, pre_pull_args(**changes), [key])


# --- the prod stack -------------------------------------------------------------------------


def test_prod_warms_the_node_caches_before_the_server_rolls(rendered):
    prod = rendered["prod"]
    copier = prod.find("DaemonSet", "vllm-qwen3-235b-node-cache")
    assert copier["spec"]["template"]["spec"]["containers"][0]["image"] == prod.only("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    # The namespace is the program's NamespacePatch's output: dependsOn names the object without it.
    assert "DaemonSet/vllm-qwen3-235b-node-cache" in prod.options("Deployment").depends_on
    assert prod.find("DaemonSet", "vllm-qwen3-235b-image-pre-pull")["spec"]["template"]["spec"]["priorityClassName"] == (
        "vllm-qwen3-235b-image-pre-pull")


def test_without_gpu_nodes_named_the_node_cache_is_refused_naming_the_keys(tmp_path):
    from stack.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, {"nodeCache": True, "imagePrePull": True}, drop=("gpuProducts",),
                                        base="prod"), tmp_path)
    assert [(problem.key, problem.message) for problem in raised.value.problems] == [
        ("gpuProducts", "or nodeSelector must select the GPU nodes: without either the cache would copy the weights to "
         "every node of the cluster; pin the GPU products or give the GPU nodes' labels"),
    ]  # one problem per key: the image pre-pull's, the same fix, is not repeated


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root, as the preparing pod is")
def test_the_preparing_script_makes_the_directory_the_copiers(tmp_path):
    """The init container's command, run by sh on a real directory, twice (a restarted pod)."""
    import subprocess

    from vllm_serving_components.node_cache import prepare_pod_spec
    from vllm_serving_components.pods import RUN_AS

    (init,) = prepare_pod_spec(cache_args(host_path=str(tmp_path)), "srv", str(tmp_path / "ns-node-cache" / "srv"))[
        "initContainers"]
    directory = tmp_path / "ns-node-cache" / "srv"
    for _ in range(2):
        run = subprocess.run(init["command"], env={"PATH": "/usr/bin:/bin", "DIRECTORY": str(directory)},
                             capture_output=True, text=True, timeout=10)
        assert run.returncode == 0, run.stderr
    status = directory.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (RUN_AS, RUN_AS, 0o755)
