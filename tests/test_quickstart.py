"""`cli quickstart`: its plan and estimate, a line per stage, and the whole lifecycle (with a tiny BERT)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.cli import assert_clean_failure
from helpers.hf import write_tiny_encoder_config
from mlops.experiments.quickstart import QUICK_MODELS, REFERENCE_GFLOPS, REFERENCE_SECONDS, plan_quickstart


def test_plan_counts_trainings_and_scales_the_estimate():
    plan = plan_quickstart(list(QUICK_MODELS), cv_folds=3, rows=3000, holdout_rows=600, new_rows=300, export=True,
                           gflops=REFERENCE_GFLOPS)
    names = [stage.name for stage in plan.stages]
    assert names == ["splits", "backtest tfidf_logreg", "estimate tfidf_logreg", "backtest minilm_quick",
                     "estimate minilm_quick", "final model", "predict"]
    assert plan.trainings == 3 + 1 + 3 + 1 + 1
    twice_as_fast = plan_quickstart(list(QUICK_MODELS), cv_folds=3, rows=3000, holdout_rows=600, new_rows=300,
                                    export=True, gflops=2 * REFERENCE_GFLOPS)
    arithmetic = sum(a for a, _ in REFERENCE_SECONDS["minilm_quick"].values())
    assert plan.estimate_s - twice_as_fast.estimate_s == pytest.approx(arithmetic / 2)
    unknown = plan_quickstart(["tfidf_logreg", "my_model"], cv_folds=3, rows=3000, holdout_rows=600, new_rows=300,
                              export=True, gflops=95.0)
    assert unknown.estimate_s is None and "no time estimate for my_model" in unknown.notes[0]
    assert plan_quickstart(list(QUICK_MODELS), cv_folds=3, rows=3000, holdout_rows=600, new_rows=300, export=True,
                           gflops=None).estimate_s is None


def test_plan_only_prints_the_plan_and_runs_nothing(cli, artifacts: Path):
    quick = cli("quickstart", "--plan-only").output
    assert "Quickstart plan: 7 stages, 9 trainings, about" in quick and "GFLOP/s" in quick
    assert "backtest minilm_quick" in quick and "600-row hold-out" in quick and "300 unseen reviews" in quick
    full = cli("quickstart", "--plan-only", "--full").output
    assert "backtest minilm " in full and "minilm_quick" not in full
    assert not (artifacts / "experiments").exists()
    unknown = cli("quickstart", "--model", "tfidf_logreg", "--model", "no_such_model", expect=None)
    assert_clean_failure(unknown, "unknown model config 'no_such_model'", artifacts=artifacts)
    assert "Quickstart plan" not in unknown.output  # refused before the plan, with nothing run


@pytest.mark.slow
def test_quickstart_runs_the_lifecycle_with_a_line_per_stage(cli, artifacts: Path, tmp_path: Path):
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert", training_arguments={"epochs": 1})
    result = cli("quickstart", "--model", "tfidf_logreg", "--model", str(config))
    output = result.output
    assert "no time estimate for tiny" in output
    for number, name in enumerate(["splits", "backtest tfidf_logreg", "estimate tfidf_logreg", "backtest tiny",
                                   "estimate tiny", "final model", "predict"], 1):
        assert re.search(rf"\[{number}/7\] {name}: done in \d+", output), name
    assert "McNemar's exact p = " in output
    assert re.search(r"Quickstart finished in \d+", output)
    experiment = artifacts / "experiments" / "quickstart"
    assert (experiment / "new_reviews_predictions.csv").is_file()
    # Rerunning resumes: the folds are not retrained, the stages still report.
    again = cli("quickstart", "--model", "tfidf_logreg", "--model", str(config)).output
    assert "[2/7] backtest tfidf_logreg: done in" in again
