"""Render every stack at a pull request's base and at its head, and diff what they create.

    python -m stack.review --base origin/main [--head REF] [--out review]

The base is checked out in a temporary ``git worktree`` and rendered with its own program (its
``__main__.py``, ``stack/`` and ``components/``); the head is this working tree, or ``--head REF``
in a worktree too. Each stack file ``Pulumi.<stack>.yaml`` of either side is rendered by that
side's ``python -m stack.render``, in a process of its own, into ``<out>/base/<stack>`` and
``<out>/head/<stack>``. Then:

    <out>/diff/<stack>.diff   a unified diff of every object's manifest, options and the outputs
    <out>/summary.md          per stack: objects added, removed and changed, changed resource
                              options and outputs, the diffs and what head creates; for a
                              pull-request comment (it starts with COMMENT_MARKER)

No cluster, credentials or network are needed: only git and this environment's Python packages
(both sides run with them). Exit 0 when every stack renders at head, changed or not; 1 when one
does not render there; 2 on bad usage (not a git repository, a ref that is not a commit).
"""

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from vllm_serving_components.cost import COST_OUTPUT, HOURS_PER_MONTH, GpuCost, cost_change, money

from .render import DUMPER, PROJECT_DIR, object_key, stack_of_file

COMMENT_MARKER = "<!-- vllm-serving:stack-review -->"
"""The first line of summary.md: how the workflow finds its earlier comment to update it."""
COMMENT_LIMIT = 60_000
"""Characters of summary.md at most (GitHub refuses comments over 65,536); diffs and tables that
do not fit are left to the files."""
RENDER_TIMEOUT_SECONDS = 600

# Runs one side's renderer as its own CLI would run: that side's folder first on the path, and
# the packages its pyproject.toml maps to folders (vllm_serving_components -> components/) taken
# from that folder, not from whatever checkout this environment has installed in editable mode.
BOOTSTRAP = r"""
import importlib.abc, importlib.util, runpy, sys, tomllib
from pathlib import Path

project = Path(sys.argv[1])
try:
    setuptools = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
except (OSError, tomllib.TOMLDecodeError):
    setuptools = {}
folders = {name: project / folder for name, folder in (setuptools.get("package-dir") or {}).items() if name}

class ThisCheckout(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        init = folders[name] / "__init__.py" if name in folders else None
        if init is None or not init.is_file():
            return None
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])

sys.meta_path.insert(0, ThisCheckout())
sys.path.insert(0, str(project))
sys.argv = ["stack.render", *sys.argv[2:]]
runpy.run_module("stack.render", run_name="__main__", alter_sys=True)
"""


class ReviewError(Exception):
    """The review cannot run: not a git repository, or a ref that names no commit."""


@dataclass(frozen=True)
class Side:
    """What one side (base or head) rendered of one stack; nothing when it has no such stack."""

    exists: bool
    rendered: bool = False
    error: str = ""
    manifests: dict[str, dict] = field(default_factory=dict)
    options: Optional[dict[str, dict]] = None
    """By object key; None when that side's renderer does not write options.json."""
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def comparable(self) -> bool:
        """Rendered, or absent on this side (every object added or removed)."""
        return self.rendered or not self.exists


@dataclass(frozen=True)
class StackChange:
    stack: str
    base: Side
    head: Side
    added: list[str]
    removed: list[str]
    changed: list[str]
    options_changed: list[tuple[str, str, str, str]]
    """(object, option, before, after)."""
    outputs_changed: list[str]
    diff: str

    @property
    def compared(self) -> bool:
        return self.base.comparable and self.head.comparable

    @property
    def options_compared(self) -> bool:
        both = self.base.exists and self.head.exists
        return self.compared and (not both or (self.base.options is not None and self.head.options is not None))

    @property
    def unchanged(self) -> bool:
        changes = self.added or self.removed or self.changed or self.options_changed or self.outputs_changed
        return self.options_compared and not changes


