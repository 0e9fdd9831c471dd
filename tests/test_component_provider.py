"""The components as a Pulumi package for other languages: the provider in provider/, the schema
Pulumi derives from the Args TypedDicts, the YAML example, and the reference pages.

No Pulumi CLI, cluster or network: the schema comes from the SDK's own analysis
(pulumi.provider.experimental: Analyzer, then schema.generate_schema, as ComponentProvider does);
the provider is started as the Python language host starts a plugin and asked over gRPC; the YAML
example's resources are constructed through the provider under Pulumi's mock runtime, with their
inputs encoded as the engine sends them.
"""

import collections.abc
import copy
import difflib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import threading
import types
import typing
from pathlib import Path
from typing import Any, NotRequired, Optional, TypedDict, get_args, get_origin

import pulumi
import pulumi.output as pulumi_output
import pytest
import yaml
from conftest import ROOT

PROVIDER_DIR = ROOT / "provider"
EXAMPLE = ROOT / "examples" / "yaml" / "Pulumi.yaml"
ANY = "pulumi.json#/Any"
OTHER_PACKAGES = {"kubernetes:core/v1:Namespace"}
"""Types from other packages the example may use; their properties are the Kubernetes provider's."""
NESTED_TYPES = {
    "AdapterRepoArgs",
    "ArchitectureArgs",
    "DraArgs",
    "GpuPodFragment",
    "GpuQuotaArgs",
    "HamiSliceArgs",
    "LoraAdapterArgs",
    "NodeCacheMount",
    "PodSettingsArgs",
    "SecretKeyArgs",
    "ServerPodsArgs",
    "SignalArgs",
    "TolerationArgs",
}


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entry = load_module("vllm_serving_provider", PROVIDER_DIR / "__main__.py")
reference_docs = load_module("reference_docs", ROOT / "tools" / "reference_docs.py")
NAME = entry.NAME
PREFIX = f"{NAME}:index:"


@pytest.fixture(scope="module")
def schema() -> dict:
    """The package schema the provider serves."""
    return json.loads(entry.provider().schema)


# --- what the TypedDicts say -------------------------------------------------------------------


def hints(typed: type) -> dict[str, Any]:
    """Annotations with pulumi.Input's forward reference to Output resolved."""
    return typing.get_type_hints(typed, localns={"Output": pulumi.Output, "T": pulumi_output.T})


def outputs_of(component: type) -> dict[str, Any]:
    """The component class's own annotated attributes: what the analyzer takes as its outputs."""
    return {key: value for key, value in inspect.get_annotations(component).items() if not key.startswith("_")}


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def args_type(component: type) -> type:
    return inspect.get_annotations(component.__init__)["args"]


def unwrap(annotation: Any) -> Any:
    """The value type under Optional, pulumi.Input and pulumi.Output."""
    if get_origin(annotation) is pulumi.Output:
        return unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [
            member
            for member in get_args(annotation)
            if member is not type(None)
            and get_origin(member) not in (pulumi.Output, collections.abc.Awaitable)
        ]
        if len(members) != 1:
            raise TypeError(f"{annotation} is a union Pulumi's schema cannot express")
        return unwrap(members[0])
    return annotation


def expected_shape(annotation: Any) -> dict:
    """The schema type an annotation should become (types, items, maps and refs; no descriptions)."""
    value = unwrap(annotation)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if value in simple:
        return {"type": simple[value]}
    if value is Any:
        return {"$ref": ANY}
    if typing.is_typeddict(value):
        return {"$ref": f"#/types/{PREFIX}{value.__name__}"}
    if get_origin(value) is list:
        return {"type": "array", "items": expected_shape(get_args(value)[0])}
    if get_origin(value) is dict and get_args(value)[0] is str:
        return {"type": "object", "additionalProperties": expected_shape(get_args(value)[1])}
    raise TypeError(f"{annotation} has no Pulumi schema type")


def shape(prop: dict) -> dict:
    """A schema property without descriptions and plain markers."""
    kept = {key: prop[key] for key in ("type", "$ref") if key in prop}
    for key in ("items", "additionalProperties"):
        if key in prop:
            kept[key] = shape(prop[key])
    return kept


