"""Rollouts, drains and upgrades that keep the model served (docs/rollouts.md): the strategy as
the controllers resolve it, the plan's warning, one budget for every wait, and the download Job
on a volume that attaches to one node."""

import math

import pulumi
import pytest
from conftest import ROOT, project_with_stack, run_component
from test_components import assert_refused, server_args, store_args

from vllm_serving_components import ModelStore, VLLMServer
from vllm_serving_components.rollout import disruption_budget, rolling_update
from stack.render import render_stack
from vllm_serving_components.summary import object_details


def resolve(value, replicas: int, round_up: bool) -> int:
    """An int-or-percent as Kubernetes scales it: maxSurge rounds up, maxUnavailable down."""
    if isinstance(value, int):
        return value
    exact = replicas * int(value[:-1]) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def replaced_at(rolling: dict, replicas: int) -> tuple[int, int]:
    """(surge, unavailable) at this many replicas, as ResolveFenceposts gives them (both 0: one down)."""
    surge = resolve(rolling["maxSurge"], replicas, True)
    unavailable = resolve(rolling["maxUnavailable"], replicas, False)
    return surge, unavailable or (0 if surge else 1)


@pytest.fixture(scope="module")
def multinode():
    return render_stack("multinode", ROOT)


def workloads(rendered, multinode):
    """(rolling update, fewest, most, GPUs per replica, quota) of each shipped stack's server."""
    prod = rendered["prod"].only("Deployment")["spec"]["strategy"]["rollingUpdate"]
    dev = rendered["dev"].only("Deployment")["spec"]["strategy"]["rollingUpdate"]
    lws = multinode.only("LeaderWorkerSet")["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]
    return {"dev": (dev, 1, 1, 1, None), "prod": (prod, 1, 2, 8, 16), "multinode": (lws, 1, 2, 16, 32)}


@pytest.mark.parametrize("stack", ["dev", "prod", "multinode"])
def test_every_rollout_of_a_shipped_stack_keeps_a_replica_serving(rendered, multinode, stack):
    rolling, fewest, most, gpus, quota = workloads(rendered, multinode)[stack]
    for replicas in range(fewest, most + 1):
        surge, unavailable = replaced_at(rolling, replicas)
        assert replicas - unavailable >= 1, f"{stack} at {replicas}: the rollout stops every replica"
        if quota is not None and (replicas + surge) * gpus > quota:
            # The quota refuses the surge replica: the rollout only moves if an old one stops first.
            assert unavailable >= 1, f"{stack} at {replicas}: the rollout stalls on the quota"


@pytest.mark.parametrize("most", range(1, 13))
def test_the_policy_keeps_a_replica_at_every_count_and_moves_without_room_at_the_most(most):
    rolling = rolling_update(most_replicas=most, max_surge=1)
    for replicas in range(1, most + 1):
        surge, unavailable = replaced_at(rolling, replicas)
        assert replicas - unavailable >= 1 and surge + unavailable >= 1
    assert replaced_at(rolling, most)[1] >= (1 if most > 1 else 0)
    assert rolling_update(most_replicas=most, max_surge=0) == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize("pods", range(1, 65))
def test_the_drain_budget_keeps_a_lone_group_and_lets_one_of_two_go(pods):
    share = disruption_budget(fewest_replicas=1, pods_per_replica=pods, accept_gap=False)["minAvailable"]
    assert resolve(share, pods, True) == pods, "a lone replica keeps every pod"
    assert resolve(share, 2 * pods, True) <= 2 * pods - 1, "of two replicas, a pod may go"
    assert disruption_budget(fewest_replicas=2, pods_per_replica=pods, accept_gap=False) == {"maxUnavailable": 1}
    assert disruption_budget(fewest_replicas=1, pods_per_replica=pods, accept_gap=True) == {"maxUnavailable": 1}


def warnings_of(monkeypatch):
    found = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **_: found.append(message))
    return found


