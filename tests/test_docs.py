"""The README a newcomer reads and the docs/ pages it leads to: small, linked, true."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import config_docs  # noqa: E402

README = ROOT / "README.md"
PAGES = sorted([README, *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """A page without its fenced code blocks (their brackets are code, not links)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation but '-' and '_' dropped, spaces as '-'."""
    headings = re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def relative_links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(prose(page))
        if not re.match(r"[a-z]+:", target)
    ]


def test_every_relative_link_in_the_readme_and_docs_resolves(capsys):
    links = relative_links()
    broken = []
    for page, target in links:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
    with capsys.disabled():
        print(f"\n{len(links)} relative links in {len(PAGES)} pages resolve")
    assert len(links) > 40


def test_the_readme_is_small_with_a_table_of_contents_in_a_newcomers_order():
    text = README.read_text()
    assert len(text.encode()) < 15_000
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections[:5] == [
        "Contents", "Quick start (no cluster needed)", "Deploying to a cluster", "Running the tests",
        "Using the components in your own project",
    ]
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    linked = {re.sub(r"^#", "", target) for target in LINK.findall(contents)}
    assert linked == {anchor for anchor in anchors(README) if anchor not in ("contents", "vllm-serving")}
    # Test instructions belong to their own section, not to the quick start.
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pytest" not in quick_start and "requirements-dev.txt" not in quick_start


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for page, target in relative_links() if page == README}
    for page in (ROOT / "docs").glob("*.md"):
        assert page.resolve() in linked, page.name


def test_the_configuration_page_is_generated_from_the_schema_with_every_default():
    assert config_docs.main(["--check"]) == 0
    schema = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key, spec in schema.items():
        (row,) = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
        assert ("**required**" in row) == ("default" not in spec), key


def test_the_quick_start_renders_with_the_runtime_requirements_alone(tmp_path):
    """The quick start installs requirements.txt only: nothing stack.render imports may come
    from requirements-dev.txt alone (checked by refusing to import those packages)."""
    (command,) = [block for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S) if "stack.render dev" in block]
    assert "-r requirements.txt " in command and "requirements-dev" not in command
    runtime = {line.split("==")[0].lower() for line in (ROOT / "requirements.txt").read_text().split() if "==" in line}
    dev_only = {line.split("==")[0].lower() for line in (ROOT / "requirements-dev.txt").read_text().split() if "==" in line} - runtime
    modules = sorted({name.replace("-", "_") for name in dev_only} | {"kubernetes_validate", "pulumi_policy", "huggingface_hub"})
    blocker = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {modules!r}:
                    raise ImportError("not in requirements.txt: " + name)
        sys.meta_path.insert(0, Block())
        import runpy
        sys.argv = ["stack.render", "dev", "--out", {str(tmp_path / "dev")!r}]
        runpy.run_module("stack.render", run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "dev" / "all.yaml").is_file()


def test_the_readmes_error_example_is_what_the_program_prints(tmp_path):
    text = README.read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    (example,) = [block for language, block in blocks if not language and "invalid configuration" in block]
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"].update({"vllm-serving:memory": "160GB", "vllm-serving:host": "vllm.example.com"})
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack))
    done = subprocess.run(
        [sys.executable, "-m", "stack.render", "--stack-file", str(tmp_path / "Pulumi.dev.yaml"), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == example.strip()


def test_install_lines_name_only_what_exists():
    """No release tag is named (the repository has none); a Git URL names a commit placeholder."""
    files = [*PAGES, ROOT / "provider" / "README.md", *(ROOT / "examples").rglob("README.md"), *(ROOT / "examples").rglob("requirements.txt")]
    for path in files:
        text = path.read_text()
        assert not re.search(r"vllm-serving(?:\.git)?(?:/provider)?@v?\d", text), path
        for url in re.findall(r"github\.com/\S*vllm-serving\S*@(\S+?)[\"`\s]", text):
            assert url == "<commit>", (path, url)


def test_the_source_document_is_identified():
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    assert "## Where it comes from" in architecture and "Qwen3-235B-A22B-Instruct-2507" in architecture
    for page in PAGES:
        if "source document" in page.read_text():
            assert page == ROOT / "docs" / "architecture.md" or "architecture.md" in page.read_text(), page


def test_the_runtime_pins_the_api_release_the_opentelemetry_sdk_requires():
    """pip tried the newest opentelemetry-api first and backtracked when the sdk pulumi pulls in
    requires an older one exactly: requirements.txt pins that one, so the install resolves at once."""
    from importlib.metadata import requires, version

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    (wanted,) = [spec for spec in requires("opentelemetry-sdk") if spec.startswith("opentelemetry-api==")]
    assert pins["opentelemetry-api"] == wanted.split("==")[1] == version("opentelemetry-api")
