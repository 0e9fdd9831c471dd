"""The second `pulumi up`, a failed one, a scaled one and a destroy: the resource options of the
plan (timeouts, dependencies, retain, protect, replacement) and the settings behind them."""

import json

import pytest
from conftest import SHIPPED_STACKS, project_with_stack, run_component
from test_components import server_args
from test_stacks import render_variant

from vllm_serving_components import VLLMServer
from vllm_serving_components.readiness import WAIT_FOR, rolled_out

from vllm_serving_components.load_time import load_minutes
from vllm_serving_components.rollout import rollout_timeouts
from stack.render import EchoMocks, RecordingMonitor, render_stack


def server(rendering):
    deployment = rendering.only("Deployment")
    return deployment, deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_failed_download_job_is_replaced_on_the_next_up(rendered, stack):
    job = rendered[stack].only("Job")
    assert job["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    options = rendered[stack].options("Job")
    assert options.delete_before_replace, "the replacement keeps the Job's name, so the old one goes first"
    assert "PersistentVolumeClaim/" + rendered[stack].outputs["claimName"] in options.depends_on
    minutes = job["spec"]["activeDeadlineSeconds"] // 60 + 5
    assert options.timeouts == {"create": f"{minutes}m", "update": f"{minutes}m"}


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_a_replaced_download_job_leaves_the_server_in_place(stack):
    """The server waits for the Job through depends_on only: a property of the workload that
    depended on the Job would make the engine replace the workload with a Job replaced
    delete-before-replace (components/ordering.py), deleting every replica at once."""
    monitor = RecordingMonitor(EchoMocks())
    render_stack(stack, monitor=monitor)
    by_type = {request.type: (urn, request) for urn, request in monitor.requests.items()}
    job_urn, _ = by_type["kubernetes:batch/v1:Job"]
    workload = next(t for t in by_type if t in ("kubernetes:apps/v1:Deployment", "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"))
    _, request = by_type[workload]
    assert job_urn in request.dependencies
    assert {key: list(deps.urns) for key, deps in request.propertyDependencies.items() if job_urn in deps.urns} == {}
    # The server is told the staged path all the same.
    (check,) = _pod_spec(request.object)["initContainers"]
    assert {"name": "MODEL_PATH", "value": rendered_path(stack)} in check["env"]
    # So is the node cache's copier, which the same replacement would otherwise replace.
    for urn, copier in monitor.requests.items():
        if copier.type == "kubernetes:apps/v1:DaemonSet" and "--source" in str(copier.object):
            assert job_urn in copier.dependencies
            assert {key: list(deps.urns) for key, deps in copier.propertyDependencies.items() if job_urn in deps.urns} == {}


def rendered_path(stack: str) -> str:
    return render_stack(stack).outputs["modelPath"]


def _pod_spec(obj) -> dict:
    spec = obj["spec"]
    if "template" in spec:
        return spec["template"]["spec"]
    return spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]


@pytest.mark.parametrize(("stack", "protected"), [("dev", False), ("prod", True)])
def test_the_weights_and_the_namespace_survive_a_destroy(rendered, stack, protected):
    claim = rendered[stack].options("PersistentVolumeClaim", rendered[stack].outputs["claimName"])
    assert claim.retain_on_delete
    assert claim.protect is protected
    assert rendered[stack].options("Namespace", rendered[stack].outputs["namespace"]).retain_on_delete


def test_the_prod_rollout_timeout_covers_every_replica_in_turn(rendered):
    options = rendered["prod"].options("Deployment")
    # 2 replicas, one at a time (at two the quota has no room for a surge replica): each waits
    # for the old pod to drain (120 s) and stop (30 s), then the new one pulls (15 min), loads
    # its node's copy (13 min) and gets its margin (5 min).
    assert options.timeouts == {"create": "33m", "update": "72m"}
    assert rendered["dev"].options("Deployment").timeouts == {"create": "35m", "update": "38m"}


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (1, 0, 1, (80, 83)),
        (1, 1, 0, (80, 83)),
        (2, 0, 1, (80, 166)),
        (2, 1, "50%", (80, 166)),
        (4, 0, 2, (80, 166)),
        (4, 1, "25%", (80, 332)),
        (3, 1, "34%", (80, 249)),
    ],
)
def test_rollout_timeouts(replicas, surge, unavailable, expected):
    timeouts = rollout_timeouts(
        max_replicas=replicas, rolling={"maxSurge": surge, "maxUnavailable": unavailable},
        startup_minutes=60, image_pull_minutes=15, drain_seconds=120,
    )
    assert timeouts == expected