def git(directory: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReviewError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def commit_of(repository: Path, ref: str) -> str:
    try:
        return git(repository, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    except ReviewError:
        raise ReviewError(
            f"{ref!r} is not a commit of {repository}; fetch it first (in GitHub Actions: actions/checkout with fetch-depth: 0)"
        ) from None


@contextmanager
def worktree(repository: Path, commit: str, parent: Path) -> Iterator[Path]:
    """A detached checkout of commit, removed afterwards."""
    path = parent / f"worktree-{commit[:12]}"
    git(repository, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        try:
            git(repository, "worktree", "remove", "--force", str(path))
        except ReviewError:
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "-C", str(repository), "worktree", "prune"], capture_output=True)


def stack_names(project_dir: Path) -> list[str]:
    """Every stack with a file Pulumi.<stack>.yaml in the project."""
    return sorted(stack for path in project_dir.glob("Pulumi.?*.y*ml") if (stack := stack_of_file(path)))


def render_side(project_dir: Path, stacks: list[str], out_dir: Path) -> dict[str, Side]:
    """Render each stack the project has with the project's own renderer, in parallel processes."""
    own = set(stack_names(project_dir))
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def render(stack: str) -> Side:
        if stack not in own:
            return Side(exists=False)
        target = out_dir / stack
        command = [sys.executable, "-c", BOOTSTRAP, str(project_dir), stack, "--project-dir", str(project_dir), "--out", str(target)]
        try:
            done = subprocess.run(
                command, cwd=project_dir, env=environment, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            return Side(exists=True, error=f"did not finish in {RENDER_TIMEOUT_SECONDS} s")
        if done.returncode != 0 or not (target / "all.yaml").is_file():
            return Side(exists=True, error=(done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")[-4000:])
        return read_rendered(target)

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip(stacks, pool.map(render, stacks), strict=True))


def read_rendered(folder: Path) -> Side:
    """What stack.render wrote into a folder: all.yaml, options.json (if written) and outputs.json."""
    manifests = {}
    for manifest in yaml.safe_load_all((folder / "all.yaml").read_text()):
        if isinstance(manifest, dict):
            manifests[object_key(manifest)] = manifest
    options = json.loads((folder / "options.json").read_text()) if (folder / "options.json").is_file() else None
    outputs = json.loads((folder / "outputs.json").read_text()) if (folder / "outputs.json").is_file() else {}
    return Side(exists=True, rendered=True, manifests=manifests, options=options, outputs=outputs)


def _yaml(document: Any) -> list[str]:
    return yaml.dump(document, Dumper=DUMPER, sort_keys=True).splitlines(keepends=True)


def _json(document: Any) -> list[str]:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").splitlines(keepends=True)


def _file_diff(before: Optional[list[str]], after: Optional[list[str]], stack: str, name: str) -> str:
    old = f"a/{stack}/{name}" if before is not None else "/dev/null"
    new = f"b/{stack}/{name}" if after is not None else "/dev/null"
    lines = list(difflib.unified_diff(before or [], after or [], old, new))
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _option_text(name: str, value: Any) -> str:
    """An option's value as options.json holds it, in words."""
    if value is None:
        return "not set"
    if value is True:
        return "set"
    if isinstance(value, dict):
        return ", ".join(f"{op} {value[op]}" for op in sorted(value))
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def compare(stack: str, base: Side, head: Side) -> StackChange:
    """What changed in a stack from base to head: objects, their options, the outputs, and the diff."""
    if not (base.comparable and head.comparable):
        return StackChange(stack, base, head, [], [], [], [], [], "")
    before, after = base.manifests, head.manifests
    added = [key for key in after if key not in before]
    removed = [key for key in before if key not in after]
    changed = [key for key in after if key in before and before[key] != after[key]]
    diff = [_file_diff(_yaml(before[key]), None, stack, f"{key}.yaml") for key in removed]
    for key in after:
        if key in added or key in changed:
            diff.append(_file_diff(_yaml(before[key]) if key in before else None, _yaml(after[key]), stack, f"{key}.yaml"))
    options_changed = []
    if base.options is not None and head.options is not None:
        for key in after:
            if key not in before:
                continue
            old, new = base.options.get(key, {}), head.options.get(key, {})
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    options_changed.append((key, name, _option_text(name, old.get(name)), _option_text(name, new.get(name))))
        if base.options != head.options and base.exists and head.exists:
            diff.append(_file_diff(_json(base.options), _json(head.options), stack, "options.json"))
    outputs_changed = sorted(k for k in set(base.outputs) | set(head.outputs) if base.outputs.get(k) != head.outputs.get(k))
    if outputs_changed:
        diff.append(_file_diff(_json(base.outputs) if base.exists else None, _json(head.outputs) if head.exists else None, stack, "outputs.json"))
    return StackChange(stack, base, head, added, removed, changed, options_changed, outputs_changed, "".join(diff))


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in text."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def _names(keys: list[str]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def _count(side: Side) -> str:
    if not side.exists:
        return "-"
    return str(len(side.manifests)) if side.rendered else "failed"


def _range(cost: Optional[GpuCost], key: str) -> str:
    """A figure of a GpuCost at the fewest and the most replicas, e.g. 8-16 GPUs."""
    if cost is None:
        return "-"
    figure = cost[key]  # type: ignore[literal-required]
    if key == "costPerMonth":
        low, high = (money(figure[side] if figure else None, cost["currency"]) for side in ("min", "max"))
    else:
        low, high = (f"{int(figure[side]):,}" for side in ("min", "max"))
    return low if low == high else f"{low} – {high}"


def cost_table(changes: list[StackChange]) -> list[str]:
    """GPUs, GPU-hours and cost per month of each stack that has them, at the fewest – the most
    replicas: base → head where they differ."""
    rows = []
    for change in changes:
        before, after = (side.outputs.get(COST_OUTPUT) if side.rendered else None for side in (change.base, change.head))
        if before is None and after is None:
            continue
        cells = []
        for key in ("gpus", "gpuHoursPerMonth", "costPerMonth"):
            old, new = _range(before, key), _range(after, key)
            cells.append(new if old == new else f"{old} → {new}")
        rows.append(f"| `{change.stack}` | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"GPUs and their cost a month ({HOURS_PER_MONTH} h) at the fewest – the most replicas (base → head where they differ):",
        "",
        "| Stack | GPUs | GPU-hours per month | Cost per month |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def review_markdown(changes: list[StackChange], base_label: str, head_label: str, head_dir: Optional[Path] = None) -> str:
    """summary.md of a review: a table of stacks, what changed in each, then the diffs and head's
    tables as far as they fit in COMMENT_LIMIT characters."""
    lines = [
        COMMENT_MARKER,
        f"## Rendered stacks: {base_label} → {head_label}",
        "",
        "| Stack | Objects (base → head) | Added | Removed | Changed | Options changed | Outputs changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for change in changes:
        counts = [len(change.added), len(change.removed), len(change.changed), len(change.options_changed), len(change.outputs_changed)]
        cells = [str(count) for count in counts] if change.compared else ["-"] * 5
        lines.append(f"| `{change.stack}` | {_count(change.base)} → {_count(change.head)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += cost_table(changes)
    unchanged = [f"`{change.stack}`" for change in changes if change.unchanged]
    if unchanged:
        lines += [f"No change to any object, resource option or output of {', '.join(unchanged)}.", ""]
    for change in changes:
        if change.unchanged:
            continue
        lines += [f"### `{change.stack}`", ""]
        if not change.base.exists:
            lines += ["A new stack: every object is added.", ""]
        if not change.head.exists:
            lines += ["The stack file was removed: every object is removed.", ""]
        for side, label in ((change.base, "base"), (change.head, "head")):
            if side.exists and not side.rendered:
                fence = _fence(side.error)
                lines += [f"It does not render at {label}:", "", fence, side.error, fence, ""]
        for title, keys in (("Added", change.added), ("Removed", change.removed), ("Changed", change.changed)):
            if keys and change.base.exists and change.head.exists:
                lines.append(f"- {title}: {_names(keys)}")
        if change.options_changed:
            lines.append("- Resource options changed:")
            lines += [f"  - `{key}` {name}: {before} → {after}" for key, name, before, after in change.options_changed]
        if change.outputs_changed:
            lines.append(f"- Outputs changed: {_names(change.outputs_changed)}")
        if COST_OUTPUT in change.outputs_changed and change.base.exists and change.head.exists:
            moved = cost_change(change.base.outputs.get(COST_OUTPUT), change.head.outputs.get(COST_OUTPUT))
            lines += [f"- GPU cost: {'; '.join(moved)}"] if moved else []
        if change.compared and not change.options_compared:
            lines.append("- Resource options were not compared: one side's renderer does not write options.json.")
        lines.append("")
    footer = [
        "",
        "Rendered offline with `python -m stack.review` (each side's own program under Pulumi's mock runtime; "
        "no cluster). The manifests and `diff/<stack>.diff` are in the workflow run's artifact.",
    ]
    body = "\n".join(lines)
    used = len(body) + len("\n".join(footer)) + 200
    extra = []
    for change in changes:
        if not change.diff:
            continue
        fence = _fence(change.diff)
        block = "\n".join([
            f"<details><summary>Diff of <code>{change.stack}</code> ({change.diff.count(chr(10))} lines)</summary>",
            "", f"{fence}diff", change.diff.rstrip("\n"), fence, "", "</details>", "",
        ])
        if used + len(block) > COMMENT_LIMIT:
            block = f"The diff of `{change.stack}` is too long for a comment: see `diff/{change.stack}.diff` in the artifact.\n"
        used += len(block)
        extra.append(block)
    for change in changes:
        table = head_dir / change.stack / "summary.md" if head_dir else None
        if not (change.head.rendered and table and table.is_file()):
            continue
        block = "\n".join([
            f"<details><summary>What <code>{change.stack}</code> creates at head</summary>", "",
            table.read_text().rstrip("\n"), "", "</details>", "",
        ])
        if used + len(block) <= COMMENT_LIMIT:
            used += len(block)
            extra.append(block)
    return body + ("\n" + "\n".join(extra) if extra else "") + "\n".join(footer) + "\n"


def review(
    project_dir: Path,
    base: str,
    out_dir: Path,
    head: Optional[str] = None,
    base_label: Optional[str] = None,
    head_label: Optional[str] = None,
) -> list[StackChange]:
    """Render every stack at base and at head (the working tree unless a ref is given), write
    the diffs and summary.md into out_dir, and return what changed per stack."""
    project_dir, out_dir = project_dir.resolve(), out_dir.resolve()  # each side renders from its own folder
    repository = Path(git(project_dir, "rev-parse", "--show-toplevel")).resolve()
    inside = project_dir.relative_to(repository)
    base_commit = commit_of(repository, base)
    head_commit = commit_of(repository, head) if head else git(repository, "rev-parse", "HEAD")
    for stale in ("base", "head", "diff"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    (out_dir / "diff").mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="stack-review-") as scratch:
        with worktree(repository, base_commit, Path(scratch)) as base_tree:
            head_context = worktree(repository, head_commit, Path(scratch) / "head") if head else _here(repository)
            with head_context as head_tree:
                stacks = sorted(set(stack_names(base_tree / inside)) | set(stack_names(head_tree / inside)))
                base_sides = render_side(base_tree / inside, stacks, out_dir / "base")
                head_sides = render_side(head_tree / inside, stacks, out_dir / "head")
    changes = [compare(stack, base_sides[stack], head_sides[stack]) for stack in stacks]
    for change in changes:
        (out_dir / "diff" / f"{change.stack}.diff").write_text(change.diff)
    base_label = base_label or f"`{base}` ({base_commit[:8]})"
    head_label = head_label or (f"`{head}` ({head_commit[:8]})" if head else f"the working tree at {head_commit[:8]}")
    (out_dir / "summary.md").write_text(review_markdown(changes, base_label, head_label, out_dir / "head"))
    return changes


@contextmanager
def _here(repository: Path) -> Iterator[Path]:
    """The working tree, as worktree() gives a checkout."""
    yield repository


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m stack.review", description=__doc__.split("\n")[0])
    found.add_argument("--base", required=True, help="the git ref (branch, tag, commit) the change is compared with")
    found.add_argument("--head", help="a git ref to render as the head instead of the working tree")
    found.add_argument("--out", type=Path, default=Path("review"), help="output folder (default ./review)")
    found.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR, help="the folder of Pulumi.yaml, inside a git repository (default: this project)"
    )
    found.add_argument("--base-label", help="how summary.md names the base (default: the ref and its commit)")
    found.add_argument("--head-label", help="how summary.md names the head")
    return found


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        changes = review(args.project_dir, args.base, args.out, args.head, args.base_label, args.head_label)
    except ReviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for change in changes:
        if not change.compared:
            state = "; ".join(f"{label} does not render" for label, side in (("base", change.base), ("head", change.head)) if side.exists and not side.rendered)
        elif change.unchanged:
            state = "unchanged"
        else:
            state = (
                f"{len(change.added)} added, {len(change.removed)} removed, {len(change.changed)} changed, "
                f"{len(change.options_changed)} options and {len(change.outputs_changed)} outputs changed"
            )
        print(f"{change.stack}: {state}")
    print(f"\nWritten to {args.out}: summary.md, diff/<stack>.diff, base/ and head/")
    return 1 if any(change.head.exists and not change.head.rendered for change in changes) else 0


if __name__ == "__main__":
    sys.exit(main())
