"""The component provider: GpuClaim, ModelStore, VLLMServer, Exposure and Autoscaler for every
Pulumi language, as the package ``vllm-serving`` (types ``vllm-serving:index:<Class>``).

``pulumi package add <this folder>`` (or ``<repository URL>/provider@<tag>``) makes ./venv from
requirements.txt, starts this file as ``python <this folder> <engine address>`` and asks it for the
package schema, which Pulumi's analyzer derives from each component's Args TypedDict (attribute
docstrings become descriptions) and its annotated ``pulumi.Output`` attributes; from the schema
it generates the consumer's SDK. ``pulumi up`` starts it again to construct the components.

This is ``pulumi.provider.experimental.component_provider_host`` (host.py: validate the classes,
``main(ComponentProvider(components, name, namespace, version), sys.argv[1:])``) with one
difference: its ComponentProvider is ``Provider`` below, which puts back what the trip over the
wire changes before a component checks its arguments (the components check types strictly):

- Integer inputs arrive as floats (protobuf has one number type). pulumi 3.272.0's
  ``ComponentProvider.map_input_properties`` converts them (component.py, "Integers are sent as
  floats over the wire") and then overwrites the int with the float on the next line, so
  ``count: 1`` reaches GpuClaim as ``1.0``. Integral floats of integer properties become ints.
- A value that comes from another resource (``${gpu.podFragment}``) arrives as an Output even
  when it is known: provider/server.py ``_select_value`` wraps every input that has
  dependencies. For a plain property (one the component needs when it is created, such as
  VLLMServer's ``gpu``) the known value is unwrapped; an unknown or secret one is refused with
  an error naming the input. The component still depends on that resource: the engine passes
  every input's dependencies as the construct request's ``dependencies`` (server.py
  ``_construct_options``).
- Null values do not travel: a property that is None is absent on the other side (component.py
  ``map_complex_output`` skips None). Keys the TypedDict requires whose value may be None
  (``GpuPodFragment.scheduler_name``) are put back as None.

tests/test_component_provider.py runs the YAML example through this provider, with inputs as the
engine sends them, and checks it creates what the same components create in Python.
"""

import inspect
import sys
from importlib.metadata import version
from typing import Any, Optional

from pulumi import Output
from pulumi.errors import InputPropertyError
from pulumi.provider import main
from pulumi.provider.experimental.analyzer import PropertyDefinition, PropertyType
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.runtime.sync_await import _sync_await

from vllm_serving_components import Autoscaler, BodyRouter, Exposure, GpuClaim, ModelStore, VLLMServer

NAME = "vllm-serving"
"""The package name: the first part of every type token, and the SDK's name."""
COMPONENTS = [GpuClaim, ModelStore, VLLMServer, Exposure, Autoscaler, BodyRouter]
VERSION = version("vllm-serving-components")
"""pyproject.toml's version. A package added from a Git tag reports the tag's version instead
(the engine overrides a Git plugin's version: pkg/resource/plugin/provider_plugin.go)."""


class Provider(ComponentProvider):
    """Pulumi's component provider, with integers, prompt values and nulls as Python sent them."""

    def map_input_properties(
        self,
        inputs: Any,
        properties: dict[str, PropertyDefinition],
        mapping: dict[str, str],
        component_name: str,
        property_path: str,
    ) -> dict[str, Any]:
        inputs = _known(inputs, property_path or component_name)
        if isinstance(inputs, dict):
            inputs = {
                key: _prompt(value, properties[key], _join(property_path, key)) if key in properties else value
                for key, value in inputs.items()
            }
        mapped = super().map_input_properties(inputs, properties, mapping, component_name, property_path)
        required = getattr(self._python_type(properties), "__required_keys__", frozenset())
        for schema_name, prop in properties.items():
            python_name = mapping[schema_name]
            if python_name in mapped:
                mapped[python_name] = _integers(mapped[python_name], prop)
            elif python_name in required:
                mapped[python_name] = None
        return mapped

    def _python_type(self, properties: dict[str, PropertyDefinition]) -> Optional[type]:
        """The TypedDict whose properties these are: a component's Args or a nested type."""
        for type_def in self._type_defs.values():
            if type_def.properties is properties:
                return type_def.python_type
        for name, component in self._component_defs.items():
            if component.inputs is properties:
                return inspect.get_annotations(self._components[name].__init__)["args"]
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _needs_value(prop: PropertyDefinition) -> bool:
    """Plain properties, and objects of the package's own types (the host maps their keys)."""
    return bool(prop.plain) or (prop.ref or "").startswith("#/types/")


def _known(value: Any, path: str) -> Any:
    """The value of a known, non-secret Output; the value itself if it is not an Output."""
    if not isinstance(value, Output):
        return value
    if not _sync_await(value.is_known()):
        raise InputPropertyError(
            path, f"{path} must be known when the component is created; it comes from a resource not yet created"
        )
    if _sync_await(value.is_secret()):
        raise InputPropertyError(path, f"{path} cannot be a secret: the component needs its value in plain text")
    return _sync_await(value.future())


def _prompt(value: Any, prop: PropertyDefinition, path: str) -> Any:
    """A plain property's value with every Output in it resolved, as far as the schema says plain."""
    if not _needs_value(prop):
        return value
    value = _known(value, path)
    if isinstance(value, list) and prop.items is not None:
        return [_prompt(item, prop.items, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict) and prop.additional_properties is not None:
        return {key: _prompt(item, prop.additional_properties, f"{path}.{key}") for key, item in value.items()}
    return value


def _integers(value: Any, prop: PropertyDefinition) -> Any:
    """Integral floats of integer properties (and of lists and maps of them) as ints."""
    if prop.type == PropertyType.INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list) and prop.items is not None:
        return [_integers(item, prop.items) for item in value]
    if isinstance(value, dict) and prop.additional_properties is not None:
        return {key: _integers(item, prop.additional_properties) for key, item in value.items()}
    return value


def provider() -> Provider:
    return Provider(COMPONENTS, NAME, version=VERSION)


if __name__ == "__main__":
    # The language host runs `python <this folder> <engine address> [flags]`; main() reads the
    # engine address and serves the provider over gRPC, printing its port.
    main(provider(), sys.argv[1:])
