"""The components used as a library, as the README shows: every mistake in the arguments is
refused before anything is registered, all of them in one error."""

import typing

import pulumi
import pytest
from conftest import ROOT
from pulumi.runtime import mocks
from test_components import autoscaler_args, exposure_args, gpu_args, server_args, store_args

from vllm_serving_components import (
    Autoscaler,
    ComponentArgsError,
    Exposure,
    GpuClaim,
    ModelStore,
    VLLMServer,
)
from vllm_serving_components import autoscaler, exposure, gpu_claim, model_store, vllm_server
from stack.component_args import (
    AUTOSCALER_KEYS,
    EXPOSURE_KEYS,
    GPU_KEYS,
    SERVER_KEYS,
    STORE_KEYS,
)
from stack.config import parse_values
from stack.project import read_project
from stack.render import EchoMocks, run_under_mocks

SPECS = {
    "GpuClaim": (GpuClaim, gpu_claim.SPEC, gpu_args),
    "ModelStore": (ModelStore, model_store.SPEC, store_args),
    "VLLMServer": (VLLMServer, vllm_server.SPEC, server_args),
    "Exposure": (Exposure, exposure.SPEC, exposure_args),
    "Autoscaler": (Autoscaler, autoscaler.SPEC, autoscaler_args),
}


def refused(component, args, name="c") -> ComponentArgsError:
    """The component raises before registering anything."""
    monitor = mocks.MockMonitor(EchoMocks())
    with pytest.raises(ComponentArgsError) as raised:
        run_under_mocks(lambda: component(name, args), "test", "test", {}, monitor)
    assert monitor.resources == {}
    return raised.value


def test_model_store_in_the_readme_form_with_several_mistakes():
    error = refused(
        ModelStore,
        {"namespace": "ai", "model_id": "Qwen/..", "image": "vllm/vllm-openai:latest", "size": "20 gigs", "revison": "v1"},
    )
    assert error.problems == {
        "model_id": "must be owner/name, e.g. Qwen/Qwen3-0.6B: names of letters, digits, '.', '_' and '-' (not starting with '.'), separated by '/'",
        "image": "uses the moving tag latest; pin a release, e.g. vllm/vllm-openai:v0.34.0, or a digest",
        "size": "'20 gigs' is not a Kubernetes quantity such as 500m, 8, 32Gi or 500G",
        "revison": "is not an argument of ModelStore; did you mean revision?",
    }
    assert str(error).startswith("ModelStore c: model_id must be owner/name")


def test_server_in_the_readme_form_with_several_mistakes():
    args = server_args(cpu="four", memory="16GB", replicas=True, extra_args=["--api-key", "sk-9"])
    del args["max_model_len"]
    error = refused(VLLMServer, args)
    assert sorted(error.problems) == ["cpu", "extra_args", "max_model_len", "memory", "replicas"]
    assert error.problems["max_model_len"] == "is required"
    assert error.problems["replicas"] == "must be an integer, not bool"
    assert "sk-9" not in str(error)


def test_gpu_claim_with_a_misspelled_argument_and_a_bad_slice():
    error = refused(GpuClaim, {"backend": "hami", "cuont": 2, "hami": {"cores": 150, "memroy_mib": 1}})
    assert error.problems == {
        "cuont": "is not an argument of GpuClaim; did you mean count?",
        "count": "is required",
        "hami.cores": "must be at most 100",
        "hami.memroy_mib": "is not an argument of GpuClaim; did you mean memory_mib?",
    }


def test_exposure_with_a_bad_name_host_and_selector():
    error = refused(Exposure, exposure_args(host="10.1.2.3", selector={"a/b/c": "x"}, port=70000), name="1api")
    assert sorted(error.problems) == ["host", "name", "port", "selector"]
    assert error.problems["selector"].startswith("key 'a/b/c': must be a label key")


def test_autoscaler_that_could_never_scale_and_an_unquoted_label():
    error = refused(Autoscaler, autoscaler_args(min_replicas=2, max_replicas=2, pod_monitor_labels={"team": "a b"}))
    assert sorted(error.problems) == ["max_replicas", "pod_monitor_labels"]
    assert "can never scale" in error.problems["max_replicas"]


