"""Stack configurations, bad and good: every bad one is refused naming its key, exits 2 and writes
nothing; every valid edge case renders what it means."""

import json

import pytest
import yaml
from conftest import ROOT, project_with_stack, stack_file
from k8s_schemas import SUPPORTED_KUBERNETES_VERSIONS, schema_errors
from pulumi.runtime import mocks

from stack import render
from stack.config import ConfigError, StackConfig
from stack.project import read_project
from stack.render import EchoMocks, render_stack

PROJECT = read_project(ROOT)
DIGEST = "sha256:" + "a" * 64
WITH_HOST = {"host": "vllm.example.com", "apiKeySecretName": "vllm-key"}
V0_11 = {"image": "vllm/vllm-openai:v0.11.0"}
"""Flags 0.34.0 removed (--swap-space, --task, --rope-scaling) still pass on a stack that pins 0.11.0."""
GATEWAY = {**WITH_HOST, "exposureRoute": "gateway", "gatewayName": "public"}
AUTOSCALING = {"autoscalingEnabled": True, "autoscalingMaxReplicas": 3, "storageAccessMode": "ReadWriteMany"}

# (settings changed from dev, the key the error names, words the message contains)
BAD_CONFIGS = [
    # A trailing newline or another control character in any string.
    ({"host": "vllm.example.com\n"}, "host", "control characters"),
    ({"name": "vllm-dev\n"}, "name", "control characters"),
    ({"modelId": "Qwen/Qwen3-0.6B\n"}, "modelId", "control characters"),
    ({"storageSize": "20Gi\n"}, "storageSize", "control characters"),
    ({"servedModelName": "qwen\n"}, "servedModelName", "control characters"),
    ({"namespace": "ai-dev\n"}, "namespace", "control characters"),
    ({"modelRevision": "master\n"}, "modelRevision", "control characters"),
    ({"extraArgs": ["--enable-prefix-caching\n"]}, "extraArgs", "control characters"),
    ({"image": "vllm/vllm-openai:v0.11.0\n"}, "image", "control characters"),
    ({"cpu": "4\t"}, "cpu", "control characters"),
    # Paths that would leave the model directory.
    ({"modelRevision": "../../../etc"}, "modelRevision", "branch, tag or commit"),
    ({"modelRevision": "/etc"}, "modelRevision", "branch, tag or commit"),
    ({"modelRevision": "v1/../../x"}, "modelRevision", "branch, tag or commit"),
    ({"modelRevision": "$(HOME)"}, "modelRevision", "branch, tag or commit"),
    ({"modelId": "Qwen/.."}, "modelId", "owner/name"),
    ({"modelId": "../etc"}, "modelId", "owner/name"),
    ({"modelId": "Qwen/Qwen3/extra"}, "modelId", "owner/name"),
    ({"modelId": "Qwen3-0.6B"}, "modelId", "owner/name"),
    # extraArgs read as vLLM's parser reads them, against the image's release.
    ({"extraArgs": ["--tensor_parallel_size=2"]}, "extraArgs", "set tensorParallelSize instead"),
    ({"extraArgs": ["--served_model_name=x"]}, "extraArgs", "set servedModelName instead"),
    ({"extraArgs": ["--api_key=abc"]}, "extraArgs", "plain text"),
    ({"extraArgs": ["--api-key", "abc"]}, "extraArgs", "plain text"),
    ({"extraArgs": ["--api-key abc"]}, "extraArgs", "plain text"),
    ({"extraArgs": ["--max-num-seqs 64"]}, "extraArgs", "next item"),
    ({"extraArgs": ["--tensor-paralel-size", "1"]}, "extraArgs", "did you mean --tensor-parallel-size"),
    ({"extraArgs": ["--no-such-flag"]}, "extraArgs", "not a flag of vLLM 0.34.0"),
    ({"extraArgs": ["--swap-space", "4"]}, "extraArgs", "--swap-space is not a flag of vLLM 0.34.0"),
    ({**V0_11, "safetensorsLoadStrategy": "prefetch"}, "safetensorsLoadStrategy", "prefetch is not a --safetensors-load-strategy of vLLM 0.11.0"),
    ({"extraArgs": ["--max-num-seqs"]}, "extraArgs", "needs a value"),
    ({"extraArgs": ["--max-num-seqs", "--enable-prefix-caching"]}, "extraArgs", "needs a value"),
    ({"extraArgs": ["--enable-prefix-caching=true"]}, "extraArgs", "takes no value"),
    ({"extraArgs": ["64"]}, "extraArgs", "not a flag"),
    ({"extraArgs": ["--port=9000"]}, "extraArgs", "program fixes it"),
    ({"extraArgs": ["-tp", "1"]}, "extraArgs", "set tensorParallelSize instead"),
    ({"extraArgs": ["--model", "/x"]}, "extraArgs", "set model_path instead"),
    ({"extraArgs": ["--max_model_len", "4096"]}, "extraArgs", "set maxModelLen instead"),
    ({"extraArgs": [1, 2]}, "extraArgs", "list of strings"),
    ({"extraArgs": "--enable-prefix-caching"}, "extraArgs", "must be a list"),
    # Objects the API server would refuse.
    ({"name": "1vllm"}, "name", "DNS-1035"),
    ({"name": "x" * 49}, "name", "at most 48"),
    ({"name": "Vllm"}, "name", "DNS"),
    ({"host": "10.0.0.1"}, "host", "not an IP address"),
    ({"host": "https://vllm.example.com"}, "host", "DNS name"),
    ({"host": "vllm_api.example.com"}, "host", "DNS name"),
    ({"replicas": 2147483648}, "replicas", "at most 2147483647"),
    ({"startupTimeoutMinutes": 400000000}, "startupTimeoutMinutes", "at most 1440"),
    ({"maxModelLen": 2147483648}, "maxModelLen", "at most 2147483647"),
    ({**AUTOSCALING, "autoscalingPodMonitorLabels": ["a/b/c=x"]}, "autoscalingPodMonitorLabels", "label key"),
    ({**AUTOSCALING, "autoscalingPodMonitorLabels": ["team=a b"]}, "autoscalingPodMonitorLabels", "label value"),
    ({"storageSize": "0"}, "storageSize", "positive size"),
    ({"storageSize": "500m"}, "storageSize", "positive size"),
    ({"cpu": "1Gi"}, "cpu", "CPU cores"),
    ({"cpu": "four"}, "cpu", "not a Kubernetes quantity"),
    ({"memory": "16GB"}, "memory", "not a Kubernetes quantity"),
    ({"shmSize": "-1Gi"}, "shmSize", "positive size"),
    ({"namespace": "a" * 64}, "namespace", "at most 63"),
    ({"namespace": "AI_Serving"}, "namespace", "DNS label"),
    ({**GATEWAY, "gatewayName": "Bad_Gateway"}, "gatewayName", "DNS name"),
    ({**GATEWAY, "gatewayNamespace": "gate.ways"}, "gatewayNamespace", "DNS label"),
    ({"apiKeySecretName": "Vllm-Key"}, "apiKeySecretName", "DNS name"),
    ({"apiKeySecretName": "vllm-key", "apiKeySecretKey": "api key"}, "apiKeySecretKey", "Secret key"),
    ({"storageClass": "NFS_Client"}, "storageClass", "DNS name"),
    ({"existingClaim": "-claim"}, "existingClaim", "DNS name"),
    ({"gpuRuntimeClass": "nvidia runtime"}, "gpuRuntimeClass", "DNS name"),
    ({"gpuProducts": ["NVIDIA H100"]}, "gpuProducts", "without spaces"),
    ({**WITH_HOST, "ingressClass": "Nginx"}, "ingressClass", "DNS name"),
    ({**WITH_HOST, "tls": True, "tlsSecretName": "tls_secret"}, "tlsSecretName", "DNS name"),
    ({**WITH_HOST, "tls": True, "tlsClusterIssuer": "Lets Encrypt"}, "tlsClusterIssuer", "DNS name"),
    ({**WITH_HOST, "maxRequestBodySize": "64 MB"}, "maxRequestBodySize", "nginx size"),
    ({"downloadMaxWorkers": 1000}, "downloadMaxWorkers", "at most 64"),
    ({"downloadTimeoutMinutes": 0}, "downloadTimeoutMinutes", "at least 1"),
    ({**WITH_HOST, "streamTimeoutSeconds": 100000}, "streamTimeoutSeconds", "at most 99999"),
    ({**AUTOSCALING, "autoscalingScaleDownStabilizationSeconds": 7200}, "autoscalingScaleDownStabilizationSeconds", "at most 3600"),
    ({"hamiCores": 101}, "hamiCores", "at most 100"),
    ({"hamiMemoryMiB": -5}, "hamiMemoryMiB", "at least 1"),
    ({"hamiGpuTypes": ["A100,H100"]}, "hamiGpuTypes", "without commas"),
    ({"hamiNodePolicy": "fast"}, "hamiNodePolicy", "binpack or spread"),
    ({"modelEndpoint": "ftp://mirror.example.com"}, "modelEndpoint", "http:// or https://"),
    ({**AUTOSCALING, "autoscalingPrometheusAddress": "prometheus:9090"}, "autoscalingPrometheusAddress", "http://"),
    ({"tensorParallelSize": 0}, "tensorParallelSize", "at least 1"),
    ({"maxSurge": -1}, "maxSurge", "at least 0"),
    ({"gpuCount": 0}, "gpuCount", "at least 1"),
    ({"gpuMemoryUtilization": "1.5"}, "gpuMemoryUtilization", "at most 1"),
    ({"gpuMemoryUtilization": "0"}, "gpuMemoryUtilization", "greater than 0"),
    ({"gpuMemoryUtilization": "nan"}, "gpuMemoryUtilization", "decimal number"),
    ({"gpuMemoryUtilization": "ninety"}, "gpuMemoryUtilization", "decimal number"),
    ({"exposureRoute": "istio", **WITH_HOST}, "exposureRoute", "ingress, gateway or inference"),
    ({"storageAccessMode": "ReadWriteAll"}, "storageAccessMode", "ReadWriteOnce"),
    ({"gpuBackend": "amd"}, "gpuBackend", "nvidia, hami, mig or dra"),
    ({"gpuCont": 1}, "gpuCont", "did you mean gpuCount"),
    ({"modelAllowPatterns": ["*.safetensors", "bad pattern"]}, "modelAllowPatterns", "without spaces"),
    # Day two: storage for an upgrade, the load budget, drain, staging without the index.
    ({"modelSizeGB": 2, "storageSize": "3Gi"}, "storageSize", "cannot hold 2 revisions"),
    ({"modelSizeGB": 5, "modelLoadMinReadMBps": 1, "startupTimeoutMinutes": 60}, "startupTimeoutMinutes", "shorter than the 89 minutes"),
    ({"modelRevisionsToKeep": 1}, "modelRevisionsToKeep", "at least 2"),
    ({"safetensorsLoadStrategy": "fast"}, "safetensorsLoadStrategy", "lazy, eager or prefetch"),
    ({"drainSeconds": -1}, "drainSeconds", "at least 0"),
    ({"imagePullMinutes": -1}, "imagePullMinutes", "at least 0"),
    ({"modelLoadMinReadMBps": 0}, "modelLoadMinReadMBps", "at least 1"),
    ({"downloaderPackageIndex": "https://pypi.internal/simple", "downloaderInstallClient": False}, "downloaderPackageIndex", "no effect"),
    ({"downloaderPackageIndex": "pypi.internal"}, "downloaderPackageIndex", "http:// or https://"),
    ({**GATEWAY, "ingressWaitForAddress": False}, "ingressWaitForAddress", "only applies to an Ingress"),
    ({"ingressWaitForAddress": False}, "ingressWaitForAddress", "without a host"),
    # Cluster placement, images and environment.
    ({"serverEnv": ["HF_TOKEN=hf_abc"]}, "serverEnv", "looks like a secret"),
    ({"serverEnv": ["NCCL_DEBUG"]}, "serverEnv", "has no '='"),
    ({"serverEnv": ["HF_HUB_OFFLINE=0"]}, "serverEnv", "sets itself"),
    ({"serverEnv": ["1NCCL=x"]}, "serverEnv", "environment variable name"),
    ({"serverSecretEnv": ["HF_TOKEN=hub-token"]}, "serverSecretEnv", "names no key"),
    ({"serverSecretEnv": ["HF_TOKEN=Hub_Token:token"]}, "serverSecretEnv", "DNS name"),
    ({"serverEnv": ["A=1"], "serverSecretEnv": ["A=s:k"]}, "serverSecretEnv", "both set A"),
    ({"imagePullSecrets": ["Bad_Secret"]}, "imagePullSecrets", "DNS name"),
    ({"imageRegistry": "harbor"}, "imageRegistry", "registry such as"),
    ({"priorityClassName": "High Priority"}, "priorityClassName", "DNS name"),
    ({"nodeSelector": ["pool"]}, "nodeSelector", "has no '='"),
    ({"nodeSelector": ["a/b/c=x"]}, "nodeSelector", "label key"),
    ({"tolerations": ["dedicated=x:Sometimes"]}, "tolerations", "NoSchedule"),
    ({"tolerations": ["=x:NoSchedule"]}, "tolerations", "operator must be Exists"),
    ({"gpuProducts": ["NVIDIA-H100,NVIDIA-H200"]}, "gpuProducts", "label value"),
    # Image references.
    ({"image": "vllm/vllm-openai:"}, "image", "image reference"),
    ({"image": "vllm/vllm-openai@sha256:abc"}, "image", "image reference"),
    ({"image": "VLLM/vllm-openai:v0.11.0"}, "image", "image reference"),
    ({"image": " vllm/vllm-openai:v0.11.0"}, "image", "image reference"),
    ({"image": ["vllm/vllm-openai:v0.11.0"]}, "image", "not a list"),
    ({"image": "vllm/vllm-openai:latest"}, "image", "latest"),
    ({"image": "vllm/vllm-openai"}, "image", "no tag"),
    ({"downloaderImage": "registry.local:5000/modelscope"}, "downloaderImage", "no tag"),
    ({"image": "vllm/vllm-openai:v0.1.0"}, "image", "tools/vllm_flag_table.py 0.1.0"),
    ({"image": f"vllm/vllm-openai@{DIGEST}"}, "image", "set vllmRelease"),
    ({"image": "vllm/vllm-openai:nightly"}, "image", "set vllmRelease"),
    ({"image": f"vllm/vllm-openai@{DIGEST}", "vllmRelease": "0.1.0"}, "vllmRelease", "no flag table"),
    # Values the CLI's type check refuses.
    ({"storageClass": None}, "storageClass", "null"),
    ({"host": ["a.example.com", "b.example.com"]}, "host", "not a list"),
    ({"host": {"name": "a.example.com"}}, "host", "not a mapping"),
    ({"gpuCount": "eight"}, "gpuCount", "whole number"),
    ({"gpuCount": 1.5}, "gpuCount", "whole number"),
    ({"gpuCount": 2**64}, "gpuCount", "out of range"),
    ({"maxModelLen": "9" * 30}, "maxModelLen", "64-bit"),
    ({"tls": "yes"}, "tls", "true or false"),
    ({"createNamespace": 1}, "createNamespace", "true or false"),
    # Settings that have no effect.
    ({"autoscalingMaxReplicas": 3}, "autoscalingMaxReplicas", "autoscalingEnabled is false"),
    ({"autoscalingPodMonitorLabels": ["release=prom"]}, "autoscalingPodMonitorLabels", "autoscalingEnabled is false"),
    ({**AUTOSCALING, "autoscalingPodMonitor": False, "autoscalingPodMonitorLabels": ["release=p"]}, "autoscalingPodMonitorLabels", "no effect"),
    ({**WITH_HOST, "gatewayName": "public"}, "gatewayName", "only applies with route gateway"),
    ({**WITH_HOST, "pathPrefix": "qwen"}, "pathPrefix", "needs route gateway"),
    ({"modelSource": "github"}, "modelSource", "modelscope"),
    ({"downloadStallTimeoutSeconds": 5}, "downloadStallTimeoutSeconds", "at least 10"),
    ({"modelIgnorePatterns": ["*.gguf", ""]}, "modelIgnorePatterns", "item [1]: must be a non-empty string"),
    ({**GATEWAY, "pathPrefix": "/qwen"}, "pathPrefix", "a path under the host"),
    ({**WITH_HOST, "tlsClusterIssuer": "letsencrypt"}, "tlsClusterIssuer", "tls is false"),
    ({"ingressClass": "traefik"}, "ingressClass", "without a host"),
    ({"streamTimeoutSeconds": 600}, "streamTimeoutSeconds", "without a host"),
    ({**GATEWAY, "maxRequestBodySize": "16m"}, "maxRequestBodySize", "only applies to an Ingress"),
    ({**GATEWAY, "tls": True, "tlsSecretName": "cert"}, "tlsSecretName", "Gateway's listener"),
    ({"gpuBackend": "nvidia"}, ("hamiMemoryMiB", "hamiCores"), "is a hami setting"),
    ({"existingClaim": "shared", "storageClass": "nfs-client"}, ("storageSize", "storageClass"), "existingClaim"),
    ({"existingClaim": "shared", "protectModelVolume": True}, ("storageSize", "protectModelVolume"), "existingClaim"),
    ({"existingClaim": "shared", "storageAccessMode": "ReadWriteMany"}, ("storageSize", "storageAccessMode"), "existingClaim"),
    ({"apiKeySecretKey": "token"}, "apiKeySecretKey", "without apiKeySecretName"),
    ({"autoscalingEnabled": True, "storageAccessMode": "ReadWriteMany"}, "autoscalingMaxReplicas", "never scale"),
    ({**AUTOSCALING, "replicas": 2}, "replicas", "owned by the autoscaler"),
    # Rules between settings.
    ({"tensorParallelSize": 2, "memory": "64Gi"}, "tensorParallelSize", "(2 x 1) must equal the GPUs per pod, gpuCount (1)"),
    ({"pipelineParallelSize": 2, "memory": "64Gi"}, "tensorParallelSize", "(1 x 2) must equal"),
    ({"replicas": 2}, "storageAccessMode", "ReadWriteMany"),
    ({"autoscalingEnabled": True, "autoscalingMaxReplicas": 3}, "storageAccessMode", "up to 3 server pods"),
    ({"maxUnavailable": 1}, "maxUnavailable", "not a setting"),
    ({"gpuQuota": 1}, "maxSurge", "(1 + 1) x gpuCount (1) = 2 GPUs, above gpuQuota (1)"),
    ({"storageAccessMode": "ReadWriteOncePod"}, "storageAccessMode", "an upgrade's download Job"),
    ({"shmSize": "16Gi"}, "shmSize", "smaller than"),
    ({"hamiMemoryPercent": 50}, "hamiMemoryPercent", "cannot be combined with hamiMemoryMiB"),
    ({"tls": True}, "tls", "needs a host"),
    # The Secret cert-manager writes for the Ingress is no credential's Secret.
    ({**WITH_HOST, "tls": True, "apiKeySecretName": "vllm-qwen3-0-6b-tls"}, "apiKeySecretName", "TLS Secret"),
    ({**WITH_HOST, "tls": True, "tlsSecretName": "vllm-key"}, "tlsSecretName", "apiKeySecretName also uses"),
    ({**WITH_HOST, "tls": True, "tlsSecretName": "hub", "hubTokenSecretName": "hub"}, "tlsSecretName", "hubTokenSecretName"),
    ({**WITH_HOST, "exposureRoute": "gateway"}, "gatewayName", "required"),
    ({"existingClaim": "shared", "storageSize": "1Ti"}, "storageSize", "existingClaim"),
    ({**AUTOSCALING, "autoscalingMinReplicas": 0}, "autoscalingMinReplicas", "at least 1"),
    # GPU prices: a number of 0 or more per product, each product one the pods may run on.
    ({"gpuProducts": ["NVIDIA-L4"], "gpuHourlyPrice": ["NVIDIA-L4=-0.5"]}, "gpuHourlyPrice", "NVIDIA-L4=-0.5: the price is negative"),
    ({"gpuProducts": ["NVIDIA-L4"], "gpuHourlyPrice": ["NVIDIA-L4=cheap"]}, "gpuHourlyPrice", "the price is not a number"),
    ({"gpuProducts": ["NVIDIA-L4"], "gpuHourlyPrice": ["NVIDIA-L4"]}, "gpuHourlyPrice", "has no '='; give each as PRODUCT=price"),
    ({"gpuProducts": ["NVIDIA-L4"], "gpuHourlyPrice": ["NVIDIA-L40=0.9"]}, "gpuHourlyPrice",
     "prices NVIDIA-L40, which gpuProducts does not list (NVIDIA-L4)"),
    ({"gpuHourlyPrice": ["NVIDIA-L4=0.8"]}, "gpuHourlyPrice", "gpuProducts is empty, so the pods may run on any GPU"),
    ({"gpuPriceCurrency": "dollars"}, "gpuPriceCurrency", "ISO 4217 currency code"),
]