def test_a_plan_that_stops_the_only_replica_says_so(tmp_path, monkeypatch):
    warnings = warnings_of(monkeypatch)
    rendering = render_stack(project_with_stack(tmp_path, {"maxSurge": 0}), tmp_path)
    assert rendering.only("Deployment")["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (gap,) = [w for w in warnings if "stops the only replica" in w]
    assert "accept_service_gap" in gap and "min_replicas" in gap
    (deployment,) = [o for o in rendering.objects if o.kind == "Deployment"]
    assert dict(object_details(deployment, rendering.objects))["rollout"].endswith(
        "at 1 replica a rollout stops it before its successor is ready (service gap)"
    )


def test_an_accepted_gap_is_planned_without_a_warning(tmp_path, monkeypatch):
    warnings = warnings_of(monkeypatch)
    rendering = render_stack(project_with_stack(tmp_path, {"maxSurge": 0, "acceptServiceGap": True}), tmp_path)
    assert not [w for w in warnings if "stops the only replica" in w]
    assert rendering.only("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_two_replicas_need_no_surge(monkeypatch):
    warnings = warnings_of(monkeypatch)
    rendering = run_component(lambda: VLLMServer("srv", server_args(max_surge=0, replicas=2)))
    assert warnings == []
    assert rendering.only("Deployment")["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert rendering.only("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(("stack", "step"), [("dev", 3 + 15 + 15 + 5), ("prod", 3 + 15 + 13 + 5)])
def test_the_progress_deadline_is_one_rollout_step_of_the_probes_budget(rendered, stack, step):
    deployment = rendered[stack].only("Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    startup = server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"]
    deadline = deployment["spec"]["progressDeadlineSeconds"]
    assert deadline == step * 60
    # A new pod pulls its image (15 min) and then has its whole startup budget before it is ready.
    assert deadline > startup + 15 * 60 and deadline > 600
    waves = {"dev": 1, "prod": 2}[stack]
    assert rendered[stack].options("Deployment").timeouts["update"] == f"{waves * step}m"


def test_an_upgrade_job_on_a_single_node_volume_goes_where_the_server_holds_it(tmp_path):
    settings = {"tolerations": ["dedicated=gpu:NoSchedule"], "gpuTolerateTaint": True}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    job = rendering.only("Job")["spec"]["template"]["spec"]
    server = rendering.only("Deployment")["spec"]["template"]
    (preferred,) = job["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= server["metadata"]["labels"].items()
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in job["affinity"]["podAffinity"], "a first up has no server"
    assert job["tolerations"] == server["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]
    # Every server pod, a rollout's surge pod too, runs on the node the claim is attached to.
    (required,) = server["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {"labelSelector": {"matchLabels": rendering.only("Deployment")["spec"]["selector"]["matchLabels"]},
                        "topologyKey": "kubernetes.io/hostname"}


def test_a_shared_volume_leaves_the_job_and_the_server_free(rendered, multinode):
    for rendering in (rendered["prod"], multinode):
        job = rendering.only("Job")["spec"]["template"]["spec"]
        assert "affinity" not in job and "tolerations" not in job
    assert "podAffinity" not in rendered["prod"].only("Deployment")["spec"]["template"]["spec"]["affinity"]


def test_model_store_places_its_job_only_on_a_single_node_claim():
    pods = {"labels": {"app": "server"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}
    once = run_component(lambda: ModelStore("store", store_args(server_pods=pods))).only("Job")["spec"]["template"]["spec"]
    assert once["tolerations"] == pods["tolerations"]
    assert once["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    shared = run_component(lambda: ModelStore("store", store_args(server_pods=pods, access_mode="ReadWriteMany")))
    assert "affinity" not in shared.only("Job")["spec"]["template"]["spec"]
    existing = run_component(lambda: ModelStore("store", store_args(server_pods=pods, existing_claim="shared", size=None)))
    assert "affinity" not in existing.only("Job")["spec"]["template"]["spec"]


def test_a_claim_one_pod_at_a_time_is_refused_with_the_reason():
    error = assert_refused(ModelStore, store_args(access_mode="ReadWriteOncePod"), ["access_mode"])
    assert "an upgrade's download Job" in error.problems["access_mode"]
