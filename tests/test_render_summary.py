"""What `python -m stack.render` shows a reviewer (the table, summary.md, options.json) and
rendering a stack file kept outside the project."""

import json
import shutil

import pytest
import yaml
from conftest import ROOT

from stack import render
from stack.render import render_stack
from vllm_serving_components import summary as review
from vllm_serving_components.summary import markdown_summary, object_details, options_document, summary, table_lines
from vllm_serving_components.testing import Options, RenderedObject


@pytest.fixture(scope="module")
def multinode():
    return render_stack("multinode", ROOT)


def block(rendering, kind, name=None) -> str:
    """The table's lines for one object: its row and the detail lines under it."""
    lines = table_lines(rendering.objects)
    (index,) = [
        i for i, line in enumerate(lines)
        if line.split()[:1] == [kind] and (name is None or line.split()[2] == name)
    ]
    end = index + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return "\n".join(lines[index:end])


def test_prod_server(rendered):
    assert block(rendered["prod"], "Deployment") == """\
Deployment             ai-serving             vllm-qwen3-235b                                 VLLMServer
  image      vllm/vllm-openai:v0.34.0
  layout     tensor parallel 8, one engine
  gpus       nvidia.com/gpu: 8 on NVIDIA-H100-80GB-HBM3 or NVIDIA-A100-SXM4-80GB or NVIDIA-H200
  resources  cpu 32, memory 160Gi (requests = limits)
  vllm       --served-model-name qwen3-235b, --tensor-parallel-size 8, --pipeline-parallel-size 1,
             --gpu-memory-utilization 0.9, --max-model-len 32768
  api key    $VLLM_API_KEY from Secret vllm-api-key, key api-key
  replicas   1-2, by ScaledObject vllm-qwen3-235b
  rollout    maxSurge 1, maxUnavailable 50%, progress deadline 36m;
             at 1 replica a new one starts before an old one stops, 1 keeps serving
  options    customTimeouts create 33m, update 72m
  dependsOn  DaemonSet/vllm-qwen3-235b-node-cache, Job/vllm-qwen3-235b-stage-0ac3dcd3,
             PersistentVolumeClaim/vllm-qwen3-235b-models, ServiceAccount/vllm-qwen3-235b"""


def test_prod_storage_route_scaler_quota_and_download(rendered):
    prod = rendered["prod"]
    assert block(prod, "PersistentVolumeClaim", "vllm-qwen3-235b-models") == """\
PersistentVolumeClaim  ai-serving             vllm-qwen3-235b-models                          ModelStore
  storage    1Ti, class nfs-client, ReadWriteMany
  options    retainOnDelete; protect; adoptsExisting"""
    assert block(prod, "Ingress") == """\
Ingress                ai-serving             vllm-qwen3-235b                                 Exposure
  host       vllm.ai-serving.company.com /v1, TLS, class nginx
  options    customTimeouts create 10m, update 10m
  dependsOn  Service/vllm-qwen3-235b"""
    assert block(prod, "ScaledObject") == """\
ScaledObject           ai-serving             vllm-qwen3-235b                                 Autoscaler
  replicas   1-2 of Deployment/vllm-qwen3-235b
  triggers   prometheus sum(vllm:num_requests_waiting{namespace="ai-serving",model_name="qwen3-235b"}) above 5 per
             replica
  options    customTimeouts create 10m, update 10m
  dependsOn  Deployment/vllm-qwen3-235b"""
    assert block(prod, "ResourceQuota") == """\
ResourceQuota          ai-serving             vllm-qwen3-235b-gpus                            GpuClaim
  quota      requests.nvidia.com/gpu: 16"""
    assert block(prod, "Job") == """\
Job                    ai-serving             vllm-qwen3-235b-stage-0ac3dcd3                  ModelStore
  image      vllm/vllm-openai:v0.34.0
  resources  requests cpu 1, memory 2Gi; limits cpu 4, memory 8Gi
  options    customTimeouts create 485m, update 485m; deleteBeforeReplace
  dependsOn  ConfigMap/vllm-qwen3-235b-stage-script, PersistentVolumeClaim/vllm-qwen3-235b-models,
             ServiceAccount/vllm-qwen3-235b-stage"""
    assert block(prod, "Namespace", "ai-serving") == """\
Namespace              -                      ai-serving                                      -
  options    retainOnDelete; adoptsExisting"""
    assert block(prod, "ServiceAccount", "vllm-qwen3-235b") == (
        "ServiceAccount         ai-serving             vllm-qwen3-235b                                 VLLMServer"
    ), "only what depends on the namespace: nothing to show"


