"""python -m policy.check: the pack's rules on a rendered folder, without the Pulumi CLI.

It must report what the pack reports under the CLI: the same rules, on the objects as the
pack sees them (the pack's own validate callbacks, through pulumi-policy's proxy, are the
reference here: test_policy's check and check_stack)."""

import copy

import pytest
import yaml
from conftest import ROOT, SHIPPED_STACKS, project_with_stack
from test_policy import check, check_stack

from policy import check as offline
from policy import rules
from stack import render
from vllm_serving_components.testing import write_rendering


def rendered_folder(tmp_path, settings, name="bad"):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    rendering = render.render_stack(project_with_stack(project, settings), project)
    write_rendering(rendering, tmp_path / name)
    return tmp_path / name, [obj.manifest for obj in rendering.objects]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_shipped_stack_keeps_every_promise(tmp_path, stack, capsys):
    write_rendering(render.render_stack(stack), tmp_path / stack)
    assert offline.main([str(tmp_path / stack)]) == 0
    assert capsys.readouterr().out.strip().endswith("8 policies, 0 violation(s)")


def test_it_reports_what_the_pack_reports(tmp_path, capsys):
    folder, manifests = rendered_folder(tmp_path, {"host": "vllm.example.com", "allowPublicWithoutApiKey": True})
    broken = copy.deepcopy(manifests)
    for manifest in broken:
        if manifest["kind"] == "Deployment":
            manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:latest"
            del manifest["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    (folder / "all.yaml").write_text(yaml.safe_dump_all(broken))
    found = offline.violations(broken)
    by_pack = [(policy.name, message) for manifest in broken for policy in rules.RESOURCE_POLICIES for message in check(policy.rule, manifest)]
    by_pack += [(rules.STACK_POLICY.name, message) for message, _ in check_stack(broken)]
    assert [(name, message) for name, _, message in found] == by_pack
    assert {name for name, _, _ in found} == {"vllm-pinned-images", "vllm-server-probes", "vllm-public-route-needs-api-key"}
    assert offline.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "vllm-pinned-images: Deployment/ai-serving-dev/vllm-qwen3-0-6b:" in out and "3 violation(s)" in out
    # The stack allowed a public host without a key: so may the check, as the pack's config does.
    assert [name for name, _, _ in offline.violations(broken, allow_public_without_api_key=True)] == [
        "vllm-pinned-images", "vllm-server-probes"
    ]


def test_the_gpu_budget_as_the_packs_configuration_sets_it(tmp_path, capsys):
    write_rendering(render.render_stack("prod"), tmp_path / "prod")
    prices = ["--gpu-hourly-price", "NVIDIA-H100-80GB-HBM3=2.50", "--gpu-hourly-price", "NVIDIA-A100-SXM4-80GB=1.80",
              "--gpu-hourly-price", "NVIDIA-H200=3.20"]
    assert offline.main([str(tmp_path / "prod"), "--max-gpus", "16", "--max-monthly-gpu-cost", "37376", *prices]) == 0
    assert capsys.readouterr().out.strip().endswith("8 policies, 0 violation(s)")
    assert offline.main([str(tmp_path / "prod"), "--max-gpus", "8", "--max-monthly-gpu-cost", "37375", *prices]) == 1
    out = capsys.readouterr().out
    assert out.count("vllm-gpu-budget: The stack's") == 2 and "above maxGpus (8)" in out and "2 violation(s)" in out
    with pytest.raises(SystemExit):
        offline.main([str(tmp_path / "prod"), "--gpu-hourly-price", "NVIDIA-H200=-1"])
    assert "is not PRODUCT=price (0 or more)" in capsys.readouterr().err


def test_a_folder_without_a_rendering_is_a_usage_error(tmp_path, capsys):
    assert offline.main([str(tmp_path)]) == 2
    assert "has no all.yaml; render it first" in capsys.readouterr().err


def test_ci_checks_every_shipped_stack_after_the_unit_tests():
    script = (ROOT / ".ci" / "run").read_text()
    unit_tests = script.index(".venv/bin/python -m pytest\n")
    check_line = script.index("python -m policy.check")
    assert unit_tests < check_line < script.index("-m pytest -m e2e")
    assert f"for stack in {' '.join(SHIPPED_STACKS)}; do" in script
