"""LoRA adapters: staged by ModelStore's Job, loaded by VLLMServer, counted by the capacity estimate,
and scored by the Endpoint Picker."""

import pulumi
import pytest
import yaml
from conftest import run_component
from test_components import assert_equal, assert_refused, exposure_args, server_args, store_args

from stack.config import _lora_adapters
from vllm_serving_components import Exposure, ModelStore, VLLMServer
from vllm_serving_components.capacity import Architecture, Layout, LoraSlots, capacity, lora_gb_per_gpu
from vllm_serving_components.endpoint_picker import picker_config
from vllm_serving_components.lora import lora_flags, max_lora_rank
from vllm_serving_components.model_store import adapter_paths, model_store_problems, stage_args
from vllm_serving_components.vllm_server import vllm_server_problems

SQL = {"name": "sql", "model_id": "acme/qwen3-sql-lora", "revision": "v1"}
CHAT = {"name": "chat", "model_id": "acme/qwen3-chat-lora"}
ADAPTERS = [
    {"name": "sql", "path": "/models/adapters/sql/v1", "rank": 16},
    {"name": "chat", "path": "/models/adapters/chat/master", "rank": 8},
]


# --- ModelStore ---------------------------------------------------------------------------


def test_adapters_are_staged_beside_the_model_by_the_same_job():
    args = store_args(adapters=[SQL, CHAT])
    assert adapter_paths(args) == {"sql": "/models/adapters/sql/v1", "chat": "/models/adapters/chat/master"}
    command = stage_args(args, "/models/Qwen/Qwen3-0.6B/master")
    assert command[-8:] == [
        "--adapter", "acme/qwen3-sql-lora", "v1", "/models/adapters/sql/v1",
        "--adapter", "acme/qwen3-chat-lora", "master", "/models/adapters/chat/master",
    ]  # fmt: skip
    jobs = [o for o in run_component(lambda: ModelStore("m", args)).objects if o.kind == "Job"]
    assert len(jobs) == 1


@pytest.mark.parametrize(
    ("adapters", "problems"),
    [
        ([SQL, {**CHAT, "name": "sql"}], {"adapters": "names sql more than once; give each adapter a name of its own"}),
        ([{**SQL, "name": "a=b"}], {"adapters": "item [0]: 'name': must be an adapter name"}),
        ([{**SQL, "model_id": "no-owner"}], {"adapters": "item [0]: 'model_id': must be owner/name"}),
    ],
)
def test_model_store_refuses_bad_adapters(adapters, problems):
    found = model_store_problems(store_args(adapters=adapters))
    assert found.keys() == problems.keys()
    for key, start in problems.items():
        assert start in found[key]


@pulumi.runtime.test
def test_adapter_paths_resolve_with_the_job(pulumi_mocks):
    store = ModelStore("m", store_args(adapters=[SQL]))
    return store.adapter_paths.apply(lambda paths: assert_equal(paths, {"sql": "/models/adapters/sql/v1"}))


# --- VLLMServer ---------------------------------------------------------------------------


def test_the_server_loads_every_adapter_at_start():
    assert lora_flags(ADAPTERS, None) == [
        "--enable-lora",
        "--lora-modules", "sql=/models/adapters/sql/v1", "chat=/models/adapters/chat/master",
        "--max-loras", "2",
        "--max-lora-rank", "16",
    ]  # fmt: skip
    assert lora_flags([], None) == []


@pytest.mark.parametrize(("ranks", "expected"), [([1], 1), ([4], 8), ([16, 8], 16), ([17], 32), ([300], 320), ([512], 512)])
def test_max_lora_rank_is_the_smallest_of_vllm_values_that_holds_every_adapter(ranks, expected):
    assert max_lora_rank([{"name": f"a{i}", "path": "/models/a", "rank": r} for i, r in enumerate(ranks)]) == expected


