"""Every shipped model config validates against its model class; the CLI starts without heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlops.core.catalog import DEFAULT_CONFIG_DIR, ModelCatalog
from mlops.core.plugins import is_trusted_module

CONFIGS = sorted(DEFAULT_CONFIG_DIR.glob("*.json"))


def test_there_are_configs():
    assert any(p.stem == "tfidf_logreg" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path: Path):
    named = ModelCatalog().resolve(path.stem)
    assert is_trusted_module(named.config.module_path)
    assert named.config.description, f"{path.name} should say what it is in 'description'"
    named.model_class.training_arguments_class.model_validate(named.config.training_arguments)


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import main\n"
        "result = CliRunner().invoke(main.app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'sklearn', 'pandas') if m in sys.modules]\n"
        "heavy += [m for m in sys.modules if m.startswith('models.')]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=DEFAULT_CONFIG_DIR.parent,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"
