"""Stand-ins for controllers the local cluster does not run: each writes what the real controller
writes, as far as the provider's await and the program's other objects depend on it."""

from __future__ import annotations

import datetime
import json
import threading

from .conftest import kubectl_json

# LeaderWorkerSet's labels and annotations (lws api/leaderworkerset/v1/leaderworkerset_types.go).
SET_NAME = "leaderworkerset.sigs.k8s.io/name"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
SIZE = "leaderworkerset.sigs.k8s.io/size"


class Poller(threading.Thread):
    """Calls ``step`` every ``interval`` seconds until stopped; a context manager."""

    interval = 0.5

    def __init__(self, cluster, namespace: str):
        super().__init__(daemon=True)
        self.cluster, self.namespace, self._stop_event = cluster, namespace, threading.Event()
        self.errors: list[str] = []

    def step(self):
        raise NotImplementedError

    def run(self):
        while not self._stop_event.wait(self.interval):
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - keep serving; the test reads the errors
                self.errors.append(str(error))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._stop_event.set()
        self.join(10)


class LeaderWorkerSetController(Poller):
    """What the LeaderWorkerSet controller does that the program depends on (lws
    pkg/controllers/leaderworkerset_controller.go and pod_controller.go, pkg/webhooks/pod_webhook.go):

    - the headless Service for the groups' DNS: one named after the set (subdomainPolicy Shared,
      the default) or one per group named after its leader pod (UniquePerReplica), created if it
      does not exist;
    - each group's pods, <set>-<group> the leader and <set>-<group>-<worker> the workers, from the
      set's templates with the set's labels (the real controller makes them through StatefulSets);
    - the status the provider awaits and the scale subresource reads: replicas, readyReplicas,
      hpaPodSelector (the leaders) and the Available condition once every group's pods are Ready.
    """

    def step(self):
        for lws in kubectl_json(self.cluster, "get", "leaderworkersets", "-n", self.namespace)["items"]:
            if "deletionTimestamp" not in lws["metadata"]:
                self.reconcile(lws)

    def reconcile(self, lws: dict):
        name, spec = lws["metadata"]["name"], lws["spec"]
        replicas, size = spec.get("replicas", 1), spec["leaderWorkerTemplate"]["size"]
        owner = {"apiVersion": lws["apiVersion"], "kind": lws["kind"], "name": name, "uid": lws["metadata"]["uid"],
                 "controller": True}
        policy = (spec.get("networkConfig") or {}).get("subdomainPolicy", "Shared")
        objects = []
        if policy == "Shared":
            objects.append(self._headless_service(name, {SET_NAME: name}, owner))
        for group in range(replicas):
            leader = f"{name}-{group}"
            if policy == "UniquePerReplica":
                objects.append(self._headless_service(leader, {SET_NAME: name, GROUP_INDEX: str(group)}, owner))
            template = spec["leaderWorkerTemplate"]
            objects.append(self._pod(leader, template.get("leaderTemplate") or template["workerTemplate"], name, group, 0,
                                     size, owner))
            objects += [self._pod(f"{leader}-{worker}", template["workerTemplate"], name, group, worker, size, owner)
                        for worker in range(1, size)]
        existing = {(o["kind"], o["metadata"]["name"])
                    for o in kubectl_json(self.cluster, "get", "services,pods", "-n", self.namespace)["items"]}
        missing = [o for o in objects if (o["kind"], o["metadata"]["name"]) not in existing]
        if missing:
            self.cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": missing}),
                                 check=False)
        self._write_status(lws, replicas, size)

    def _headless_service(self, service: str, selector: dict, owner: dict) -> dict:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service, "namespace": self.namespace, "ownerReferences": [owner]},
                "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True}}

    def _pod(self, pod: str, template: dict, name: str, group: int, worker: int, size: int, owner: dict) -> dict:
        metadata = template.get("metadata") or {}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod, "namespace": self.namespace, "ownerReferences": [owner],
                "labels": {**metadata.get("labels", {}), SET_NAME: name, GROUP_INDEX: str(group), WORKER_INDEX: str(worker)},
                "annotations": {**metadata.get("annotations", {}), SIZE: str(size)},
            },
            "spec": template["spec"],
        }

    def _write_status(self, lws: dict, replicas: int, size: int):
        name = lws["metadata"]["name"]
        pods = kubectl_json(self.cluster, "get", "pods", "-n", self.namespace, "-l", f"{SET_NAME}={name}")["items"]
        ready_pods = {p["metadata"]["name"] for p in pods if any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))}
        ready = sum(
            all(member in ready_pods for member in [f"{name}-{g}", *(f"{name}-{g}-{w}" for w in range(1, size))])
            for g in range(replicas)
        )
        available = ready == replicas
        previous = {c["type"]: c for c in lws.get("status", {}).get("conditions", [])}
        status = "True" if available else "False"
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        changed = previous.get("Available", {}).get("status") != status
        condition = {
            "type": "Available", "status": status,
            "reason": "AllGroupsReady" if available else "GroupsProgressing",
            "message": "All replicas are ready" if available else f"{ready} of {replicas} groups ready",
            "lastTransitionTime": now if changed else previous["Available"]["lastTransitionTime"],
            "observedGeneration": lws["metadata"]["generation"],
        }
        body = {"status": {
            "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
            "hpaPodSelector": f"{SET_NAME}={name},{WORKER_INDEX}=0",
            "observedGeneration": lws["metadata"]["generation"],
            "conditions": [condition],
        }}
        self.cluster.kubectl("patch", "leaderworkerset", name, "-n", self.namespace, "--subresource=status", "--type=merge",
                             "-p", json.dumps(body), check=False)


