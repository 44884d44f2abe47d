"""The docs match the code: the README's lifecycle block runs as written, the CLI reference is current."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI_REFERENCE = ROOT / "docs" / "cli.md"


def _lifecycle_commands() -> list[list[str]]:
    block = re.search(r"<!-- lifecycle:start -->\s*```bash\n(.*?)```\s*<!-- lifecycle:end -->", README.read_text(),
                      re.S)
    assert block, "README.md has no lifecycle block between <!-- lifecycle:start --> and <!-- lifecycle:end -->"
    text = block.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _generated_reference(output: Path) -> str:
    subprocess.run([sys.executable, "-m", "typer", "main", "utils", "docs", "--name", "cli", "--output", str(output)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return output.read_text()


def test_the_readme_stays_short():
    assert README.stat().st_size <= 12_000, f"README.md is {README.stat().st_size} bytes; move detail into docs/"


def test_every_docs_link_in_the_readme_resolves():
    for target in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#\s]*)", README.read_text()):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_cli_reference_is_generated_from_the_current_cli(tmp_path):
    assert _generated_reference(tmp_path / "cli.md") == CLI_REFERENCE.read_text(), (
        "docs/cli.md is out of date; regenerate it with "
        "`uv run typer main utils docs --name cli --output docs/cli.md`")


@pytest.mark.slow
def test_the_readme_lifecycle_block_runs_as_written(tmp_path):
    """Every command of the block, in order, from a fresh folder holding the shipped sample data."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample").symlink_to(ROOT / "data" / "sample")
    commands = _lifecycle_commands()
    assert [c[3] for c in commands[:3]] == ["generate-splits", "run-backtesting", "compare-models"]
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLOPS_ARTIFACTS_DIR"}
    for command in commands:
        assert command[:3] == ["uv", "run", "cli"], command
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *command[3:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "preds.csv").is_file() and (tmp_path / "models_out" / "mr").is_dir()
    assert "accuracy" in done.stdout
