"""vllm_serving_components.testing: a library user renders their own program as the stack renders.

The stack's renderer runs through it (one code path), so what it writes is what
``python -m stack.render`` writes; a component's bad argument is a message and exit 2, not a
traceback.
"""

import textwrap

from conftest import ROOT

from stack import render
from vllm_serving_components import testing

CONSUMER_PROGRAM = """
import pulumi
from vllm_serving_components import PORT, PORT_NAME, Exposure

config = pulumi.Config()
Exposure("api", {"namespace": "models", "selector": {"app": "x"}, "port": PORT, "target_port_name": PORT_NAME,
                 "host": config.get("host"), "server_takes_api_key": config.get_bool("keyed")})
"""


def consumer(tmp_path, program=CONSUMER_PROGRAM, stack_config=""):
    (tmp_path / "Pulumi.yaml").write_text("name: consumer\nruntime: python\n")
    (tmp_path / "__main__.py").write_text(textwrap.dedent(program))
    if stack_config:
        (tmp_path / "Pulumi.dev.yaml").write_text(stack_config)
    return tmp_path


def test_the_stack_renders_through_the_library_and_writes_the_same_files(tmp_path):
    assert render.main(["dev", "--out", str(tmp_path / "stack")]) == 0
    assert testing.main([str(ROOT), "--stack", "dev", "--out", str(tmp_path / "library")]) == 0
    stack_files = sorted(path.name for path in (tmp_path / "stack").iterdir())
    assert stack_files == sorted(path.name for path in (tmp_path / "library").iterdir())
    assert {"all.yaml", "outputs.json", "options.json", "summary.md"} <= set(stack_files)
    for name in stack_files:
        assert (tmp_path / "stack" / name).read_text() == (tmp_path / "library" / name).read_text(), name


def test_a_consumer_program_renders_with_its_stack_file_and_overrides(tmp_path):
    project = consumer(tmp_path, stack_config="config:\n  consumer:host: a.example.com\n  consumer:keyed: true\n")
    first = testing.render_program(project, "dev")
    second = testing.render_program(project, "dev", config={"host": "b.example.com"})
    # Two renders in one test each see their own objects: every call starts a fresh runtime.
    assert [o.manifest["spec"]["rules"][0]["host"] for o in first.objects if o.kind == "Ingress"] == ["a.example.com"]
    assert [o.manifest["spec"]["rules"][0]["host"] for o in second.objects if o.kind == "Ingress"] == ["b.example.com"]


def test_a_consumers_bad_argument_exits_2_with_the_message_and_no_traceback(tmp_path, capsys):
    project = consumer(tmp_path, stack_config="config:\n  consumer:host: a.example.com\n")
    out = tmp_path / "out"
    for main, args in ((testing.main, [str(project), "--out", str(out)]), (render.main, ["dev", "--project-dir", str(project), "--out", str(out)])):
        assert main(args) == 2
        error = capsys.readouterr().err
        assert "Exposure api: host is public but Exposure is not told whether the server takes an API key" in error
        assert "Traceback" not in error
        assert not out.exists()


def test_an_encrypted_value_is_asked_for_rather_than_rendered_wrong(tmp_path, capsys):
    project = consumer(tmp_path, stack_config="config:\n  consumer:host:\n    secure: AAABAD==\n")
    assert testing.main([str(project)]) == 2
    assert "consumer:host is encrypted in Pulumi.dev.yaml; pass its value in config" in capsys.readouterr().err


def test_each_rendering_keeps_its_own_warnings(tmp_path):
    """A warning about a resource is logged once its URN is known, from a task of its own: each
    rendering waits for those, so none is lost and none lands in the next rendering."""
    warned = testing.render_program(ROOT, "dev")
    quiet = testing.render_program(consumer(tmp_path, stack_config="config:\n  consumer:keyed: true\n"), "dev")
    assert len([warning for warning in warned.warnings if "HAMi slices add vllm --enforce-eager" in warning]) == 1
    assert [warning.split(":")[0] for warning in warned.warnings] == ["GpuClaim vllm-qwen3-0-6b", "ModelStore vllm-qwen3-0-6b"]
    assert quiet.warnings == []
