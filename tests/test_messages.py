"""Messages a new user meets: each names the config key (stack) or the argument (library), says
what is allowed and how to fix it, in the user's own counting, one problem per line."""

import pytest
from conftest import project_with_stack
from test_components import server_args, store_args
from test_config import refusal

from vllm_serving_components import gpu_claim_problems, model_store_problems, vllm_server_problems


def only_problem(tmp_path, settings) -> tuple[str, str]:
    error = refusal(tmp_path, project_with_stack(tmp_path, settings))
    (problem,) = error.problems
    return problem.key, problem.message


@pytest.mark.parametrize("length", [49, 58, 59, 63, 70])
def test_a_long_name_is_told_the_one_limit_that_fits_every_object(tmp_path, length):
    key, message = only_problem(tmp_path, {"name": "v" * length})
    assert key == "name" and "at most 48 characters" in message


def test_extra_args_problems_count_from_zero_one_per_line_and_a_value_is_not_blamed_again(tmp_path):
    args = ["--api-key", "abc", "--port", "9000", "--no-such-flag", "5", "64", "--enable-prefix-caching", "--max-num-seqs"]
    error = refusal(tmp_path, project_with_stack(tmp_path, {"extraArgs": args}))
    (problem,) = error.problems
    lines = problem.message.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [
        "extraArgs[0]", "extraArgs[2]", "extraArgs[4]", "extraArgs[6]", "extraArgs[8]"
    ]
    assert "follows no flag" in lines[3] and all("follows no flag" not in line for line in lines[:3] + lines[4:])
    assert "apiKeySecretName" in lines[0]
    assert "abc" not in str(error) and "9000" not in str(error)
    # Every line of the report fits a terminal's width, give or take the key's own prefix.
    assert max(len(line) for line in str(error).splitlines()) < 200


def test_a_library_user_reads_argument_names_and_zero_based_items():
    (message,) = vllm_server_problems(server_args(extra_args=["--no-such-flag", "--port", "1"])).values()
    first, second = message.splitlines()
    assert first.startswith("extra_args[0] --no-such-flag is not a flag of vLLM 0.11.0")
    assert second.startswith("extra_args[1] --port is set by the program")
    assert model_store_problems(store_args(ignore_patterns=["*.gguf", ""])) == {
        "ignore_patterns": "item [1]: must be a non-empty string without spaces"
    }


@pytest.mark.parametrize(
    ("settings", "key", "words", "not_words"),
    [
        ({"host": "Bad_Host"}, "host", "e.g. vllm.example.com", "nfs-client"),
        ({"memory": "160GB"}, "memory", "did you mean 160G or 160Gi?", None),
        ({"storageSize": "20GB"}, "storageSize", "did you mean 20G or 20Gi?", None),
        ({"gpuCount": 2, "memory": "64Gi"}, "tensorParallelSize", "GPUs per pod, gpuCount (2)", None),
    ],
)
def test_other_keys_are_told_the_fix_in_their_own_words(tmp_path, settings, key, words, not_words):
    found_key, message = only_problem(tmp_path, {"apiKeySecretName": "k", **settings})
    assert found_key == key and words in message
    assert not_words is None or not_words not in message


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        # vLLM's parser would read --port=9000 as a second option after --served-model-name.
        ({"servedModelName": "--port=9000"}, "servedModelName", "must not start with '-'"),
        ({"modelAllowPatterns": ["-x"]}, "modelAllowPatterns", "must not start with '-'"),
        ({"hamiMemoryMiB": 200000}, "hamiMemoryMiB", "more than one GPU has"),
        ({"namespace": "kube-system", "createNamespace": True}, "createNamespace", "one Kubernetes creates itself"),
        ({"namespace": "default", "createNamespace": True}, "createNamespace", "one Kubernetes creates itself"),
    ],
)
def test_what_would_render_wrong_is_refused(tmp_path, settings, key, words):
    found_key, message = only_problem(tmp_path, settings)
    assert (found_key, words in message) == (key, True)


def test_a_system_namespace_is_fine_when_the_stack_does_not_create_it(tmp_path):
    from stack.render import render_stack

    rendering = render_stack(project_with_stack(tmp_path, {"namespace": "default", "createNamespace": False}), tmp_path)
    assert not [obj for obj in rendering.objects if obj.kind == "Namespace"]


def test_the_components_refuse_option_like_command_words_and_slices_no_gpu_has():
    assert set(vllm_server_problems(server_args(served_model_name="--port=9000"))) == {"served_model_name"}
    assert set(model_store_problems(store_args(allow_patterns=["--x"]))) == {"allow_patterns"}
    hami = {"backend": "hami", "count": 1, "hami": {"memory_mib": 30000}}
    assert set(gpu_claim_problems({**hami, "products": ["NVIDIA-L4"]})) == {"hami.memory_mib"}
    assert gpu_claim_problems({**hami, "products": ["NVIDIA-A100-SXM4-40GB"]}) == {}
    assert gpu_claim_problems({**hami, "memory_gib": 32}) == {}
