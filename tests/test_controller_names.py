"""No object of the program takes a name that a controller acting on its other objects takes.

Since pulumi-kubernetes 4.29 a new resource is created with a plain create: an object of that kind
and name already there (because a controller made it first) fails `pulumi up` with AlreadyExists.
The names below are the controllers' own conventions, from their sources:

- LeaderWorkerSet (kubernetes-sigs/lws pkg/controllers): a headless Service named after the set
  (subdomainPolicy Shared, the default) or after each group's leader pod, <set>-<group>
  (UniquePerReplica); a StatefulSet of leaders named after the set, and one of workers per group,
  <set>-<group>.
- KEDA (kedacore/keda controllers/keda/hpa.go getHPAName): the HorizontalPodAutoscaler of a
  ScaledObject is advanced.horizontalPodAutoscalerConfig.name, else keda-hpa-<ScaledObject>.
- cert-manager's ingress-shim: for each spec.tls entry of an annotated Ingress, a Certificate named
  after secretName, which writes the Secret of that name.
"""

import pytest
from conftest import SHIPPED_STACKS
from test_stacks import VARIANTS, render_variant

from stack.render import render_stack
from vllm_serving_components.testing import RenderedObject

Key = tuple[str, str, str]


def _most_groups(lws: RenderedObject, objects: list[RenderedObject]) -> int:
    scalers = [o for o in objects if o.kind == "ScaledObject" and o.manifest["spec"]["scaleTargetRef"]["name"] == lws.name]
    if scalers:
        return scalers[0].manifest["spec"]["maxReplicaCount"]
    return lws.manifest["spec"].get("replicas", 1)


def taken_by_controllers(objects: list[RenderedObject]) -> dict[Key, str]:
    """(kind, namespace, name) that controllers create for the program's objects, with the reason."""
    taken: dict[Key, str] = {}
    for o in objects:
        spec = o.manifest.get("spec") or {}
        if o.kind == "LeaderWorkerSet":
            groups = range(_most_groups(o, objects))
            policy = (spec.get("networkConfig") or {}).get("subdomainPolicy", "Shared")
            services = [o.name] if policy == "Shared" else [f"{o.name}-{group}" for group in groups]
            for service in services:
                taken[("Service", o.namespace, service)] = f"LeaderWorkerSet {o.name}'s headless Service ({policy})"
            for stateful_set in [o.name, *(f"{o.name}-{group}" for group in groups)]:
                taken[("StatefulSet", o.namespace, stateful_set)] = f"LeaderWorkerSet {o.name}'s StatefulSet"
        if o.kind == "ScaledObject":
            config = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
            hpa = config.get("name") or f"keda-hpa-{o.name}"
            taken[("HorizontalPodAutoscaler", o.namespace, hpa)] = f"KEDA's HPA for ScaledObject {o.name}"
        if o.kind == "Ingress":
            for tls in spec.get("tls") or []:
                for kind in ("Secret", "Certificate"):
                    taken[(kind, o.namespace, tls["secretName"])] = f"cert-manager, for Ingress {o.name}'s TLS"
    return taken


def collisions(objects: list[RenderedObject]) -> dict[Key, str]:
    taken = taken_by_controllers(objects)
    return {(o.kind, o.namespace, o.name): taken[(o.kind, o.namespace, o.name)] for o in objects if (o.kind, o.namespace, o.name) in taken}


@pytest.fixture(scope="module")
def every_stack(tmp_path_factory) -> dict[str, list[RenderedObject]]:
    found = {stack: render_stack(stack).objects for stack in SHIPPED_STACKS}
    for variant in VARIANTS:
        found[variant] = render_variant(tmp_path_factory.mktemp(variant), variant).objects
    return found


def test_every_stack_leaves_the_controllers_their_names(every_stack):
    assert {stack: collisions(objects) for stack, objects in every_stack.items() if collisions(objects)} == {}
    # The rendered stacks do give the controllers something to name.
    kinds = {key[0] for objects in every_stack.values() for key in taken_by_controllers(objects)}
    assert {"Service", "StatefulSet", "HorizontalPodAutoscaler", "Secret", "Certificate"} <= kinds


def test_a_multi_node_set_names_its_groups_services_apart_from_the_api_service(every_stack):
    objects = every_stack["multinode"]
    (lws,) = [o for o in objects if o.kind == "LeaderWorkerSet"]
    (api,) = [o for o in objects if o.kind == "Service"]
    assert lws.manifest["spec"]["networkConfig"] == {"subdomainPolicy": "UniquePerReplica"}
    assert api.name == lws.name
    # With the set's default, Shared, the controller would take the API Service's name.
    shared = {**lws.manifest, "spec": {key: value for key, value in lws.manifest["spec"].items() if key != "networkConfig"}}
    before = [RenderedObject(manifest=shared, component=lws.component) if o is lws else o for o in objects]
    assert collisions(before) == {("Service", api.namespace, api.name): f"LeaderWorkerSet {lws.name}'s headless Service (Shared)"}