def test_the_pods_check_each_adapter_marker_and_pass_the_flags():
    rendering = run_component(lambda: VLLMServer("srv", server_args(image="vllm/vllm-openai:v0.34.0", lora_adapters=ADAPTERS, max_loras=1)))
    pod = rendering.only("Deployment")["spec"]["template"]["spec"]
    (check,) = pod["initContainers"]
    assert check["command"][2].startswith("for adapter in $ADAPTER_PATHS")
    assert {"name": "ADAPTER_PATHS", "value": "/models/adapters/sql/v1 /models/adapters/chat/master"} in check["env"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--lora-modules") + 1 : args.index("--max-loras") + 2] == [
        "sql=/models/adapters/sql/v1", "chat=/models/adapters/chat/master", "--max-loras", "1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        (
            {"lora_adapters": [ADAPTERS[0], {**ADAPTERS[1], "name": "sql"}]},
            {"lora_adapters": "names sql more than once; give each adapter a name of its own"},
        ),
        (
            {"lora_adapters": [{**ADAPTERS[0], "name": "qwen3"}]},
            {"lora_adapters": "names an adapter qwen3, the served_model_name: a request's `model` would not tell them apart; rename the adapter"},
        ),
        (
            {"lora_adapters": [{**ADAPTERS[0], "rank": 1024}]},
            {"lora_adapters": "item [0]: 'rank': is above 512, vLLM's largest --max-lora-rank (one of 1, 8, 16, 32, 64, 128, 256, 320, 512)"},
        ),
        ({"lora_adapters": [{**ADAPTERS[0], "rank": 0}]}, {"lora_adapters": "item [0]: 'rank': must be at least 1"}),
        (
            {"lora_adapters": [{**ADAPTERS[0], "path": "/elsewhere/sql"}]},
            {"lora_adapters": "sql: the path must be a directory inside mount_path (/models), on the model volume"},
        ),
        ({"max_loras": 2}, {"max_loras": "has no effect without lora_adapters; remove it"}),
        ({"lora_adapters": ADAPTERS[:1], "max_loras": 2}, {"max_loras": "(2) is more than the 1 adapter(s)"}),
        ({"lora_adapters": ADAPTERS, "max_loras": 0}, {"max_loras": "must be at least 1"}),
        (
            {"extra_args": ["--enable-lora", "--max-loras", "4"]},
            {"extra_args": "extra_args[0] --enable-lora is set by the program; set lora_adapters instead"},
        ),
    ],
)
def test_the_server_refuses_bad_adapters_naming_the_argument_and_the_fix(changes, problems):
    found = vllm_server_problems(server_args(**changes))
    assert found.keys() == problems.keys(), found
    for key, start in problems.items():
        assert start in found[key], found[key]
    assert_refused(VLLMServer, server_args(**changes), list(problems))


def test_adapters_too_large_for_the_gpus_are_refused():
    gpu = {**server_args()["gpu"], "device_memory_gib": 24}
    big = [{"name": f"a{i}", "path": f"/models/adapters/a{i}/v1", "rank": 512} for i in range(8)]
    found = vllm_server_problems(server_args(gpu=gpu, model_size_gb=16, lora_adapters=big))
    assert found.keys() == {"lora_adapters"}
    assert "lower max_loras or the adapters' rank" in found["lora_adapters"]


@pulumi.runtime.test
def test_the_server_reports_its_adapters_and_their_memory(pulumi_mocks):
    gpu = {**server_args()["gpu"], "device_memory_gib": 24}
    server = VLLMServer("srv", server_args(gpu=gpu, model_size_gb=1.2, lora_adapters=ADAPTERS))
    assert server.adapter_names == ["sql", "chat"]
    return server.capacity.apply(lambda figures: assert_equal(figures["loraGBPerGpu"], round(2 * 1.2 * 16 * 2 / 512, 2)))


# --- capacity -----------------------------------------------------------------------------


def test_lora_memory_is_bounded_from_the_weights_on_each_gpu():
    qwen3_0_6b = Architecture(layers=28, kv_heads=8, head_dim=128)
    # 1 slot at rank 16 beside 1.2 GB of weights on one GPU: 1.2 x 16 x 2 / 1024 GB.
    assert lora_gb_per_gpu(1.2, LoraSlots(1, 16), 1, qwen3_0_6b) == pytest.approx(0.0375)
    # Tensor parallel 8 keeps one factor whole on every rank: (8 + 1) instead of 2.
    assert lora_gb_per_gpu(1.0, LoraSlots(2, 8), 8, qwen3_0_6b) == pytest.approx(2 * 8 * 9 / 1024)
    without = capacity(model_size_gb=16, device_memory_gib=80, layout=Layout(1), gpu_memory_utilization=0.9)
    with_lora = capacity(
        model_size_gb=16, device_memory_gib=80, layout=Layout(1), gpu_memory_utilization=0.9, lora=LoraSlots(4, 64)
    )
    assert with_lora.lora_gb_per_gpu == pytest.approx(4 * 16 * 64 * 2 / 512)
    assert with_lora.kv_cache_gb_per_gpu == pytest.approx(without.kv_cache_gb_per_gpu - with_lora.lora_gb_per_gpu)
    assert with_lora.summary()["loraGBPerGpu"] == 16.0 and "loraGBPerGpu" not in without.summary()


