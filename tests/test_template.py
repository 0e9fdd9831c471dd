"""`pulumi new <repository URL>`: the template section of Pulumi.yaml.

The Pulumi CLI (pkg/cmd/pulumi/project/newcmd/config.go, resolveTemplateConfig) prefixes a
template key without a namespace with the new project's name, offers its default (a string,
apitype.ProjectTemplateConfigValue), writes the answers into the new stack's file and removes
the template section from the new project.
"""

import json

import jsonschema
import yaml
from conftest import ROOT, stack_file

from stack.render import render_stack

PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
TEMPLATE = PROJECT["template"]


def test_the_project_file_fits_pulumis_project_schema():
    schema = json.loads((ROOT / "schemas" / "pulumi" / "project.json").read_text())
    jsonschema.validate(PROJECT, schema)


def test_the_template_asks_for_every_required_setting_and_the_model_gpus_and_host():
    asked = TEMPLATE["config"]
    required = {key for key, spec in PROJECT["config"].items() if "default" not in spec}
    assert required <= asked.keys()
    assert {"modelId", "gpuCount", "host"} <= asked.keys()
    assert asked.keys() <= PROJECT["config"].keys(), "a template key the program does not read"
    for key, spec in asked.items():
        assert isinstance(spec["default"], str), f"{key}: the CLI reads a template default as a string"
        assert len(spec["description"].split()) >= 4, key


def test_a_stack_made_from_the_template_defaults_renders(tmp_path):
    """What `pulumi new --yes` writes (every default, as strings) is a valid stack."""
    config = {f"{PROJECT['name']}:{key}": spec["default"] for key, spec in TEMPLATE["config"].items()}
    stack = stack_file(tmp_path, yaml.safe_dump({"config": config}), base=None)
    rendering = render_stack(stack, tmp_path)
    deployment = rendering.only("Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert rendering.outputs["servedModelName"] == "qwen3-0.6b"
    assert rendering.outputs["endpoint"].startswith("http://vllm-qwen3-0-6b.ai-serving-dev.svc")


def test_the_template_defaults_to_the_dev_stacks_namespace_never_prods():
    """A `pulumi new --yes` stack lands beside dev's objects, not among production's."""
    namespaces = {stack: yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["vllm-serving:namespace"]
                  for stack in ("dev", "prod")}
    assert TEMPLATE["config"]["namespace"]["default"] == namespaces["dev"] != namespaces["prod"]
