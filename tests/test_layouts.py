"""The layouts of a replica (components/layout.py): what each renders, what each holds, and every
combination that cannot run, refused before anything is created."""

import pytest
from conftest import ROOT, project_with_stack, run_component
from test_components import assert_refused, gpu_args, server_args

from vllm_serving_components import VLLMServer
from vllm_serving_components.capacity import preset_for
from vllm_serving_components.gpu_claim import pod_fragment
from vllm_serving_components.layout import DATA_PARALLEL_RPC_PORT, layout_problems
from vllm_serving_components.vllm_server import offload_mib_per_pod, pod_memory, server_capacity
from stack.config import ConfigError
from stack.render import render_stack

NEW_RELEASE = "vllm/vllm-openai:v0.34.0"
"""A release with --kv-offloading-size (0.11.0 has none)."""
QWEN3_235B = {"layers": 94, "kv_heads": 4, "head_dim": 128, "expert_fraction": 0.966}
EIGHT_80 = pod_fragment(gpu_args(count=8, products=["NVIDIA-H100-80GB-HBM3"]))


def big(**changes):
    """Qwen3-235B-A22B on one node of 8 x 80 GB."""
    settings = {"gpu": EIGHT_80, "model_size_gb": 470, "model_architecture": QWEN3_235B, "memory": "160Gi", "cpu": "32",
                "max_model_len": 32768, "startup_timeout_minutes": 60, "tensor_parallel_size": 8}
    return server_args(**{**settings, **changes})


def flags_of(container: dict) -> list[str]:
    return [*container["command"], *container["args"]]


