"""Another Pulumi project can pip install the components and use them."""

import shutil
import subprocess
import sys

from conftest import ROOT


def test_components_install_as_a_package(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"
    # pip builds in the source tree; build from a copy so the checkout stays clean.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", ".git", "rendered", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    for pattern in ("*.py", "vllm_flags/*.json"):
        installed = sorted(p.name for p in (target / "components").glob(pattern))
        assert installed == sorted(p.name for p in (ROOT / "components").glob(pattern))
    probe = (
        "import components, components.gpu_claim as g, components.vllm_args as v; "
        "assert components.__file__.startswith(sys.argv[1]); "
        "assert v.flag_table('0.11.0').release == '0.11.0'; "
        "print(g.pod_fragment({'backend': 'nvidia', 'count': 2})['limits'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import sys; " + probe, str(target)],
        env={"PYTHONPATH": str(target)}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'nvidia.com/gpu': '2'}"


def test_components_fit_the_cross_language_component_host():
    """Pulumi's component host infers a schema from the Args TypedDicts and their docstrings."""
    from pulumi.provider.experimental.analyzer import Analyzer

    from components import Autoscaler, Exposure, GpuClaim, ModelStore, VLLMServer

    result = Analyzer("vllm-serving").analyze([GpuClaim, ModelStore, VLLMServer, Exposure, Autoscaler])
    definitions = result["component_definitions"]
    assert sorted(definitions) == ["Autoscaler", "Exposure", "GpuClaim", "ModelStore", "VLLMServer"]
    required = {name: sorted(k for k, p in d.inputs.items() if not p.optional) for name, d in definitions.items()}
    assert required["GpuClaim"] == ["count"]
    assert required["ModelStore"] == ["modelId", "namespace"]
    assert definitions["ModelStore"].outputs.keys() == {"claimName", "mountPath", "modelPath", "markerName"}
    assert definitions["Exposure"].outputs["endpoint"].description
    for definition in definitions.values():
        for name, prop in definition.inputs.items():
            assert prop.description, f"{definition.name}.{name} has no docstring"
