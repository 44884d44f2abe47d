"""The shape of the code: imports go one way, modules and functions stay small, packaging ships the configs."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mlops", "models", "data")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = {"main": ROOT / "main.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[_module_name(path)] = path
    return files


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (top level, inside functions, under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:  # "mlops.core.io.write_json" -> "mlops.core.io"
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    return {name: _imports(path, name, known) for name, path in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "mlops.core.model_interface" in graph["mlops.core.model_folder"]  # the graph really sees imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


#: Who may import whom, by folder: a module imports only its own layer's folders and those below.
LAYERS = [
    ("core", ["mlops.core", "mlops"]),
    ("data", ["mlops.data"]),
    ("models", ["models"]),
    ("experiments", ["mlops.experiments", "mlops.executors", "mlops.tracking"]),
    ("services", ["mlops.evaluation", "mlops.deploy", "mlops.augment", "mlops.audit", "mlops.labelling"]),
    ("tuning", ["mlops.tuning"]),
    ("facade", ["mlops.app"]),
    ("cli", ["mlops.cli", "main", "data"]),  # data/: the scripts that build the data sets
]


def test_layers_name_folders_and_every_folder_has_a_layer():
    """mlops/ holds layer folders (and the facade); nothing flat sits beside them."""
    prefixes = {prefix for _, names in LAYERS for prefix in names}
    folders = {f"mlops.{p.name}" for p in (ROOT / "mlops").iterdir() if (p / "__init__.py").is_file()}
    modules = {f"mlops.{p.stem}" for p in (ROOT / "mlops").glob("*.py") if p.stem != "__init__"}
    assert folders - prefixes == set(), f"folders in no layer: {sorted(folders - prefixes)}"
    assert modules == {"mlops.app"}, f"flat modules in mlops/ besides the facade: {sorted(modules - {'mlops.app'})}"
    assert all(p == "mlops" or p in folders | modules | {"main", "models", "data"} for p in prefixes), prefixes


def _layer(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS; add it"
    return best[0]


def test_layers_import_one_way():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if _layer(b) > _layer(a))
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_plugins_import_no_private_names_of_other_plugins():
    offenders = []
    for name, path in _sources().items():
        if not name.startswith("models."):
            continue
        plugin = name.split(".")[1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("models."):
                other = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if other != plugin and private:
                    offenders.append(f"{name} imports {private} from {node.module}")
    assert not offenders, offenders


@pytest.mark.parametrize("package", ["mlops", "models", "data", "main.py"])
def test_modules_and_functions_stay_small(package):
    """Every package the wheel ships, and the entry point."""
    too_big = []
    paths = [ROOT / package] if package.endswith(".py") else sorted((ROOT / package).rglob("*.py"))
    for path in paths:
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines")
    assert not too_big, "\n".join(too_big)


def test_the_cli_starts_without_heavy_imports():
    import subprocess
    import sys

    probe = ("import sys, main; heavy = [m for m in ('torch', 'transformers', 'pandas', 'sklearn', 'numpy') "
             "if m in sys.modules]; print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing main pulls in {result.stdout.strip()}"


def test_the_wheel_ships_the_model_configs_and_not_the_full_data_set():
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "model_configs" in wheel["only-include"]
    assert any("mr_full" in pattern or "data/mr" in pattern for pattern in wheel.get("exclude", []))


def test_every_command_takes_the_artifacts_dir_the_same_way():
    import typer

    from main import app

    commands = typer.main.get_command(app).commands
    assert len(commands) >= 16
    for name, command in commands.items():
        option = next((p for p in command.params if p.name == "artifacts_dir"), None)
        assert option is not None, f"{name} has no --artifacts-dir"
        assert option.opts == ["--artifacts-dir"] and option.envvar == "MLOPS_ARTIFACTS_DIR", name


def test_the_cli_is_a_thin_entry_point_over_one_module_per_command_group():
    assert len((ROOT / "main.py").read_text().splitlines()) < 30
    groups = {p.stem for p in (ROOT / "mlops" / "cli").glob("*.py")} - {"__init__", "root", "options", "console"}
    assert groups == {"lifecycle", "quickstart", "experiments", "deploy", "data", "labelling", "tune"}