def value_after(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


# --- data-expert on one node: a Deployment ---------------------------------------------------


@pytest.mark.parametrize(("data", "tensor"), [(8, 1), (4, 2)])
def test_data_expert_on_one_node_runs_the_engines_in_one_pod(data, tensor):
    rendering = run_component(lambda: VLLMServer("m", big(layout="data-expert", data_parallel_size=data, tensor_parallel_size=tensor)))
    (server,) = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"]
    words = flags_of(server)
    assert server["command"] == ["vllm", "serve"], "no script: nothing about the pod is known only at start"
    assert value_after(words, "--data-parallel-size") == str(data)
    assert value_after(words, "--tensor-parallel-size") == str(tensor)
    assert "--enable-expert-parallel" in words
    # One node: every engine is local; no handshake address, no Ray.
    for absent in ("--data-parallel-size-local", "--data-parallel-address", "--headless", "--distributed-executor-backend"):
        assert absent not in words
    volumes = rendering.only("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}} in volumes


def test_the_capacity_counts_every_engine():
    paired = server_capacity(big(layout="data-expert", data_parallel_size=4, tensor_parallel_size=2)).summary()
    tensor = server_capacity(big()).summary()
    assert paired == {"weightsGBPerGpu": 64.74, "budgetGBPerGpu": 77.31, "kvCacheGBPerGpu": 11.49,
                      "kvCacheTokens": 119402, "engines": 4, "kvCacheTokensPerReplica": 477608}
    assert tensor["kvCacheTokens"] == 363315 and "engines" not in tensor


# --- data-expert across the nodes of a group ---------------------------------------------------


@pytest.fixture(scope="module")
def moe():
    return render_stack("moe", ROOT)


def group(rendering):
    spec = rendering.only("LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    (leader,) = spec["leaderTemplate"]["spec"]["containers"]
    (worker,) = spec["workerTemplate"]["spec"]["containers"]
    return spec, leader, worker


def test_each_node_runs_its_local_engines_and_the_workers_join_the_leader(moe):
    spec, leader, worker = group(moe)
    assert spec["size"] == 2
    for container in (leader, worker):
        words = flags_of(container)
        assert container["command"][:2] == ["sh", "-c"] and container["command"][3:] == ["vllm"]
        assert value_after(words, "--data-parallel-size") == "16"
        assert value_after(words, "--data-parallel-size-local") == "8"
        assert value_after(words, "--data-parallel-rpc-port") == str(DATA_PARALLEL_RPC_PORT)
        assert "--enable-expert-parallel" in words and "--distributed-executor-backend" not in words
        assert container["command"][2].startswith('exec "$0" "$@" --data-parallel-address "$LWS_LEADER_ADDRESS"')
    # The leader serves the API over all 16 engines; a worker is headless from rank index x 8.
    assert leader["command"][2] == 'exec "$0" "$@" --data-parallel-address "$LWS_LEADER_ADDRESS"'
    assert worker["command"][2].endswith('--headless --data-parallel-start-rank "$((LWS_WORKER_INDEX * 8))"')
    assert leader["ports"] and "ports" not in worker
    # No Ray cluster: no helper script, no Ray probes.
    assert "multi-node-serving.sh" not in leader["command"][2] + worker["command"][2]


def test_a_worker_has_no_api_key_and_probes_its_leaders_health(moe):
    _, leader, worker = group(moe)
    assert "VLLM_API_KEY" in {e["name"] for e in leader["env"]}
    assert "VLLM_API_KEY" not in {e["name"] for e in worker["env"]}
    check = worker["readinessProbe"]["exec"]["command"]
    assert check[:2] == ["python3", "-c"] and "os.environ['LWS_LEADER_ADDRESS']" in check[2] and ":8000/health" in check[2]
    # On the leader's timing: the whole group's start, then the load.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert {k: v for k, v in worker[probe].items() if k != "exec"} == {k: v for k, v in leader[probe].items() if k != "httpGet"}


def test_the_moe_stack_holds_each_engines_kv_cache_and_its_offload(moe):
    capacity = moe.outputs["gpuCapacity"]
    # 16 GB of dense weights in every engine and 454 GB of experts over 16 GPUs.
    assert capacity["weightsGBPerGpu"] == round(470 * 0.034 + 470 * 0.966 / 16, 2)
    assert capacity["engines"] == 16 and capacity["kvCacheTokensPerReplica"] == 16 * capacity["kvCacheTokens"]
    assert capacity["kvCacheTokens"] >= 32768
    # 8 GiB per engine, a token of 2 x 94 x 4 x 128 x 2 bytes: 44,620 tokens per engine.
    assert capacity["offloadTokensPerReplica"] == 16 * (8 * 2**30 // 192512)
    _, leader, _ = group(moe)
    assert leader["resources"]["limits"]["memory"] == "224Gi", "160Gi and 8 engines x 8 GiB of offload"


# --- KV offload -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "mib"),
    [
        ({}, 16 * 1024),
        ({"layout": "data-expert", "data_parallel_size": 8}, 8 * 16 * 1024),
        ({"layout": "data-expert", "data_parallel_size": 16, "nodes": 2}, 8 * 16 * 1024),
        # One engine over two nodes: each holds its workers' half of the buffer.
        ({"tensor_parallel_size": 8, "pipeline_parallel_size": 2, "nodes": 2}, 8 * 1024),
    ],
)
def test_the_offload_buffer_is_added_to_each_pods_memory(changes, mib):
    args = big(image=NEW_RELEASE, kv_offload_gib=16, **{"tensor_parallel_size": 1 if "data_parallel_size" in changes else 8, **changes})
    assert offload_mib_per_pod(args) == mib
    assert pod_memory(args) == f"{(160 * 1024 + mib) // 1024}Gi"


def test_offload_flags_and_tokens():
    rendering = run_component(lambda: VLLMServer("m", big(image=NEW_RELEASE, kv_offload_gib=64)))
    (server,) = rendering.only("Deployment")["spec"]["template"]["spec"]["containers"]
    words = flags_of(server)
    assert value_after(words, "--kv-offloading-size") == "64" and value_after(words, "--kv-offloading-backend") == "native"
    assert server["resources"]["requests"]["memory"] == server["resources"]["limits"]["memory"] == "224Gi"
    # Each of the 8 ranks keeps its copy of a token's one KV head: 8 x 48128 bytes a token.
    assert server_capacity(big(image=NEW_RELEASE, kv_offload_gib=64)).offload_tokens == 64 * 2**30 // (8 * 48128)


# --- What cannot run ------------------------------------------------------------------------------

MULTI = {"gpu": EIGHT_80, "nodes": 2}


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"layout": "diagonal"}, "layout", "must be one of tensor, pipeline or data-expert"),
        ({"layout": "tensor", "tensor_parallel_size": 8, "pipeline_parallel_size": 2, **MULTI}, "layout", "keeps a replica on one node"),
        ({"layout": "pipeline", "tensor_parallel_size": 8}, "layout", "needs pipeline_parallel_size above 1"),
        ({"tensor_parallel_size": 4, "data_parallel_size": 2}, "data_parallel_size", "is for layout data-expert"),
        ({"layout": "data-expert", "data_parallel_size": 1, "tensor_parallel_size": 8}, "data_parallel_size", "at least 2"),
        ({"layout": "data-expert", "data_parallel_size": 4, "tensor_parallel_size": 1}, "data_parallel_size", "(4 x 1) must equal the GPUs per pod"),
        ({"layout": "data-expert", "data_parallel_size": 4, "pipeline_parallel_size": 2}, "pipeline_parallel_size", "must be 1 with layout data-expert"),
        ({"layout": "data-expert", "data_parallel_size": 8, "model_architecture": {**QWEN3_235B, "expert_fraction": 0}}, "layout", "a dense model"),
        ({"layout": "data-expert", "data_parallel_size": 8, "tensor_parallel_size": 1, **MULTI}, "data_parallel_size", "(8 x 1) must equal the GPUs of the replica (2 nodes x 8)"),
        ({"kv_offload_gib": 16}, "kv_offload_gib", "needs --kv-offloading-size, --kv-offloading-backend, which vLLM 0.11.0 (image) lacks"),
        ({"extra_args": ["--data-parallel-size", "8"]}, "extra_args", "set layout data-expert and data_parallel_size instead"),
        ({"extra_args": ["--enable-expert-parallel"]}, "extra_args", "set layout data-expert instead"),
        ({"extra_args": ["--headless"]}, "extra_args", "the layout places the engines on the pods"),
        ({"extra_args": ["--data-parallel-hybrid-lb"]}, "extra_args", "the layout places the engines on the pods"),
        ({"image": NEW_RELEASE, "extra_args": ["--master-addr", "10.0.0.1"]}, "extra_args", "the layout places the engines on the pods"),
        ({"extra_args": ["--distributed-executor-backend=ray"]}, "extra_args", "the layout places the engines on the pods"),
        ({"image": NEW_RELEASE, "extra_args": ["--kv-offloading-size", "8"]}, "extra_args", "set kv_offload_gib instead"),
    ],
)
def test_impossible_layouts_are_refused_by_argument(changes, key, words):
    args = big(**changes)
    refused = assert_refused(VLLMServer, args, [key])
    assert words in refused.problems[key]


