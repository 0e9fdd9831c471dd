"""The `vllm serve` option tables: the reader on a synthetic source tree, and the checked-in tables."""

import hashlib
import importlib.util
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "vllm_flag_fixture"
TABLES = ROOT / "components" / "vllm_flags"


def _load_tool():
    spec = importlib.util.spec_from_file_location("vllm_flag_table", ROOT / "tools" / "vllm_flag_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

REQ = "required"


def opt(dest, takes=REQ, **extra):
    return {"dest": dest, "takes_value": takes, **extra}


def boolean(dest, *spellings, **extra):
    return {s: opt(dest, "none", **extra) for s in spellings}


EXPECTED_FIXTURE_OPTIONS = {
    # argparse's own help of the serve sub-parser
    "-h": opt("help", "none"),
    "--help": opt("help", "none"),
    # make_arg_parser's literal calls (the positional model_tag is left out)
    "--headless": opt("headless", "none"),
    "--api-server-count": opt("api_server_count"),
    "-asc": opt("api_server_count"),
    "--config": opt("config"),
    # FrontendArgs fields, base class first, with the _customize_cli_kwargs edits
    "--lora-modules": opt("lora_modules"),  # list of a dataclass: nargs="+", custom Action, not JSON
    "--chat-template": opt("chat_template"),
    **boolean("enable_auto_tool_choice", "--enable-auto-tool-choice", "--no-enable-auto-tool-choice",
              "--disable-auto-tool-choice"),
    "--tool-call-parser": opt("tool_call_parser"),
    "--host": opt("host"),
    "--port": opt("port"),
    "-P": opt("port"),  # from frontend_kwargs["port"]["flags"]
    "--api-key": opt("api_key"),
    "--allowed-origins": opt("allowed_origins", json=True),  # type=json.loads, nargs deleted
    "--middleware": opt("middleware"),  # action="append"
    **boolean("disable_uvicorn_access_log", "--disable-uvicorn-access-log", "--no-disable-uvicorn-access-log",
              "--enable-uvicorn-access-log"),
    "--uvicorn-log-level": opt("uvicorn_log_level"),
    # ModelConfig
    "--model": opt("model"),  # behind the `sys.argv` test, true for a plain `vllm serve MODEL`
    "--task": opt("task", deprecated=True),
    "--dtype": opt("dtype"),
    "--max-model-len": opt("max_model_len"),
    **boolean("enforce_eager", "--enforce-eager", "--no-enforce-eager"),
    "--served-model-name": opt("served_model_name"),
    "--hf-token": opt("hf_token", "optional"),  # bool | str | None: nargs="?"
    "--rope-scaling": opt("rope_scaling", json=True),
    "--hf-overrides": opt("hf_overrides", json=True),
    **boolean("trust_remote_code", "--trust-remote-code", "--no-trust-remote-code"),
    **boolean("disable_cascade_attn", "--disable-cascade-attn", "--no-disable-cascade-attn",
              "--enable-cascade-attn", deprecated=True),
    # ParallelConfig
    "--pipeline-parallel-size": opt("pipeline_parallel_size"),
    "-pp": opt("pipeline_parallel_size"),
    "--tensor-parallel-size": opt("tensor_parallel_size"),
    "-tp": opt("tensor_parallel_size"),
    "--data-parallel-size": opt("data_parallel_size"),
    "-dp": opt("data_parallel_size"),
    "--data-parallel-rank": opt("data_parallel_rank"),
    "-dpn": opt("data_parallel_rank"),
    **boolean("enable_expert_parallel", "--enable-expert-parallel", "-ep", "--no-enable-expert-parallel",
              "--disable-expert-parallel"),
    **boolean("disable_custom_all_reduce", "--disable-custom-all-reduce", "--no-disable-custom-all-reduce",
              "--enable-custom-all-reduce"),
    "--max-parallel-loading-workers": opt("max_parallel_loading_workers"),
    "--num-redundant-experts": opt("num_redundant_experts", deprecated=True),
    # CacheConfig (a plain dataclasses.dataclass)
    "--block-size": opt("block_size"),
    "--gpu-memory-utilization": opt("gpu_memory_utilization"),
    "--device-memory-utilization": opt("gpu_memory_utilization"),  # second spelling, explicit dest
    "--swap-space": opt("swap_space"),
    "--kv-cache-dtype": opt("kv_cache_dtype"),
    **boolean("enable_prefix_caching", "--enable-prefix-caching", "--no-enable-prefix-caching",
              "--disable-prefix-caching"),
    "--cpu-offload-gb": opt("cpu_offload_gb", deprecated=True),  # help from a module-level message
    # SchedulerConfig
    "--max-num-seqs": opt("max_num_seqs"),
    **boolean("enable_chunked_prefill", "--enable-chunked-prefill", "--no-enable-chunked-prefill",
              "--disable-chunked-prefill"),
    "--cuda-graph-sizes": opt("cuda_graph_sizes"),
    "--guided-decoding-backend": opt("guided_decoding_backend", deprecated=True),
    "--guided-decoding-disable-fallback": opt("guided_decoding_disable_fallback", deprecated=True),  # type=bool
    # VllmConfig: dataclass-typed fields take JSON
    "--compilation-config": opt("compilation_config", json=True),
    "-cc": opt("compilation_config", json=True),
    "--kv-transfer-config": opt("kv_transfer_config", json=True),
    "--additional-config": opt("additional_config", json=True),
    "--optimization-level": opt("optimization_level"),
    "-O": opt("optimization_level", rewritten_to="--optimization-level"),  # parse_args rewrite
    # literal calls on the parser itself
    "--log-config-file": opt("log_config_file", deprecated=True),  # DeprecatedLogConfigFileAction
    "--disable-log-stats": opt("disable_log_stats", "none"),
    "--shutdown-timeout": opt("shutdown_timeout"),
    # AsyncEngineArgs
    **boolean("enable_log_requests", "--enable-log-requests", "--no-enable-log-requests",
              "--disable-log-requests"),
}


def test_reader_gives_the_exact_table_of_the_synthetic_tree():
    table = tool.read_flag_table(FIXTURE)
    assert table["normalisation"] == {
        "underscores_to_dashes": True,
        "equals_value": True,
        "dotted_json_keys": True,
        "enable_disable_pairs": True,
        "abbreviations": True,
    }
    options = table["options"]
    assert sorted(set(options) - set(EXPECTED_FIXTURE_OPTIONS)) == []
    assert sorted(set(EXPECTED_FIXTURE_OPTIONS) - set(options)) == []
    for flag, entry in EXPECTED_FIXTURE_OPTIONS.items():
        assert options[flag] == entry, flag


def _copy_fixture(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree)
    return tree


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_without_the_action_registry_there_are_no_enable_disable_pairs(tmp_path):
    """Releases whose parser does not register EnableDisableAction only get --x and --no-x."""
    tree = _copy_fixture(tmp_path)
    _edit(tree / "vllm/utils/argparse_utils.py",
          "        self.register(\"action\", BooleanOptionalAction, EnableDisableAction)\n", "")
    table = tool.read_flag_table(tree)
    assert table["normalisation"]["enable_disable_pairs"] is False
    options = table["options"]
    assert options["--no-enable-prefix-caching"] == opt("enable_prefix_caching", "none")
    for gone in ("--disable-prefix-caching", "--enable-custom-all-reduce", "--disable-log-requests"):
        assert gone not in options
    assert len(options) == len(EXPECTED_FIXTURE_OPTIONS) - 8


def test_union_syntax_is_not_flattened_where_get_type_hints_ignores_it(tmp_path):
    """Without UnionType handling, `bool | None` is one opaque hint: a string-valued option."""
    tree = _copy_fixture(tmp_path)
    path = tree / "vllm/engine/arg_utils.py"
    _edit(path, "    if origin in {Union, UnionType}:\n", "    if origin is Union:\n")
    options = tool.read_flag_table(tree)["options"]
    assert options["--max-parallel-loading-workers"] == opt("max_parallel_loading_workers")
    assert options["--enable-prefix-caching"] == opt("enable_prefix_caching", "none")  # Optional[bool]
    assert "--hf-token" in options and options["--hf-token"]["takes_value"] == "required"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            "    parser.add_argument(*_extra_names(), type=int)\n    parser = FrontendArgs.add_cli_args(parser)\n",
            r"cli_args\.py:\d+: parser\.add_argument\(\*_extra_names\(\), type=int\): option strings not understood",
        ),
        (
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            "    if os.environ.get('X'):\n        parser.add_argument('--x')\n"
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            r"cli_args\.py:\d+: os\.environ\.get\('X'\): condition around parser code not understood",
        ),
        (
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            "    parser.add_argument('--y', action=_pick_action())\n    parser = FrontendArgs.add_cli_args(parser)\n",
            r"cli_args\.py:\d+: .*action not understood",
        ),
        (
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            "    parser.add_argument('--host')\n    parser = FrontendArgs.add_cli_args(parser)\n",
            r"option string --host added twice",
        ),
        (
            "    parser = FrontendArgs.add_cli_args(parser)\n",
            "    _plugin_hook(parser)\n    parser = FrontendArgs.add_cli_args(parser)\n",
            r"_plugin_hook\(parser\): passes the parser or its kwargs to code that cannot be followed",
        ),
    ],
)
def test_calls_it_cannot_understand_fail_loudly(tmp_path, old, new, message):
    tree = _copy_fixture(tmp_path)
    _edit(tree / "vllm/entrypoints/openai/cli_args.py", old, new)
    with pytest.raises(tool.FlagTableError, match=message):
        tool.read_flag_table(tree)