def nested_typed_dicts(typed: type, found: Optional[dict] = None) -> dict[str, type]:
    """Every TypedDict reachable from a TypedDict's annotations, by name."""
    found = {} if found is None else found
    for annotation in hints(typed).values():
        stack = [annotation]
        while stack:
            item = stack.pop()
            if typing.is_typeddict(item):
                if item.__name__ not in found:
                    found[item.__name__] = item
                    nested_typed_dicts(item, found)
            else:
                stack.extend(get_args(item))
    return found


def property_problems(where: str, prop: dict) -> list[str]:
    """What a schema property lacks: a type (or ref) and a description, down into items and maps."""
    problems = []
    if not (prop.get("description") or "").strip():
        problems.append(f"{where} has no description")
    if "type" not in prop and "$ref" not in prop:
        problems.append(f"{where} has no type")
    if prop.get("type") == "array":
        problems += property_problems(f"{where}[]", prop.get("items", {}))
    if prop.get("type") == "object" and "$ref" not in prop:
        problems += property_problems(f"{where}{{}}", prop.get("additionalProperties", {}))
    return problems


def has_plain(prop: dict) -> bool:
    return bool(prop.get("plain")) or any(has_plain(prop[key]) for key in ("items", "additionalProperties") if key in prop)


def schema_problems(schema: dict) -> list[str]:
    problems = []
    for token, resource in schema["resources"].items():
        if not (resource.get("description") or "").strip():
            problems.append(f"{token} has no description")
        for name, prop in resource["inputProperties"].items():
            problems += property_problems(f"{token} input {name}", prop)
        for name, prop in resource["properties"].items():
            problems += property_problems(f"{token} output {name}", prop)
    for token, complex_type in schema["types"].items():
        if not (complex_type.get("description") or "").strip():
            problems.append(f"{token} has no description")
        if not complex_type.get("properties"):
            problems.append(f"{token} has no properties")
        for name, prop in complex_type.get("properties", {}).items():
            problems += property_problems(f"{token}.{name}", prop)
    return problems


# --- the plugin --------------------------------------------------------------------------------