def test_data_expert_engines_split_evenly_over_the_nodes():
    """3 engines of 2 GPUs on 2 nodes of 3 GPUs fill the GPUs, but not one node each."""
    problems = layout_problems(layout="data-expert", tensor=2, pipeline=1, data=3, per_pod=3, nodes=2, backend="nvidia", expert_fraction=None)
    assert problems == {"data_parallel_size": "(3) must be a multiple of the nodes (2): each node runs the same number of engines, each within the node"}


@pytest.mark.parametrize("backend", ["hami", "mig"])
def test_data_expert_needs_whole_gpus(backend):
    problems = layout_problems(layout="data-expert", tensor=1, pipeline=1, data=2, per_pod=2, nodes=1, backend=backend, expert_fraction=0.9)
    assert problems == {"layout": f"data-expert cannot run on {backend}: its engines need whole GPUs (nvidia or dra)"}


def test_a_data_expert_layout_that_does_not_fit_says_how_the_weights_spread():
    """8 x 40 GB: every engine holds the 16 GB of dense weights and an eighth of the experts."""
    forty = pod_fragment(gpu_args(count=8, products=["NVIDIA-A100-SXM4-40GB"]))
    refused = assert_refused(VLLMServer, big(gpu=forty, layout="data-expert", data_parallel_size=8, tensor_parallel_size=1), ["model_size_gb"])
    assert "72.7 GB of weights per GPU over 8 GPUs in 8 engines" in refused.problems["model_size_gb"]


