"""Bad stack configurations: each gives an error naming its key, and nothing is registered."""

import subprocess
import sys

import pytest
from conftest import ROOT, project_with_stack
from pulumi.runtime import mocks

from stack.config import ConfigError, StackConfig
from stack.loading import parse_stack_config
from stack.project import read_project, stack_config
from stack.render import EchoMocks, render_stack

PROJECT = read_project(ROOT)


BAD_CONFIGS = [
    # (settings changed from dev, the key the error names, words the message contains)
    ({"tensorParallelSize": 2, "memory": "64Gi"}, "tensorParallelSize", "x pipelineParallelSize (2 x 1) must equal the GPUs per pod (1)"),
    ({"pipelineParallelSize": 2, "memory": "64Gi"}, "tensorParallelSize", "(1 x 2) must equal"),
    ({"replicas": 2}, "storageAccessMode", "ReadWriteMany"),
    ({"autoscalingEnabled": True, "autoscalingMaxReplicas": 3}, "storageAccessMode", "up to 3 replicas"),
    ({"gpuMemoryUtilization": "1.5"}, "gpuMemoryUtilization", "at most 1"),
    ({"gpuMemoryUtilization": "0"}, "gpuMemoryUtilization", "greater than 0"),
    ({"gpuMemoryUtilization": "ninety"}, "gpuMemoryUtilization", "valid number"),
    ({"maxModelLen": 0}, "maxModelLen", "positive"),
    ({"host": "https://vllm.example.com"}, "host", "DNS name"),
    ({"host": "vllm_api.example.com"}, "host", "DNS name"),
    ({"namespace": "AI_Serving"}, "namespace", "DNS label"),
    ({"name": "vllm-" + "x" * 40}, "name", "at most 40"),
    ({"image": "vllm/vllm-openai:latest"}, "image", "latest"),
    ({"image": "vllm/vllm-openai"}, "image", "no tag"),
    ({"downloaderImage": "registry.local:5000/modelscope"}, "downloaderImage", "no tag"),
    ({"gpuCont": 1}, "gpuCont", "did you mean gpuCount"),
    ({"hamiMemoryPercent": 50}, "hamiMemoryPercent", "cannot be combined with hamiMemoryMiB"),
    ({"gpuBackend": "nvidia", "hamiCores": 0}, "hamiMemoryMiB", "not hami"),
    ({"gpuBackend": "amd"}, "gpuBackend", "nvidia, hami"),
    ({"hamiCores": 150}, "hamiCores", "1 to 100"),
    ({"hamiNodePolicy": "fast"}, "hamiNodePolicy", "binpack, spread"),
    ({"maxSurge": 0, "maxUnavailable": 0}, "maxUnavailable", "both 0"),
    ({"extraArgs": ["--port=9000"]}, "extraArgs", "--port is set by the program"),
    ({"extraArgs": ["--swap-space", "4"]}, "extraArgs", "--swap-space was removed"),
    ({"extraArgs": "--enable-prefix-caching"}, "extraArgs", "list of strings"),
    ({"autoscalingEnabled": True, "autoscalingMinReplicas": 0}, "autoscalingMinReplicas", "at zero replicas"),
    ({"autoscalingEnabled": True, "replicas": 2, "storageAccessMode": "ReadWriteMany"}, "replicas", "owned by the autoscaler"),
    ({"autoscalingEnabled": True, "autoscalingPodMonitorLabels": ["release"]}, "autoscalingPodMonitorLabels", "key=value"),
    ({"tls": True}, "tls", "needs a host"),
    ({"shmSize": "16Gi"}, "shmSize", "smaller than"),
    ({"memory": "16GB"}, "memory", "not a Kubernetes quantity"),
    ({"modelId": "Qwen3-0.6B"}, "modelId", "owner/name"),
    ({"existingClaim": "shared-models", "storageClass": "nfs-client"}, "storageClass", "existingClaim"),
    ({"storageAccessMode": "ReadWriteAll"}, "storageAccessMode", "ReadWriteOnce, ReadWriteMany"),
    ({"gpuCount": "eight"}, "gpuCount", "valid integer"),
    ({"exposureRoute": "gateway", "host": "vllm.example.com"}, "gatewayName", "required"),
    ({"exposureRoute": "istio"}, "exposureRoute", "ingress, gateway"),
    ({"storageClass": "NFS_Client"}, "storageClass", "object name"),
    ({"gpuBackend": "nvidia", "hamiMemoryMiB": 0, "hamiCores": 0, "gpuProduct": "NVIDIA H100"}, "gpuProduct", "label value"),
    ({"apiKeySecretName": "vllm-key", "apiKeySecretKey": "api key"}, "apiKeySecretKey", "Secret key"),
    ({"maxRequestBodySize": "64 MB", "host": "vllm.example.com"}, "maxRequestBodySize", "nginx size"),
]


@pytest.mark.parametrize(("settings", "key", "words"), BAD_CONFIGS, ids=[c[1] + "-" + str(i) for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_is_refused_before_any_resource(tmp_path, settings, key, words):
    stack = project_with_stack(tmp_path, settings)
    monitor = mocks.MockMonitor(EchoMocks())
    with pytest.raises(ConfigError) as raised:
        render_stack(stack, tmp_path, monitor)
    assert [problem.key for problem in raised.value.problems] == [key]
    assert words in raised.value.problems[0].message
    assert f"vllm-serving:{key}" in str(raised.value)
    assert monitor.resources == {}


def test_missing_required_key_is_named(tmp_path):
    stack = project_with_stack(tmp_path, {}, drop=("maxModelLen",))
    with pytest.raises(ConfigError) as raised:
        render_stack(stack, tmp_path)
    assert [(p.key, p.message.split(";")[0]) for p in raised.value.problems] == [("maxModelLen", "is required")]


def test_every_problem_is_reported_at_once(tmp_path):
    stack = project_with_stack(tmp_path, {"maxModelLen": 0, "host": "Bad_Host", "maxSurge": 0, "maxUnavailable": 0})
    with pytest.raises(ConfigError) as raised:
        render_stack(stack, tmp_path)
    assert sorted(p.key for p in raised.value.problems) == ["host", "maxModelLen", "maxUnavailable"]


def test_error_shows_the_bad_value():
    values = {**stack_config(PROJECT, "dev"), "vllm-serving:maxModelLen": "0"}
    with pytest.raises(ConfigError) as raised:
        parse_stack_config("vllm-serving", {k.split(":", 1)[1]: v for k, v in values.items()})
    assert 'vllm-serving:maxModelLen = "0": must be a positive number of tokens' in str(raised.value)


def test_every_config_key_is_declared_in_pulumi_yaml_with_type_and_description():
    declared = PROJECT.declarations
    model_keys = {field.alias for field in StackConfig.model_fields.values()}
    assert set(declared) == model_keys
    for key, declaration in declared.items():
        assert declaration["type"] in {"string", "integer", "boolean", "array"}, key
        assert len(declaration["description"]) > 20, key


def test_declared_defaults_are_valid_for_their_type():
    python_type = {"string": str, "integer": int, "boolean": bool, "array": list}
    for key, declaration in PROJECT.declarations.items():
        if "default" in declaration:
            assert type(declaration["default"]) is python_type[declaration["type"]], key


def test_render_command_prints_the_error_and_writes_nothing(tmp_path):
    stack = project_with_stack(tmp_path, {"image": "vllm/vllm-openai:latest"})
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stack.render", stack, "--project-dir", str(tmp_path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "vllm-serving:image" in result.stderr and "latest" in result.stderr
    assert not out.exists()