def test_prod_node_cache_and_image_pre_pull(rendered):
    prod = rendered["prod"]
    assert block(prod, "PersistentVolume") == """\
PersistentVolume       -                      ai-serving-node-cache-vllm-qwen3-235b-d0737db4  NodeCache
  storage    1Ti, hostPath /var/lib/vllm-serving/ai-serving-node-cache/vllm-qwen3-235b on each node,
             for claim vllm-qwen3-235b-node-cache-d0737db4
  dependsOn  Namespace/ai-serving"""
    assert block(prod, "PersistentVolumeClaim", "vllm-qwen3-235b-node-cache-d0737db4") == """\
PersistentVolumeClaim  ai-serving             vllm-qwen3-235b-node-cache-d0737db4             NodeCache
  storage    1Ti, bound to PersistentVolume ai-serving-node-cache-vllm-qwen3-235b-d0737db4, ReadWriteOnce
  dependsOn  PersistentVolume/ai-serving-node-cache-vllm-qwen3-235b-d0737db4"""
    assert block(prod, "DaemonSet", "vllm-qwen3-235b-node-cache") == """\
DaemonSet              ai-serving             vllm-qwen3-235b-node-cache                      NodeCache
  image      vllm/vllm-openai:v0.34.0
  resources  requests cpu 500m, memory 256Mi; limits cpu 2, memory 1Gi
  options    customTimeouts create 60m, update 60m
  dependsOn  ConfigMap/vllm-qwen3-235b-node-cache-script, DaemonSet/vllm-qwen3-235b-node-cache-prepare,
             Job/vllm-qwen3-235b-stage-0ac3dcd3, PersistentVolumeClaim/vllm-qwen3-235b-models,
             PersistentVolumeClaim/vllm-qwen3-235b-node-cache-d0737db4, RoleBinding/vllm-qwen3-235b-node-cache"""
    assert block(prod, "DaemonSet", "vllm-qwen3-235b-image-pre-pull") == """\
DaemonSet              ai-serving             vllm-qwen3-235b-image-pre-pull                  ImagePrePull
  image      vllm/vllm-openai:v0.34.0
  resources  cpu 1m, memory 16Mi (requests = limits)
  dependsOn  PriorityClass/vllm-qwen3-235b-image-pre-pull, ServiceAccount/vllm-qwen3-235b-image-pre-pull"""


def test_dev_server_on_a_hami_slice_and_its_volume(rendered):
    dev = rendered["dev"]
    assert block(dev, "Deployment") == """\
Deployment             ai-serving-dev  vllm-qwen3-0-6b                 VLLMServer
  image      vllm/vllm-openai:v0.34.0
  layout     tensor parallel 1, one engine
  gpus       nvidia.com/gpu: 1, nvidia.com/gpucores: 50, nvidia.com/gpumem: 12288; scheduler hami-scheduler
  resources  cpu 4, memory 16Gi (requests = limits)
  vllm       --served-model-name qwen3-0.6b, --tensor-parallel-size 1, --pipeline-parallel-size 1,
             --gpu-memory-utilization 0.8, --max-model-len 8192, --enforce-eager
  api key    none: /v1 answers anyone who reaches it
  replicas   1
  rollout    maxSurge 1, maxUnavailable 0, progress deadline 38m; at 1 replica a new one starts before an old one stops,
             1 keeps serving
  options    customTimeouts create 35m, update 38m
  dependsOn  Job/vllm-qwen3-0-6b-stage-8e0ef42a, PersistentVolumeClaim/vllm-qwen3-0-6b-models,
             ServiceAccount/vllm-qwen3-0-6b"""
    assert block(dev, "PersistentVolumeClaim") == """\
PersistentVolumeClaim  ai-serving-dev  vllm-qwen3-0-6b-models          ModelStore
  storage    20Gi, class (cluster default), ReadWriteOnce
  options    retainOnDelete; adoptsExisting"""