def refusal(tmp_path, stack) -> ConfigError:
    """Render a stack that must be refused: no resource registered, exit 2, nothing written."""
    monitor = mocks.MockMonitor(EchoMocks())
    with pytest.raises(ConfigError) as raised:
        render_stack(stack, tmp_path, monitor)
    assert monitor.resources == {}
    out = tmp_path / "out"
    assert render.main([stack, "--project-dir", str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()
    return raised.value


@pytest.mark.parametrize(("settings", "key", "words"), BAD_CONFIGS, ids=[f"{i}-{c[1] if isinstance(c[1], str) else c[1][0]}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_is_refused_naming_its_key(tmp_path, settings, key, words):
    error = refusal(tmp_path, project_with_stack(tmp_path, settings))
    keys = key if isinstance(key, tuple) else (key,)
    assert [problem.key for problem in error.problems] == list(keys)
    assert all(words in problem.message for problem in error.problems)
    assert all(f"vllm-serving:{key}" in str(error) for key in keys)


# Stack files the CLI itself would refuse or read differently: (file text, key named, words).
BAD_FILES = [
    ("config:\n  vllm-serving:name: a\n  vllm-serving:name: b\n", "name", "set twice"),
    ("config:\n  vllm_serving:gpuCount: 2\n", "vllm_serving:gpuCount", "did you mean vllm-serving:gpuCount"),
    ("config:\n  vllm-serving:name:\n", "name", "null"),
    ("config:\n  gpuCount: 2\n", "gpuCount", "write vllm-serving:gpuCount"),
    ("config:\n  vllm-serving:config:gpuCount: eight\n", "gpuCount", "whole number"),
    ("config:\n  a:b:c: 1\n", "a:b:c", "<namespace>:<name>"),
    ("config:\n  5: x\n", "5", "<namespace>:<name>"),
    ("config:\n  vllm-serving:extraArgs: [--max-num-seqs, 64]\n", "extraArgs", "list of strings"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD_FILES)
def test_stack_file_the_cli_would_refuse(tmp_path, text, key, words):
    error = refusal(tmp_path, stack_file(tmp_path, text, base="dev"))
    assert [problem.key for problem in error.problems] == [key]
    assert words in error.problems[0].message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("config:\n  vllm-serving:name: [a\n", "Pulumi.bad.yaml:3:1: not valid YAML"),
        ("config: [a, b]\n", "config: must map keys to values"),
        ("- a\n- b\n", "must be a mapping"),
        ("config:\n  vllm-serving:name: 'a\n", "not valid YAML"),
        ("\tconfig: {}\n", "not valid YAML"),
        ("config:\n  vllm-serving:gpuCount: " + "9" * 5000 + "\n", "too large"),
    ],
)
def test_unreadable_stack_file_is_an_error_not_a_traceback(tmp_path, capsys, text, words):
    stack = stack_file(tmp_path, text, base=None)
    assert render.main([stack, "--project-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_project_dir_without_the_program_is_an_error(tmp_path, capsys):
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.dev.yaml").write_text((ROOT / "Pulumi.dev.yaml").read_text())
    assert render.main(["dev", "--project-dir", str(tmp_path)]) == 2
    assert "has no __main__.py" in capsys.readouterr().err
    assert render.main(["dev", "--project-dir", str(tmp_path / "nowhere")]) == 2
    assert "has no Pulumi.yaml" in capsys.readouterr().err


OVERRIDDEN = {"name", "gpuCount", "maxModelLen", "extraArgs"}


def test_every_mistake_is_reported_in_one_pass(tmp_path):
    text = "\n".join(
        [
            "config:",
            *(f"  {key}: {json.dumps(value)}" for key, value in _dev_settings().items() if key.split(":")[1] not in OVERRIDDEN),
            "  vllm-serving:name: vllm-dev",
            "  vllm-serving:name: vllm-dev-2",  # repeated key
            "  vllm_serving:maxSurge: 1",  # foreign namespace
            "  vllm-serving:gpuCount: eight",  # type
            "  vllm-serving:host: Bad_Host",  # format
            "  vllm-serving:maxModelLen: 0",  # range
            "  vllm-serving:replicas: 2",  # across components
            "  vllm-serving:gatewayName: public",  # no effect
            "  vllm-serving:storageClass: null",  # null
            "  vllm-serving:extraArgs: [--api-key, sk-123]",  # secret in plain text
            "  vllm-serving:imag: x",  # unknown key
            "",
        ]
    )
    error = refusal(tmp_path, stack_file(tmp_path, text, base=None))
    assert sorted(problem.key for problem in error.problems) == sorted(
        [
            "name", "vllm_serving:maxSurge", "gpuCount", "host", "maxModelLen", "storageAccessMode",
            "gatewayName", "storageClass", "extraArgs", "imag",
        ]
    )
    assert "sk-123" not in str(error)


def test_error_shows_the_bad_value_but_never_extra_args(tmp_path):
    error = refusal(tmp_path, project_with_stack(tmp_path, {"maxModelLen": 0, "extraArgs": ["--api-key=sk-1"]}))
    assert 'vllm-serving:maxModelLen = "0": must be at least 1' in str(error)
    assert "sk-1" not in str(error)


def test_missing_required_key_is_named(tmp_path):
    error = refusal(tmp_path, project_with_stack(tmp_path, {}, drop=("maxModelLen",)))
    assert [(p.key, p.message.split(";")[0]) for p in error.problems] == [("maxModelLen", "is required")]


# --- Valid edge configurations: each renders, validates, and means what it says ----------------


def pod_of(rendering, kind):
    return rendering.only(kind)["spec"]["template"]["spec"]


def first_container(rendering, kind):
    return pod_of(rendering, kind)["containers"][0]


VALID_EDGES = [
    ({"servedModelName": "$(VLLM_API_KEY)"}, lambda r: "$$(VLLM_API_KEY)" in first_container(r, "Deployment")["args"]),
    ({"servedModelName": "qwen-模型"}, lambda r: "qwen-模型" in first_container(r, "Deployment")["args"]),
    (
        {**AUTOSCALING, "servedModelName": 'a"}b'},
        lambda r: r.only("ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
        == 'sum(vllm:num_requests_waiting{namespace="ai-serving-dev",model_name="a\\"}b"})',
    ),
    ({**GATEWAY, "gatewayListener": "public.https"}, lambda r: r.only("HTTPRoute")["spec"]["parentRefs"][0]["sectionName"] == "public.https"),
    ({**GATEWAY, "pathPrefix": "qwen"}, lambda r: r.outputs["endpoint"].endswith("/qwen/v1")
     and r.only("HTTPRoute")["spec"]["rules"][0]["filters"][0]["type"] == "URLRewrite"),
    ({**V0_11, "extraArgs": ["--swap-space", "4"]}, lambda r: first_container(r, "Deployment")["args"][-2:] == ["--swap-space", "4"]),
    ({**V0_11, "extraArgs": ["--task", "generate"]}, lambda r: "--task" in first_container(r, "Deployment")["args"]),
    ({**V0_11, "extraArgs": ["--rope-scaling", '{"rope_type":"yarn","factor":4.0}']}, lambda r: "--rope-scaling" in first_container(r, "Deployment")["args"]),
    ({"extraArgs": ["--max_num_seqs=64", "--no-enable-prefix-caching"]}, lambda r: "--max_num_seqs=64" in first_container(r, "Deployment")["args"]),
    ({"extraArgs": ["--max-num-seqs", "64", "--enable-prefix-caching"]}, lambda r: first_container(r, "Deployment")["args"][-1] == "--enable-prefix-caching"),
    ({"name": "v" * 48}, lambda r: r.only("Deployment")["metadata"]["name"] == "v" * 48),
    ({"modelRevision": "release/v1.0"}, lambda r: r.outputs["modelPath"] == "/models/Qwen/Qwen3-0.6B/release/v1.0"),
    ({"modelId": "Qwen/Qwen3-0.6B-Instruct_2507.x"}, lambda r: r.outputs["modelPath"] == "/models/Qwen/Qwen3-0.6B-Instruct_2507.x/master"),
    ({"image": f"vllm/vllm-openai@{DIGEST}", "vllmRelease": "0.11.0"}, lambda r: first_container(r, "Deployment")["image"].endswith(DIGEST)),
    ({"image": "registry.local:5000/mirror/vllm-openai:v0.11.0"}, lambda r: first_container(r, "Job")["image"].startswith("registry.local:5000/")),
    ({"cpu": "500m", "memory": "16G"}, lambda r: first_container(r, "Deployment")["resources"]["limits"]["cpu"] == "500m"),
    ({"storageSize": "1Ti"}, lambda r: r.only("PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"] == "1Ti"),
    ({**WITH_HOST, "host": "a.b.c.example.com"}, lambda r: r.outputs["endpoint"] == "http://a.b.c.example.com/v1"),
    ({"gpuMemoryUtilization": "1"}, lambda r: "1" in first_container(r, "Deployment")["args"]),
    ({"modelEndpoint": "https://mirror.example.com/modelscope"}, lambda r: "https://mirror.example.com/modelscope" in first_container(r, "Job")["args"]),
    ({**GATEWAY, "ingressClass": "nginx"}, lambda r: [o.kind for o in r.objects].count("HTTPRoute") == 1),
    ({**AUTOSCALING, "autoscalingPodMonitorLabels": ["release=kube-prometheus-stack"]}, lambda r: r.only("PodMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"),
    ({"modelRevision": "v1.0.0", "createNamespace": False}, lambda r: "Namespace" not in {o.kind for o in r.objects}),
    ({"hamiCores": 0, "hamiMemoryMiB": 4096}, lambda r: first_container(r, "Deployment")["resources"]["limits"]["nvidia.com/gpumem"] == "4096"),
    ({"modelAllowPatterns": ["*.json", "original/*"]}, lambda r: "original/*" in first_container(r, "Job")["args"]),
    ({"imageRegistry": "harbor.internal/hub"}, lambda r: first_container(r, "Deployment")["image"] == "harbor.internal/hub/vllm/vllm-openai:v0.34.0"),
    ({"imagePullSecrets": ["regcred"], "priorityClassName": "inference"}, lambda r: pod_of(r, "Job")["imagePullSecrets"] == pod_of(r, "Deployment")["imagePullSecrets"] == [{"name": "regcred"}]),
    ({"nodeSelector": ["pool=gpu-a"], "tolerations": ["dedicated=inference:NoSchedule", "spot"]}, lambda r: pod_of(r, "Deployment")["nodeSelector"] == {"pool": "gpu-a"} and "nodeSelector" not in pod_of(r, "Job")),
    ({"serverEnv": ["NCCL_DEBUG=INFO", "NCCL_SOCKET_IFNAME=$(POD_IFACE)"], "serverSecretEnv": ["HF_TOKEN=hub-token:token"]}, lambda r: {"name": "NCCL_SOCKET_IFNAME", "value": "$$(POD_IFACE)"} in first_container(r, "Deployment")["env"]),
    ({**WITH_HOST, "ingressWaitForAddress": False}, lambda r: r.only("Ingress")["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"),
    ({"drainSeconds": 0}, lambda r: "lifecycle" not in first_container(r, "Deployment") and pod_of(r, "Deployment")["terminationGracePeriodSeconds"] == 30),
    # storageSize back at Pulumi.yaml's default: dev's own would have no effect on an existing claim.
    # A network volume: many readers where the release prefetches and the weights fit in memory,
    # one reader per file otherwise.
    ({"existingClaim": "nfs-models", "storageSize": "100Gi", "modelVolumeIsNetwork": True}, lambda r: "prefetch" in first_container(r, "Deployment")["args"]),
    ({"existingClaim": "nfs-models", "storageSize": "100Gi", "modelVolumeIsNetwork": True, "image": "vllm/vllm-openai:v0.11.0"}, lambda r: "eager" in first_container(r, "Deployment")["args"]),
    ({"existingClaim": "nfs-models", "storageSize": "100Gi", "modelVolumeIsNetwork": True, "memory": "2000Mi", "shmSize": "256Mi"}, lambda r: "eager" in first_container(r, "Deployment")["args"]),
    ({"storageAccessMode": "ReadWriteMany", "safetensorsLoadStrategy": "lazy"}, lambda r: first_container(r, "Deployment")["args"][-2:] == ["--safetensors-load-strategy", "lazy"]),
    ({"modelRevisionsToKeep": 0}, lambda r: "--keep-revisions" not in first_container(r, "Job")["args"]),
    ({"downloaderPackageIndex": "https://pypi.internal/simple"}, lambda r: {"name": "PIP_INDEX_URL", "value": "https://pypi.internal/simple"} in first_container(r, "Job")["env"]),
]


@pytest.mark.parametrize(("settings", "means"), VALID_EDGES, ids=[str(i) for i in range(len(VALID_EDGES))])
def test_valid_edge_config_renders_what_it_means(tmp_path, settings, means):
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    assert means(rendering)
    newest = SUPPORTED_KUBERNETES_VERSIONS[-1]
    assert {f"{o.kind}/{o.name}": schema_errors(o.manifest, newest) for o in rendering.objects if schema_errors(o.manifest, newest)} == {}


def test_legacy_key_form_and_provider_keys_are_read_as_the_cli_reads_them(tmp_path):
    settings = {key.replace("vllm-serving:", "vllm-serving:config:"): value for key, value in _dev_settings().items()}
    text = yaml.safe_dump({"config": {**settings, "kubernetes:context": "kind-dev", "pulumi:tags": {"team": "ml"}}})
    rendering = render_stack(stack_file(tmp_path, text, base=None), tmp_path)
    assert rendering.only("Deployment")["metadata"]["name"] == "vllm-qwen3-0-6b"


# --- The config model and Pulumi.yaml agree ---------------------------------------------------


def test_every_config_key_is_declared_in_pulumi_yaml_with_type_and_description():
    declared = PROJECT.declarations
    model_keys = {field.alias for name, field in StackConfig.model_fields.items() if name not in ("explicit", "secret")}
    assert set(declared) == model_keys
    for key, declaration in declared.items():
        assert declaration["type"] in {"string", "integer", "boolean", "array"}, key
        assert len(declaration["description"]) > 20, key


def test_declared_defaults_are_valid_for_their_type():
    python_type = {"string": str, "integer": int, "boolean": bool, "array": list}
    for key, declaration in PROJECT.declarations.items():
        if "default" in declaration:
            assert type(declaration["default"]) is python_type[declaration["type"]], key


def _dev_settings() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
