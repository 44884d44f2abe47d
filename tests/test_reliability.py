"""The probes of issue 15: bad input gets one clear message and no traceback, nothing half-written stays, and
single-split estimates say how sure they are."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.cli import REVIEW_COLUMNS, assert_clean_failure, generate_splits



def _evaluate(cli, predictions, truth, *extra: str, expect=None):
    return cli("evaluate-prediction", "--predictions-file", str(predictions), "--ground-truth-file", str(truth),
               *extra, expect=expect)


# --- evaluate-prediction ----------------------------------------------------------------------------------------
def test_evaluate_prediction_refuses_disjoint_label_vocabularies_showing_both(cli, tmp_path):
    predictions, truth = tmp_path / "p.csv", tmp_path / "t.csv"
    pd.DataFrame({"predicted_label": ["negative", "positive", "negative"]}).to_csv(predictions, index=False)
    pd.DataFrame({"label": [0, 1, 0]}).to_csv(truth, index=False)
    result = _evaluate(cli, predictions, truth)
    assert_clean_failure(result, "share no label", "['0', '1']", "['negative', 'positive']", "--target-column")


@pytest.mark.parametrize("by_id", [False, True])
def test_evaluate_prediction_drops_blank_truth_labels_with_a_count(cli, tmp_path, by_id):
    predictions, truth = tmp_path / "p.csv", tmp_path / "t.csv"
    pd.DataFrame({"id": [1, 2, 3, 4], "predicted_label": ["a", "b", "a", "b"]}).to_csv(predictions, index=False)
    truth.write_text("id,label\n1,a\n2,\n3,a\n4,  \n")
    extra = ("--id-column", "id") if by_id else ()
    result = _evaluate(cli, predictions, truth, *extra, expect=0)
    assert "Traceback" not in result.output
    assert "dropped 2 rows" in result.output and "[3, 5]" in result.output
    metrics = json.loads(_evaluate(cli, predictions, truth, *extra, "--format", "json", expect=0).stdout)
    assert metrics["n"] == 2 and metrics["accuracy"] == 1.0 and metrics["rows_dropped_empty_truth"] == 2


def test_evaluate_prediction_with_every_truth_label_blank_is_a_clear_error(cli, tmp_path):
    predictions, truth = tmp_path / "p.csv", tmp_path / "t.csv"
    pd.DataFrame({"predicted_label": ["a", "b"]}).to_csv(predictions, index=False)
    truth.write_text("id,label\n1,\n2, \n")
    assert_clean_failure(_evaluate(cli, predictions, truth), "is empty", "--target-column")


# --- labels that differ only by case or spacing -----------------------------------------------------------------
def _case_variant_csv(tmp_path, mr_rows):
    frame = mr_rows.sample(200, random_state=1).reset_index(drop=True)
    frame.loc[:9, "label"] = frame.loc[:9, "label"].str.capitalize()  # 'Positive', 'Negative'
    frame.loc[10:12, "label"] = frame.loc[10:12, "label"] + "  "  # surrounding spaces: the same label already
    frame.loc[(frame.label == "negative") & (frame.index % 7 == 0), "label"] = "NEGATIVE"
    path = tmp_path / "cases.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_labels_differing_only_by_case_are_refused_naming_the_groups(cli, tmp_path, artifacts, mr_rows):
    path, frame = _case_variant_csv(tmp_path, mr_rows)
    result = generate_splits(cli, "cases", path, expect=None)
    n_capital = int((frame.label.str.strip() == "Positive").sum())
    assert_clean_failure(result, "differ only by case or spacing", f"'Positive' ({n_capital} rows)", "'NEGATIVE'",
                          "--normalize-labels", artifacts=artifacts)


def test_normalize_labels_merges_to_the_most_frequent_spelling_and_is_kept_for_later_stages(cli, tmp_path,
                                                                                         artifacts, mr_rows):
    path, frame = _case_variant_csv(tmp_path, mr_rows)
    generate_splits(cli, "cases", path, "--normalize-labels", folds=2)
    info = json.loads((artifacts / "experiments/cases/experiment.json").read_text())
    assert info["labels"] == ["negative", "positive"] and info["normalize_labels"] is True
    assert sorted(info["merged_labels"]["negative"]) == ["NEGATIVE", "Negative"]
    assert sum(info["class_counts"].values()) == len(frame)
    result = cli("run-backtesting", "--experiment-id", "cases", "--model-config-name", "tfidf_logreg")
    assert "2 fold(s)" in result.output  # load_data re-read the file the same way (same row count, same labels)


def test_inner_spacing_variants_collide_too(cli, tmp_path, artifacts):
    labels = ["very good"] * 30 + ["very  good"] * 3 + ["bad"] * 30
    path = tmp_path / "spaces.csv"
    pd.DataFrame({"text": [f"text number {i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    assert_clean_failure(generate_splits(cli, "s", path, expect=None),
                          "'very good' (30 rows) / 'very  good' (3 rows)", artifacts=artifacts)


# --- a degenerate hold-out; intervals for single-split estimates --------------------------------------------------
def test_wilson_interval_matches_the_formula_and_stays_in_bounds():
    from mlops.core.statistics import wilson_interval

    low, high = wilson_interval(2, 2)
    assert low == pytest.approx(0.3424, abs=1e-4) and high == 1.0
    low, high = wilson_interval(81, 100)  # Wilson (1927); cf. statsmodels proportion_confint(method="wilson")
    assert (low, high) == (pytest.approx(0.7222, abs=1e-4), pytest.approx(0.8749, abs=1e-4))
    assert wilson_interval(0, 0) is None


def test_bootstrap_macro_f1_agrees_with_sklearn_on_each_resample_and_is_seeded():
    import numpy as np
    from sklearn.metrics import f1_score

    from mlops.core.statistics import bootstrap_macro_f1_interval

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    first = bootstrap_macro_f1_interval(y_true, y_pred, 3, n_resamples=1000, seed=7)
    assert first == bootstrap_macro_f1_interval(y_true, y_pred, 3, n_resamples=1000, seed=7)
    assert first != bootstrap_macro_f1_interval(y_true, y_pred, 3, n_resamples=1000, seed=8)
    point = f1_score(y_true, y_pred, average="macro")
    assert first[0] < point < first[1] and first[1] - first[0] < 0.2
    # The vectorised resamples are sklearn's macro-F1 of the same rows (one resample = the same draw).
    rows = np.random.default_rng(3).integers(0, 200, size=(1, 200))[0]
    expected = f1_score(y_true[rows], y_pred[rows], labels=[0, 1, 2], average="macro", zero_division=0)
    one = bootstrap_macro_f1_interval(y_true, y_pred, 3, n_resamples=1, seed=3)
    assert one == (pytest.approx(expected), pytest.approx(expected))


def test_a_tiny_holdout_is_warned_about_and_its_estimate_has_a_row_count_and_intervals(cli, small_csv, artifacts):
    cols = ("--text-column", "Sentence", "--target-column", "Sentiment")
    result = generate_splits(cli, "tiny", small_csv, *cols, "--test-size", "0.01", folds=2)
    assert "fewer than 10 rows of class 'negative' (1 row), class 'positive' (1 row)" in result.output
    assert "--test-size 0.09 or more" in result.output  # 120 rows per class: 0.09 puts 10.8 in the hold-out
    result = cli("estimate-performance", "--experiment-id", "tiny", "--model-config-name", "tfidf_logreg")
    assert "One split of 2 test rows" in result.output and "95% CI" in result.output
    record = json.loads((artifacts / "experiments/tiny/runs/tfidf_logreg/performance_estimation/metrics.json")
                        .read_text())
    metrics = record["metrics"]
    assert metrics["n"] == 2 and len(metrics["accuracy_ci"]) == 2 and len(metrics["macro_f1_ci"]) == 2
    assert metrics["accuracy_ci"][1] - metrics["accuracy_ci"][0] > 0.5  # 2 rows say little, and it shows
    assert f"[{metrics['accuracy_ci'][0]:.4f}, {metrics['accuracy_ci'][1]:.4f}]" in result.output
    cli("run-backtesting", "--experiment-id", "tiny", "--model-config-name", "tfidf_logreg")
    fold = json.loads((artifacts / "experiments/tiny/runs/tfidf_logreg/backtesting/fold_0/metrics.json").read_text())
    assert "accuracy_ci" not in fold["metrics"]  # several folds: their spread is the measure, metrics unchanged


def test_train_val_backtesting_and_compare_models_show_the_intervals(cli, small_csv, artifacts):
    generate_splits(cli, "tv", small_csv, "--backtesting-strategy", "train-val", columns=REVIEW_COLUMNS)
    for model in ("tfidf_logreg", "tfidf_svm"):
        result = cli("run-backtesting", "--experiment-id", "tv", "--model-config-name", model)
        assert "One split of 38 test rows" in result.output
    table = cli("compare-models", "--experiment-id", "tv").output
    assert "n test" in table and "95% CI" in table and "[0." in table
    rows = json.loads(cli("compare-models", "--experiment-id", "tv", "--format", "json").stdout)
    for row in rows:
        assert row["n_test"] == 38 and row["macro_f1_ci"][0] <= row["macro_f1_mean"] <= row["macro_f1_ci"][1]


# --- models other users can load; permission problems said as such ---------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared_dir():
    """A folder another user can reach (pytest's tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="mlops-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _demote() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@functools.cache
def _other_user() -> tuple[list[str], bool] | None:
    """How to run the interpreter as a user who does not own the test's files: as this very user when it is not
    root (chmod then restricts the owner too); as root, as 'nobody' (root reads and writes everything), by
    dropping privileges in the child or with setpriv, whichever can start the interpreter; None if neither."""
    if os.geteuid() != 0:
        return [], False
    probe = [sys.executable, "-c", "import main"]
    for prefix, demote in (([], True), (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], False)):
        try:
            done = subprocess.run([*prefix, *probe], cwd=ROOT, capture_output=True, timeout=60,
                                  preexec_fn=_demote if demote else None)
        except OSError:
            continue
        if done.returncode == 0:
            return prefix, demote
    return None


