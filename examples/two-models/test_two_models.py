"""This project tested offline: its program rendered under Pulumi's mocks, its objects asserted on."""

from pathlib import Path

from vllm_serving_components.testing import render_program


def test_each_model_has_its_own_route_on_one_host_chosen_by_the_body():
    rendering = render_program(Path(__file__).parent, stack="dev", config={"host": "ai.example.com"})
    routes = [obj.manifest["spec"] for obj in rendering.objects if obj.kind == "HTTPRoute"]
    assert sorted(r["rules"][0]["matches"][0]["headers"][0]["value"] for r in routes) == ["qwen2.5-coder-1.5b", "qwen3-0.6b"]
    assert rendering.outputs["endpoint"] == "https://ai.example.com/v1"