# --- the Endpoint Picker ------------------------------------------------------------------


def test_the_picker_scores_lora_affinity_only_with_adapters():
    plain, lora = yaml.safe_load(picker_config(False, False)), yaml.safe_load(picker_config(True, False))
    assert {"type": "lora-affinity-scorer"} in lora["plugins"] and {"type": "lora-affinity-scorer"} not in plain["plugins"]
    assert lora["schedulingProfiles"][0]["plugins"][-1] == {"pluginRef": "lora-affinity-scorer", "weight": 1}
    assert {**lora, "plugins": plain["plugins"], "schedulingProfiles": plain["schedulingProfiles"]} == plain


def test_exposure_passes_the_adapters_to_the_picker():
    args = exposure_args(host="chat.example.com", route="inference", gateway_name="public", adapter_names=["sql"])
    config = run_component(lambda: Exposure("srv", args)).find("ConfigMap", "srv-epp")["data"]["epp.yaml"]
    assert config == picker_config(True, False)
    assert_refused(Exposure, {**args, "adapter_names": ["a b"]}, ["adapter_names"])


# --- stack config -------------------------------------------------------------------------


def test_lora_adapters_config_items():
    assert _lora_adapters(["sql=acme/sql-lora@v1:16", "chat=acme/chat-lora:8"]) == [
        {"name": "sql", "model_id": "acme/sql-lora", "revision": "v1", "rank": 16},
        {"name": "chat", "model_id": "acme/chat-lora", "revision": None, "rank": 8},
    ]
    with pytest.raises(ValueError, match="is not name=owner/repo\\[@revision\\]:rank"):
        _lora_adapters(["sql=acme/sql-lora"])


def test_an_adapter_on_a_branch_is_warned_about_like_the_model():
    pinned = {**SQL, "revision": "0" * 40}
    warnings = run_component(lambda: ModelStore("m", store_args(revision="0" * 40, adapters=[pinned, CHAT]))).warnings
    assert len(warnings) == 1
    assert "adapter chat's revision master is the hub's default branch" in warnings[0]
    assert "/models/adapters/chat/master/.modelstore-complete.json" in warnings[0]


@pytest.mark.parametrize(
    ("adapters", "words"),
    [
        (["qwen3-0.6b=acme/sql-lora:16"], "names an adapter qwen3-0.6b, the servedModelName"),
        (["sql=acme/sql-lora:1024"], "is above 512"),
        (["sql=acme/sql-lora:16", "sql=acme/other-lora:8"], "names sql more than once"),
        (["sql=no-owner:16"], "must be owner/name"),
        (["sql=acme/sql-lora"], "is not name=owner/repo[@revision]:rank"),
    ],
)
def test_bad_lora_adapters_are_refused_naming_the_key(tmp_path, adapters, words):
    from conftest import project_with_stack
    from test_config import refusal

    error = refusal(tmp_path, project_with_stack(tmp_path, {"loraAdapters": adapters}))
    assert {problem.key for problem in error.problems} == {"loraAdapters"}
    assert any(words in problem.message for problem in error.problems), error.problems


def test_the_init_container_refuses_a_half_staged_adapter(tmp_path):
    import subprocess

    pod = run_component(lambda: VLLMServer("srv", server_args(lora_adapters=ADAPTERS[:1]))).only("Deployment")
    (check,) = pod["spec"]["template"]["spec"]["initContainers"]
    model, adapter = tmp_path / "model", tmp_path / "adapters" / "sql" / "v1"
    for directory in (model, adapter):
        directory.mkdir(parents=True)
    (model / ".modelstore-complete.json").write_text("{}")
    env = {"MODEL_PATH": str(model), "MARKER": ".modelstore-complete.json", "ADAPTER_PATHS": str(adapter), "PATH": "/usr/bin:/bin"}

    def run():
        return subprocess.run(check["command"], env=env, capture_output=True, text=True, timeout=10)

    refused = run()
    assert refused.returncode == 1 and f"{adapter}/.modelstore-complete.json is missing" in refused.stderr
    (adapter / ".modelstore-complete.json").write_text("{}")
    assert run().returncode == 0
