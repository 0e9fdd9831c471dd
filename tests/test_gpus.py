"""GPUs as clusters hand them out: whole GPUs, HAMi slices, MIG and DRA; the GPU quota; and the
capacity check that refuses a model its GPUs cannot hold."""

import pulumi
import pytest
from conftest import project_with_stack, run_component
from test_components import assert_refused, gpu_args, server_args
from test_stacks import render_variant

from vllm_serving_components import GpuClaim, VLLMServer
from vllm_serving_components.capacity import Architecture, Layout, capacity, kv_bytes_per_token_per_gpu, preset_for
from vllm_serving_components.gpu_claim import claim_template_spec, gpu_claim_problems, pod_fragment, quota_spec
from stack.config import ConfigError
from stack.render import render_stack

QWEN3_235B = preset_for("Qwen/Qwen3-235B-A22B-Instruct-2507")


def test_mig_asks_for_its_profile_not_whole_gpus():
    fragment = pod_fragment(gpu_args(backend="mig", mig_profile="3g.40gb"))
    assert fragment["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert (fragment["backend"], fragment["devices"], fragment["device_memory_gib"]) == ("mig", 1, 40.0)


def test_dra_claims_exact_devices_through_a_template():
    args = gpu_args(backend="dra", count=8, namespace="ai", kubernetes_version="1.34",
                    products=["NVIDIA-H100-80GB-HBM3"], dra={"min_memory_gib": 80, "selectors": ["device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"]})
    fragment = pod_fragment(args, "srv-gpus")
    assert fragment["limits"] == {} and fragment["affinity"] is None
    assert fragment["resource_claims"] == [{"name": "gpus", "resourceClaimTemplateName": "srv-gpus"}]
    assert fragment["container_claims"] == [{"name": "gpus"}]
    assert claim_template_spec(args) == {
        "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "allocationMode": "ExactCount",
            "count": 8,
            "selectors": [
                {"cel": {"expression": "device.attributes['gpu.nvidia.com'].productName.replace(' ', '-') in ['NVIDIA-H100-80GB-HBM3']"}},
                {"cel": {"expression": "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0"}},
                {"cel": {"expression": "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"}},
            ],
        }}]}}
    }


def test_the_dra_variant_wires_the_template_into_the_server_pod(tmp_path):
    rendering = render_variant(tmp_path, "dra-on-kubernetes-1-34")
    template = rendering.only("ResourceClaimTemplate")
    assert template["apiVersion"] == "resource.k8s.io/v1"
    pod = rendering.only("Deployment")["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpus", "resourceClaimTemplateName": template["metadata"]["name"]}]
    server = pod["containers"][0]
    assert server["resources"]["claims"] == [{"name": "gpus"}]
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert rendering.only("ResourceQuota")["spec"] == {"hard": {"gpu.nvidia.com.deviceclass.resource.k8s.io/devices": "2"}}


def test_the_mig_variant_asks_for_one_instance(tmp_path):
    server = render_variant(tmp_path, "mig-instance").only("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "1"


@pytest.mark.parametrize(
    ("args", "hard"),
    [
        (gpu_args(count=8, namespace="ai", quota={"gpus": 16}), {"requests.nvidia.com/gpu": "16"}),
        (gpu_args(backend="hami", namespace="ai", hami={"memory_mib": 12288}, quota={"gpus": 4, "gpu_memory_mib": 49152}),
         {"requests.nvidia.com/gpu": "4", "requests.nvidia.com/gpumem": "49152"}),
        (gpu_args(backend="mig", mig_profile="1g.10gb", namespace="ai", quota={"gpus": 7}), {"requests.nvidia.com/mig-1g.10gb": "7"}),
        (gpu_args(backend="dra", namespace="ai", kubernetes_version="1.35", dra={"device_class": "gpu.example.com"}, quota={"gpus": 3}),
         {"gpu.example.com.deviceclass.resource.k8s.io/devices": "3"}),
    ],
)
def test_the_quota_counts_each_backend_in_its_own_resource(args, hard):
    assert gpu_claim_problems(args) == {}
    assert quota_spec(args) == {"hard": hard}
    quota = run_component(lambda: GpuClaim("srv", args)).only("ResourceQuota")
    assert quota["spec"]["hard"] == hard and quota["metadata"]["namespace"] == "ai"


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (gpu_args(backend="mig"), ["mig_profile"]),
        (gpu_args(backend="mig", mig_profile="3g"), ["mig_profile"]),
        (gpu_args(mig_profile="3g.40gb"), ["mig_profile"]),
        (gpu_args(backend="dra", namespace="ai"), ["kubernetes_version"]),
        (gpu_args(backend="dra", namespace="ai", kubernetes_version="1.33"), ["kubernetes_version"]),
        (gpu_args(backend="dra", kubernetes_version="1.34"), ["namespace"]),
        (gpu_args(dra={"min_memory_gib": 80}), ["dra.min_memory_gib"]),
        (gpu_args(count=8, namespace="ai", quota={"gpus": 4}), ["quota.gpus"]),
        (gpu_args(namespace="ai", quota={"gpus": 4, "gpu_memory_mib": 100}), ["quota.gpu_memory_mib"]),
        (gpu_args(quota={"gpus": 4}), ["namespace"]),
    ],
)
def test_gpu_claim_refuses(args, keys):
    assert_refused(GpuClaim, args, keys)