def test_the_plugin_is_laid_out_as_pulumi_loads_it():
    """PulumiPlugin.yaml at the folder's root with runtime python; the language host makes the
    plugin's virtual environment `venv` (its default for plugins), pip installs requirements.txt
    from this folder, and the host runs `python <folder>`, that is __main__.py."""
    manifest = yaml.safe_load((PROVIDER_DIR / "PulumiPlugin.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    assert manifest["runtime"]["options"] == {"toolchain": "pip", "virtualenv": "venv"}
    assert (PROVIDER_DIR / "__main__.py").is_file()
    assert not (PROVIDER_DIR / "pyproject.toml").exists(), "a pyproject.toml here would make Pulumi pip install this folder"
    requirements = [
        line.strip() for line in (PROVIDER_DIR / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert "-e .." in requirements, "the provider installs the components from the repository"
    assert 'name = "vllm-serving-components"' in (ROOT / "pyproject.toml").read_text()
    assert "venv/" in (PROVIDER_DIR / ".gitignore").read_text().split()


def test_every_component_is_in_the_schema_under_its_type_token(schema):
    assert schema["name"] == NAME == "vllm-serving"
    assert sorted(schema["resources"]) == sorted(f"{PREFIX}{c.__name__}" for c in entry.COMPONENTS)
    assert {c.__name__ for c in entry.COMPONENTS} == {"GpuClaim", "ModelStore", "VLLMServer", "Exposure", "Autoscaler", "BodyRouter"}
    for component in entry.COMPONENTS:
        registers = re.findall(r'super\(\).__init__\("([^"]+)"', inspect.getsource(component))
        assert registers == [f"{PREFIX}{component.__name__}"], component.__name__
        assert schema["resources"][f"{PREFIX}{component.__name__}"]["isComponent"] is True


def test_the_schema_is_the_sdks_analysis_turned_into_a_package(schema):
    """ComponentProvider builds the schema with Analyzer.analyze and schema.generate_schema."""
    from pulumi.provider.experimental.analyzer import Analyzer
    from pulumi.provider.experimental.schema import generate_schema

    result = Analyzer(NAME).analyze(entry.COMPONENTS)
    package = generate_schema(NAME, entry.VERSION, None, result["component_definitions"], result["type_definitions"], [])
    assert package.to_json() == schema
    assert schema["version"] == entry.VERSION


def test_inputs_are_exactly_the_args_keys_with_their_types_and_required_ness(schema):
    for component in entry.COMPONENTS:
        typed = args_type(component)
        resource = schema["resources"][f"{PREFIX}{component.__name__}"]
        annotations = hints(typed)
        assert list(resource["inputProperties"]) == [camel(key) for key in annotations], component.__name__
        assert resource["requiredInputs"] == sorted(camel(key) for key in typed.__required_keys__), component.__name__
        for key, annotation in annotations.items():
            assert shape(resource["inputProperties"][camel(key)]) == expected_shape(annotation), f"{component.__name__}.{key}"


def test_every_input_and_output_has_a_type_and_a_description(schema):
    assert schema_problems(schema) == []


def test_nested_typed_dicts_become_complex_types_with_described_properties(schema):
    reachable = {}
    for component in entry.COMPONENTS:
        nested_typed_dicts(args_type(component), reachable)
        for annotation in outputs_of(component).values():
            if typing.is_typeddict(unwrap(annotation)):
                reachable[unwrap(annotation).__name__] = unwrap(annotation)
                nested_typed_dicts(unwrap(annotation), reachable)
    assert set(reachable) == NESTED_TYPES
    assert sorted(schema["types"]) == sorted(f"{PREFIX}{name}" for name in NESTED_TYPES)
    for name, typed in reachable.items():
        complex_type = schema["types"][f"{PREFIX}{name}"]
        assert complex_type["type"] == "object"
        assert complex_type["description"].strip() == inspect.getdoc(typed)
        annotations = hints(typed)
        assert list(complex_type["properties"]) == [camel(key) for key in annotations], name
        # Required in the schema: a key the TypedDict requires and that may not be None.
        required = sorted(
            camel(key) for key in typed.__required_keys__ if type(None) not in get_args(annotations[key])
        )
        assert complex_type.get("required", []) == required, name
        for key, annotation in annotations.items():
            assert shape(complex_type["properties"][camel(key)]) == expected_shape(annotation), f"{name}.{key}"


def test_outputs_are_the_components_documented_attributes(schema):
    """The analyzer takes every annotated attribute of the class as an output: pulumi.Output[...] ones,
    and the plain values Python callers read at once: GpuClaim.pod_fragment, VLLMServer.takes_api_key and
    VLLMServer.adapter_names."""
    from pulumi.provider.experimental.analyzer import Analyzer

    for component in entry.COMPONENTS:
        resource = schema["resources"][f"{PREFIX}{component.__name__}"]
        annotations = outputs_of(component)
        outputs = [key for key, value in annotations.items() if get_origin(value) is pulumi.Output]
        assert outputs, f"{component.__name__} declares no pulumi.Output attributes"
        plain_values = {"GpuClaim": ["pod_fragment"], "VLLMServer": ["takes_api_key", "adapter_names"]}.get(component.__name__, [])
        assert [key for key in annotations if key not in outputs] == plain_values
        assert list(resource["properties"]) == [camel(key) for key in annotations]
        assert resource["required"] == sorted(camel(key) for key in annotations)
        analyzer = Analyzer(NAME)
        for key, annotation in annotations.items():
            assert (analyzer.get_docstring(component, key) or "").strip(), f"{component.__name__}.{key} has no docstring"
            assert shape(resource["properties"][camel(key)]) == expected_shape(annotation), f"{component.__name__}.{key}"
            assert not has_plain(resource["properties"][camel(key)]), f"{component.__name__}.{key}: outputs are never plain"


class LooseArgs(TypedDict):
    """Arguments of Loose."""

    documented: str
    """A documented argument."""
    undocumented: NotRequired[int]


class Loose(pulumi.ComponentResource):
    """A component with an undocumented argument (the analyzer reads docstrings from module source)."""

    out: pulumi.Output[str]
    """An output."""

    def __init__(self, name: str, args: LooseArgs, opts=None):
        super().__init__(f"{NAME}:index:Loose", name, None, opts)


def test_an_undocumented_or_untyped_argument_is_caught(monkeypatch):
    """The checks above are not vacuous: an argument without a docstring is reported, and one of a
    type Pulumi's schema cannot express (Literal, Union, tuple) stops the analysis."""
    from pulumi.provider.experimental.analyzer import Analyzer
    from pulumi.provider.experimental.schema import generate_schema

    result = Analyzer(NAME).analyze([Loose])
    loose = generate_schema(NAME, "0.0.0", None, result["component_definitions"], result["type_definitions"], []).to_json()
    assert schema_problems(loose) == [f"{PREFIX}Loose input undocumented has no description"]
    for unsupported in (typing.Literal["a", "b"], typing.Union[int, str], tuple[int, int]):
        monkeypatch.setitem(LooseArgs.__annotations__, "documented", unsupported)
        with pytest.raises(Exception):
            Analyzer(NAME).analyze([Loose])
        with pytest.raises(TypeError):
            expected_shape(unsupported)


def test_the_provider_serves_its_schema_when_started_as_a_plugin(schema, tmp_path):
    """As the language host runs a plugin: `python <plugin folder> <engine address>` from another
    directory; the provider prints its port and answers GetSchema and GetPluginInfo."""
    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

    process, address = start_provider("127.0.0.1:1", tmp_path)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            served = json.loads(stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=60).schema)
            info = stub.GetPluginInfo(empty_pb2.Empty(), timeout=60)
        assert served == schema
        assert info.version == entry.VERSION
    finally:
        process.terminate()
        process.wait(30)


# --- the YAML example, against the schema ------------------------------------------------------

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_]+)*)\}")


