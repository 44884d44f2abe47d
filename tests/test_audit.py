"""cli audit: confident learning against cleanlab, near-duplicates (MinHash, embeddings) and their grouping in
splits, odd rows, the command's outputs and errors, and that no audit step trains on rows it scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.audit.label_issues import find_label_issues
from mlops.data import near_duplicates as nd
from mlops.data.splitting import SplitParameters, leakage_groups
from tests.helpers.built import built_rows
from tests.helpers.cli import assert_clean_failure, generate_splits

# --- confident learning ------------------------------------------------------------------------------------
def _noisy_probabilities(rng, n: int, k: int):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.uniform(0.5, 3.0)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = np.where(rng.random(n) < 0.1, rng.integers(0, k, n), y)
    return given, proba


@pytest.mark.parametrize("rank_by", ["self_confidence", "normalized_margin"])
def test_label_issues_match_cleanlab(rank_by):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    from cleanlab.count import compute_confident_joint

    rng = np.random.default_rng(3)
    for _ in range(15):
        given, proba = _noisy_probabilities(rng, int(rng.integers(60, 1500)), int(rng.integers(2, 6)))
        ours = find_label_issues(given, proba, rank_by=rank_by)
        mask = cleanlab_filter.find_label_issues(given, proba, filter_by="confident_learning")
        ranked = cleanlab_filter.find_label_issues(given, proba, filter_by="confident_learning",
                                                   return_indices_ranked_by=rank_by)
        assert np.array_equal(ours.is_issue, mask)
        assert np.array_equal(ours.ranked, ranked)
        theirs = compute_confident_joint(given, proba)
        assert np.abs(ours.confident_joint - theirs).max() <= 1  # the same estimate up to rounding
        assert np.array_equal(ours.confident_joint.sum(axis=1), np.bincount(given, minlength=proba.shape[1]))


def test_label_issues_flag_flipped_rows_and_estimate_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    proba = np.full((600, 3), 0.05)
    proba[np.arange(600), y] = 0.9
    given = y.copy()
    flipped = rng.choice(600, 30, replace=False)
    given[flipped] = (y[flipped] + 1) % 3
    issues = find_label_issues(given, proba)
    assert set(np.flatnonzero(issues.is_issue)) == set(flipped)
    assert np.array_equal(issues.suggested[flipped], y[flipped])
    noise = sum(row["estimated_wrong"] for row in issues.noise_by_class())
    assert noise == 30


def test_label_issues_refuse_mismatched_shapes():
    from mlops.core.errors import DataError

    with pytest.raises(DataError, match="shape"):
        find_label_issues(np.array([0, 1]), np.ones((3, 2)) / 2)


# --- near-duplicates ---------------------------------------------------------------------------------------
def test_signatures_are_datasketch_minhashes():
    from datasketch import MinHash

    texts = [nd.shingle_form(t) for t in ["The movie was GREAT fun!", "a dull, boring film", "ok", ""]]
    signatures = nd.signatures(texts)
    for text, signature in zip(texts, signatures, strict=True):
        reference = MinHash(num_perm=nd.NUM_PERM, seed=nd.MINHASH_SEED, hashfunc=int)
        if text:
            reference.update_batch(nd.shingle_hashes(text).tolist())
            assert np.array_equal(reference.hashvalues, signature)
        else:
            assert (signature == np.iinfo(np.uint32).max).all()


def test_minhash_pairs_find_edited_copies_and_nothing_else(mr_rows):
    texts = mr_rows["text"].head(400).tolist()
    copies = {
        3: texts[3].upper(),
        10: texts[10].replace(",", "").replace(".", "!") + "  ",
        25: texts[25].replace(" the ", " a ", 1) + " really",
    }
    data = texts + list(copies.values())
    pairs = nd.minhash_pairs(data, threshold=0.8)
    found = set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))
    expected = {(original, 400 + j) for j, original in enumerate(copies)}
    assert expected <= found
    assert len(found - expected) <= 1  # real MR has the odd near-identical pair; no flood of false ones
    assert (pairs.similarity >= 0.8).all()


def test_embedding_pairs_use_cosine_threshold():
    vectors = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [-1.0, 0.0]])
    pairs = nd.embedding_pairs(vectors, threshold=0.95)
    assert list(zip(pairs.first, pairs.second, strict=True)) == [(0, 1)]


def test_linked_pairs_join_leakage_groups():
    groups = leakage_groups(["a", "b", "c", "A "], linked_pairs=(np.array([1]), np.array([2])))
    assert groups[0] == groups[3] and groups[1] == groups[2] and groups[0] != groups[1]


def test_split_parameters_record_near_duplicates_only_when_on():
    assert "near_duplicates" not in SplitParameters().to_dict()
    on = SplitParameters(near_duplicates="minhash").to_dict()
    assert on["near_duplicates"] == "minhash"


def test_generate_splits_keeps_near_duplicates_on_one_side(cli, artifacts, tmp_path, mr_rows):
    frame = mr_rows.sample(300, random_state=0).reset_index(drop=True)
    copies = frame.head(40).assign(text=lambda f: f["text"].str.upper().str.replace(".", " !", regex=False))
    data = pd.concat([frame, copies], ignore_index=True)
    path = tmp_path / "near.csv"
    data.to_csv(path, index=False)
    result = generate_splits(cli, "near", path, "--near-duplicates", "minhash", folds=3, seed=1)
    assert "40 pairs joined" in result.output
    info = json.loads((artifacts / "experiments" / "near" / "experiment.json").read_text())
    assert info["split_parameters"]["near_duplicates"] == "minhash"
    arrays = np.load(artifacts / "experiments" / "near" / "splits.npz")
    side = {int(r): "holdout" for r in arrays["holdout_test"]}
    for k in range(3):
        side.update({int(r): f"fold{k}" for r in arrays[f"backtesting_{k}_test"]})
    assert all(side[i] == side[300 + i] for i in range(40))

    from mlops.experiments.service import ExperimentService
    from mlops.tuning.trial import trial_splits

    service = ExperimentService(artifacts)  # tune --nested's inner folds keep them together too
    experiment = service.load_experiment("near")
    inner = trial_splits(experiment, service.load_data(experiment), 3, fold=0)
    train_rows = set(arrays["backtesting_0_train"].tolist())
    pairs_inside = [i for i in range(40) if i in train_rows and 300 + i in train_rows]
    assert len(pairs_inside) > 10
    for _, val in inner:
        val = set(val.tolist())
        assert all((i in val) == (300 + i in val) for i in pairs_inside)


# --- the command -------------------------------------------------------------------------------------------
@pytest.fixture
def audited_csv(tmp_path) -> tuple[Path, set[int]]:
    texts, given, flipped = built_rows(300)
    texts += ["!!! ??? *** ### ...", texts[5].upper() + "!!"]  # an odd row and a near-copy
    given += ["positive", given[5]]
    path = tmp_path / "audited.csv"
    pd.DataFrame({"text": texts, "label": given}).to_csv(path, index=False)
    return path, flipped


def test_audit_ranks_flipped_rows_first_and_writes_its_files(cli, artifacts, audited_csv):
    path, flipped = audited_csv
    generate_splits(cli, "aud", path, folds=4, seed=0)
    cli("run-backtesting", "--experiment-id", "aud", "--model-config-name", "tfidf_logreg")
    cli("estimate-performance", "--experiment-id", "aud", "--model-config-name", "tfidf_logreg")
    result = cli("audit", "--experiment-id", "aud", "--model-config-name", "tfidf_logreg")
    assert "flagged as likely label errors" in result.output
    folder = artifacts / "experiments" / "aud" / "audit"
    issues = pd.read_csv(folder / "label_issues.csv")
    arrays = np.load(artifacts / "experiments" / "aud" / "splits.npz")
    audited = set(arrays["train_val"].tolist())
    truth = flipped & audited
    top = set(issues["row_id"].head(len(truth)))
    assert len(top & truth) >= 0.8 * len(truth)
    assert set(issues.columns) >= {"row_id", "text", "given_label", "suggested_label", "score", "rank", "fold"}
    assert not set(issues["row_id"]) & set(arrays["holdout_test"].tolist())  # hold-out rows listed apart
    holdout = pd.read_csv(folder / "holdout_label_issues.csv")
    assert set(holdout["row_id"]) <= set(arrays["holdout_test"].tolist())
    summary = json.loads((folder / "audit.json").read_text())
    assert summary["identity"]["input_sha256"]
    assert {row["label"] for row in summary["label_issues"]["by_class"]} == {"negative", "positive"}
    pairs = pd.read_csv(folder / "near_duplicates.csv")
    assert {(5, 301)} <= set(zip(pairs.row_id_a, pairs.row_id_b, strict=True))
    odd = pd.read_csv(folder / "odd_rows.csv")
    assert 300 in set(odd.loc[odd.reason == "nothing_left_after_normalisation", "row_id"])
    again = cli("audit", "--experiment-id", "aud", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(again, "already holds an audit", "--force")
    report = cli("report", "--experiment-id", "aud")
    html = (artifacts / "experiments" / "aud" / "reports" / "report.html").read_text()
    assert "Data health" in html and "cli audit" in html, report.output


def test_audit_refuses_missing_backtest_and_train_val_strategy(cli, audited_csv):
    path, _ = audited_csv
    generate_splits(cli, "nobt", path, folds=3)
    result = cli("audit", "--experiment-id", "nobt", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, "run-backtesting --experiment-id nobt --model-config-name tfidf_logreg")
    generate_splits(cli, "tv", path, "--backtesting-strategy", "train-val")
    result = cli("audit", "--experiment-id", "tv", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, "train-val", "--backtesting-strategy cv")


def test_audit_refuses_a_changed_input(cli, audited_csv):
    path, _ = audited_csv
    generate_splits(cli, "chg", path, folds=3)
    cli("run-backtesting", "--experiment-id", "chg", "--model-config-name", "tfidf_logreg")
    path.write_text(path.read_text().replace("positive", "negative", 1))
    result = cli("audit", "--experiment-id", "chg", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, "changed since experiment")


def test_retraining_without_flagged_rows_never_trains_on_rows_it_scores(cli, artifacts, audited_csv, monkeypatch):
    """Each fold's inner audit and retraining see only that fold's train and val rows: never its test rows, never
    the hold-out."""
    import mlops.audit.retrain as audit_retrain
    from mlops.app import Application
    from mlops.audit.service import AuditSettings

    path, _ = audited_csv
    generate_splits(cli, "rt", path, folds=3, seed=2)
    cli("run-backtesting", "--experiment-id", "rt", "--model-config-name", "tfidf_logreg")
    row_of = {text: i for i, text in enumerate(pd.read_csv(path)["text"])}
    trained: list[set[int]] = []
    real = audit_retrain.fit_and_predict

    def spy(named, train, val, test, labels, context):
        trained.append({row_of[t] for t in [*train.texts, *(val.texts if val is not None else [])]})
        return real(named, train, val, test, labels, context)

    monkeypatch.setattr(audit_retrain, "fit_and_predict", spy)
    app = Application(artifacts)
    result = app.audit("rt", AuditSettings(["tfidf_logreg"], near_duplicates=(), outliers=False,
                                           retrain_without_flagged=True))
    experiment = app.service.load_experiment("rt")
    holdout = set(experiment.plan.holdout_test.tolist())
    folds = experiment.plan.backtesting
    per_fold = 2 + 1  # inner folds (K - 1 = 2) and the retraining
    assert len(trained) == per_fold * len(folds)
    for k, fold in enumerate(folds):
        for rows in trained[k * per_fold:(k + 1) * per_fold]:
            assert not rows & holdout
            assert not rows & set(fold.test.tolist())
    retrain = result.summary["retrain"]["tfidf_logreg"]
    assert len(retrain["folds"]) == 3 and retrain["p_value"] is not None
    assert (result.directory / "retrain" / "tfidf_logreg" / "fold_0" / "predictions.csv").is_file()