def test_tensor_parallelism_over_mig_instances_is_refused():
    mig = pod_fragment(gpu_args(backend="mig", mig_profile="3g.40gb", count=2))
    error = assert_refused(VLLMServer, server_args(gpu=mig, tensor_parallel_size=2, memory="64Gi"), ["tensor_parallel_size"])
    assert "MIG" in error.problems["tensor_parallel_size"]


def test_hami_flags_can_be_overridden_and_their_use_is_announced(monkeypatch):
    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **_: warnings.append(message))
    slice_args = gpu_args(backend="hami", count=2, hami={"memory_mib": 20000, "enforce_eager": False})
    claim_fragment = run_component(lambda: GpuClaim("gpu", slice_args))
    assert claim_fragment.objects == []
    assert pod_fragment(slice_args)["vllm_args"] == ["--disable-custom-all-reduce"]
    assert len(warnings) == 1 and "--disable-custom-all-reduce" in warnings[0] and "--enforce-eager" not in warnings[0]
    quiet = gpu_args(backend="hami", count=2, hami={"memory_mib": 20000, "enforce_eager": False, "disable_custom_all_reduce": False})
    assert pod_fragment(quiet)["vllm_args"] == []


# --- The capacity check, on the reference cases -------------------------------------------------


def test_235b_in_bf16_fits_eight_80_gb_gpus_with_kv_cache_to_spare():
    estimate = capacity(model_size_gb=470, device_memory_gib=80, layout=Layout(tensor=8),
                        gpu_memory_utilization=0.9, architecture=QWEN3_235B)
    assert estimate.fits
    assert estimate.summary() == {"weightsGBPerGpu": 58.75, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 17.49, "kvCacheTokens": 363315}
    # 94 layers x key and value x one of 4 KV heads per rank (4 < 8 ranks) x 128 x 2 bytes
    assert kv_bytes_per_token_per_gpu(QWEN3_235B, 8, 1, 2) == 2 * 94 * 1 * 128 * 2


@pytest.mark.parametrize(("gpus", "memory"), [(4, 80), (8, 40)])
def test_235b_in_bf16_is_refused_on_too_little_memory(gpus, memory):
    estimate = capacity(model_size_gb=470, device_memory_gib=memory, layout=Layout(tensor=gpus), gpu_memory_utilization=0.9)
    assert not estimate.fits


# --- The capacity of each layout, on the same 8 x 80 GiB ---------------------------------------
# Qwen3-235B-A22B in BF16: 470 GB, of which 0.966 in routed experts; 94 layers, 4 KV heads of 128.
EIGHT_80 = {"model_size_gb": 470, "device_memory_gib": 80, "gpu_memory_utilization": 0.9, "architecture": QWEN3_235B}


def test_data_parallel_engines_hold_the_dense_weights_each_and_share_the_experts():
    # DP 8 x TP 1: every GPU holds all 16 GB of dense weights and an eighth of the 454 GB of experts.
    wide = capacity(**EIGHT_80, layout=Layout(tensor=1, data=8))
    assert wide.weights_gb_per_gpu == pytest.approx(470 * 0.034 + 470 * 0.966 / 8)
    # DP 4 x TP 2: half the dense weights per GPU; the experts still over all 8.
    paired = capacity(**EIGHT_80, layout=Layout(tensor=2, data=4))
    assert paired.weights_gb_per_gpu == pytest.approx(470 * 0.034 / 2 + 470 * 0.966 / 8)
    # Unknown expert share: every weight counts as dense, the most it could be.
    unknown = Architecture(94, 4, 128)
    assert capacity(**{**EIGHT_80, "architecture": unknown}, layout=Layout(tensor=2, data=4)).weights_gb_per_gpu == 470 / 2


