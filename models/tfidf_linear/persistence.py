"""A pickle-free file format for the fitted TF-IDF + linear pipeline.

Settings, vocabularies and class names go to JSON; idf vectors, weights and calibration
parameters to safetensors. Loading reads plain data only (nothing is unpickled or imported from
the file), and it avoids skops, whose import pulls in torch through scikit-learn's array-API shim.
Probabilities reproduce scikit-learn's ``predict_proba`` (tested against it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, softmax

FORMAT_VERSION = 1
VECTORIZER_SETTINGS = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "norm", "use_idf", "smooth_idf",
                       "strip_accents", "token_pattern", "binary")


def export_pipeline(pipeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able description, named arrays) of a fitted Pipeline([features: FeatureUnion, classifier])."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "features": []}
    arrays: dict[str, np.ndarray] = {}
    for name, vectorizer in pipeline.named_steps["features"].transformer_list:
        settings = {key: vectorizer.get_params()[key] for key in VECTORIZER_SETTINGS}
        settings["ngram_range"] = list(settings["ngram_range"])
        terms = [None] * len(vectorizer.vocabulary_)
        for term, index in vectorizer.vocabulary_.items():
            terms[index] = term
        meta["features"].append({"name": name, "settings": settings, "terms": terms})
        arrays[f"features.{name}.idf"] = np.asarray(vectorizer.idf_, dtype=np.float64)
    classifier = pipeline.named_steps["classifier"]
    if isinstance(classifier, LogisticRegression):
        meta["classifier"] = {"kind": "logistic_regression", "classes": [str(c) for c in classifier.classes_]}
        arrays["classifier.coef"] = classifier.coef_.astype(np.float64)
        arrays["classifier.intercept"] = classifier.intercept_.astype(np.float64)
    elif isinstance(classifier, CalibratedClassifierCV):
        members = classifier.calibrated_classifiers_
        if any(m.method != "sigmoid" for m in members):
            raise ValueError("only sigmoid calibration can be exported")
        meta["classifier"] = {"kind": "calibrated_linear", "classes": [str(c) for c in classifier.classes_],
                              "members": len(members)}
        for i, member in enumerate(members):
            if list(member.estimator.classes_) != list(classifier.classes_):
                raise ValueError("a calibration fold saw fewer classes than the whole training set")
            arrays[f"classifier.{i}.coef"] = member.estimator.coef_.astype(np.float64)
            arrays[f"classifier.{i}.intercept"] = np.atleast_1d(member.estimator.intercept_).astype(np.float64)
            arrays[f"classifier.{i}.a"] = np.asarray([c.a_ for c in member.calibrators], dtype=np.float64)
            arrays[f"classifier.{i}.b"] = np.asarray([c.b_ for c in member.calibrators], dtype=np.float64)
    else:
        raise ValueError(f"cannot export a {type(classifier).__name__}")
    # safetensors writes the raw buffer: Fortran-ordered weights (scikit-learn's coef_) must be made C-ordered.
    return meta, {name: np.ascontiguousarray(array) for name, array in arrays.items()}


def _logistic_proba(scores: np.ndarray) -> np.ndarray:
    if scores.shape[1] == 1:
        positive = expit(scores[:, 0])
        return np.column_stack([1.0 - positive, positive])
    return softmax(scores, axis=1)


def _calibrated_proba(scores: np.ndarray, a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    calibrated = expit(-(a[None, :] * scores + b[None, :]))
    if n_classes == 2:
        return np.column_stack([1.0 - calibrated[:, 0], calibrated[:, 0]])
    total = calibrated.sum(axis=1, keepdims=True)
    uniform = np.full_like(calibrated, 1.0 / n_classes)
    return np.divide(calibrated, total, out=uniform, where=total != 0)


class LinearTfidfPredictor:
    """Rebuilds the vectorizers from plain data and applies the stored linear model."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported TF-IDF format version {meta.get('format_version')!r}")
        self.vectorizers = []
        for feature in meta["features"]:
            settings = dict(feature["settings"])
            settings["ngram_range"] = tuple(settings["ngram_range"])
            vectorizer = TfidfVectorizer(**settings, dtype=np.float32)
            terms = feature["terms"]
            vectorizer.vocabulary_ = {term: index for index, term in enumerate(terms)}
            idf = arrays[f"features.{feature['name']}.idf"]
            if idf.shape != (len(terms),):
                raise ValueError(f"idf of {feature['name']!r} has shape {idf.shape}, expected ({len(terms)},)")
            vectorizer.idf_ = idf
            self.vectorizers.append(vectorizer)
        self.kind = meta["classifier"]["kind"]
        self.classes = list(meta["classifier"]["classes"])
        self.arrays = arrays
        self.members = int(meta["classifier"].get("members", 0))

    def _features(self, texts: list[str]):
        from scipy.sparse import hstack

        return hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        features = self._features(texts)
        if self.kind == "logistic_regression":
            scores = features @ self.arrays["classifier.coef"].T + self.arrays["classifier.intercept"]
            return _logistic_proba(np.asarray(scores))
        proba = np.zeros((features.shape[0], len(self.classes)))
        for i in range(self.members):
            scores = features @ self.arrays[f"classifier.{i}.coef"].T + self.arrays[f"classifier.{i}.intercept"]
            proba += _calibrated_proba(np.asarray(scores), self.arrays[f"classifier.{i}.a"],
                                       self.arrays[f"classifier.{i}.b"], len(self.classes))
        return proba / self.members