class StatusPublisher(Poller):
    """Does what an ingress controller, KEDA's operator and a Gateway controller do for `pulumi up`'s
    wait: publishes an address in each Ingress's status, reports each ScaledObject Ready (its
    scaler built) and each HTTPRoute accepted by its parent with its backends resolved (Gateway API
    status.parents). ``accept_routes`` False reports a route refused by the listener instead, as a
    Gateway does when no listener allows its namespace."""

    def __init__(self, cluster, namespace: str, accept_routes: bool = True):
        super().__init__(cluster, namespace)
        self.accept_routes = accept_routes

    def step(self):
        for ingress in kubectl_json(self.cluster, "get", "ingresses", "-n", self.namespace)["items"]:
            self._status("ingress", ingress, {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for so in kubectl_json(self.cluster, "get", "scaledobjects", "-n", self.namespace)["items"]:
            ready = {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling", "lastTransitionTime": now}
            self._status("scaledobject", so, {"conditions": [ready]})
        for route in kubectl_json(self.cluster, "get", "httproutes", "-n", self.namespace)["items"]:
            generation = route["metadata"]["generation"]
            if self.accept_routes:
                conditions = [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Route is accepted"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "Resolved all the Object references"},
                ]
            else:
                conditions = [
                    {"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
                     "message": "No listener of the Gateway allows routes from this namespace"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "Resolved all the Object references"},
                ]
            parents = [{"parentRef": ref, "controllerName": "example.com/e2e-gateway",
                        "conditions": [{**c, "lastTransitionTime": now, "observedGeneration": generation} for c in conditions]}
                       for ref in route["spec"]["parentRefs"]]
            self._status("httproute", route, {"parents": parents})

    def _status(self, kind: str, obj: dict, status: dict):
        self.cluster.kubectl("patch", kind, obj["metadata"]["name"], "-n", self.namespace, "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": status}), check=False)


class ReadyPods(Poller):
    """Not a stand-in: records, as often as it can, how many pods the control plane counts Ready
    among those a label selector picks and that are not being deleted."""

    interval = 0.2

    def __init__(self, cluster, namespace: str, selector: str):
        super().__init__(cluster, namespace)
        self.selector, self.counts = selector, []

    def step(self):
        pods = kubectl_json(self.cluster, "get", "pods", "-n", self.namespace, "-l", self.selector)["items"]
        self.counts.append(sum(
            "deletionTimestamp" not in p["metadata"]
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
            for p in pods
        ))