def test_multinode_leader_worker_set(multinode):
    assert block(multinode, "LeaderWorkerSet") == """\
LeaderWorkerSet        ai-serving-mn  vllm-qwen3-235b-mn                 VLLMServer
  image      vllm/vllm-openai:v0.34.0
  group      2 pods (leader + 1 worker)
  layout     tensor parallel 8 x pipeline parallel 2, one engine
  gpus       each pod: nvidia.com/gpu: 8 on NVIDIA-A100-SXM4-40GB or NVIDIA-A100-PCIE-40GB
  resources  each pod: cpu 32, memory 160Gi (requests = limits)
  vllm       leader: --served-model-name qwen3-235b, --tensor-parallel-size 8, --pipeline-parallel-size 2,
             --gpu-memory-utilization 0.9, --max-model-len 32768, --safetensors-load-strategy eager,
             --distributed-executor-backend mp, --nnodes 2, --master-addr $LWS_LEADER_ADDRESS, --node-rank 0
  vllm       worker: --served-model-name qwen3-235b, --tensor-parallel-size 8, --pipeline-parallel-size 2,
             --gpu-memory-utilization 0.9, --max-model-len 32768, --safetensors-load-strategy eager,
             --distributed-executor-backend mp, --nnodes 2, --master-addr $LWS_LEADER_ADDRESS,
             --node-rank $LWS_WORKER_INDEX, --headless
  api key    leader: $VLLM_API_KEY from Secret vllm-api-key, key api-key
  replicas   1-2 groups, by ScaledObject vllm-qwen3-235b-mn
  rollout    maxSurge 1, maxUnavailable 50%; at 1 group a new one starts before an old one stops, 1 keeps serving
  options    customTimeouts create 100m, update 206m
  dependsOn  Job/vllm-qwen3-235b-mn-stage-c96f960d, PersistentVolumeClaim/vllm-qwen3-235b-mn-models,
             ServiceAccount/vllm-qwen3-235b-mn"""
    assert block(multinode, "ScaledObject").splitlines()[1] == "  replicas   1-2 of LeaderWorkerSet/vllm-qwen3-235b-mn"


@pytest.mark.parametrize("width", [60, 80, 100])
def test_the_whole_summary_honours_the_width(rendered, multinode, width):
    """Every line of the printed summary (rows, details, the note, the outputs) fits, but for a
    single word longer than the width (a URL, a long name), which is never broken."""
    for rendering in (rendered["dev"], rendered["prod"], multinode):
        for line in summary(rendering, width).splitlines():
            assert len(line) <= width or " " not in line.strip() or len(line.split()[-1]) > width - 13, line


def test_extra_args_and_the_keys_secret_show_in_the_review(tmp_path):
    from conftest import project_with_stack

    settings = {"extraArgs": ["--max-num-seqs", "64", "--enable-prefix-caching"], "apiKeySecretName": "team-key"}
    rendering = render_stack(project_with_stack(tmp_path, settings), tmp_path)
    details = dict(object_details(_only(rendering, "Deployment"), rendering.objects))
    assert details["vllm"].endswith("--enforce-eager, --max-num-seqs 64, --enable-prefix-caching")
    assert details["api key"] == "$VLLM_API_KEY from Secret team-key, key api-key"


def _only(rendering, kind):
    (found,) = [obj for obj in rendering.objects if obj.kind == kind]
    return found


