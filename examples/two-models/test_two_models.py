"""This project tested offline: its program rendered under Pulumi's mocks, its objects asserted on."""

from pathlib import Path

from vllm_serving_components.testing import render_program


def test_each_model_is_public_under_its_own_prefix_on_one_host():
    rendering = render_program(Path(__file__).parent, stack="dev", config={"host": "ai.example.com"})
    routes = [obj.manifest["spec"] for obj in rendering.objects if obj.kind == "HTTPRoute"]
    assert sorted(route["rules"][0]["matches"][0]["path"]["value"] for route in routes) == ["/chat/v1", "/coder/v1"]
    assert rendering.outputs["chatEndpoint"] == "https://ai.example.com/chat/v1"
