"""An interrupted backtest resumes without retraining finished folds and ends with identical metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import REVIEW_COLUMNS, generate_splits
from models.tfidf_linear.model import TfidfLinearClassifier


def _fold_metrics(artifacts: Path) -> list[dict]:
    base = artifacts / "experiments" / "e" / "runs" / "tfidf_logreg" / "backtesting"
    return [json.loads((base / f"fold_{k}" / "metrics.json").read_text())["metrics"] for k in range(4)]


def _prepare(cli, csv: Path, artifacts: Path) -> None:
    generate_splits(cli, "e", csv, folds=4, columns=REVIEW_COLUMNS, artifacts_dir=artifacts)


def test_failing_fold_stops_the_run_and_rerun_resumes(cli, small_csv, tmp_path, monkeypatch):
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    _prepare(cli, small_csv, interrupted)
    _prepare(cli, small_csv, clean)
    cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "tfidf_logreg", artifacts_dir=clean)

    real_fit = TfidfLinearClassifier.fit
    calls = {"n": 0}

    def crash_on_third_fold(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(TfidfLinearClassifier, "fit", crash_on_third_fold)
    failed = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "tfidf_logreg",
                 artifacts_dir=interrupted, expect=4)
    assert "fold 3/4" in failed.output and "simulated crash" in failed.output
    backtest_dir = interrupted / "experiments/e/runs/tfidf_logreg/backtesting"
    assert sorted(p.name for p in backtest_dir.iterdir()) == ["fold_0", "fold_1"], "no partial fold, no stray scratch"

    monkeypatch.setattr(TfidfLinearClassifier, "fit", real_fit)
    calls["n"] = 0
    counted = {"n": 0}

    def counting_fit(self, *args, **kwargs):
        counted["n"] += 1
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(TfidfLinearClassifier, "fit", counting_fit)
    resumed = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "tfidf_logreg",
                  artifacts_dir=interrupted)
    assert counted["n"] == 2, "only the two unfinished folds are trained"
    assert "Reused completed folds [1, 2]" in resumed.output
    for a, b in zip(_fold_metrics(interrupted), _fold_metrics(clean), strict=True):
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-12)
        assert a["confusion_matrix"] == b["confusion_matrix"]
    summary_a = json.loads((backtest_dir / "summary.json").read_text())
    summary_b = json.loads((clean / "experiments/e/runs/tfidf_logreg/backtesting/summary.json").read_text())
    assert summary_a == summary_b

    counted["n"] = 0
    cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "tfidf_logreg", "--force",
        artifacts_dir=interrupted)
    assert counted["n"] == 4, "--force retrains every fold"


def test_changed_config_refuses_to_mix_folds(cli, small_csv, tmp_path):
    _prepare(cli, small_csv, tmp_path / "a")
    configs = tmp_path / "configs"
    configs.mkdir()
    config = configs / "mine.json"
    config.write_text('{"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier", '
                      '"training_arguments": {"C": 1.0}}')
    cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(config), artifacts_dir=tmp_path / "a")
    config.write_text(config.read_text().replace("1.0", "2.0"))
    result = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(config),
                 artifacts_dir=tmp_path / "a", expect=3)
    assert "config_sha256" in result.output and "--force" in result.output
