"""The README's commands and the documentation's examples are the ones that work."""

import re

from conftest import ROOT, run_component

README = (ROOT / "README.md").read_text()
LIBRARY = (ROOT / "docs" / "library.md").read_text()


def code_blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_commands():
    """The unit-test command, then the end-to-end test command (with the tools CI built)."""
    test_command = next(block.strip() for block in code_blocks("sh") if "pytest" in block)
    e2e_command = next(
        line.split("#")[0].strip()
        for block in code_blocks("sh")
        for line in block.splitlines()
        if "pytest -m e2e" in line
    )
    ci_commands = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    unit = ci_commands.index(test_command)
    e2e = next(i for i, line in enumerate(ci_commands) if line.endswith(e2e_command))
    assert unit < e2e


def test_the_library_pages_composition_creates_a_served_model():
    (example,) = [block for block in code_blocks("python", LIBRARY) if "from vllm_serving_components import PORT" in block]
    rendering = run_component(lambda: exec(example, {}))
    assert sorted(o.kind for o in rendering.objects) == [
        "ConfigMap", "Deployment", "Job", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
        "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceAccount",
    ]
    deployment = rendering.only("Deployment")
    assert rendering.only("Service")["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_library_pages_example_test_is_the_examples_own():
    """The ten-line test on docs/library.md is examples/two-models/test_two_models.py's, which CI runs."""
    (example,) = [block for block in code_blocks("python", LIBRARY) if "render_program" in block]
    test_file = (ROOT / "examples" / "two-models" / "test_two_models.py").read_text()
    assert example.strip() in test_file
    assert len(example.strip().splitlines()) <= 12
