"""TF-IDF (word and character n-grams) with a linear classifier: the fast, strong baseline.

``calibration`` ("sigmoid" or "isotonic") wraps the classifier in scikit-learn's ``CalibratedClassifierCV``
with stratified 3-fold cross-validation inside the training split only: each fold's classifier is calibrated
on the rows it did not see, and the probabilities are the folds' average. The linear SVM has no probabilities
of its own, so it is always calibrated (sigmoid unless ``calibration`` says otherwise).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from mlops.core.class_balance import resolve_class_weight
from mlops.core.config import HyperparameterSearch, ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.multilabel import is_label_sets, label_matrix
from mlops.core.text_dataset import TextDataset

logger = logging.getLogger(__name__)

#: Threads of BLAS and OpenMP while a model trains: one, so that the same seed gives the same bits on any
#: machine, under any executor (a Ray task, the local process) and any OMP_NUM_THREADS.
BLAS_THREADS = 1


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=BLAS_THREADS)


def _vocabulary_error(exc: ValueError, arguments, rows: int) -> ModelError | None:
    """scikit-learn's vocabulary errors, said with the setting behind them and the fix (None: another error)."""
    text = str(exc)
    if "no terms remain" not in text and "max_df corresponds to < documents than min_df" not in text:
        return None
    return ModelError(f"training_arguments.min_df {arguments.min_df} leaves no term in the vocabulary of {rows} "
                      f"training rows (scikit-learn: {text}). Lower min_df (1 keeps every term seen once), or "
                      "train on more rows.")

PAIR_SEPARATOR = " [SEP] "
WEIGHTS_FILE = "tfidf_arrays.safetensors"
META_FILE = "tfidf_model.json"
#: Stratified folds of CalibratedClassifierCV inside the training split.
CALIBRATION_FOLDS = 3


class TfidfTrainingArguments(TrainingArguments):
    classifier: Literal["logistic_regression", "linear_svm"] = "logistic_regression"
    C: float = Field(default=4.0, gt=0)
    class_weight: Literal["balanced", "auto"] | None = Field(
        default=None, description="balanced; auto: balanced when the largest training class is more than 1.5x the "
        "smallest; null: unweighted")
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = (2, 5)
    min_df: int = Field(default=1, ge=1)
    max_features: int | None = Field(default=None, gt=0)
    sublinear_tf: bool = True
    lowercase: bool = True
    max_iter: int = Field(default=2000, gt=0)
    calibration: Literal["sigmoid", "isotonic"] | None = Field(
        default=None, description="CalibratedClassifierCV method (3 stratified folds inside train); null: none for "
        "logistic_regression, sigmoid for linear_svm",
    )

    @property
    def calibration_method(self) -> str | None:
        """The calibration applied: the one asked for, else sigmoid for the SVM (which has no probabilities)."""
        return self.calibration or ("sigmoid" if self.classifier == "linear_svm" else None)

    @model_validator(mode="after")
    def _ranges(self) -> TfidfTrainingArguments:
        for name in ("word_ngram_range", "char_ngram_range"):
            value = getattr(self, name)
            if value is not None and not (1 <= value[0] <= value[1]):
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, found {list(value)}")
        return self


def _joined_texts(data: TextDataset) -> list[str]:
    if data.text_pairs is None:
        return [str(t) for t in data.texts]
    return [f"{a}{PAIR_SEPARATOR}{b}" for a, b in zip(data.texts, data.text_pairs, strict=True)]


