"""GPU cost in the plan: the arithmetic (components/cost.py), the stack's figures in every layout
(whole GPUs, a HAMi slice, a multi-node group, data-expert, fixed and autoscaled replicas), and
what the render summary and the review show of them."""

import pytest
from conftest import ROOT, SHIPPED_STACKS, project_with_stack

from policy import rules
from policy.check import type_token
from stack.render import render_stack
from stack.review import Side, compare, cost_table, review_markdown
from vllm_serving_components.cost import COST_OUTPUT, HOURS_PER_MONTH, cost_change, cost_lines, cost_rows, gpu_cost
from vllm_serving_components.summary import markdown_summary, summary

PROD_PRICES = {"NVIDIA-H100-80GB-HBM3": 2.5, "NVIDIA-A100-SXM4-80GB": 1.8, "NVIDIA-H200": 3.2}


@pytest.fixture(scope="module")
def stacks():
    return {stack: render_stack(stack, ROOT) for stack in SHIPPED_STACKS}


# --- the arithmetic -------------------------------------------------------------------------


def test_a_month_is_730_hours_at_the_fewest_and_the_most_replicas():
    cost = gpu_cost(8, 1, 2, ["NVIDIA-H100-80GB-HBM3"], {"NVIDIA-H100-80GB-HBM3": 2.5})
    assert HOURS_PER_MONTH == 365 * 24 / 12
    assert cost == {
        "gpusPerReplica": 8,
        "replicas": {"min": 1, "max": 2},
        "gpus": {"min": 8, "max": 16},
        "gpuHoursPerMonth": {"min": 5840, "max": 11680},
        "costPerMonth": {"min": 14600.0, "max": 29200.0},
        "currency": "USD",
        "pricedAs": "NVIDIA-H100-80GB-HBM3 at 2.50 USD per GPU-hour",
    }


def test_several_products_are_priced_at_the_dearest():
    cost = gpu_cost(8, 1, 2, list(PROD_PRICES), PROD_PRICES, "EUR")
    assert cost["costPerMonth"] == {"min": 8 * 730 * 3.2, "max": 16 * 730 * 3.2}
    assert cost["pricedAs"] == "NVIDIA-H200 at 3.20 EUR per GPU-hour, the dearest of the 3 products the pods may run on"


def test_a_product_without_a_price_leaves_the_cost_unknown_but_counts_the_gpus():
    cost = gpu_cost(2, 1, 3, ["NVIDIA-L4", "NVIDIA-L40S"], {"NVIDIA-L4": 0.8})
    assert cost["gpus"] == {"min": 2, "max": 6} and cost["gpuHoursPerMonth"] == {"min": 1460, "max": 4380}
    assert cost["costPerMonth"] is None
    assert cost["pricedAs"] == "unknown: no price for NVIDIA-L40S"
    anywhere = gpu_cost(1, 1, 1, [], {"NVIDIA-L4": 0.8})
    assert anywhere["costPerMonth"] is None and "may run on any GPU product" in anywhere["pricedAs"]
    assert cost_rows(anywhere) == [("max 1 replica", "1", "730", "unknown")]


def test_zero_replicas_cost_nothing_and_a_free_product_costs_zero():
    cost = gpu_cost(4, 0, 2, ["NVIDIA-L4"], {"NVIDIA-L4": 0.0})
    assert cost["gpus"] == {"min": 0, "max": 8} and cost["costPerMonth"] == {"min": 0.0, "max": 0.0}


def test_the_lines_and_what_changed():
    before = gpu_cost(8, 1, 2, list(PROD_PRICES), PROD_PRICES)
    assert cost_lines(before) == [
        "GPU cost (8 GPUs per replica, 730 h a month; NVIDIA-H200 at 3.20 USD per GPU-hour, the dearest of the 3 products "
        "the pods may run on):",
        "  min 1 replica: 8 GPUs, 5,840 GPU-hours per month, 18,688.00 USD per month",
        "  max 2 replicas: 16 GPUs, 11,680 GPU-hours per month, 37,376.00 USD per month",
    ]
    after = gpu_cost(8, 1, 3, list(PROD_PRICES), PROD_PRICES)
    assert cost_change(before, after) == [
        "GPUs at max replicas 16 → 24",
        "GPU-hours per month at max replicas 11,680 → 17,520",
        "cost per month at max replicas 37,376.00 USD → 56,064.00 USD",
    ]
    unpriced = gpu_cost(8, 1, 2, list(PROD_PRICES), {})
    assert cost_change(before, unpriced)[-3:] == [
        "cost per month at min replicas 18,688.00 USD → unknown",
        "cost per month at max replicas 37,376.00 USD → unknown",
        "priced as unknown: no price for NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-80GB, NVIDIA-H200 (was NVIDIA-H200 at "
        "3.20 USD per GPU-hour, the dearest of the 3 products the pods may run on)",
    ]
    assert cost_change(None, before) == ["not computed at base"] and cost_change(before, before) == []


# --- the stack's figures, against what it renders ---------------------------------------------


def _server_gpus_per_replica(rendering) -> float:
    """A replica's devices as the rendered workload holds them (the policy pack's own count)."""
    for obj in rendering.objects:
        resource_type = type_token(obj.manifest)
        if rules.kind_of(resource_type) not in rules.SCALED_KINDS:
            continue
        pods = rules.pods_of(resource_type, obj.manifest)
        per_pod = [rules.pod_gpus(pod, {}) for pod in pods]
        size = (obj.manifest["spec"].get("leaderWorkerTemplate") or {}).get("size", 1)
        return per_pod[0] + per_pod[-1] * (size - 1) if len(pods) > 1 else per_pod[0] * size
    raise AssertionError("no server workload")