@pytest.mark.parametrize(("size_gb", "rate", "minutes"), [(470, 200, 45), (470, 1000, 13), (2, 200, 6), (1, 10**6, 6)])
def test_load_minutes(size_gb, rate, minutes):
    assert load_minutes(size_gb, rate) == minutes


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_what_selects_the_server_waits_for_it(rendered, stack):
    deployment = "Deployment/" + rendered[stack].outputs["deploymentName"]
    assert deployment in rendered[stack].options("Service").depends_on
    if stack == "prod":
        assert "Service/" + rendered[stack].only("Service")["metadata"]["name"] in rendered[stack].options("Ingress").depends_on
        assert deployment in rendered[stack].options("ScaledObject").depends_on
        assert deployment in rendered[stack].options("PodMonitor").depends_on


def test_prod_loads_its_nodes_copy_and_dev_its_volume_with_vllms_default(rendered):
    """Memory-mapped files, which the ranks of a pod share, from a local disk; eager or prefetch
    on a network volume only (tests/test_cold_start.py)."""
    _, prod = server(rendered["prod"])
    assert "--safetensors-load-strategy" not in prod["containers"][0]["args"]
    _, dev = server(rendered["dev"])
    assert "--safetensors-load-strategy" not in dev["containers"][0]["args"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_stopping_pod_drains_its_streams(rendered, stack):
    _, pod = server(rendered[stack])
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 120}}}
    assert pod["terminationGracePeriodSeconds"] == 150


def test_prod_autoscaling_is_scraped_and_fails_loudly(rendered):
    monitor = rendered["prod"].only("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (trigger,) = rendered["prod"].only("ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["ignoreNullValues"] == "false"


def test_prod_runs_only_on_80_gb_gpus(rendered):
    _, pod = server(rendered["prod"])
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H200"],
                }
            ]
        }
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_new_revision_removes_the_oldest_beyond_two(rendered, stack):
    args = rendered[stack].only("Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--keep-revisions", "2"]


def test_an_unprotected_claim_on_request_and_a_bare_metal_ingress(tmp_path):
    settings = {"host": "vllm.example.com", "apiKeySecretName": "key", "ingressWaitForAddress": False, "drainSeconds": 600}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    assert rendering.only("Ingress")["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    _, pod = server(rendering)
    assert pod["terminationGracePeriodSeconds"] == 630
    # The drain is part of every pod's turn in a rollout: 11 minutes to stop, then pull and load.
    assert rendering.options("Deployment").timeouts["update"] == f"{11 + 15 + 15 + 5}m"


@pytest.mark.parametrize(("stack", "promised"), [("dev", 1), ("prod", 1)])
def test_up_waits_for_the_promised_replicas_on_the_new_template(rendered, stack, promised):
    """Not the provider's Deployment wait, which counts the replicas an autoscaler added."""
    deployment = rendered[stack].only("Deployment")
    assert json.loads(deployment["metadata"]["annotations"][WAIT_FOR]) == [
        "jsonpath={$[?@.observedGeneration == $.metadata.generation]}",
        "jsonpath={$[?@.observedGeneration && @.updatedReplicas == @.replicas]}",
        f"jsonpath={{$[?@.readyReplicas > {promised - 1}]}}",
    ]
    # The provider's parser ends a filter's logical-and after its second operand.
    assert all(expression.count("&&") <= 1 for expression in json.loads(deployment["metadata"]["annotations"][WAIT_FOR]))


def test_a_stack_that_may_scale_to_zero_waits_for_no_ready_replica():
    assert "readyReplicas" not in rolled_out(0)[WAIT_FOR]


def test_up_waits_until_keda_and_the_gateway_accept_what_they_act_on(rendered, tmp_path):
    assert rendered["prod"].only("ScaledObject")["metadata"]["annotations"] == {WAIT_FOR: "condition=Ready"}
    assert rendered["prod"].options("ScaledObject").timeouts == {"create": "10m", "update": "10m"}
    rendering = render_variant(tmp_path, "gateway-with-tls-and-api-key")
    route = rendering.only("HTTPRoute")
    assert json.loads(route["metadata"]["annotations"][WAIT_FOR]) == [
        'jsonpath={.status.parents[0].conditions[?@.type=="Accepted"].status}=True',
        'jsonpath={.status.parents[0].conditions[?@.type=="ResolvedRefs"].status}=True',
    ]
    assert len(route["spec"]["parentRefs"]) == 1, "the wait reads the first parent's status"
    assert rendering.options("HTTPRoute").timeouts == {"create": "10m", "update": "10m"}


def test_a_server_the_autoscaler_may_scale_to_zero_is_ready_without_a_replica():
    """Waiting for one ready replica would fail every up while the autoscaler keeps none."""
    rendering = run_component(lambda: VLLMServer("srv", server_args(replicas=None, min_replicas=0, max_replicas=2)))
    assert rendering.only("Deployment")["metadata"]["annotations"] == rolled_out(0)
    # Rollouts and drains still plan for one replica running (fewest_replicas).
    assert rendering.only("PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
