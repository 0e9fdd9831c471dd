import jsonschema
import k8s_schemas
import kubernetes_validate.utils
import pytest
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors

OLDEST = SUPPORTED_KUBERNETES_VERSIONS[0]
NEWEST = SUPPORTED_KUBERNETES_VERSIONS[-1]


def deployment() -> dict:
    labels = {"app.kubernetes.io/name": "vllm"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.6.0",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                },
            },
        },
    }


def scaled_object() -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "vllm", "namespace": "inference"},
        "spec": {
            "scaleTargetRef": {"name": "vllm"},
            "minReplicaCount": 1,
            "maxReplicaCount": 4,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus.monitoring:9090",
                        "query": "sum(vllm:num_requests_waiting)",
                        "threshold": "5",
                    },
                }
            ],
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}
                }
            },
        },
    }


def pod_monitor() -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "vllm"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }


def http_route(api_version: str = "gateway.networking.k8s.io/v1") -> dict:
    return {
        "apiVersion": api_version,
        "kind": "HTTPRoute",
        "metadata": {"name": "vllm"},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "hostnames": ["vllm.example.com"],
            "rules": [
                {
                    "backendRefs": [{"name": "vllm", "port": 8000}],
                    "timeouts": {"request": "300s"},
                }
            ],
        },
    }


def resource_claim_template() -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "gpu"},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]
                }
            }
        },
    }


def test_supported_versions_ship_with_kubernetes_validate():
    shipped = kubernetes_validate.utils.all_versions()
    assert [v for v in SUPPORTED_KUBERNETES_VERSIONS if v not in shipped] == []


def test_unsupported_kubernetes_version_is_a_usage_error():
    with pytest.raises(ValueError, match="unsupported Kubernetes version '1.29.0'"):
        schema_errors(deployment(), "1.29.0")


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_valid_deployment_passes(version):
    assert schema_errors(deployment(), version) == []


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_deployment_unknown_nested_field_fails(version):
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"

    assert schema_errors(obj, version) == [
        "$.spec.template.spec.containers[0]: "
        "Additional properties are not allowed ('imagePullPolicyy' was unexpected)"
    ]


def test_deployment_wrong_type_fails():
    obj = deployment()
    obj["spec"]["replicas"] = "one"

    assert schema_errors(obj, NEWEST) == ["$.spec.replicas: 'one' is not of type 'integer', 'null'"]


def test_object_without_kind_fails():
    obj = deployment()
    del obj["kind"]

    assert schema_errors(obj, NEWEST) == [
        "$: apiVersion and kind must be strings, got 'apps/v1' and None"
    ]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("example.com/v1", "Widget"), ("gateway.networking.k8s.io/v1", "GRPCRoute")],
)
def test_kind_without_schema_or_crd_fails(api_version, kind):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}}

    errors = schema_errors(obj, NEWEST)

    assert errors == [
        f"$: Couldn't find schema for kind {kind} with api version {api_version} "
        f"for kubernetes version 1.37, and no CRD in {k8s_schemas.CRD_DIR} defines it"
    ]


@pytest.mark.parametrize("version", ["1.30.0", "1.31.0", "1.32.0", "1.33.0"])
def test_api_version_missing_from_older_kubernetes_fails(version):
    errors = schema_errors(resource_claim_template(), version)

    assert errors == [
        "$: Couldn't find schema for kind ResourceClaimTemplate with api version "
        f"resource.k8s.io/v1 for kubernetes version {version[:4]}, "
        f"and no CRD in {k8s_schemas.CRD_DIR} defines it"
    ]


@pytest.mark.parametrize("version", ["1.34.0", "1.35.0", "1.36.0", "1.37.0"])
def test_api_version_present_from_its_release_passes(version):
    assert schema_errors(resource_claim_template(), version) == []


def test_valid_scaled_object_passes():
    assert schema_errors(scaled_object(), OLDEST) == []


def test_scaled_object_misspelt_field_fails():
    obj = scaled_object()
    obj["spec"]["minReplicas"] = obj["spec"].pop("minReplicaCount")

    assert schema_errors(obj, OLDEST) == [
        "$.spec: Additional properties are not allowed ('minReplicas' was unexpected)"
    ]


def test_scaled_object_wrong_type_fails():
    obj = scaled_object()
    obj["spec"]["maxReplicaCount"] = "two"

    assert schema_errors(obj, OLDEST) == ["$.spec.maxReplicaCount: 'two' is not of type 'integer'"]