def test_platform_hooks_that_add_options_fail_loudly(tmp_path):
    tree = _copy_fixture(tmp_path)
    _edit(tree / "vllm/platforms/__init__.py", '        """Out-of-tree platforms may update the parser here."""\n',
          '        parser.add_argument("--device")\n')
    with pytest.raises(tool.FlagTableError, match=r"platforms/__init__\.py:\d+ adds arguments"):
        tool.read_flag_table(tree)


def _fixture_wheel(tmp_path: Path, version: str) -> Path:
    wheel = tmp_path / f"vllm-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path in sorted(FIXTURE.rglob("*.py")):
            zf.write(path, path.relative_to(FIXTURE).as_posix())
        zf.writestr(f"vllm-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return wheel


def test_command_line_reads_a_wheel_and_writes_a_stable_file(tmp_path):
    wheel = _fixture_wheel(tmp_path, "9.9.9")
    out = tmp_path / "out"
    assert tool.main(["9.9.9", "--wheel", str(wheel), "--out", str(out)]) == 0
    text = (out / "v9.9.9.json").read_text()
    document = json.loads(text)
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["release"] == "9.9.9"
    assert document["source"] == wheel.name
    assert document["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert document["options"] == EXPECTED_FIXTURE_OPTIONS


def test_command_line_refuses_a_wheel_of_another_release(tmp_path, capsys):
    wheel = _fixture_wheel(tmp_path, "9.9.9")
    assert tool.main(["1.0.0", "--wheel", str(wheel), "--out", str(tmp_path / "out")]) == 1
    assert "holds vllm 9.9.9, not 1.0.0" in capsys.readouterr().err
    assert not (tmp_path / "out" / "v1.0.0.json").exists()


# --------------------------------------------------------------------------- checked-in tables

CHECKED_IN = sorted(TABLES.glob("v*.json"))
ENTRY_KEYS = {"dest", "takes_value", "json", "deprecated", "rewritten_to"}

PROJECT_FLAGS = (
    "--served-model-name", "--host", "--port", "--tensor-parallel-size", "--pipeline-parallel-size",
    "--gpu-memory-utilization", "--max-model-len", "--enforce-eager", "--disable-custom-all-reduce",
    "--api-key", "--safetensors-load-strategy", "--enable-prefix-caching",
)


def test_the_releases_the_project_relies_on_are_checked_in():
    assert {p.name for p in CHECKED_IN} >= {"v0.11.0.json", "v0.33.0.json", "v0.34.0.json"}


def checked_table(path: Path, keys: set[str]) -> dict:
    """A checked-in per-release table (of flags or metrics): in the generators' stable format, with
    these keys, named after its release, read from that release's wheel."""
    text = path.read_text()
    document = json.loads(text)
    assert text == tool.dump(document), "not in the generator's stable format"
    assert set(document) == {"release", "source", "sha256", *keys}
    assert path.name == f"v{document['release']}.json"
    assert re.fullmatch(r"vllm-" + re.escape(document["release"]) + r"-.+\.whl", document["source"])
    assert re.fullmatch(r"[0-9a-f]{64}", document["sha256"])
    return document


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: p.name)
def test_checked_in_table_is_well_formed(path):
    document = checked_table(path, {"normalisation", "options"})
    assert set(document["normalisation"]) == {
        "underscores_to_dashes", "equals_value", "dotted_json_keys", "enable_disable_pairs", "abbreviations"}
    assert all(isinstance(v, bool) for v in document["normalisation"].values())

    options = document["options"]
    by_dest: dict[str, list[str]] = {}
    for flag, entry in options.items():
        assert re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9-]*", flag), flag
        assert set(entry) <= ENTRY_KEYS and {"dest", "takes_value"} <= set(entry), flag
        assert entry["takes_value"] in tool.TAKES_VALUE, flag
        assert entry["dest"].isidentifier(), flag
        assert entry.get("json", True) is True and entry.get("deprecated", True) is True, flag
        by_dest.setdefault(entry["dest"], []).append(flag)
        if "rewritten_to" in entry:
            target = options[entry["rewritten_to"]]
            assert (target["dest"], target["takes_value"]) == (entry["dest"], entry["takes_value"]), flag
    for dest, flags in by_dest.items():
        # one option: every spelling takes values the same way, and one of them is a long option
        assert len({options[f]["takes_value"] for f in flags}) == 1, flags
        assert any(f.startswith("--") for f in flags), flags
    for flag, entry in options.items():
        if flag.startswith("--no-") and "--" + flag[5:] in options:
            assert options["--" + flag[5:]]["dest"] == entry["dest"], flag
            assert entry["takes_value"] == "none", flag
    assert options["-h"] == options["--help"] == {"dest": "help", "takes_value": "none"}


@pytest.mark.parametrize("release", ["0.11.0", "0.34.0"])
def test_the_flags_the_project_passes_exist(release):
    options = json.loads((TABLES / f"v{release}.json").read_text())["options"]
    missing = [flag for flag in PROJECT_FLAGS if flag not in options]
    assert missing == []
    assert options["-tp"]["dest"] == options["--tensor-parallel-size"]["dest"]
    assert options["--no-enable-prefix-caching"]["dest"] == options["--enable-prefix-caching"]["dest"]
    assert options["--enforce-eager"]["takes_value"] == "none"
    assert options["--api-key"]["takes_value"] == "required"
