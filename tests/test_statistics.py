"""Paired statistics for compare-models: the formulas against hand-computed values, then through the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from helpers.cli import REVIEW_COLUMNS, generate_splits
from mlops.core.statistics import (bayesian_correlated_ttest, corrected_resampled_ttest, discordant_pairs,
                                   mcnemar_exact_p_value)

DIFFS = [0.01, 0.03, 0.02, 0.04, 0.00]
N_TRAIN, N_TEST = 800, 200


def _hand_moments():
    """Mean, sample variance and the corrected standard error of DIFFS, with plain arithmetic."""
    k = 5
    mean = (0.01 + 0.03 + 0.02 + 0.04 + 0.00) / k  # 0.02
    variance = ((0.01 - mean) ** 2 + (0.03 - mean) ** 2 + 0 + (0.04 - mean) ** 2 + (0.00 - mean) ** 2) / (k - 1)
    se = math.sqrt((1 / k + N_TEST / N_TRAIN) * variance)  # (0.2 + 0.25) * 0.00025
    return mean, variance, se


def test_corrected_resampled_ttest_matches_the_formula_by_hand():
    mean, variance, se = _hand_moments()
    assert variance == pytest.approx(0.00025)
    assert se == pytest.approx(math.sqrt(0.45 * 0.00025))
    result = corrected_resampled_ttest(DIFFS, N_TRAIN, N_TEST)
    t = mean / se  # 0.02 / 0.0106066 = 1.8856
    assert result.mean == pytest.approx(0.02)
    assert result.std_error == pytest.approx(se)
    assert result.t_statistic == pytest.approx(t)
    assert result.t_statistic == pytest.approx(1.885618, rel=1e-5)
    assert result.df == 4
    assert result.p_value == pytest.approx(2 * stats.t.sf(t, 4))
    assert result.p_value == pytest.approx(0.13245, abs=1e-4)
    half = stats.t.ppf(0.975, 4) * se  # 2.776445 * 0.0106066
    assert result.ci_low == pytest.approx(mean - half) and result.ci_high == pytest.approx(mean + half)
    assert result.ci_low == pytest.approx(0.02 - 0.0294486, abs=1e-6)


def test_the_correction_widens_the_naive_interval():
    naive_se = math.sqrt(0.00025 / 5)
    assert corrected_resampled_ttest(DIFFS, N_TRAIN, N_TEST).std_error > naive_se
    corrected = corrected_resampled_ttest(DIFFS, N_TRAIN, N_TEST).std_error
    assert corrected == pytest.approx(naive_se * math.sqrt(0.45 / 0.2))


def test_bayesian_correlated_ttest_matches_the_formula_by_hand():
    mean, variance, _ = _hand_moments()
    rho = N_TEST / (N_TEST + N_TRAIN)  # 0.2
    scale = math.sqrt((1 / 5 + rho / (1 - rho)) * variance)
    result = bayesian_correlated_ttest(DIFFS, N_TRAIN, N_TEST, rope=0.01)
    assert result.location == pytest.approx(0.02) and result.scale == pytest.approx(scale) and result.df == 4
    assert result.prob_better == pytest.approx(stats.t.sf((0.01 - mean) / scale, 4))
    assert result.prob_worse == pytest.approx(stats.t.cdf((-0.01 - mean) / scale, 4))
    inside = stats.t.cdf((0.01 - mean) / scale, 4) - stats.t.cdf((-0.01 - mean) / scale, 4)
    assert result.prob_rope == pytest.approx(inside)
    assert result.prob_better + result.prob_rope + result.prob_worse == pytest.approx(1.0)
    assert result.prob_better > result.prob_rope > result.prob_worse


@pytest.mark.parametrize("diffs,rope", [(DIFFS, 0.01), ([-0.05, 0.02, 0.01], 0.0), ([0.2, -0.3, 0.1, 0.0], 0.05),
                                        ([0.001, 0.002], 0.5)])
def test_bayesian_probabilities_sum_to_one(diffs, rope):
    result = bayesian_correlated_ttest(diffs, 500, 100, rope=rope)
    assert min(result.prob_better, result.prob_rope, result.prob_worse) >= 0
    assert result.prob_better + result.prob_rope + result.prob_worse == pytest.approx(1.0)


def test_zero_variance_with_a_nonzero_mean():
    result = corrected_resampled_ttest([0.02, 0.02, 0.02], N_TRAIN, N_TEST)
    assert result.mean == pytest.approx(0.02) and result.std_error == pytest.approx(0.0, abs=1e-12)
    assert result.p_value == pytest.approx(0.0, abs=1e-9)
    assert result.ci_low == pytest.approx(0.02) and result.ci_high == pytest.approx(0.02)
    bayes = bayesian_correlated_ttest([0.02, 0.02, 0.02], N_TRAIN, N_TEST, rope=0.01)
    assert (bayes.prob_better, bayes.prob_rope, bayes.prob_worse) == pytest.approx((1.0, 0.0, 0.0))
    inside = bayesian_correlated_ttest([0.005, 0.005], N_TRAIN, N_TEST, rope=0.01)
    assert (inside.prob_better, inside.prob_rope, inside.prob_worse) == pytest.approx((0.0, 1.0, 0.0))


def test_zero_variance_and_zero_mean_is_no_evidence():
    result = corrected_resampled_ttest([0.0, 0.0, 0.0], N_TRAIN, N_TEST)
    assert result.p_value == 1.0 and result.t_statistic == 0.0
    bayes = bayesian_correlated_ttest([0.0, 0.0, 0.0], N_TRAIN, N_TEST, rope=0.0)
    assert bayes.prob_rope == pytest.approx(1.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        corrected_resampled_ttest([0.1], N_TRAIN, N_TEST)
    with pytest.raises(ValueError, match="positive"):
        bayesian_correlated_ttest(DIFFS, 0, N_TEST)
    with pytest.raises(ValueError, match="rope"):
        bayesian_correlated_ttest(DIFFS, N_TRAIN, N_TEST, rope=-0.1)
    with pytest.raises(ValueError, match="finite"):
        corrected_resampled_ttest([0.1, float("nan")], N_TRAIN, N_TEST)


def test_mcnemar_exact_against_a_hand_example():
    # b=10, c=2: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact_p_value(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact_p_value(10, 2) == pytest.approx(0.038574, abs=1e-6)
    assert mcnemar_exact_p_value(2, 10) == mcnemar_exact_p_value(10, 2)
    assert mcnemar_exact_p_value(0, 0) == 1.0
    assert mcnemar_exact_p_value(5, 5) == 1.0  # 2 * P(X <= 5) > 1 is capped
    with pytest.raises(ValueError):
        mcnemar_exact_p_value(-1, 3)


def test_discordant_pairs_counts_rows_only_one_classifier_got_right():
    truth = ["a", "a", "b", "b", "a"]
    model = ["a", "b", "b", "a", "a"]  # right on 0, 2, 4
    baseline = ["b", "a", "b", "a", "b"]  # right on 1, 2
    assert discordant_pairs(truth, model, baseline) == (2, 1)
    with pytest.raises(ValueError):
        discordant_pairs(truth, model, baseline[:2])


# --- through the real CLI --------------------------------------------------------------------------
def _experiment(cli, csv: Path, experiment: str = "exp", *extra: str) -> None:
    generate_splits(cli, experiment, csv, *extra, folds=3, seed=7, columns=REVIEW_COLUMNS)
    for config in ("tfidf_logreg", "tfidf_svm"):
        cli("run-backtesting", "--experiment-id", experiment, "--model-config-name", config)


STAT_COLUMNS = ["diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "prob_better", "prob_rope", "prob_worse"]


def test_compare_models_reports_paired_statistics(cli, small_csv: Path, artifacts: Path):
    _experiment(cli, small_csv)
    rows = json.loads(cli("compare-models", "--experiment-id", "exp", "--format", "json").stdout)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["macro_f1_mean"] >= rows[1]["macro_f1_mean"]
    best, other = rows
    assert best["baseline"] == other["baseline"] == best["model"]
    assert all(best[c] is None for c in STAT_COLUMNS) and best["note"] == "baseline"
    assert all(isinstance(other[c], float) for c in STAT_COLUMNS)
    # the mean difference is the difference of the per-fold values, which are paired fold by fold
    by_fold = [m - b for m, b in zip(other["macro_f1_per_fold"], best["macro_f1_per_fold"], strict=True)]
    assert other["diff_mean"] == pytest.approx(sum(by_fold) / 3)
    assert other["diff_ci_low"] <= other["diff_mean"] <= other["diff_ci_high"] and 0 <= other["p_value"] <= 1
    assert other["prob_better"] + other["prob_rope"] + other["prob_worse"] == pytest.approx(1.0)

    flipped = json.loads(cli("compare-models", "--experiment-id", "exp", "--format", "json",
                             "--baseline", other["model"], "--rope", "0").stdout)
    flipped = {r["model"]: r for r in flipped}
    assert flipped[other["model"]]["diff_mean"] is None
    assert flipped[best["model"]]["diff_mean"] == pytest.approx(-other["diff_mean"])
    assert flipped[best["model"]]["p_value"] == pytest.approx(other["p_value"])

    by_accuracy = json.loads(cli("compare-models", "--experiment-id", "exp", "--format", "json",
                                 "--metric", "accuracy").stdout)
    assert by_accuracy[0]["accuracy_mean"] >= by_accuracy[1]["accuracy_mean"]
    gap = by_accuracy[1]["accuracy_mean"] - by_accuracy[0]["accuracy_mean"]
    assert by_accuracy[1]["diff_mean"] == pytest.approx(gap)

    table = " ".join(cli("compare-models", "--experiment-id", "exp").output.split())
    assert "Nadeau & Bengio" in table and "ROPE ±0.01" in table and "baseline" in table
    csv_header = cli("compare-models", "--experiment-id", "exp", "--format", "csv").stdout.splitlines()[0]
    assert csv_header.startswith("rank,model") and "p_value" in csv_header


def test_an_unknown_baseline_lists_the_models(cli, small_csv: Path):
    _experiment(cli, small_csv)
    result = cli("compare-models", "--experiment-id", "exp", "--baseline", "nope", expect=3)
    assert "tfidf_logreg" in result.output and "tfidf_svm" in result.output and "Traceback" not in result.output


def test_a_run_on_a_different_split_fingerprint_is_left_out_naming_the_fix(cli, small_csv: Path, artifacts: Path):
    _experiment(cli, small_csv)
    metrics_path = artifacts / "experiments" / "exp" / "runs" / "tfidf_svm" / "backtesting" / "fold_1" / "metrics.json"
    record = json.loads(metrics_path.read_text())
    record["identity"]["split_parameters"]["cv_folds"] = 5
    metrics_path.write_text(json.dumps(record))
    result = cli("compare-models", "--experiment-id", "exp", "--format", "json")
    assert [row["model"] for row in json.loads(result.stdout)] == ["tfidf_logreg"]
    message = " ".join(result.stderr.split())
    assert "tfidf_svm: left out" in message and "other data or splits" in message and "--force" in message
    result = cli("compare-models", "--experiment-id", "exp", "--baseline", "tfidf_svm", expect=3)
    assert "Traceback" not in result.output and "--baseline 'tfidf_svm' has no backtesting results" in result.output


def test_one_fold_gives_mcnemar_instead_of_a_t_test(cli, small_csv: Path, artifacts: Path):
    _experiment(cli, small_csv)
    for config in ("tfidf_logreg", "tfidf_svm"):
        cli("estimate-performance", "--experiment-id", "exp", "--model-config-name", config)
    rows = json.loads(cli("compare-models", "--experiment-id", "exp", "--run-type", "performance_estimation",
                          "--format", "json", "--metric", "accuracy").stdout)
    baseline, other = rows
    assert baseline["mcnemar_p_value"] is None and baseline["n_discordant_model_right"] is None
    assert all(other[c] is None for c in STAT_COLUMNS if c != "diff_mean") and "no variance" in other["note"]
    b, c = other["n_discordant_model_right"], other["n_discordant_baseline_right"]
    assert other["mcnemar_p_value"] == pytest.approx(mcnemar_exact_p_value(b, c))
    info = json.loads((artifacts / "experiments" / "exp" / "experiment.json").read_text())
    holdout = info["split_sizes"]["holdout_test"]
    # an accuracy difference on the same rows is (b - c) / n
    assert other["diff_mean"] == pytest.approx((b - c) / holdout)
    table = cli("compare-models", "--experiment-id", "exp", "--run-type", "performance_estimation").output
    table = " ".join(table.split())
    assert "McNemar" in table and "no variance" in table


def test_train_val_backtesting_has_one_fold_and_no_p_value(cli, small_csv: Path):
    _experiment(cli, small_csv, "tv", "--backtesting-strategy", "train-val")
    rows = json.loads(cli("compare-models", "--experiment-id", "tv", "--format", "json").stdout)
    other = rows[1]
    assert rows[0]["n_folds"] == 1 and other["p_value"] is None and other["prob_better"] is None
    assert other["diff_mean"] is not None and 0 <= other["mcnemar_p_value"] <= 1


def test_a_run_whose_config_file_changed_since_is_stale_in_every_view(cli, small_csv, tmp_path):
    """A second tune (or an edit) rewrote the config: its old figures no longer describe that file."""
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "training_arguments": {"C": 1.0}}))
    generate_splits(cli, "c", small_csv, folds=2, columns=REVIEW_COLUMNS)
    for name in ("tfidf_logreg", str(config)):
        cli("run-backtesting", "--experiment-id", "c", "--model-config-name", name)
    before = json.loads(cli("compare-models", "--experiment-id", "c", "--format", "json").stdout)
    assert {row["model"] for row in before} == {"tfidf_logreg", "mine"}
    config.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "training_arguments": {"C": 8.0}}))
    after = cli("compare-models", "--experiment-id", "c", "--format", "json")
    assert [row["model"] for row in json.loads(after.stdout)] == ["tfidf_logreg"]
    assert "has changed since this run" in after.output
    listed = json.loads(cli("list-experiments", "--format", "json").stdout)
    assert next(r for r in listed if r["model"] == "mine")["stages"] == "backtesting(stale: config changed)"
    report = cli("report", "--experiment-id", "c")
    assert "mine backtesting: left out of the report" in " ".join(report.output.split())
