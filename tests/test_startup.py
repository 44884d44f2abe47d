"""What a one-text prediction and a starting server import: only what they use. (Their times are benchmarks:
bench/bench_startup_memory.py; here the imports that made them slow must stay out.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import generate_splits

ROOT = Path(__file__).resolve().parent.parent
#: Modules a prediction or a server start never needs: statistics, reports, tuning, tracking, clusters. (scipy.stats
#: is not listed: scikit-learn's linear models, which the TF-IDF model here needs, import it themselves.)
NOT_FOR_PREDICTION = ("mlops.core.statistics", "mlops.evaluation", "mlops.tuning", "mlops.audit", "mlops.labelling",
                      "optuna", "mlflow", "ray", "matplotlib")


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from main import app

    import pandas as pd

    folder = tmp_path_factory.mktemp("startup")
    data = pd.read_csv(ROOT / "data" / "sample" / "mr_sample.csv").sample(300, random_state=0)
    data.to_csv(folder / "rows.csv", index=False)

    def cli(*args):
        result = CliRunner().invoke(app, [*args, "--artifacts-dir", str(folder / "artifacts")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    generate_splits(cli, "s", folder / "rows.csv", folds=2)
    cli("train-final-model", "--experiment-id", "s", "--model-config-name", "tfidf_logreg",
        "--model-output-dir", str(folder / "model"))
    return folder / "model"


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def _heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in NOT_FOR_PREDICTION if name in modules)


def test_predict_new_text_imports_only_what_it_uses(tfidf_model):
    modules = _imported_after(
        "from typer.testing import CliRunner\nfrom main import app\n"
        f"r = CliRunner().invoke(app, ['predict-new', '--model-path', {str(tfidf_model)!r}, '--text', 'fine film'])\n"
        "assert r.exit_code == 0, r.output")
    assert _heavy(modules) == []


def test_a_server_is_ready_without_importing_what_it_does_not_use(tfidf_model):
    modules = _imported_after(
        "from pathlib import Path\nfrom mlops.app import Application\n"
        f"app = Application(Path('artifacts')).serving_app(Path({str(tfidf_model)!r}))\n"
        "from fastapi.testclient import TestClient\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/ready').status_code == 200\n"
        "    assert client.post('/predict', json={'text': 'fine'}).status_code == 200")
    assert _heavy(modules) == []