@pytest.mark.parametrize(("stack", "per_replica", "replicas", "priced"), [
    ("dev", 1, (1, 1), False),  # a HAMi slice of one GPU, counted as the GPU
    ("prod", 8, (1, 2), True),  # tensor parallel over one pod's 8 GPUs, autoscaled
    ("multinode", 16, (1, 2), False),  # a LeaderWorkerSet group of 2 nodes of 8
    ("moe", 16, (1, 2), False),  # data-expert over 2 nodes of 8
])
def test_each_layout_counts_the_gpus_its_replica_holds(stacks, stack, per_replica, replicas, priced):
    cost = stacks[stack].outputs[COST_OUTPUT]
    assert cost["gpusPerReplica"] == per_replica == _server_gpus_per_replica(stacks[stack])
    assert (cost["replicas"]["min"], cost["replicas"]["max"]) == replicas
    assert cost["gpus"] == {"min": per_replica * replicas[0], "max": per_replica * replicas[1]}
    assert cost["gpuHoursPerMonth"]["max"] == per_replica * replicas[1] * 730
    assert (cost["costPerMonth"] is not None) == priced


def _render(folder, settings, drop=()):
    folder.mkdir()
    return render_stack(project_with_stack(folder, settings, drop), folder)


def test_fixed_replicas_and_a_priced_product(tmp_path):
    fixed = _render(tmp_path / "fixed", {"replicas": 3, "storageAccessMode": "ReadWriteMany"})
    assert fixed.outputs[COST_OUTPUT]["replicas"] == {"min": 3, "max": 3}
    settings = {"gpuCount": 4, "tensorParallelSize": 4, "memory": "64Gi", "gpuProducts": ["NVIDIA-L40S"], "gpuHourlyPrice": ["NVIDIA-L40S=1.25"], "gpuPriceCurrency": "EUR"}
    priced = _render(tmp_path / "priced", settings)
    assert priced.outputs[COST_OUTPUT]["costPerMonth"] == {"min": 4 * 730 * 1.25, "max": 4 * 730 * 1.25}
    assert priced.outputs[COST_OUTPUT]["pricedAs"] == "NVIDIA-L40S at 1.25 EUR per GPU-hour"


# --- the summary and the review -----------------------------------------------------------------


def test_the_summary_shows_gpus_hours_and_cost_before_the_outputs(stacks):
    text = summary(stacks["prod"], width=120)
    assert (
        "GPU cost (8 GPUs per replica, 730 h a month; NVIDIA-H200 at 3.20 USD per GPU-hour,\n"
        "the dearest of the 3 products the pods may run on):\n"
        "  min 1 replica: 8 GPUs, 5,840 GPU-hours per month, 18,688.00 USD per month\n"
        "  max 2 replicas: 16 GPUs, 11,680 GPU-hours per month, 37,376.00 USD per month\n"
        "Outputs:\n"
    ) in text
    assert "  gpuCost:" not in text
    dev = summary(stacks["dev"])
    assert "GPU cost (1 GPU per replica, 730 h a month; unknown: the pods may run on any GPU product;\n" \
        "pin the products to price them):\n  max 1 replica: 1 GPU, 730 GPU-hours per month, cost unknown\n" in dev
    table = markdown_summary(stacks["prod"])
    assert (
        "| Replicas | GPUs | GPU-hours per month | Cost per month |\n|---|---|---|---|\n"
        "| min 1 replica | 8 | 5,840 | 18,688.00 USD |\n| max 2 replicas | 16 | 11,680 | 37,376.00 USD |\n"
    ) in table
    assert "| gpuCost |" not in table


def _side(cost) -> Side:
    return Side(exists=True, rendered=True, outputs={COST_OUTPUT: cost} if cost else {"endpoint": "x"})


def test_the_review_tables_each_stacks_cost_and_names_its_change():
    base = gpu_cost(8, 1, 2, list(PROD_PRICES), PROD_PRICES)
    head = gpu_cost(8, 1, 2, list(PROD_PRICES), {**PROD_PRICES, "NVIDIA-H200": 3.6})
    changes = [compare("prod", _side(base), _side(head)), compare("dev", _side(None), _side(gpu_cost(1, 1, 1, [], {}))),
               compare("same", _side(base), _side(base))]
    assert cost_table(changes)[2:6] == [
        "| Stack | GPUs | GPU-hours per month | Cost per month |",
        "|---|---|---|---|",
        "| `prod` | 8 – 16 | 5,840 – 11,680 | 18,688.00 USD – 37,376.00 USD → 21,024.00 USD – 42,048.00 USD |",
        "| `dev` | - → 1 | - → 730 | - → unknown |",
    ]
    text = review_markdown(changes, "base", "head")
    assert "- GPU cost: cost per month at min replicas 18,688.00 USD → 21,024.00 USD; cost per month at max replicas " \
        "37,376.00 USD → 42,048.00 USD; priced as NVIDIA-H200 at 3.60 USD" in text
    assert "- GPU cost: not computed at base" in text
    assert "| `same` | 8 – 16 | 5,840 – 11,680 | 18,688.00 USD – 37,376.00 USD |" in text
    assert cost_table([compare("old", _side(None), _side(None))]) == []