@pytest.mark.parametrize("width", [100, 120, 140])
def test_the_table_fits_the_terminal(rendered, multinode, width):
    for rendering in (rendered["dev"], rendered["prod"], multinode):
        lines = table_lines(rendering.objects, width)
        assert max(len(line) for line in lines) <= width
        assert len(lines) == len(rendering.objects) + 1 + sum(
            len(review._wrap(text, width - 13)) for obj in rendering.objects for _, text in object_details(obj, rendering.objects)
        )


def test_the_summary_ends_with_the_outputs_and_the_warnings(rendered):
    text = summary(rendered["prod"])
    assert "\n33 objects for stack prod; dependsOn leaves out the Namespace each object lives in.\nGPU cost (" in text
    assert "\n  max 2 replicas: 16 GPUs, 11,680 GPU-hours per month, 37,376.00 USD per month\nOutputs:\n" in text
    assert '  servedModelName: "qwen3-235b"\n  timeToReady: "28 min: image pull 15 min + read 470 GB from node-local disk at 1000 MB/s 8 min + engine start 5 min"\nWarnings:\n  - ModelStore vllm-qwen3-235b: revision master' in text
    assert text.endswith("/models/Qwen/Qwen3-235B-A22B-Instruct-2507/master/.modelstore-complete.json)")


def test_summary_md_is_a_markdown_table_of_the_same(rendered):
    text = markdown_summary(rendered["prod"])
    lines = text.splitlines()
    assert lines[0] == "### Stack `prod`: 33 objects"
    assert lines[2:4] == ["| Kind | Namespace | Name | Component | What to check |", "|---|---|---|---|---|"]
    assert (
        "| Deployment | ai-serving | vllm-qwen3-235b | VLLMServer | **image** vllm/vllm-openai:v0.34.0"
        "<br>**layout** tensor parallel 8, one engine"
        "<br>**gpus** nvidia.com/gpu: 8 on NVIDIA-H100-80GB-HBM3 or NVIDIA-A100-SXM4-80GB or NVIDIA-H200"
        "<br>**resources** cpu 32, memory 160Gi (requests = limits)<br>**vllm** --served-model-name qwen3-235b, "
        "--tensor-parallel-size 8, --pipeline-parallel-size 1, --gpu-memory-utilization 0.9, --max-model-len 32768"
        "<br>**api key** $VLLM_API_KEY from Secret vllm-api-key, key api-key"
        "<br>**replicas** 1-2, by ScaledObject vllm-qwen3-235b"
        "<br>**rollout** maxSurge 1, maxUnavailable 50%, progress deadline 36m; at 1 replica a new one starts before an "
        "old one stops, 1 keeps serving<br>**options** customTimeouts create 33m, update 72m<br>**dependsOn** "
        "DaemonSet/vllm-qwen3-235b-node-cache, Job/vllm-qwen3-235b-stage-0ac3dcd3, "
        "PersistentVolumeClaim/vllm-qwen3-235b-models, ServiceAccount/vllm-qwen3-235b |"
    ) in lines
    assert "| ServiceAccount | ai-serving | vllm-qwen3-235b-stage | ModelStore | - |" in lines
    assert "| endpoint | `\"https://vllm.ai-serving.company.com/v1\"` |" in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Kind") and not line.startswith("| Output")]
    # The GPU cost's header and its two rows; gpuCost shows there, not among the outputs.
    assert len(rows) == 33 + 3 + len(rendered["prod"].outputs) - 1
    assert all(line.count(" | ") == 4 for line in rows[:33]), "no cell breaks the table"