def test_each_engine_has_its_own_kv_cache_without_replicated_heads():
    tensor = capacity(**EIGHT_80, layout=Layout(tensor=8))
    wide = capacity(**EIGHT_80, layout=Layout(tensor=1, data=8))
    paired = capacity(**EIGHT_80, layout=Layout(tensor=2, data=4))
    # Per token per GPU: tensor 8 holds 1 of 4 heads (each twice over the ranks); tensor 1 all 4; tensor 2 two.
    assert kv_bytes_per_token_per_gpu(QWEN3_235B, 1, 1, 2) == 4 * kv_bytes_per_token_per_gpu(QWEN3_235B, 8, 1, 2)
    assert tensor.summary() == {"weightsGBPerGpu": 58.75, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 17.49, "kvCacheTokens": 363315}
    # 77.31 GB budget - 1.07 GB activations - weights, over 192512 (tensor 1) or 96256 (tensor 2) bytes a token.
    assert wide.summary() == {"weightsGBPerGpu": 72.73, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 3.5,
                              "kvCacheTokens": 18197, "engines": 8, "kvCacheTokensPerReplica": 8 * 18197}
    assert paired.summary() == {"weightsGBPerGpu": 64.74, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 11.49,
                                "kvCacheTokens": 119402, "engines": 4, "kvCacheTokensPerReplica": 4 * 119402}
    # The same GPUs: DP 4 x TP 2 holds a third more tokens than TP 8 (477,608 to 363,315), but one
    # sequence is bounded by its engine's; DP 8 x TP 1 holds far fewer: 8 copies of the dense weights.
    assert paired.replica_kv_cache_tokens > tensor.replica_kv_cache_tokens > paired.kv_cache_tokens
    assert wide.replica_kv_cache_tokens < tensor.replica_kv_cache_tokens / 2


def test_kv_offload_holds_each_engines_buffer_of_whole_tokens():
    # 64 GiB per engine; a token of TP 8 takes 8 x 48128 bytes in the buffer (each rank's replicated head).
    tensor = capacity(**EIGHT_80, layout=Layout(tensor=8), offload_gib_per_engine=64)
    assert tensor.offload_tokens == 64 * 2**30 // (8 * kv_bytes_per_token_per_gpu(QWEN3_235B, 8, 1, 2))
    paired = capacity(**EIGHT_80, layout=Layout(tensor=2, data=4), offload_gib_per_engine=64)
    assert paired.offload_tokens == 4 * (64 * 2**30 // (2 * kv_bytes_per_token_per_gpu(QWEN3_235B, 2, 1, 2)))
    assert paired.summary()["offloadTokensPerReplica"] == paired.offload_tokens
    assert "offloadTokensPerReplica" not in capacity(**EIGHT_80, layout=Layout(tensor=8)).summary()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tensorParallelSize": 4, "gpuCount": 4, "gpuQuota": 8}, "117.5 GB of weights per GPU over 4 GPUs"),
        # Prod's prices are for its own products: dropped with them.
        ({"gpuProducts": ["NVIDIA-A100-SXM4-40GB"], "gpuHourlyPrice": []}, "58.8 GB of weights per GPU over 8 GPUs"),
    ],
)
def test_prod_on_too_little_gpu_memory_is_refused_before_anything_is_created(tmp_path, settings, words):
    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, settings, base="prod"), tmp_path)
    assert [p.key for p in raised.value.problems] == ["modelSizeGB"]
    assert words in raised.value.problems[0].message


def test_a_kv_cache_too_small_for_one_sequence_is_announced(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **_: warnings.append(message))
    rendering = render_stack(project_with_stack(tmp_path, {"maxModelLen": 400000}, base="prod"), tmp_path)
    assert rendering.outputs["gpuCapacity"]["kvCacheTokens"] == 363315
    # In the stack's words: the config keys that set the arguments.
    (warning,) = [w for w in warnings if "less than one sequence of maxModelLen (400000)" in w]
    assert "raise gpuMemoryUtilization" in warning and "max_model_len" not in warning


def test_a_stack_warning_names_config_keys_and_a_library_warning_names_arguments(tmp_path, monkeypatch):
    """The HAMi notice: hamiEnforceEager in the stack, hami.enforce_eager for a library user."""
    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **_: warnings.append(message))
    render_stack(project_with_stack(tmp_path, {}), tmp_path)
    run_component(lambda: GpuClaim("lib", {"backend": "hami", "count": 1, "hami": {"memory_mib": 12288}}))
    stack_warning, library_warning = [w for w in warnings if "HAMi slices add vllm --enforce-eager" in w]
    assert "set hamiEnforceEager or hamiDisableCustomAllReduce" in stack_warning
    assert "set hami.enforce_eager or hami.disable_custom_all_reduce" in library_warning


def test_an_fp8_kv_cache_holds_twice_the_tokens(tmp_path):
    rendering = render_stack(project_with_stack(tmp_path, {"extraArgs": ["--kv-cache-dtype", "fp8"]}, base="prod"), tmp_path)
    assert rendering.outputs["gpuCapacity"]["kvCacheTokens"] // 2 == 363315


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"autoscalingMaxReplicas": 3}, "autoscalingMaxReplicas", "(3 x 8 = 24 GPUs) is above gpuQuota (16)"),
        ({"modelLayers": 94}, ("modelKvHeads", "modelHeadDim"), "at least 1"),
        ({"hamiEnforceEager": "maybe"}, "hamiEnforceEager", "true or false"),
    ],
)
def test_gpu_stack_rules(tmp_path, settings, key, words):
    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, settings, base="prod"), tmp_path)
    keys = key if isinstance(key, tuple) else (key,)
    assert [(p.key, words in p.message) for p in raised.value.problems] == [(k, True) for k in keys]