def resource_token(type_: str) -> str:
    """`pkg:Name` is short for `pkg:index:Name`."""
    parts = type_.split(":")
    return f"{parts[0]}:index:{parts[1]}" if len(parts) == 2 else type_


def output_prop(program: dict, schema: dict, reference: str, where: str, problems: list[str]) -> Optional[dict]:
    """The schema property a `${resource.output...}` reference names (None if it cannot be typed)."""
    match = REFERENCE.fullmatch(reference)
    if not match:
        problems.append(f"{where}: {reference!r} is not a whole ${{resource.output}} reference")
        return None
    resource, path = match[1], match[2].lstrip(".").split(".")
    if resource not in program.get("resources", {}):
        problems.append(f"{where}: {reference} names no resource of the program")
        return None
    token = resource_token(program["resources"][resource]["type"])
    if token not in schema["resources"]:
        return None
    prop: Optional[dict] = {"$ref": f"#/resources/{token}"}
    for part in path:
        properties = (
            schema["resources"][token]["properties"]
            if prop.get("$ref") == f"#/resources/{token}"
            else schema["types"].get(prop.get("$ref", "").removeprefix("#/types/"), {}).get("properties")
            if "$ref" in prop
            else None
        )
        if properties is None and "additionalProperties" in prop:
            prop = prop["additionalProperties"]
            continue
        if not properties or part not in properties:
            known = sorted(properties or ())
            close = difflib.get_close_matches(part, known, n=1)
            problems.append(f"{where}: {reference}: {part} is not an output{f'; did you mean {close[0]}?' if close else ''}")
            return None
        prop = properties[part]
    return prop


def compatible(source: dict, target: dict) -> bool:
    """An output of this schema type can feed an input of that one."""
    source, target = shape(source), shape(target)
    if "$ref" in target and target["$ref"] == ANY:
        return True
    if source.get("type") == "integer" and target.get("type") == "number":
        return True
    return source == target


def value_problems(value: Any, prop: dict, schema: dict, program: dict, where: str) -> list[str]:
    """Whether a YAML value fits a schema property."""
    if isinstance(value, str) and "${" in value:
        problems: list[str] = []
        source = output_prop(program, schema, value, where, problems)
        if source is not None and not compatible(source, prop):
            problems.append(f"{where}: {value} is {shape(source)}, the input wants {shape(prop)}")
        return problems
    ref = prop.get("$ref", "")
    if ref == ANY:
        return []
    if ref.startswith("#/types/"):
        complex_type = schema["types"][ref.removeprefix("#/types/")]
        if not isinstance(value, dict):
            return [f"{where}: must be an object ({ref.rsplit(':', 1)[-1]})"]
        return object_problems(value, complex_type.get("properties", {}), complex_type.get("required", []), schema, program, where)
    kind = prop.get("type")
    fits = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    if not fits:
        return [f"{where}: {value!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}"]
    if kind == "array":
        return [p for index, item in enumerate(value) for p in value_problems(item, prop["items"], schema, program, f"{where}[{index}]")]
    if kind == "object" and "additionalProperties" in prop:
        return [p for key, item in value.items() for p in value_problems(item, prop["additionalProperties"], schema, program, f"{where}.{key}")]
    return []