def test_markdown_cells_escape_what_would_break_the_table():
    obj = RenderedObject(
        manifest={"kind": "Ingress", "metadata": {"name": "x", "namespace": "n"},
                  "spec": {"rules": [{"host": "a|b<c>", "http": {"paths": [{"path": "/v1"}]}}]}},
        component="",
        options=Options(replace_on_changes=("spec.x",)),
    )
    from stack.render import Rendering

    text = markdown_summary(Rendering(stack="s", objects=[obj], outputs={"o": "a|b"}))
    assert "| Ingress | n | x | - | **host** a\\|b&lt;c&gt; /v1, no TLS<br>**options** replaceOnChanges [spec.x] |" in text
    assert "| o | `\"a\\|b\"` |" in text


def test_options_json_holds_every_set_option_by_object(rendered):
    document = options_document(rendered["prod"].objects)
    assert document["PersistentVolumeClaim/ai-serving/vllm-qwen3-235b-models"] == {
        "protect": True, "retainOnDelete": True, "adoptsExisting": True, "dependsOn": ["Namespace/ai-serving"],
    }
    assert document["Namespace/ai-serving"] == {"retainOnDelete": True, "adoptsExisting": True}
    assert document["Deployment/ai-serving/vllm-qwen3-235b"]["customTimeouts"] == {"create": "33m", "update": "72m"}
    assert len(document) == len(rendered["prod"].objects)


