"""TF-IDF (word and character n-grams) with a linear classifier: the fast, strong baseline."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from mlops.config import HyperparameterSearch, ModelConfig
from mlops.errors import ModelError
from mlops.model_interface import FitContext, ModelInterface, TextDataset, TrainingArguments

logger = logging.getLogger(__name__)

PAIR_SEPARATOR = " [SEP] "
WEIGHTS_FILE = "tfidf_arrays.safetensors"
META_FILE = "tfidf_model.json"


class TfidfTrainingArguments(TrainingArguments):
    classifier: Literal["logistic_regression", "linear_svm"] = "logistic_regression"
    C: float = Field(default=4.0, gt=0)
    class_weight: Literal["balanced"] | None = None
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = (2, 5)
    min_df: int = Field(default=1, ge=1)
    max_features: int | None = Field(default=None, gt=0)
    sublinear_tf: bool = True
    lowercase: bool = True
    max_iter: int = Field(default=2000, gt=0)

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


class TfidfLinearClassifier(ModelInterface):
    """A scikit-learn pipeline: TF-IDF features -> logistic regression or calibrated linear SVM."""

    training_arguments_class = TfidfTrainingArguments

    def __init__(self, config: ModelConfig, training_arguments: TfidfTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._pipeline = None  # the fitted scikit-learn pipeline (after fit)
        self._predictor = None  # or its reloaded, pickle-free form (after load)
        self.search_result: dict | None = None

    @classmethod
    def check_hyperparameter_search(cls, search: HyperparameterSearch, arguments: TfidfTrainingArguments) -> str | None:
        known = set(cls._build_pipeline(arguments, 0).get_params())
        unknown = [name for name in search.param_distributions if name not in known]
        if unknown:
            return (f"param_distributions names unknown parameters {unknown}; use pipeline parameter names such "
                    "as 'classifier__C' or 'features__word__ngram_range'.")
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
            classifier = CalibratedClassifierCV(
                LinearSVC(C=args.C, class_weight=args.class_weight, max_iter=args.max_iter, random_state=seed),
                cv=3,
            )
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
        self.labels = list(labels)
        unknown = set(train.labels) - set(self.labels)
        if unknown:
            raise ModelError(f"training labels {sorted(unknown)} are not in the label set {self.labels}.")
        pipeline = self._build_pipeline(self.training_arguments, context.seed)
        texts = _joined_texts(train)
        y = np.asarray(train.labels, dtype=object)
        search = self.config.hyperparameter_search
        if search is not None:
            pipeline = self._search(pipeline, texts, y, context.seed)
        else:
            pipeline.fit(texts, y)
        self._pipeline = pipeline
        if val is not None and val.labels is not None and len(val):
            accuracy = float(np.mean(self._predict_labels(val) == np.asarray(val.labels, dtype=object)))
            logger.info("validation accuracy %.4f on %d rows (used for reporting only)", accuracy, len(val))
        return self

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
        if self._pipeline is not None:
            raw, classes = self._pipeline.predict_proba(_joined_texts(data)), self._pipeline.classes_
        elif self._predictor is not None:
            raw, classes = self._predictor.predict_proba(_joined_texts(data)), self._predictor.classes
        else:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        # Align the classifier's class order (classes seen in training) with the full label set.
        proba = np.zeros((len(data), len(self.labels)), dtype=np.float64)
        column_of = {label: i for i, label in enumerate(self.labels)}
        for j, label in enumerate(classes):
            proba[:, column_of[str(label)]] = raw[:, j]
        return proba

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        from models.tfidf_linear.persistence import export_pipeline

        if self._pipeline is None:
            raise ModelError("only a model trained in this process can be saved; train it with fit() first.")
        meta, arrays = export_pipeline(self._pipeline)
        save_file(arrays, str(directory / WEIGHTS_FILE))
        meta.update(labels=self.labels, search_result=self.search_result)
        (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> TfidfLinearClassifier:
        from safetensors.numpy import load_file

        from models.tfidf_linear.persistence import LinearTfidfPredictor

        if not (directory / WEIGHTS_FILE).is_file() or not (directory / META_FILE).is_file():
            raise ModelError(f"{directory} has no {META_FILE} and {WEIGHTS_FILE}; it is not a saved TF-IDF model.")
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        model = cls(config)
        try:
            model._predictor = LinearTfidfPredictor(meta, load_file(str(directory / WEIGHTS_FILE)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{directory} holds a damaged TF-IDF model ({exc}); retrain it.") from None
        model.labels = list(meta["labels"])
        model.search_result = meta.get("search_result")
        return model
