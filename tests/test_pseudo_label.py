"""cli pseudo-label: clustering pseudo-labels from encoder embeddings, purity filtering, no fold leakage, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.hf import TOPICS, topic_data
from mlops.augment.pseudo_label import PseudoLabelSettings, pseudo_label, pseudo_label_fold
from mlops.augment.pseudo_label_files import OUTPUT_COLUMNS, read_pseudo_label_rows
from mlops.core.errors import DataError
from mlops.core.model_interface import FitContext
from mlops.core.text_dataset import TextDataset
from mlops.data.splitting import Fold, SplitParameters, build_split_plan, leakage_groups, normalise_text

LABELS = sorted(TOPICS)


def keyword_embed(texts, merged: tuple[str, ...] = ()) -> np.ndarray:
    """A stand-in encoder: one dimension per topic counting its keywords (topics in ``merged`` share one), plus
    small seeded noise on six more dimensions. Topic sentences are then clearly separated clusters."""
    names = [("+".join(merged) if topic in merged else topic) for topic in TOPICS]
    axes = {name: i for i, name in enumerate(dict.fromkeys(names))}
    x = np.zeros((len(texts), len(axes) + 6))
    for row, text in enumerate(texts):
        for topic, name in zip(TOPICS, names):
            x[row, axes[name]] += sum(word in TOPICS[topic] for word in text.split())
    return x + 0.05 * np.random.default_rng(0).standard_normal(x.shape)


class Spy:
    """Records every text it is asked to embed."""

    def __init__(self, embed=keyword_embed):
        self.embed = embed
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen.extend(texts)
        return self.embed(texts)


def _truth(texts, labels):
    return dict(zip(texts, labels))


# --- the pure function ------------------------------------------------------------------------------------------

def test_separated_clusters_get_their_labels_with_full_purity(topics):
    pool = topics["test"]
    result = pseudo_label(keyword_embed, topics["train"], pool.texts, PseudoLabelSettings(n_clusters=3))
    truth = _truth(pool.texts, pool.labels)
    assert len(result.texts) == len(pool)
    assert all(truth[text] == label for text, label in zip(result.texts, result.labels))
    assert np.all(result.purity == 1.0)
    assert sorted(c.label for c in result.clusters) == LABELS and all(c.kept for c in result.clusters)
    assert [pool.texts[i] for i in result.pool_index] == result.texts
    assert sum(c.n_labelled for c in result.clusters) == len(topics["train"])
    summary = result.summary()
    assert summary["clusters_kept"] == 3 and summary["rows_written"] == len(pool) and summary["mean_purity"] == 1.0


def test_min_purity_drops_mixed_clusters(topics):
    def merged(texts):  # sports and food land in one cluster: its purity is about one half
        return keyword_embed(texts, merged=("sports", "food"))

    pool = topics["test"]
    strict = pseudo_label(merged, topics["train"], pool.texts, PseudoLabelSettings(n_clusters=2, min_purity=0.9))
    assert set(strict.labels) == {"tech"}
    assert len(strict.texts) == sum(label == "tech" for label in pool.labels)
    mixed = next(c for c in strict.clusters if c.label != "tech")
    assert 0.4 < mixed.purity < 0.6 and not mixed.kept

    loose = pseudo_label(merged, topics["train"], pool.texts, PseudoLabelSettings(n_clusters=2, min_purity=0.4))
    assert len(loose.texts) == len(pool)
    assert set(loose.purity.round(6)) == {1.0, round(mixed.purity, 6)}


def test_clusters_with_too_few_labelled_members_get_no_label(topics):
    train = topics["train"]
    keep = [i for i, label in enumerate(train.labels) if label != "tech"][:60]
    keep += [i for i, label in enumerate(train.labels) if label == "tech"][:2]  # two labelled tech rows
    few = TextDataset([train.texts[i] for i in keep], [train.labels[i] for i in keep])
    result = pseudo_label(keyword_embed, few, topics["test"].texts, PseudoLabelSettings(n_clusters=3, min_labelled=3))
    tech = next(c for c in result.clusters if c.n_labelled == 2)
    assert tech.label is None and tech.purity is None and not tech.kept
    assert "tech" not in result.labels and len(result.texts) > 0
    again = pseudo_label(keyword_embed, few, topics["test"].texts, PseudoLabelSettings(n_clusters=3, min_labelled=2))
    assert "tech" in again.labels


def test_the_same_seed_gives_the_same_pseudo_labels(topics):
    settings = PseudoLabelSettings(n_clusters=5, min_purity=0.5, seed=3)
    first = pseudo_label(keyword_embed, topics["train"], topics["test"].texts, settings)
    second = pseudo_label(keyword_embed, topics["train"], topics["test"].texts, settings)
    assert first.texts == second.texts and first.labels == second.labels
    assert np.array_equal(first.cluster, second.cluster)


@pytest.mark.parametrize("settings, message", [
    (PseudoLabelSettings(min_purity=0.0), "--min-purity must be in (0, 1]"),
    (PseudoLabelSettings(min_purity=1.5), "--min-purity must be in (0, 1]"),
    (PseudoLabelSettings(n_clusters=1), "--n-clusters must be at least 2"),
    (PseudoLabelSettings(n_clusters=500), "lower --n-clusters"),
])
def test_bad_settings_are_refused_before_embedding(topics, settings, message):
    spy = Spy()
    with pytest.raises(DataError, match=re.escape(message)):
        pseudo_label(spy, topics["train"], topics["test"].texts, settings)
    assert spy.seen == []


# --- no leakage from a fold's held-out rows ------------------------------------------------------------------------

def _experiment_rows(topics) -> TextDataset:
    parts = [topics[name] for name in ("train", "val", "test")]
    return TextDataset([t for p in parts for t in p.texts], [y for p in parts for y in p.labels])


def test_a_fold_never_embeds_or_returns_its_validation_or_test_rows(topics):
    data = _experiment_rows(topics)
    plan = build_split_plan(data.labels, leakage_groups(data.texts), SplitParameters(cv_folds=3, seed=0))
    fresh, _ = topic_data(90, seed=7)
    for fold in [*plan.backtesting, plan.performance_estimation]:
        held_out = [data.texts[i] for rows in (fold.val, fold.test) for i in rows]
        blocked = {normalise_text(text) for text in held_out}
        clean = [text for text in fresh if normalise_text(text) not in blocked]
        # the pool also holds held-out texts, one of them in other case and spacing
        pool = clean + held_out[:5] + held_out[-5:] + ["  " + held_out[0].upper() + " "]
        spy = Spy()
        result = pseudo_label_fold(spy, data, fold, pool, PseudoLabelSettings(n_clusters=3, min_purity=0.5))
        seen = {normalise_text(text) for text in spy.seen}
        assert not seen & blocked, "a validation or test text was embedded"
        assert not {normalise_text(text) for text in result.texts} & blocked, "a held-out text was pseudo-labelled"
        assert sorted(spy.seen) == sorted([data.texts[i] for i in fold.train] + clean)
        assert result.dropped_held_out == len(pool) - len(clean)
        assert [pool[i] for i in result.pool_index] == result.texts and result.n_pool == len(pool)
        assert len(result.texts) == len(clean)


def test_a_fold_of_row_numbers_is_mapped_through_row_ids_so_dropped_rows_shift_nothing(topics):
    """Experiment folds hold original row numbers; with a dropped row they are not positions."""
    data = _experiment_rows(topics)
    row_ids = np.arange(len(data)) + (np.arange(len(data)) >= 10)  # row 10 of the file was empty and dropped
    fold = Fold(train=row_ids[:200], val=row_ids[200:260], test=row_ids[260:])
    spy = Spy()
    fresh, _ = topic_data(60, seed=11)
    pseudo_label_fold(spy, data, fold, fresh, PseudoLabelSettings(n_clusters=3, min_purity=0.5), row_ids=row_ids)
    assert sorted(spy.seen) == sorted(list(data.texts[:200]) + fresh)  # the first 200 rows, no held-out one
    with pytest.raises(DataError, match="not in the data"):
        pseudo_label_fold(spy, data, Fold(train=np.array([999]), val=row_ids[:1]), fresh, row_ids=row_ids)


def test_a_fold_with_only_held_out_texts_in_its_pool_embeds_nothing(topics):
    data = _experiment_rows(topics)
    fold = Fold(train=np.arange(200), val=np.arange(200, 260), test=np.arange(260, 320))
    spy = Spy()
    with pytest.raises(DataError, match="no unlabelled rows"):
        pseudo_label_fold(spy, data, fold, list(topics["val"].texts) + list(topics["test"].texts))
    assert spy.seen == []


# --- reading the files ---------------------------------------------------------------------------------------------

def test_without_a_labelled_file_the_input_rows_with_a_label_are_the_labelled_rows(tmp_path):
    texts, labels = topic_data(40, seed=5)
    frame = pd.DataFrame({"text": texts, "label": labels[:25] + [""] * 15})
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    rows = read_pseudo_label_rows(tmp_path / "mixed.csv", tmp_path / "out.csv")
    assert list(rows.labelled.texts) == texts[:25] and list(rows.labelled.labels) == labels[:25]
    assert rows.pool == texts[25:]


# --- encoders and the CLI ------------------------------------------------------------------------------------------

def _write(path: Path, n: int, seed: int, *, labelled: bool = True) -> Path:
    texts, labels = topic_data(n, seed=seed)
    pd.DataFrame({"text": texts, **({"label": labels} if labelled else {})}).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    return {"labelled": _write(tmp_path / "labelled.csv", 60, seed=3),
            "unlabelled": _write(tmp_path / "unlabelled.csv", 30, seed=4, labelled=False),
            "output": tmp_path / "out" / "pseudo.csv"}


def _pseudo_label(cli, model: Path | str, files, *extra: str, expect: int | None = 0):
    return cli("pseudo-label", "--model-path", str(model), "--input-file", str(files["unlabelled"]),
               "--labelled-file", str(files["labelled"]), "--output-file", str(files["output"]), *extra,
               artifacts_dir=None, expect=expect)


def test_cli_with_a_pretrained_encoder_folder(cli, tiny_bert, files):
    result = _pseudo_label(cli, tiny_bert, files, "--n-clusters", "3", "--min-purity", "0.3", "--min-labelled", "1",
                           "--batch-size", "8")
    assert "Kept" in result.output and str(files["output"]) in result.output
    out = pd.read_csv(files["output"], keep_default_na=False)
    assert tuple(out.columns) == OUTPUT_COLUMNS
    unlabelled = set(pd.read_csv(files["unlabelled"]).text)
    assert 0 < len(out) <= 30 and set(out.text) <= unlabelled
    assert set(out.label) <= set(LABELS) and (out.purity.astype(float) >= 0.3).all()
    assert set(out.cluster.astype(int)) <= {0, 1, 2} and (out.n_labelled_in_cluster.astype(int) >= 1).all()
    assert set(out.classifier_label) == {""} and set(out.classifier_confidence) == {""}  # no classifier: empty
    assert not list(files["output"].parent.glob(".*"))  # no scratch left

    refused = _pseudo_label(cli, tiny_bert, files, expect=3)
    assert "already exists" in refused.output and "--force" in refused.output and "Traceback" not in refused.output
    _pseudo_label(cli, tiny_bert, files, "--n-clusters", "3", "--min-purity", "0.3", "--pooling", "cls", "--force")


def test_a_trained_classifier_embeds_and_adds_its_confidence(tiny_bert, files, tmp_path):
    from mlops.app import Application
    from mlops.core.model_folder import write_model_descriptor
    from mlops.core.config import ModelConfig
    from models.hf_encoder.model import HFEncoderClassifier

    config = ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                         model_name=str(tiny_bert), training_arguments={
                             "epochs": 2, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                             "max_length": 16, "num_threads": 1, "precision": "fp32"})
    texts, labels = topic_data(120, seed=1)
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels), labels=LABELS,
                                            context=FitContext(seed=0, show_progress=False))
    folder = tmp_path / "final_model"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tiny", config, LABELS)
    (folder / "manifest.json").write_text(json.dumps({"created_at": "test", "input_file": None}))

    summary = Application(tmp_path / "artifacts").pseudo_label(
        str(folder), files["unlabelled"], files["output"], labelled_file=files["labelled"],
        settings=PseudoLabelSettings(n_clusters=3, min_purity=0.3, min_labelled=1))
    out = pd.read_csv(files["output"])
    assert len(out) == summary.stats["rows_written"] > 0
    assert set(out.classifier_label) <= set(LABELS)
    assert ((out.classifier_confidence > 0) & (out.classifier_confidence <= 1)).all()
    assert summary.stats["classifier_agreement"] == pytest.approx(float((out.classifier_label == out.label).mean()))
    assert "classifier" in summary.encoder


def test_a_model_without_an_encoder_is_refused(cli, files, tmp_path):
    from mlops.core.model_folder import write_model_descriptor
    from mlops.core.config import ModelConfig
    from models.tfidf_linear.model import TfidfLinearClassifier

    config = ModelConfig(module_path="models.tfidf_linear.model", class_name="TfidfLinearClassifier")
    texts, labels = topic_data(60, seed=2)
    model = TfidfLinearClassifier(config).fit(TextDataset(texts, labels), labels=LABELS)
    folder = tmp_path / "tfidf"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tfidf", config, LABELS)
    result = _pseudo_label(cli, folder, files, expect=4)
    assert "has no encoder" in result.output and "Traceback" not in result.output
    assert not files["output"].exists()


def _header_only(path: Path) -> Path:
    path.write_text("text\n")
    return path


@pytest.mark.parametrize("case, extra, code, message", [
    ("missing text column", ["--text-column", "body"], 2, "column 'body' (from --text-column) not found"),
    ("empty input", [], 2, "no data rows"),
    ("min purity zero", ["--min-purity", "0"], 2, "--min-purity must be in (0, 1]"),
    ("min purity above one", ["--min-purity", "1.2"], 2, "--min-purity must be in (0, 1]"),
    ("more clusters than rows", ["--n-clusters", "1000"], 2, "lower --n-clusters"),
    ("no labelled rows", ["--no-labelled-file"], 2, "no labelled rows"),
])
def test_bad_input_fails_cleanly_before_the_model_loads(cli, files, tmp_path, case, extra, code, message):
    if case == "empty input":
        files["unlabelled"] = _header_only(tmp_path / "empty.csv")
    args = ["pseudo-label", "--model-path", str(tmp_path / "never_loaded"), "--input-file", str(files["unlabelled"]),
            "--output-file", str(files["output"])]
    if extra != ["--no-labelled-file"]:
        args += ["--labelled-file", str(files["labelled"]), *extra]
    result = cli(*args, artifacts_dir=None, expect=code)
    assert "Error:" in result.output and message in result.output and "Traceback" not in result.output
    assert not files["output"].exists()