def test_the_renderer_writes_the_summary_and_the_options(tmp_path, capsys):
    assert render.main(["prod", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "  gpus       nvidia.com/gpu: 8 on NVIDIA-H100-80GB-HBM3" in printed
    assert (tmp_path / "summary.md").read_text().startswith("### Stack `prod`: 33 objects\n")
    assert json.loads((tmp_path / "options.json").read_text())["Namespace/ai-serving"] == {"retainOnDelete": True, "adoptsExisting": True}


# --- A stack file kept elsewhere -----------------------------------------------------------------


def elsewhere(tmp_path, text=None, name="Pulumi.staging.yaml"):
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    dev["vllm-serving:namespace"] = "ai-serving-staging"
    (folder / name).write_text(text if text is not None else yaml.safe_dump({"config": dev}))
    return folder / name


def test_a_stack_file_from_elsewhere_renders_with_this_program(tmp_path, capsys):
    path = elsewhere(tmp_path)
    out = tmp_path / "out"
    assert render.main(["--stack-file", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "objects for stack staging;" in printed
    outputs = json.loads((out / "outputs.json").read_text())
    assert outputs["namespace"] == "ai-serving-staging"
    assert (out / "summary.md").read_text().startswith("### Stack `staging`:")
    assert not (path.parent / "rendered").exists() and not (ROOT / "rendered" / "staging").exists()


def test_a_stack_file_from_elsewhere_is_read_as_the_cli_reads_it(tmp_path):
    # Pulumi.yaml's defaults apply, the legacy <project>:config:<key> form is read, and a
    # repeated key is an error naming the file's lines.
    lines = [line for line in (ROOT / "Pulumi.dev.yaml").read_text().splitlines() if "vllm-serving:namespace:" not in line]
    lines = [line.replace("vllm-serving:modelId:", "vllm-serving:config:modelId:") for line in lines]
    path = elsewhere(tmp_path, "\n".join(lines) + "\n")
    rendering = render_stack("staging", ROOT, stack_file=path)
    assert rendering.outputs["namespace"] == "ai-serving"
    assert rendering.outputs["modelPath"] == "/models/Qwen/Qwen3-0.6B/master"
    first = next(number for number, line in enumerate(lines, start=1) if "vllm-serving:gpuCount:" in line)
    path.write_text("\n".join(lines) + "\n  vllm-serving:gpuCount: 1\n")
    with pytest.raises(render.ConfigError) as raised:
        render_stack("staging", ROOT, stack_file=path)
    assert f'vllm-serving:gpuCount = "1": is set twice in Pulumi.staging.yaml (lines {first} and {len(lines) + 1}); keep one' in str(
        raised.value
    )


def test_a_stack_file_from_elsewhere_with_a_problem_exits_2(tmp_path, capsys):
    path = elsewhere(tmp_path, "config:\n  vllm-serving:name: [a\n")
    assert render.main(["--stack-file", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: stack staging: Pulumi.staging.yaml:3:1: not valid YAML")
    assert not (tmp_path / "out").exists()


def test_a_stack_file_named_otherwise_needs_the_stack_name(tmp_path, capsys):
    path = elsewhere(tmp_path, name="staging-config.yaml")
    assert render.main(["--stack-file", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "cannot tell the stack from the file's name; name it Pulumi.<stack>.yaml or give the stack name too" in capsys.readouterr().err
    assert render.main(["staging", "--stack-file", str(path), "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "outputs.json").read_text())["namespace"] == "ai-serving-staging"


def test_a_missing_stack_file_or_no_stack_at_all_exits_2(tmp_path, capsys):
    assert render.main(["--stack-file", str(tmp_path / "Pulumi.nope.yaml")]) == 2
    assert f"error: --stack-file {tmp_path / 'Pulumi.nope.yaml'}: no such file" in capsys.readouterr().err
    assert render.main([]) == 2
    assert "give a stack name (reads Pulumi.<stack>.yaml) or --stack-file" in capsys.readouterr().err


def test_a_project_dir_without_pulumi_yaml_says_what_is_missing_and_suggests_stack_file(tmp_path, capsys):
    path = elsewhere(tmp_path)
    shutil.copy(ROOT / "Pulumi.prod.yaml", path.parent / "Pulumi.prod.yaml")
    assert render.main(["staging", "--project-dir", str(path.parent), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err == (
        f"error: stack staging: {path.parent} has no Pulumi.yaml, the project file with the config schema and the program "
        "(it holds stack files: Pulumi.prod.yaml, Pulumi.staging.yaml); point --project-dir at the folder that holds "
        "Pulumi.yaml, or render a stack file kept elsewhere with this project's program: "
        f"python -m stack.render --stack-file {path.parent / 'Pulumi.prod.yaml'}\n"
    )
    assert not (tmp_path / "out").exists()
    assert render.main(["staging", "--project-dir", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} has no Pulumi.yaml: there is no such directory" in capsys.readouterr().err


def test_the_plan_shows_what_the_program_warns_of(rendered):
    # Every shipped stack stages a branch: the table and summary.md say so, and how to pin.
    for stack in ("dev", "prod"):
        (warning,) = [w for w in rendered[stack].warnings if w.startswith("ModelStore ")]
        assert "revision master is the hub's default branch" in warning
        assert "pin revision to a 40-character commit id" in warning
    text = summary(rendered["dev"])
    assert text.split("Warnings:\n", 1)[1].startswith("  - GpuClaim vllm-qwen3-0-6b: HAMi slices add vllm --enforce-eager")
    assert "  - ModelStore vllm-qwen3-0-6b: revision master is the hub's default branch" in text
    markdown = markdown_summary(rendered["prod"])
    assert "**Warnings**\n\n- ModelStore vllm-qwen3-235b: revision master is the hub's default branch" in markdown


def test_a_plan_without_warnings_has_no_warnings_section(rendered):
    from stack.render import Rendering

    quiet = Rendering(stack="s", objects=rendered["dev"].objects, outputs={})
    assert "Warnings" not in summary(quiet) and "Warnings" not in markdown_summary(quiet)


def test_a_data_expert_group_shows_its_layout_and_what_each_pod_adds():
    block_text = block(render_stack("moe", ROOT), "LeaderWorkerSet")
    assert "  layout     16 engines (data parallel) x tensor parallel 1, experts expert parallel\n" in block_text
    assert "  resources  each pod: cpu 32, memory 224Gi (requests = limits)\n" in block_text
    leader, worker = block_text.split("  vllm       leader: ")[1].split("  vllm       worker: ")
    assert "--data-parallel-address $LWS_LEADER_ADDRESS" in leader and "--headless" not in leader
    assert " ".join(worker.split()).count("--headless, --data-parallel-start-rank $((LWS_WORKER_INDEX * 8))") == 1