def _as_other_user(*args: str, home: Path) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess as a user who does not own the test's files (see ``_other_user``)."""
    how = _other_user()
    if how is None:
        pytest.skip("running as root and no way to start the interpreter as another user")
    prefix, demote = how
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    return subprocess.run([*prefix, sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=_demote if demote else None)


def _clean_subprocess_failure(result: subprocess.CompletedProcess, *needles: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output and "Error:" in output, output
    for needle in needles:
        assert needle in " ".join(output.split()), f"{needle!r} not in:\n{output}"


@pytest.fixture
def final_model(cli, shared_dir, small_csv):
    """A TF-IDF final model trained under umask 022 in ``shared_dir``."""
    data = shared_dir / "reviews.csv"
    shutil.copy(small_csv, data)
    data.chmod(0o644)
    artifacts = shared_dir / "artifacts"
    old = os.umask(0o022)
    try:
        generate_splits(cli, "share", data, folds=2, columns=REVIEW_COLUMNS, artifacts_dir=artifacts)
        cli("train-final-model", "--experiment-id", "share", "--model-config-name", "tfidf_logreg",
            artifacts_dir=artifacts)
    finally:
        os.umask(old)
    return artifacts / "experiments/share/runs/tfidf_logreg/final_model"


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_saved_model_files_get_the_modes_the_umask_allows(cli, small_csv, tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        generate_splits(cli, "m", small_csv, folds=2, columns=REVIEW_COLUMNS)
        cli("train-final-model", "--experiment-id", "m", "--model-config-name", "tfidf_logreg",
            "--model-output-dir", str(tmp_path / "model"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "model", *(tmp_path / "model").rglob("*")]}
    assert "tfidf_arrays.safetensors" in modes  # safetensors writes 0600 by itself
    assert modes == {name: dir_mode if (tmp_path / "model" / name).is_dir() or name == "model" else file_mode
                     for name in modes}


@pytest.mark.slow
def test_another_user_can_load_a_saved_model(final_model, shared_dir):
    result = _as_other_user("predict-new", "--model-path", str(final_model), "--text", "a wonderful film",
                            home=shared_dir)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_an_unreadable_model_file_is_reported_as_a_permission_problem(final_model, shared_dir):
    weights = final_model / "tfidf_arrays.safetensors"
    weights.chmod(0o000)
    result = _as_other_user("predict-new", "--model-path", str(final_model), "--text", "a wonderful film",
                            home=shared_dir)
    _clean_subprocess_failure(result, f"{weights} is not readable for this user", "chmod -R a+rX")
    assert "No such file" not in result.stdout + result.stderr


@pytest.mark.slow
def test_unwritable_output_folders_are_refused_before_any_work(cli, shared_dir, small_csv):
    """train-final-model and data-generate check the folder they will write into first (no traceback)."""
    data = shared_dir / "reviews.csv"
    shutil.copy(small_csv, data)
    data.chmod(0o644)
    artifacts = shared_dir / "artifacts"
    generate_splits(cli, "w", data, folds=2, columns=REVIEW_COLUMNS, artifacts_dir=artifacts)
    for path in [artifacts, *artifacts.rglob("*")]:  # the other user may take the lock and read the splits
        path.chmod(0o777 if path.is_dir() else 0o666)
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o755)
    result = _as_other_user("train-final-model", "--experiment-id", "w", "--model-config-name", "tfidf_logreg",
                            "--model-output-dir", str(locked / "model"), "--artifacts-dir", str(artifacts),
                            home=shared_dir)
    _clean_subprocess_failure(result, "--model-output-dir", "not writable")
    assert "training on" not in result.stdout + result.stderr
    result = _as_other_user("data-generate", "--name", "g", "--examples-per-sentiment", "1", "--output-dir",
                            str(locked / "generated"), home=shared_dir)
    _clean_subprocess_failure(result, "--output-dir", "not writable")


@pytest.mark.slow
def test_predict_new_into_a_read_only_folder_fails_before_the_model_loads(final_model, shared_dir, small_csv):
    read_only = shared_dir / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    data = shared_dir / "reviews.csv"
    # The model path is not even a model: the output folder is checked first, so that is what is reported.
    result = _as_other_user("predict-new", "--model-path", str(shared_dir / "no_model"), "--input-file", str(data),
                            "--output-file", str(read_only / "p.csv"), home=shared_dir)
    _clean_subprocess_failure(result, "--output-file", f"{read_only} is not writable")
    result = _as_other_user("predict-new", "--model-path", str(final_model), "--input-file", str(data),
                            "--output-file", str(read_only / "p.csv"), home=shared_dir)
    _clean_subprocess_failure(result, f"{read_only} is not writable")
    assert list(read_only.iterdir()) == []


def test_an_unwritable_artifacts_root_is_a_clear_error(final_model, shared_dir):
    artifacts = shared_dir / "artifacts"
    result = _as_other_user("generate-splits", "--experiment-id", "other", "--input-file",
                            str(shared_dir / "reviews.csv"), "--text-column", "Sentence", "--target-column",
                            "Sentiment", "--artifacts-dir", str(artifacts), home=shared_dir)
    _clean_subprocess_failure(result, "the artifacts root (--artifacts-dir)", "is not writable")
    result = _as_other_user("run-backtesting", "--experiment-id", "share", "--model-config-name", "tfidf_svm",
                            "--artifacts-dir", str(artifacts), home=shared_dir)
    _clean_subprocess_failure(result, "cannot lock experiment 'share' for writing", "Permission denied")
    assert sorted(p.name for p in (artifacts / "experiments").iterdir()) == ["share"]


@pytest.mark.parametrize("command", ["list-experiments", "generate-splits", "run-backtesting"])
def test_a_file_named_experiments_in_the_artifacts_root_is_a_clear_error(cli, small_csv, artifacts, command):
    artifacts.mkdir()
    (artifacts / "experiments").write_text("not a folder")
    args = {"list-experiments": [],
            "generate-splits": ["--experiment-id", "e", "--input-file", str(small_csv)],
            "run-backtesting": ["--experiment-id", "e", "--model-config-name", "tfidf_logreg"]}[command]
    assert_clean_failure(cli(command, *args, expect=None), "is a file, not the folder of experiments",
                          "--artifacts-dir")
    assert (artifacts / "experiments").read_text() == "not a folder"


# --- messages that say what to do ---------------------------------------------------------------------------------
def _splits(cli, path: Path, *extra: str, expect=None, experiment_id: str = "msg"):
    return generate_splits(cli, experiment_id, path, *extra, expect=expect)


def test_an_experiment_id_over_the_limit_says_the_limit(cli, small_csv, artifacts):
    result = _splits(cli, small_csv, "--text-column", "Sentence", "--target-column", "Sentiment",
                     experiment_id="x" * 300)
    assert_clean_failure(result, "at most 128", artifacts=artifacts)


@pytest.mark.parametrize("size, needle", [("0.999", "Use a smaller --test-size (found 0.999"),
                                          ("0.0001", None)])
def test_test_size_advice_points_the_right_way(cli, small_csv, artifacts, size, needle):
    result = _splits(cli, small_csv, "--text-column", "Sentence", "--target-column", "Sentiment", "--test-size", size)
    if needle is None:  # tiny: still one row per class, with a warning (see the hold-out tests above)
        assert result.exit_code == 0 and "fewer than 10 rows" in result.output
        return
    assert_clean_failure(result, needle, artifacts=artifacts)
    assert "larger" not in result.output


@pytest.mark.parametrize("delimiter, suffix", [(";", ".csv"), ("\t", ".csv"), ("|", ".txt")])
def test_the_delimiter_of_a_csv_is_detected(cli, tmp_path, mr_rows, artifacts, delimiter, suffix):
    path = tmp_path / f"other{suffix}"
    mr_rows.sample(120, random_state=0).to_csv(path, index=False, sep=delimiter)
    result = _splits(cli, path, "--cv-folds", "2", expect=0)
    assert "120 rows" in result.output and "-separated" in result.output


def test_an_undetected_delimiter_says_so(cli, tmp_path, artifacts):
    path = tmp_path / "odd.csv"
    path.write_text("text:label\n" + "".join(f"review {i}:{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    assert_clean_failure(_splits(cli, path), "['text:label']", "delimiter could not be detected",
                          "comma-separated", artifacts=artifacts)


def test_a_decode_error_names_the_line(cli, tmp_path, artifacts):
    path = tmp_path / "late.csv"
    rows = [f"review number {i},{'pos' if i % 2 else 'neg'}" for i in range(5000)] + ["caf\xe9 au lait,pos"]
    path.write_bytes(("text,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert_clean_failure(_splits(cli, path), "at line 5002", "b'\\xe9'", "--encoding", artifacts=artifacts)


def test_a_binary_file_is_called_binary(cli, tmp_path, artifacts):
    path = tmp_path / "image.csv"
    path.write_bytes(bytes(range(256)) * 40)
    assert_clean_failure(_splits(cli, path), "looks like a binary file", artifacts=artifacts)


def test_a_numeric_text_column_in_parquet_is_refused(cli, tmp_path, artifacts, mr_rows):
    path = tmp_path / "typed.parquet"
    frame = mr_rows.sample(100, random_state=0).assign(id=range(100))
    frame.to_parquet(path, index=False)
    assert_clean_failure(_splits(cli, path, "--text-column", "id"), "'id' (from --text-column)", "int64",
                          "not text", artifacts=artifacts)
    _splits(cli, path, "--cv-folds", "2", expect=0)  # the real text column, and numeric labels are fine
    cli("train-final-model", "--experiment-id", "msg", "--model-config-name", "tfidf_logreg")
    model = artifacts / "experiments/msg/runs/tfidf_logreg/final_model"
    result = cli("predict-new", "--model-path", str(model), "--input-file", str(path), "--text-column", "id",
                 "--output-file", str(tmp_path / "p.csv"), expect=None)
    assert_clean_failure(result, "'id' (from --text-column)", "not text")
    assert not (tmp_path / "p.csv").exists()


def test_model_path_pointing_at_a_file_says_it_is_a_file(cli, small_csv):
    result = cli("predict-new", "--model-path", str(small_csv), "--text", "hello", expect=None)
    assert_clean_failure(result, "is a file, not a folder", "train-final-model")


# --- kill -9 leftovers and phantom runs --------------------------------------------------------------------------
_KILLED_AT = """
import os, signal, sys
import importlib
module, _, attribute = sys.argv[1].partition(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
setattr(owner, name, lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL))
from main import app
app(sys.argv[2:])
"""


def _killed_at(where: str, *args: str) -> None:
    """Run the real CLI in a subprocess that dies of a real SIGKILL when it reaches ``where`` (module:attribute)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _KILLED_AT, where, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stdout + done.stderr


def _scratch(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_scratch_left_by_kill_9_is_removed_by_the_next_run(cli, small_csv, artifacts, tmp_path):
    generate_splits(cli, "k", small_csv, folds=2, columns=REVIEW_COLUMNS)
    backtest = ["run-backtesting", "--experiment-id", "k", "--model-config-name", "tfidf_logreg",
                "--artifacts-dir", str(artifacts)]
    run_dir = artifacts / "experiments/k/runs/tfidf_logreg/backtesting"
    _killed_at("mlops.executors.local:fit_and_predict", *backtest)  # while training: its .work-<pid>-<hex> stays
    assert [n for n in _scratch(run_dir) if n.startswith(".work-")]
    _killed_at("mlops.experiments.runner:write_json", *backtest)  # while writing fold 1: a .fold_0.partial-<pid>-<hex>
    left = _scratch(run_dir)  # ... and that run removed the first one's scratch as it started
    assert len(left) == 1 and left[0].startswith(".fold_0.partial-"), left
    # Not ours to remove: a live process's scratch, and a pid-less one (an earlier version's) younger than an hour.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / f".work-{live.pid}-0123abcd").mkdir()
        (run_dir / ".work-89abcdef").mkdir()
        old = run_dir / ".fold_1.partial-fedcba98"
        old.mkdir()
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        cli(*backtest[:-2])
        assert _scratch(run_dir) == [f".work-{live.pid}-0123abcd", ".work-89abcdef"]
    finally:
        live.kill()
        live.wait()

    final = ["train-final-model", "--experiment-id", "k", "--model-config-name", "tfidf_logreg",
             "--artifacts-dir", str(artifacts)]
    _killed_at("mlops.core.model_folder:write_model_descriptor", *final)
    runs = artifacts / "experiments/k/runs/tfidf_logreg"
    assert any(n.startswith(".final_model.partial-") for n in _scratch(runs))
    cli(*final[:-2])
    assert not any(n.startswith((".final_model.", ".work-")) for n in _scratch(runs))

    model, output = runs / "final_model", tmp_path / "out" / "p.csv"
    predict = ["predict-new", "--model-path", str(model), "--input-file", str(small_csv), "--text-column",
               "Sentence", "--output-file", str(output)]
    _killed_at("mlops.core.model_folder:LoadedModel.predict_proba", *predict)
    assert [n for n in _scratch(output.parent) if n.startswith(".p.csv.partial-")]
    cli(*predict)
    assert _scratch(output.parent) == [] and output.is_file()


def test_a_run_that_failed_before_any_result_is_no_phantom_row(cli, small_csv, monkeypatch):
    from mlops.core.errors import ModelError

    generate_splits(cli, "p", small_csv, folds=2, columns=REVIEW_COLUMNS)

    def fail(*args, **kwargs):
        raise ModelError("the model broke")

    monkeypatch.setattr("mlops.executors.local.fit_and_predict", fail)
    assert_clean_failure(cli("run-backtesting", "--experiment-id", "p", "--model-config-name", "tfidf_svm",
                              expect=None), "the model broke")
    monkeypatch.undo()
    rows = json.loads(cli("list-experiments", "--format", "json").stdout)
    assert [(r["experiment_id"], r["model"]) for r in rows] == [("p", None)]
    cli("run-backtesting", "--experiment-id", "p", "--model-config-name", "tfidf_logreg")
    rows = json.loads(cli("list-experiments", "--format", "json").stdout)
    assert [(r["model"], r["stages"]) for r in rows] == [("tfidf_logreg", "backtesting(2 folds)")]


# --- one writer per experiment ------------------------------------------------------------------------------------
_SLOW_FIT = """
import sys, time
from pathlib import Path
import mlops.executors.local as runner
real = runner.fit_and_predict
def slow(*args, **kwargs):
    Path(sys.argv[1]).touch()  # the lock is held from here, until the test creates the release file
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    return real(*args, **kwargs)
runner.fit_and_predict = slow
from main import app
app(sys.argv[3:])
"""


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_running_command_or_waits(cli, small_csv, artifacts, tmp_path):
    generate_splits(cli, "busy", small_csv, folds=2, columns=REVIEW_COLUMNS)
    before = (artifacts / "experiments/busy/experiment.json").read_text()
    marker, release = tmp_path / "training", tmp_path / "release"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FIT, str(marker), str(release), "run-backtesting", "--experiment-id", "busy",
         "--model-config-name", "tfidf_logreg", "--artifacts-dir", str(artifacts)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    waiter = None
    try:
        _wait_for(marker, holder)
        running = (f"pid {holder.pid} running `cli run-backtesting --experiment-id busy --model-config-name "
                   "tfidf_logreg`")
        result = cli("run-backtesting", "--experiment-id", "busy", "--model-config-name", "tfidf_svm", expect=None)
        assert_clean_failure(result, "experiment 'busy' is in use by", running, "--wait")
        result = generate_splits(cli, "busy", small_csv, "--force", seed=7, columns=REVIEW_COLUMNS, expect=None)
        assert_clean_failure(result, running)
        assert (artifacts / "experiments/busy/experiment.json").read_text() == before  # no seed-7 splits under it
        cli("list-experiments")  # readers are never blocked
        waiter = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--wait", "run-backtesting", "--experiment-id", "busy",
             "--model-config-name", "tfidf_svm", "--artifacts-dir", str(artifacts)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = ""
        while "waiting for it to finish" not in " ".join(seen.split()):
            line = waiter.stdout.readline()
            assert line, f"the waiter ended without waiting:\n{seen}"
            seen += line
        assert holder.poll() is None  # still running: the waiter really waits for it
        release.touch()
        assert holder.wait(timeout=120) == 0, holder.communicate()
        rest, _ = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, seen + rest
    finally:
        release.touch()
        for process in (holder, waiter):
            if process is not None:
                process.kill()
                process.communicate()
    rows = json.loads(cli("list-experiments", "--format", "json").stdout)
    assert sorted(r["model"] for r in rows) == ["tfidf_logreg", "tfidf_svm"]


def test_only_rank_0_of_a_distributed_launch_takes_the_lock(cli, small_csv, artifacts, monkeypatch):
    generate_splits(cli, "ranks", small_csv, folds=2, columns=REVIEW_COLUMNS)
    lock = artifacts / "experiments/ranks/.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli("estimate-performance", "--experiment-id", "ranks", "--model-config-name", "tfidf_logreg",
                     expect=None)
        assert_clean_failure(result, "experiment 'ranks' is in use by another process")
        from mlops.app import Application

        monkeypatch.setenv("RANK", "1")  # a torchrun rank that is not 0: trains alongside, writes nothing
        [outcome] = Application(artifacts).estimate_performance("ranks", ["tfidf_logreg"])
        assert outcome.summary["n_folds"] == 1
        assert not (artifacts / "experiments/ranks/runs/tfidf_logreg/performance_estimation/metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_huge_text_cell_is_cut_with_a_count(cli, tmp_path, artifacts):
    """One 2 MB text among normal ones: generate-splits and predict-new cut it to --max-text-chars, and say so."""
    import json

    import pandas as pd

    rows = [{"text": f"a fine film number {i}" if i % 2 else f"a dull film number {i}", "label": "pos" if i % 2
             else "neg"} for i in range(60)]
    rows[3]["text"] = "long " * 400_000
    data = tmp_path / "huge.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    result = generate_splits(cli, "huge", data, "--max-text-chars", "1000", folds=2)
    assert "1 texts of huge.csv longer than 1000 characters were cut" in " ".join(result.output.split())
    info = json.loads((artifacts / "experiments" / "huge" / "experiment.json").read_text())
    assert info["max_text_chars"] == 1000
    cli("run-backtesting", "--experiment-id", "huge", "--model-config-name", "tfidf_logreg")  # loads the same way
    cli("train-final-model", "--experiment-id", "huge", "--model-config-name", "tfidf_logreg")
    out = tmp_path / "preds.csv"
    result = cli("predict-new", "--model-path", str(artifacts / "experiments" / "huge" / "runs" / "tfidf_logreg" /
                                                   "final_model"), "--input-file", str(data), "--output-file",
                 str(out), "--max-text-chars", "500")
    assert "1 input texts longer than 500 characters were cut" in " ".join(result.output.split())
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(written) == 60 and len(written["text"][3]) == len(rows[3]["text"])  # the output keeps it whole


def test_evaluate_prediction_refuses_files_in_another_order(cli, tmp_path):
    """Matched by position, a shuffled ground truth once scored 0.47 instead of 0.99: the shared columns are checked."""
    texts = [f"review number {i}" for i in range(60)]
    labels = ["positive" if i % 3 else "negative" for i in range(60)]
    pd.DataFrame({"id": range(60), "text": texts, "predicted_label": labels}).to_csv(tmp_path / "p.csv", index=False)
    truth = pd.DataFrame({"id": range(60), "text": texts, "label": labels}).sample(frac=1.0, random_state=1)
    truth.to_csv(tmp_path / "t.csv", index=False)
    refused = _evaluate(cli, tmp_path / "p.csv", tmp_path / "t.csv")
    assert_clean_failure(refused, "not in the same order", "--id-column", "row 1:")
    joined = _evaluate(cli, tmp_path / "p.csv", tmp_path / "t.csv", "--id-column", "id", expect=0)
    assert "1.0000" in joined.output
    truth.drop(columns=["id", "text"]).to_csv(tmp_path / "bare.csv", index=False)  # nothing to check the order by
    warned = _evaluate(cli, tmp_path / "p.csv", tmp_path / "bare.csv", expect=0)
    assert "matched by position" in warned.output and "share no id or text column" in warned.output