def test_custom_resource_reports_every_error_in_path_order():
    obj = scaled_object()
    obj["spec"]["maxReplicaCount"] = "two"
    obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ] = "5m"

    assert schema_errors(obj, OLDEST) == [
        "$.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown."
        "stabilizationWindowSeconds: '5m' is not of type 'integer'",
        "$.spec.maxReplicaCount: 'two' is not of type 'integer'",
    ]


def test_custom_resource_without_metadata_name_fails():
    obj = scaled_object()
    del obj["metadata"]["name"]

    assert schema_errors(obj, OLDEST) == ["$.metadata: 'name' is a required property"]


def test_custom_resource_without_metadata_fails():
    obj = scaled_object()
    del obj["metadata"]

    assert schema_errors(obj, OLDEST) == ["$: 'metadata' is a required property"]


def test_custom_resource_with_unserved_version_fails():
    obj = scaled_object()
    obj["apiVersion"] = "keda.sh/v1"

    assert schema_errors(obj, OLDEST) == [
        "$.apiVersion: ScaledObject CRD does not serve version 'v1' (served: v1alpha1)"
    ]


def test_valid_pod_monitor_passes():
    assert schema_errors(pod_monitor(), OLDEST) == []


def test_pod_monitor_bad_endpoint_fails():
    obj = pod_monitor()
    obj["spec"]["podMetricsEndpoints"] = [{"port": 8000, "interval": "30s"}]

    assert schema_errors(obj, OLDEST) == ["$.spec.podMetricsEndpoints[0].port: 8000 is not of type 'string'"]


@pytest.mark.parametrize("target_port", [8000, "http"])
def test_pod_monitor_int_or_string_accepts_both(target_port):
    obj = pod_monitor()
    obj["spec"]["podMetricsEndpoints"] = [{"targetPort": target_port}]

    assert schema_errors(obj, OLDEST) == []


def test_pod_monitor_int_or_string_rejects_other_types():
    obj = pod_monitor()
    obj["spec"]["podMetricsEndpoints"] = [{"targetPort": [8000]}]

    assert schema_errors(obj, OLDEST) == [
        "$.spec.podMetricsEndpoints[0].targetPort: [8000] is not of type 'integer', 'string'"
    ]


@pytest.mark.parametrize(
    "api_version", ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"]
)
def test_valid_http_route_passes(api_version):
    assert schema_errors(http_route(api_version), OLDEST) == []


def test_http_route_unknown_field_fails():
    obj = http_route()
    obj["spec"]["rules"][0]["timeouts"]["requestt"] = obj["spec"]["rules"][0]["timeouts"].pop(
        "request"
    )

    assert schema_errors(obj, OLDEST) == [
        "$.spec.rules[0].timeouts: Additional properties are not allowed ('requestt' was unexpected)"
    ]


# None of the vendored CRDs uses these two extensions, so the schema rewrite is
# checked directly.
def test_nullable_allows_null_only_where_declared():
    schema = k8s_schemas._strict_schema(
        {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"], "nullable": True},
                "name": {"type": "string"},
            },
        }
    )
    validator = jsonschema.Draft202012Validator(schema)

    assert [e.message for e in validator.iter_errors({"mode": None, "name": None})] == [
        "None is not of type 'string'"
    ]


def test_preserve_unknown_fields_allows_undeclared_fields_only_at_that_node():
    schema = k8s_schemas._strict_schema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"inner": {"type": "object", "properties": {"a": {"type": "string"}}}},
        }
    )
    validator = jsonschema.Draft202012Validator(schema)

    assert [e.message for e in validator.iter_errors({"extra": 1, "inner": {"b": 1}})] == [
        "Additional properties are not allowed ('b' was unexpected)"
    ]


def test_an_istio_resource_without_apiversion_in_its_crd_still_checks_its_spec():
    """Istio's CRDs declare neither apiVersion nor kind (both implicit in a structural schema)."""
    envoy_filter = {
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": {"name": "bbr", "namespace": "gw"},
        "spec": {"configPatches": [{"applyTo": "HTTP_FILTERS"}]},
    }
    assert schema_errors(envoy_filter, SUPPORTED_KUBERNETES_VERSIONS[-1]) == [
        "$.spec.configPatches[0].applyTo: 'HTTP_FILTERS' is not one of ['INVALID', 'LISTENER', 'FILTER_CHAIN', "
        "'NETWORK_FILTER', 'HTTP_FILTER', 'ROUTE_CONFIGURATION', 'VIRTUAL_HOST', 'HTTP_ROUTE', 'CLUSTER', "
        "'EXTENSION_CONFIG', 'BOOTSTRAP', 'LISTENER_FILTER']"
    ]