def object_problems(values: dict, properties: dict, required: list[str], schema: dict, program: dict, where: str) -> list[str]:
    problems = []
    for key, value in values.items():
        if key not in properties:
            close = difflib.get_close_matches(key, list(properties), n=1)
            problems.append(f"{where}.{key}: no such input{f'; did you mean {close[0]}?' if close else ''}")
            continue
        problems += value_problems(value, properties[key], schema, program, f"{where}.{key}")
    problems += [f"{where}.{key}: is required" for key in required if key not in values]
    return problems


def example_problems(program: dict, schema: dict) -> list[str]:
    """Every way the YAML program disagrees with the package schema."""
    problems = []
    for name, resource in program.get("resources", {}).items():
        token = resource_token(resource["type"])
        where = f"resources.{name}"
        if token in OTHER_PACKAGES:
            continue
        if token not in schema["resources"]:
            close = difflib.get_close_matches(token, list(schema["resources"]), n=1)
            problems.append(f"{where}.type: {resource['type']} is not in the package{f'; did you mean {close[0]}?' if close else ''}")
            continue
        spec = schema["resources"][token]
        problems += object_problems(
            resource.get("properties", {}), spec["inputProperties"], spec["requiredInputs"], schema, program, f"{where}.properties"
        )
    for name, value in program.get("outputs", {}).items():
        if isinstance(value, str) and "${" in value:
            output_prop(program, schema, value, f"outputs.{name}", problems)
    return problems


@pytest.fixture(scope="module")
def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_is_a_yaml_program_using_the_provider_folder(example):
    assert example["runtime"] == "yaml"
    source = example["packages"][NAME]
    assert (EXAMPLE.parent / source).resolve() == PROVIDER_DIR
    assert (EXAMPLE.parent / "README.md").is_file()
    used = {resource_token(resource["type"]) for resource in example["resources"].values()}
    assert {f"{PREFIX}{name}" for name in ("GpuClaim", "ModelStore", "VLLMServer", "Exposure")} <= used
    assert used - {f"{PREFIX}{c.__name__}" for c in entry.COMPONENTS} <= OTHER_PACKAGES


def test_every_type_property_and_reference_of_the_example_is_in_the_schema(example, schema):
    assert example_problems(example, schema) == []


def test_a_typo_in_the_example_is_caught(example, schema):
    broken = copy.deepcopy(example)
    server = broken["resources"]["server"]["properties"]
    server["maxModelLength"] = server.pop("maxModelLen")
    broken["resources"]["gpu"]["properties"]["count"] = "one"
    broken["resources"]["api"]["properties"]["selector"] = "${server.selectorLabel}"
    broken["resources"]["store"]["type"] = "vllm-serving:index:ModelStor"
    broken["outputs"]["endpoint"] = "${api.endpoints}"
    assert example_problems(broken, schema) == [
        "resources.gpu.properties.count: 'one' is not an integer",
        "resources.store.type: vllm-serving:index:ModelStor is not in the package; did you mean vllm-serving:index:ModelStore?",
        "resources.server.properties.maxModelLength: no such input; did you mean maxModelLen?",
        "resources.server.properties.maxModelLen: is required",
        "resources.api.properties.selector: ${server.selectorLabel}: selectorLabel is not an output; did you mean selectorLabels?",
        "outputs.endpoint: ${api.endpoints}: endpoints is not an output; did you mean endpoint?",
    ]


# --- the YAML example, through the provider ----------------------------------------------------