def _log_loss_and_ece(proba: np.ndarray | None, y: np.ndarray | None) -> tuple[float | None, float | None]:
    """Log-loss (probabilities clipped at 1e-12, as in compute_metrics) and ECE of column indices ``y``."""
    from mlops.core.calibration_error import expected_calibration_error

    if proba is None or y is None or not len(y):
        return None, None
    clipped = np.clip(proba, 1e-12, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return float(-np.log(clipped[np.arange(len(y)), y]).mean()), expected_calibration_error(proba, y)


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class TfidfLinearClassifier(ModelInterface):
    """A scikit-learn pipeline: TF-IDF features -> logistic regression or calibrated linear SVM."""

    training_arguments_class = TfidfTrainingArguments
    supports_multi_label = True  # logistic regression only: one sigmoid per label (see multi_label.py)

    def __init__(self, config: ModelConfig, training_arguments: TfidfTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._pipeline = None  # the fitted scikit-learn pipeline (after fit)
        self._predictor = None  # or its reloaded, pickle-free form (after load)
        self.search_result: dict | None = None
        self._calibration: dict | None = None  # runtime_info()["calibration"] where calibrated
        self._class_weight: dict | None = None  # what class_weight resolved to in fit, and why
        self.multi_label = False

    @classmethod
    def check_hyperparameter_search(cls, search: HyperparameterSearch, arguments: TfidfTrainingArguments) -> str | None:
        known = set(cls._build_pipeline(arguments.model_copy(update={"class_weight": None}), 0).get_params())
        unknown = [name for name in search.param_distributions if name not in known]
        if unknown:
            prefix = "classifier__estimator__" if arguments.calibration_method else "classifier__"
            return (f"param_distributions names unknown parameters {unknown}; use pipeline parameter names such "
                    f"as '{prefix}C' or 'features__word__ngram_range'.")
        return None

    @staticmethod
    def _build_pipeline(args: TfidfTrainingArguments, seed: int):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, Pipeline
        from sklearn.svm import LinearSVC

        features = [
            ("word", TfidfVectorizer(
                analyzer="word", ngram_range=tuple(args.word_ngram_range), min_df=args.min_df,
                max_features=args.max_features, sublinear_tf=args.sublinear_tf, lowercase=args.lowercase,
                dtype=np.float32,
            )),
        ]
        if args.char_ngram_range is not None:
            features.append(("char", TfidfVectorizer(
                analyzer="char_wb", ngram_range=tuple(args.char_ngram_range), min_df=args.min_df,
                max_features=args.max_features, sublinear_tf=args.sublinear_tf, lowercase=args.lowercase,
                dtype=np.float32,
            )))
        if args.classifier == "logistic_regression":
            classifier = LogisticRegression(
                C=args.C, class_weight=args.class_weight, max_iter=args.max_iter, random_state=seed
            )
        else:
            classifier = LinearSVC(C=args.C, class_weight=args.class_weight, max_iter=args.max_iter, random_state=seed)
        if args.calibration_method is not None:  # cv=3: stratified folds of the training rows, not shuffled
            classifier = CalibratedClassifierCV(classifier, method=args.calibration_method, cv=CALIBRATION_FOLDS)
        return Pipeline([("features", FeatureUnion(features)), ("classifier", classifier)])

    def fit(
        self,
        train: TextDataset,
        val: TextDataset | None = None,
        *,
        labels: Sequence[str],
        context: FitContext | None = None,
    ) -> TfidfLinearClassifier:
        context = context or FitContext()
        if train.labels is None:
            raise ModelError("TfidfLinearClassifier.fit needs labelled training data.")
        if is_label_sets(train.labels):
            return self._fit_multi_label(train, labels, context)
        self.labels = list(labels)
        unknown = set(train.labels) - set(self.labels)
        if unknown:
            raise ModelError(f"training labels {sorted(unknown)} are not in the label set {self.labels}.")
        self._check_calibration_rows(train)
        class_weight, reason = resolve_class_weight(self.training_arguments.class_weight, self.labels, train.labels)
        self._class_weight = None  # recorded (and saved) only where auto decided it
        if self.training_arguments.class_weight == "auto":
            logger.info("class weights: %s (%s)", class_weight or "none", reason)
            self._class_weight = {"class_weight": class_weight, "reason": reason}
        pipeline = self._build_pipeline(self.training_arguments.model_copy(update={"class_weight": class_weight}),
                                        context.seed)
        texts = _joined_texts(train)
        y = np.asarray(train.labels, dtype=object)
        search = self.config.hyperparameter_search
        with _one_blas_thread():  # the solver's sums do not depend on the machine's or the task's cores
            try:
                pipeline = (self._search(pipeline, texts, y, context.seed) if search is not None
                            else pipeline.fit(texts, y))
            except ValueError as exc:
                raise _vocabulary_error(exc, self.training_arguments, len(texts)) or exc
        self._pipeline = pipeline
        has_val = val is not None and val.labels is not None and len(val) > 0
        if has_val:
            accuracy = float(np.mean(self._predict_labels(val) == np.asarray(val.labels, dtype=object)))
            logger.info("validation accuracy %.4f on %d rows (used for reporting only)", accuracy, len(val))
        method = self.training_arguments.calibration_method
        self._calibration = None if method is None else self._calibration_record(method, val if has_val else None)
        return self

    def _fit_multi_label(self, train: TextDataset, labels: Sequence[str], context: FitContext) -> TfidfLinearClassifier:
        """One binary logistic regression per label over shared TF-IDF features."""
        from sklearn.pipeline import Pipeline

        from models.tfidf_linear.multi_label import MultiLabelLogistic

        args = self.training_arguments
        if args.classifier != "logistic_regression" or args.calibration is not None:
            raise ModelError("multi-label TF-IDF is a logistic regression per label, uncalibrated: set "
                             "training_arguments.classifier logistic_regression and calibration null (tfidf_logreg).")
        if self.config.hyperparameter_search is not None:
            raise ModelError("hyperparameter_search is not supported for multi-label data; use cli tune instead.")
        self.labels, self.multi_label = list(labels), True
        unknown = {label for row in train.labels for label in row} - set(self.labels)
        if unknown:
            raise ModelError(f"training labels {sorted(unknown)} are not in the label set {self.labels}.")
        features = self._build_pipeline(args.model_copy(update={"class_weight": None}), context.seed).named_steps["features"]
        classifier = MultiLabelLogistic(args.C, args.max_iter, args.class_weight, context.seed)
        texts = _joined_texts(train)
        with _one_blas_thread():
            try:
                matrix = features.fit_transform(texts)
            except ValueError as exc:
                raise _vocabulary_error(exc, args, len(texts)) or exc
            classifier.fit(matrix, label_matrix(train.labels, self.labels))
        self._pipeline = Pipeline([("features", features), ("classifier", classifier)])
        if args.class_weight is not None:
            self._class_weight = {"class_weight": "balanced", "labels": [self.labels[j] for j in classifier.weighted_],
                                  "reason": "per label: " + ("every label" if args.class_weight == "balanced" else
                                                             "labels present in under 40% or over 60% of the rows")}
        return self

    def _check_calibration_rows(self, train: TextDataset) -> None:
        method = self.training_arguments.calibration_method
        if method is None:
            return
        labels, counts = np.unique(np.asarray(train.labels, dtype=str), return_counts=True)
        few = {str(label): int(n) for label, n in zip(labels, counts, strict=True) if n < CALIBRATION_FOLDS}
        if few:
            raise ModelError(
                f"{method} calibration is fitted by {CALIBRATION_FOLDS}-fold cross-validation inside the training "
                f"split, so every class needs at least {CALIBRATION_FOLDS} training rows; found {few}. Give those "
                "classes more rows, or use classifier logistic_regression with training_arguments.calibration null."
            )

    def _calibration_record(self, method: str, val: TextDataset | None) -> dict:
        """How calibration changed the validation log-loss and ECE (before: None for the SVM, which has none)."""
        record = {"method": method, "temperature": None, "cv_folds": CALIBRATION_FOLDS,
                  "validation_rows": 0 if val is None else len(val)}
        before = after = y = None
        if val is not None:
            column = {label: j for j, label in enumerate(self.labels)}
            y = np.fromiter((column[str(v)] for v in val.labels), dtype=np.int64, count=len(val))
            before, after = self.predict_proba_uncalibrated(val), self.predict_proba(val)
        for when, proba in (("before", before), ("after", after)):
            record[f"validation_log_loss_{when}"], record[f"validation_ece_{when}"] = _log_loss_and_ece(proba, y)
        logger.info("%s calibration (%d stratified folds inside train): validation log-loss %s -> %s, ECE %s -> %s",
                    method, CALIBRATION_FOLDS, *(_rounded(record[f"validation_{name}_{when}"])
                                                 for name in ("log_loss", "ece") for when in ("before", "after")))
        return record

    def _search(self, pipeline, texts: list[str], y: np.ndarray, seed: int):
        from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

        search = self.config.hyperparameter_search
        distributions = {
            name: [tuple(v) if isinstance(v, list) else v for v in values]
            for name, values in search.param_distributions.items()
        }
        searcher = RandomizedSearchCV(
            pipeline, distributions, n_iter=search.n_iter, scoring=search.scoring,
            cv=StratifiedKFold(n_splits=search.cv_folds, shuffle=True, random_state=seed),
            random_state=seed, refit=True, n_jobs=1,
        )
        searcher.fit(texts, y)
        self.search_result = {
            "best_params": {k: list(v) if isinstance(v, tuple) else v for k, v in searcher.best_params_.items()},
            "best_score": float(searcher.best_score_),
            "scoring": search.scoring,
        }
        logger.info("randomized search (%d candidates, %d-fold inside train): best %s = %.4f with %s",
                    search.n_iter, search.cv_folds, search.scoring, searcher.best_score_, searcher.best_params_)
        return searcher.best_estimator_

    def _predict_labels(self, data: TextDataset) -> np.ndarray:
        proba = self.predict_proba(data)
        return np.asarray(self.labels, dtype=object)[proba.argmax(axis=1)]

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if self.multi_label:  # one column per label already, in label order
            source = self._pipeline if self._pipeline is not None else self._predictor
            return np.asarray(source.predict_proba(_joined_texts(data)), dtype=np.float64)
        if self._pipeline is not None:
            raw, classes = self._pipeline.predict_proba(_joined_texts(data)), self._pipeline.classes_
        elif self._predictor is not None:
            raw, classes = self._predictor.predict_proba(_joined_texts(data)), self._predictor.classes
        else:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        return self._aligned(raw, classes)

    def predict_proba_uncalibrated(self, data: TextDataset) -> np.ndarray | None:
        """A calibrated logistic regression's probabilities before calibration (the average of its folds'
        classifiers); None when there are none (no calibration, or the SVM, which gives no probabilities)."""
        if self._pipeline is not None:
            classifier = self._pipeline.named_steps["classifier"]
            members = getattr(classifier, "calibrated_classifiers_", None)
            if not members or not hasattr(members[0].estimator, "predict_proba"):
                return None
            features = self._pipeline[:-1].transform(_joined_texts(data))
            raw = sum(member.estimator.predict_proba(features) for member in members) / len(members)
            return self._aligned(raw, classifier.classes_)
        if self._predictor is not None:
            raw = self._predictor.predict_proba_uncalibrated(_joined_texts(data))
            return None if raw is None else self._aligned(raw, self._predictor.classes)
        raise ModelError("the model is not trained yet: call fit() or load() first.")

    def _aligned(self, raw: np.ndarray, classes) -> np.ndarray:
        """``raw`` (the classifier's class order: classes seen in training) in the full label set's columns."""
        proba = np.zeros((len(raw), len(self.labels)), dtype=np.float64)
        column_of = {label: i for i, label in enumerate(self.labels)}
        for j, label in enumerate(classes):
            proba[:, column_of[str(label)]] = raw[:, j]
        return proba

    @classmethod
    def arithmetic(cls, arguments, device, runtime=None) -> dict:
        """Training runs with one BLAS/OpenMP thread whatever the cores (folds recorded before that: none)."""
        if runtime is not None and "blas_threads" not in runtime:
            return {}
        return {"blas_threads": BLAS_THREADS}

    def runtime_info(self) -> dict:
        info = {"blas_threads": BLAS_THREADS}
        if self._class_weight is not None:
            info["class_weight"] = dict(self._class_weight)
        return info if self._calibration is None else {**info, "calibration": dict(self._calibration)}

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        from models.tfidf_linear.persistence import export_pipeline

        if self._pipeline is None:
            raise ModelError("only a model trained in this process can be saved; train it with fit() first.")
        try:
            meta, arrays = export_pipeline(self._pipeline)
        except ValueError as exc:
            raise ModelError(f"this TF-IDF model cannot be saved in the pickle-free format: {exc}.") from None
        save_file(arrays, str(directory / WEIGHTS_FILE))
        meta.update(labels=self.labels, search_result=self.search_result, calibration=self._calibration,
                    class_weight=self._class_weight, multi_label=self.multi_label)
        (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> TfidfLinearClassifier:
        from safetensors.numpy import load_file

        from models.tfidf_linear.persistence import LinearTfidfPredictor

        missing = [name for name in (META_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
        if missing:
            raise ModelError(f"{directory} has no {' and no '.join(missing)}"
                             f"{'' if len(missing) == 2 else ' (its other file is there: the folder is incomplete)'}; "
                             "it is not a complete saved TF-IDF model. Copy the whole folder again, or retrain it.")
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        model = cls(config)
        try:
            model._predictor = LinearTfidfPredictor(meta, load_file(str(directory / WEIGHTS_FILE)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{directory} holds a damaged TF-IDF model ({exc}); retrain it.") from None
        model.labels = list(meta["labels"])
        model.search_result = meta.get("search_result")
        model._calibration = meta.get("calibration")
        model._class_weight = meta.get("class_weight")
        model.multi_label = bool(meta.get("multi_label"))
        return model