# --- The stack's keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"layout": "tensor", "dataParallelSize": 1, "tensorParallelSize": 8, "pipelineParallelSize": 2}, "layout", "keeps a replica on one node"),
        ({"dataParallelSize": 8}, "dataParallelSize", "(8 x 1) must equal the GPUs of the replica"),
        ({"kvOffloadGiB": 8, "image": "vllm/vllm-openai:v0.11.0"}, "kvOffloadGiB", "vLLM 0.11.0 (image) lacks"),
        ({"modelExpertFraction": "0.0001"}, "modelSizeGB", "470.0 GB of weights per GPU over 16 GPUs in 16 engines"),
    ],
)
def test_moe_stack_mistakes_name_their_config_keys(tmp_path, settings, key, words):
    with pytest.raises(ConfigError) as raised:
        render_stack(project_with_stack(tmp_path, settings, base="moe"), tmp_path)
    assert [(p.key, words in p.message) for p in raised.value.problems] == [(key, True)]


def test_an_expert_share_given_alone_refines_the_preset(tmp_path):
    rendering = render_stack(project_with_stack(tmp_path, {"modelExpertFraction": "0.9"}, base="moe"), tmp_path)
    assert rendering.outputs["gpuCapacity"]["weightsGBPerGpu"] == round(470 * 0.1 + 470 * 0.9 / 16, 2)
    assert preset_for("Qwen/Qwen3-235B-A22B-Instruct-2507").expert_fraction == 0.966


def test_the_readmes_sizing_table_is_what_the_capacity_check_computes(moe):
    readme = (ROOT / "README.md").read_text()
    rows = {
        "`tensor`, TP 8 (prod)": big(),
        "`data-expert`, DP 8 x TP 1": big(layout="data-expert", data_parallel_size=8, tensor_parallel_size=1),
        "`data-expert`, DP 4 x TP 2": big(layout="data-expert", data_parallel_size=4, tensor_parallel_size=2),
    }
    for name, args in rows.items():
        estimate = server_capacity(args)
        row = (f"| {name} | {estimate.weights_gb_per_gpu:.2f} GB | {estimate.kv_cache_gb_per_gpu:.2f} GB | "
               f"{estimate.kv_cache_tokens:,} | {estimate.replica_kv_cache_tokens:,} |")
        assert row in readme
    figures = moe.outputs["gpuCapacity"]
    assert (f"{figures['kvCacheTokens']:,} tokens per engine, {figures['kvCacheTokensPerReplica']:,} per replica, and\n"
            f"{figures['offloadTokensPerReplica']:,} more") in readme


def test_a_pipeline_replica_splits_the_layers_over_its_stages():
    """multinode: 16 x 40 GB, tensor 8 x pipeline 2. Each GPU holds 47 of the 94 layers' KV for
    one of the 4 heads: 2 x 47 x 1 x 128 x 2 bytes a token."""
    figures = render_stack("multinode", ROOT).outputs["gpuCapacity"]
    budget = 40 * 2**30 * 0.9
    kv = budget - 470e9 / 16 - 2**30
    assert figures == {"weightsGBPerGpu": 29.38, "budgetGBPerGpu": round(budget / 1e9, 2), "kvCacheGBPerGpu": round(kv / 1e9, 2),
                       "kvCacheTokens": int(kv // (2 * 47 * 1 * 128 * 2))}
