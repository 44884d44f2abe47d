"""A pickle-free file format for the fitted TF-IDF + linear pipeline.

Settings, vocabularies and class names go to JSON; idf vectors, weights and calibration
parameters (sigmoid: a and b; isotonic: the interpolation thresholds) to safetensors. Loading reads
plain data only (nothing is unpickled or imported from the file), and it avoids skops, whose import
pulls in torch through scikit-learn's array-API shim. Probabilities reproduce scikit-learn's
``predict_proba`` (tested against it). A calibrated classifier is a logistic regression or a linear SVM
calibrated by sigmoid or isotonic regression; files with isotonic calibration are format version 2
(older versions of this reader refuse them), all others version 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, softmax

FORMAT_VERSION = 1
#: Version 2 adds isotonic calibrators, version 3 multi-label models; older files are read as before.
READABLE_VERSIONS = (1, 2, 3)
CALIBRATION_METHODS = ("sigmoid", "isotonic")
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
    from models.tfidf_linear.multi_label import MultiLabelLogistic

    if isinstance(classifier, MultiLabelLogistic):  # one sigmoid per label; classes are column indices
        meta["classifier"] = {"kind": "multi_label_logistic", "classes": [str(c) for c in classifier.classes_]}
        meta["format_version"] = 3
        arrays["classifier.coef"] = classifier.coef_.astype(np.float64)
        arrays["classifier.intercept"] = classifier.intercept_.astype(np.float64)
    elif isinstance(classifier, LogisticRegression):
        meta["classifier"] = {"kind": "logistic_regression", "classes": [str(c) for c in classifier.classes_]}
        arrays["classifier.coef"] = classifier.coef_.astype(np.float64)
        arrays["classifier.intercept"] = classifier.intercept_.astype(np.float64)
    elif isinstance(classifier, CalibratedClassifierCV):
        meta["classifier"], calibration_arrays = _export_calibrated(classifier)
        arrays.update(calibration_arrays)
        if meta["classifier"]["method"] == "isotonic":
            meta["format_version"] = 2
    else:
        raise ValueError(f"cannot export a {type(classifier).__name__}")
    # safetensors writes the raw buffer: Fortran-ordered weights (scikit-learn's coef_) must be made C-ordered.
    return meta, {name: np.ascontiguousarray(array) for name, array in arrays.items()}


def _export_calibrated(classifier) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The description and arrays of a fitted CalibratedClassifierCV over a linear classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    members = classifier.calibrated_classifiers_
    methods = sorted({m.method for m in members})
    if len(methods) != 1 or methods[0] not in CALIBRATION_METHODS:
        raise ValueError(f"calibration {methods} cannot be exported; use one of {list(CALIBRATION_METHODS)}")
    bases = {type(m.estimator) for m in members}
    if not bases <= {LogisticRegression} and not bases <= {LinearSVC}:
        raise ValueError(f"a calibrated {sorted(b.__name__ for b in bases)} cannot be exported; "
                         "use LogisticRegression or LinearSVC")
    meta = {"kind": "calibrated_linear", "classes": [str(c) for c in classifier.classes_], "members": len(members),
            "method": methods[0], "base": "logistic_regression" if bases == {LogisticRegression} else "linear_svm"}
    arrays: dict[str, np.ndarray] = {}
    for i, member in enumerate(members):
        if list(member.estimator.classes_) != list(classifier.classes_):
            raise ValueError("a calibration fold saw fewer classes than the whole training set")
        arrays[f"classifier.{i}.coef"] = member.estimator.coef_.astype(np.float64)
        arrays[f"classifier.{i}.intercept"] = np.atleast_1d(member.estimator.intercept_).astype(np.float64)
        if methods[0] == "sigmoid":
            arrays[f"classifier.{i}.a"] = np.asarray([c.a_ for c in member.calibrators], dtype=np.float64)
            arrays[f"classifier.{i}.b"] = np.asarray([c.b_ for c in member.calibrators], dtype=np.float64)
        else:  # isotonic: kept in their own dtype, which scikit-learn casts the scores to before interpolating
            for k, calibrator in enumerate(member.calibrators):
                arrays[f"classifier.{i}.{k}.x"] = np.asarray(calibrator.X_thresholds_)
                arrays[f"classifier.{i}.{k}.y"] = np.asarray(calibrator.y_thresholds_)
    return meta, arrays


def _logistic_proba(scores: np.ndarray) -> np.ndarray:
    if scores.shape[1] == 1:
        positive = expit(scores[:, 0])
        return np.column_stack([1.0 - positive, positive])
    return softmax(scores, axis=1)


def _isotonic(scores: np.ndarray, arrays: dict[str, np.ndarray], member: int) -> np.ndarray:
    """Each column of ``scores`` through its isotonic calibrator (linear interpolation, clipped at the ends)."""
    columns = []
    for k in range(scores.shape[1]):
        x, y = arrays[f"classifier.{member}.{k}.x"], arrays[f"classifier.{member}.{k}.y"]
        columns.append(np.interp(scores[:, k].astype(x.dtype), x, y).astype(x.dtype))
    return np.column_stack(columns)


def _normalised(calibrated: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest calibrated probabilities as scikit-learn combines them (binary: one column)."""
    if n_classes == 2:
        return np.column_stack([1.0 - calibrated[:, 0], calibrated[:, 0]])
    total = calibrated.sum(axis=1, keepdims=True)
    uniform = np.full_like(calibrated, 1.0 / n_classes)
    return np.divide(calibrated, total, out=uniform, where=total != 0)


class LinearTfidfPredictor:
    """Rebuilds the vectorizers from plain data and applies the stored linear model."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if meta.get("format_version") not in READABLE_VERSIONS:
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
        # version 1 files from before these keys: a linear SVM with sigmoid calibration
        self.method = meta["classifier"].get("method", "sigmoid")
        self.base = meta["classifier"].get("base", "linear_svm")
        if self.kind == "calibrated_linear" and self.method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}")

    def _features(self, texts: list[str]):
        from scipy.sparse import hstack

        return hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def _member_scores(self, features, member: int) -> np.ndarray:
        coef, intercept = self.arrays[f"classifier.{member}.coef"], self.arrays[f"classifier.{member}.intercept"]
        return np.asarray(features @ coef.T + intercept)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        features = self._features(texts)
        if self.kind == "multi_label_logistic":
            return expit(np.asarray(features @ self.arrays["classifier.coef"].T + self.arrays["classifier.intercept"]))
        if self.kind == "logistic_regression":
            scores = features @ self.arrays["classifier.coef"].T + self.arrays["classifier.intercept"]
            return _logistic_proba(np.asarray(scores))
        proba = np.zeros((features.shape[0], len(self.classes)))
        for i in range(self.members):
            scores = self._member_scores(features, i)
            if self.method == "sigmoid":
                a, b = self.arrays[f"classifier.{i}.a"], self.arrays[f"classifier.{i}.b"]
                calibrated = expit(-(a[None, :] * scores + b[None, :]))
            else:
                calibrated = _isotonic(scores, self.arrays, i)
            proba += _normalised(calibrated, len(self.classes))
        return proba / self.members

    def predict_proba_uncalibrated(self, texts: list[str]) -> np.ndarray | None:
        """A calibrated logistic regression's probabilities before calibration (its members' average), else None."""
        if self.kind != "calibrated_linear" or self.base != "logistic_regression":
            return None
        features = self._features(texts)
        return sum(_logistic_proba(self._member_scores(features, i)) for i in range(self.members)) / self.members
