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
            while target and target not in known:  # "mlops.io.write_json" -> "mlops.io"
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
    assert "mlops.model_interface" in graph["mlops.artifacts"]  # the graph really sees imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


#: Who may import whom: a module of a layer imports only its own layer's modules and those below.
LAYERS = [
    ("core", ["mlops.runtime", "mlops.class_balance", "mlops.errors", "mlops.io", "mlops.config", "mlops.callbacks",
              "mlops.model_interface", "mlops.provenance", "mlops.dataset", "mlops.splitting", "mlops.plugins", "mlops.pipeline",
              "mlops.artifacts", "mlops.search_space", "mlops"]),
    ("models", ["models"]),
    ("services", ["mlops.experiment_service", "mlops.runner", "mlops.prediction", "mlops.export",
                  "mlops.reporting", "mlops.report", "mlops.tracking", "mlops.serving", "mlops.catalog",
                  "mlops.pseudo_label", "mlops.pseudo_label_files", "data"]),
    ("orchestration", ["mlops.tuning", "mlops.executors"]),  # cli tune, --executor ray: above the runner
    ("facade", ["mlops.app"]),
    ("cli", ["main"]),
]


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


@pytest.mark.parametrize("package", ["mlops", "models"])
def test_modules_and_functions_stay_small(package):
    too_big = []
    for path in sorted((ROOT / package).rglob("*.py")):
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