class Recorder(pulumi.runtime.Mocks):
    """Every resource's state is its inputs; remembers what was created."""

    def __init__(self):
        self.created: list[tuple[str, str, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.created.append((args.typ, args.name, args.inputs))
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


def run_under_mocks(program) -> list[tuple[str, str, dict]]:
    """The Kubernetes objects a program creates under Pulumi's mock runtime."""
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    recorder = Recorder()
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(recorder, project="example", stack="test", preview=False)
    _sync_await(run_pulumi_func(program))
    return sorted(
        ((type_, name, inputs) for type_, name, inputs in recorder.created if type_.startswith("kubernetes:")),
        key=lambda created: created[:2],
    )


def urn(token: str, name: str) -> str:
    return f"urn:pulumi:test::example::{token}::{name}"


def engine_struct(properties: dict, outputs: dict, tokens: dict) -> tuple[Any, dict]:
    """Construct inputs as the engine sends them: a protobuf Struct (every number a double), with
    references to other resources as output values carrying their dependencies, and the
    dependencies of each input."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import provider_pb2

    dependencies: dict[str, list[str]] = {}

    def encode(value: Any, key: str) -> Any:
        if isinstance(value, str) and (match := REFERENCE.fullmatch(value)):
            resolved = outputs[match[1]]
            for part in match[2].lstrip(".").split("."):
                resolved = resolved[part]
            dependency = urn(tokens[match[1]], match[1])
            dependencies.setdefault(key, []).append(dependency)
            return {rpc._special_sig_key: rpc._special_output_value_sig, "value": resolved, "dependencies": [dependency]}
        if isinstance(value, dict):
            return {k: encode(v, key) for k, v in value.items()}
        if isinstance(value, list):
            return [encode(v, key) for v in value]
        return value

    struct = struct_pb2.Struct()
    struct.update({key: encode(value, key) for key, value in properties.items()})
    per_key = {key: provider_pb2.ConstructRequest.PropertyDependencies(urns=urns) for key, urns in dependencies.items()}
    return struct, per_key


def engine_inputs(properties: dict, outputs: dict, tokens: dict) -> dict:
    """The inputs as the provider's gRPC server hands them to construct (ProviderServicer._construct_inputs)."""
    from pulumi.provider.server import ProviderServicer
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(ProviderServicer._construct_inputs(*engine_struct(properties, outputs, tokens)))


def resolved_state(state: dict) -> dict:
    """A construct result's state as the engine hands it to the program: plain values."""
    from pulumi.runtime.sync_await import _sync_await

    return {key: _sync_await(pulumi.Output.from_input(value).future()) for key, value in state.items()}


def run_example(program: dict, provider) -> Any:
    """The example's resources in order, the package's through provider.construct."""
    outputs: dict[str, dict] = {}
    tokens = {name: resource_token(resource["type"]) for name, resource in program["resources"].items()}
    for name, resource in program["resources"].items():
        properties = resource.get("properties", {})
        if tokens[name] in OTHER_PACKAGES:
            outputs[name] = properties  # a Kubernetes object's outputs hold what it was given
            continue
        result = provider.construct(name, tokens[name], engine_inputs(properties, outputs, tokens), pulumi.ResourceOptions())
        outputs[name] = resolved_state(result.state)
    return outputs


def python_equivalent():
    """The example as a Python program using the components directly."""
    from vllm_serving_components import Exposure, GpuClaim, ModelStore, VLLMServer

    namespace = "ai-serving-yaml"
    gpu = GpuClaim("gpu", {"backend": "nvidia", "count": 1})
    store = ModelStore("store", {"namespace": namespace, "model_id": "Qwen/Qwen3-0.6B", "size": "20Gi", "model_size_gb": 2})
    server = VLLMServer(
        "server",
        {
            "namespace": namespace,
            "served_model_name": "qwen3-0.6b",
            "max_model_len": 8192,
            "gpu_memory_utilization": 0.8,
            "cpu": "4",
            "memory": "16Gi",
            "replicas": 1,
            "gpu": gpu.pod_fragment,
            "claim_name": store.claim_name,
            "mount_path": store.mount_path,
            "model_path": store.model_path,
            "marker_name": store.marker_name,
        },
    )
    Exposure("api", {"namespace": namespace, "selector": server.selector_labels, "port": 8000, "target_port_name": "http"})


def test_the_example_through_the_provider_creates_what_the_components_create_in_python(example):
    """Integers arrive as floats and GpuClaim's podFragment as an Output without its null fields;
    the provider hands the components what a Python caller would, so the objects are the same."""
    outputs: dict = {}
    through_provider = run_under_mocks(lambda: outputs.update(run_example(example, entry.provider())))
    direct = run_under_mocks(python_equivalent)
    assert [created[:2] for created in through_provider] == [created[:2] for created in direct]
    assert through_provider == direct
    kinds = {type_.rsplit(":", 1)[-1] for type_, _, _ in direct}
    assert {"Deployment", "Job", "PersistentVolumeClaimPatch", "Service"} <= kinds
    assert outputs["api"]["endpoint"] == "http://api.ai-serving-yaml.svc.cluster.local:8000/v1"
    assert outputs["gpu"]["podFragment"]["limits"] == {"nvidia.com/gpu": "1"}
    # Every output the schema declares comes back from construct (pod_fragment's null fields aside).
    for name, values in outputs.items():
        token = resource_token(example["resources"][name]["type"])
        if token not in OTHER_PACKAGES:
            assert set(values) == set(json.loads(entry.provider().schema)["resources"][token]["properties"]), name


class FakeEngine:
    """The engine's side of a construct: a resource monitor that echoes inputs, and the engine's
    log service, on one local gRPC server."""

    def __init__(self):
        from concurrent import futures

        import grpc
        from google.protobuf import empty_pb2, json_format
        from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, resource_pb2, resource_pb2_grpc

        self.registered: list[tuple[str, str, dict]] = []
        registered = self.registered

        class Monitor(resource_pb2_grpc.ResourceMonitorServicer):
            def SupportsFeature(self, request, context):
                return resource_pb2.SupportsFeatureResponse(hasSupport=request.id in ("secrets", "resourceReferences"))

            def RegisterResource(self, request, context):
                registered.append((request.type, request.name, json_format.MessageToDict(request.object)))
                return resource_pb2.RegisterResourceResponse(
                    urn=urn(request.type, request.name), id=f"{request.name}-id" if request.custom else "", object=request.object
                )

            def RegisterResourceOutputs(self, request, context):
                return empty_pb2.Empty()

        class Engine(engine_pb2_grpc.EngineServicer):
            def Log(self, request, context):
                return empty_pb2.Empty()

            def GetRootResource(self, request, context):
                return engine_pb2.GetRootResourceResponse(urn="")

            def SetRootResource(self, request, context):
                return engine_pb2.SetRootResourceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        resource_pb2_grpc.add_ResourceMonitorServicer_to_server(Monitor(), self.server)
        engine_pb2_grpc.add_EngineServicer_to_server(Engine(), self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


def start_provider(engine_address: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """The provider as the language host runs a plugin: `python <plugin folder> <engine address>`,
    from another directory; returns the process and the port it prints."""
    process = subprocess.Popen(
        [sys.executable, str(PROVIDER_DIR), engine_address], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    port: list[str] = []
    reader = threading.Thread(target=lambda: port.append(process.stdout.readline().strip()), daemon=True)
    reader.start()
    reader.join(60)
    if not (port and port[0].isdigit()):
        process.kill()
        raise AssertionError(f"the provider printed no port: {process.communicate(timeout=30)[1]}")
    return process, f"127.0.0.1:{port[0]}"


def test_the_provider_constructs_the_example_over_grpc_as_the_engine_calls_it(example, tmp_path):
    """The example through the provider process: Construct requests as the engine sends them (to a
    fake monitor), each component's state feeding the next, as a YAML program's outputs do."""
    import grpc
    from google.protobuf import json_format
    from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

    engine = FakeEngine()
    process, address = start_provider(engine.address, tmp_path)
    try:
        outputs: dict[str, dict] = {}
        tokens = {name: resource_token(resource["type"]) for name, resource in example["resources"].items()}
        with grpc.insecure_channel(address) as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            for name, resource in example["resources"].items():
                properties = resource.get("properties", {})
                if tokens[name] in OTHER_PACKAGES:
                    outputs[name] = properties
                    continue
                struct, dependencies = engine_struct(properties, outputs, tokens)
                request = provider_pb2.ConstructRequest(
                    project="example", stack="test", name=name, type=tokens[name], inputs=struct,
                    inputDependencies=dependencies, monitorEndpoint=engine.address,
                    dependencies=sorted({u for d in dependencies.values() for u in d.urns}),
                )
                response = stub.Construct(request, timeout=120)
                assert response.urn == urn(tokens[name], name)
                outputs[name] = json_format.MessageToDict(response.state)
    finally:
        process.terminate()
        process.wait(30)
        engine.server.stop(0)
    direct = run_under_mocks(python_equivalent)
    over_grpc = sorted(((t, n, i) for t, n, i in engine.registered if t.startswith("kubernetes:")), key=lambda c: c[:2])
    assert [c[:2] for c in over_grpc] == [c[:2] for c in direct]
    assert json.loads(json.dumps([c[2] for c in over_grpc])) == json.loads(json.dumps([c[2] for c in direct]))
    assert outputs["api"]["endpoint"] == "http://api.ai-serving-yaml.svc.cluster.local:8000/v1"


def test_a_plain_input_not_yet_known_is_refused_by_name():
    """VLLMServer needs its GPU fragment when it is created: an unknown value is an error naming it."""
    from google.protobuf import struct_pb2
    from pulumi.errors import InputPropertyError
    from pulumi.provider.server import ProviderServicer
    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    raised = []

    def program():
        struct = struct_pb2.Struct()
        # An output value without a value: unknown, as during a preview before its resource exists.
        struct.update({"gpu": {rpc._special_sig_key: rpc._special_output_value_sig, "dependencies": [urn("x:index:Y", "y")]}})
        inputs = _sync_await(ProviderServicer._construct_inputs(struct, {}))
        with pytest.raises(InputPropertyError) as error:
            entry.provider().construct("server", f"{PREFIX}VLLMServer", inputs, pulumi.ResourceOptions())
        raised.append((error.value.property_path, error.value.reason))

    run_under_mocks(program)
    assert raised == [("gpu", "gpu must be known when the component is created; it comes from a resource not yet created")]


def test_the_sdks_own_component_provider_would_refuse_integers_from_the_wire():
    """Why provider/__main__.py adjusts the SDK's ComponentProvider: pulumi 3.272.0 converts an
    integer input to int and then overwrites it with the float it received. If this fails, the SDK
    has fixed it, and Provider's integer conversion can go."""
    from pulumi.provider.experimental.component import ComponentProvider
    from pulumi.provider.server import ComponentInitError

    errors = []

    def program():
        plain = ComponentProvider(entry.COMPONENTS, NAME, version=entry.VERSION)
        with pytest.raises(ComponentInitError) as error:
            plain.construct("gpu", f"{PREFIX}GpuClaim", engine_inputs({"count": 1}, {}, {}), pulumi.ResourceOptions())
        errors.append(str(error.value))

    run_under_mocks(program)
    assert errors and "count must be an integer, not float" in errors[0]


# --- the reference pages -----------------------------------------------------------------------


def test_the_reference_pages_are_what_the_docstrings_generate_now():
    wanted = reference_docs.pages()
    on_disk = {path.name: path.read_text() for path in (ROOT / "docs" / "reference").glob("*.md")}
    assert sorted(on_disk) == sorted(wanted) == sorted(f"{c.__name__}.md" for c in entry.COMPONENTS)
    for name, content in wanted.items():
        assert on_disk[name] == content, f"docs/reference/{name} is stale: run .venv/bin/python tools/reference_docs.py"


def test_every_input_output_and_nested_type_is_on_its_page(schema):
    pages = reference_docs.pages()
    for component in entry.COMPONENTS:
        text = pages[f"{component.__name__}.md"]
        resource = schema["resources"][f"{PREFIX}{component.__name__}"]
        module = sys.modules[component.__module__]
        for key in hints(args_type(component)):
            row = next((line for line in text.splitlines() if line.startswith(f"| `{key}`")), None)
            assert row is not None, f"{component.__name__}: input {key} is not on its page"
            if key in module.DEFAULTS:
                assert f"`{json.dumps(module.DEFAULTS[key])}`" in row, f"{component.__name__}.{key}: default"
        for key in outputs_of(component):
            assert f"| `{key}`" in text, f"{component.__name__}: output {key} is not on its page"
        for token in reference_docs.referenced_types([resource["inputProperties"], resource["properties"]], PREFIX, schema, []):
            assert f"### {token.removeprefix(PREFIX)}\n" in text