@pytest.mark.parametrize("component", sorted(SPECS))
def test_arguments_that_are_not_a_mapping(component):
    cls, _, _ = SPECS[component]
    error = refused(cls, ["namespace", "ai"])
    assert error.problems == {"args": "must be a mapping of argument names to values, not list"}


@pytest.mark.parametrize("component", sorted(SPECS))
def test_every_string_argument_refuses_a_newline(component):
    """The class, not the example: no string anywhere in any component's arguments takes a newline."""
    _, spec, good = SPECS[component]
    places = list(string_places(spec.args_type))
    assert places
    for reported, build in places:
        args = merged(good(), build("value\n"))
        assert reported in spec.problems(args), (reported, args)


def string_places(args_type, prefix=""):
    """(the argument path a problem names, a function building args with a string there) for every
    string in a TypedDict: fields, list items, mapping keys and values, nested TypedDicts."""
    for field, hint in hints(args_type).items():
        path = f"{prefix}{field}"
        for kind in flatten(hint):
            origin, params = typing.get_origin(kind), typing.get_args(kind)
            if kind is str:
                yield path, lambda v, f=field: {f: v}
            elif typing.is_typeddict(kind):
                for reported, build in string_places(kind, f"{path}."):
                    yield reported, lambda v, f=field, b=build: {f: b(v)}
            elif origin is list and params[0] is str:
                yield path, lambda v, f=field: {f: ["ok", v]}
            elif origin is list and typing.is_typeddict(params[0]):
                for _, build in string_places(params[0]):
                    yield path, lambda v, f=field, b=build: {f: [b(v)]}
            elif origin is dict and params[0] is str:
                yield path, lambda v, f=field: {f: {v: "x"}}
                if params[1] is str:
                    yield path, lambda v, f=field: {f: {"x": v}}


def merged(base: dict, change: dict) -> dict:
    result = dict(base)
    for key, value in change.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def hints(args_type) -> dict:
    return typing.get_type_hints(args_type, localns={"Output": pulumi.Output, "T": typing.TypeVar("T")})


@pytest.mark.parametrize("component", sorted(set(SPECS) - {"GpuClaim"}))
def test_unknown_values_pass_until_they_are_known(component, pulumi_mocks):
    """An Output (e.g. a namespace created in the same program) is not refused for being unknown."""
    _, spec, good = SPECS[component]
    types = hints(spec.args_type)
    inputs = [key for key in good() if any(typing.get_origin(t) is pulumi.Output for t in flatten(types[key]))]
    args = {key: pulumi.Output.from_input(value) if key in inputs else value for key, value in good().items()}
    assert inputs and spec.problems(args) == {}
    assert spec.problems({**args, inputs[0]: 42})  # a known value is still checked


@pytest.mark.parametrize("component", sorted(SPECS))
def test_the_good_arguments_pass(component):
    _, spec, good = SPECS[component]
    assert spec.problems(good(), "c") == {}


def test_the_stack_maps_every_argument_it_sets_to_a_config_key():
    declared = set(read_project(ROOT).declarations)
    for keys in (GPU_KEYS, STORE_KEYS, SERVER_KEYS, EXPOSURE_KEYS, AUTOSCALER_KEYS):
        assert set(keys.values()) <= declared


@pytest.mark.parametrize(
    ("keys", "component"),
    [(GPU_KEYS, "GpuClaim"), (STORE_KEYS, "ModelStore"), (SERVER_KEYS, "VLLMServer"), (EXPOSURE_KEYS, "Exposure"), (AUTOSCALER_KEYS, "Autoscaler")],
)
def test_arguments_set_only_when_the_stack_sets_them_default_as_in_pulumi_yaml(keys, component):
    """Where the stack leaves an argument to the component's default, that default is Pulumi.yaml's."""
    project = read_project(ROOT)
    defaults, _ = parse_values(project.defaults(), project.defaults())
    spec = SPECS[component][1]
    compared = 0
    for path, key in keys.items():
        declared = project.declarations[key].get("default")
        if spec.defaults.get(path) is not None and declared:  # "", 0 and [] in Pulumi.yaml mean "not set"
            assert defaults.value(key) == spec.defaults[path], (path, key)
            compared += 1
    assert compared >= 2, f"{component}: no default to compare"


def flatten(hint) -> list:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        return [t for a in args for t in flatten(a)]
    return [hint]
