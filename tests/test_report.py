"""`cli report`: the HTML parses, every image decodes, every section is there, for TF-IDF and a tiny encoder."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import REVIEW_COLUMNS, generate_splits
from helpers.hf import write_tiny_encoder_config, write_topic_csv



class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.tables = 0
        self._in_heading = False
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag in ("h2", "h3"):
            self._in_heading = True
        elif tag == "table":
            self.tables += 1
        if tag not in ("img", "meta", "br"):
            self.open_tags.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_heading = False
        assert self.open_tags and self.open_tags[-1] == tag, f"</{tag}> closes {self.open_tags[-1:]}"
        self.open_tags.pop()

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)


def _decode_png(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.open_tags == []
    return page


def _check_report(path: Path, models: list[str], *, final: bool) -> _Page:
    page = _parse(path)
    expected = ["Data", "Model comparison", *[f"Model: {m}" for m in models]] + (["Final models"] if final else [])
    assert [h for h in page.headings if h in expected] == expected
    assert page.images, "no images"
    for src in page.images:
        assert src.startswith("data:image/png;base64,")  # self-contained: nothing to fetch
        width, height = _decode_png(base64.b64decode(src.split(",", 1)[1]))
        assert width > 200 and height > 150
    return page


@pytest.fixture
def tfidf_experiment(cli, small_csv, artifacts) -> Path:
    generate_splits(cli, "exp", small_csv, folds=3, columns=REVIEW_COLUMNS)
    for config in ("tfidf_logreg", "tfidf_svm"):
        cli("run-backtesting", "--experiment-id", "exp", "--model-config-name", config)
        cli("estimate-performance", "--experiment-id", "exp", "--model-config-name", config)
    cli("train-final-model", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg")
    return artifacts / "experiments" / "exp"


def test_tfidf_report_has_every_section_and_image(cli, tfidf_experiment):
    result = cli("report", "--experiment-id", "exp")
    path = tfidf_experiment / "reports" / "report.html"
    assert str(path) in result.output.replace("\n", "")
    page = _check_report(path, ["tfidf_logreg", "tfidf_svm"], final=True)
    html = path.read_text(encoding="utf-8")
    for words in ("Label distribution", "Splits", "Per class, backtesting", "Per class, hold-out", "Timings",
                  "ECE", "p (corrected t)", "P(better)", "data sha256", "scikit-learn"):
        assert words in html, words
    # the PNGs are also files under reports/, one per embedded image
    pngs = sorted((tfidf_experiment / "reports" / "images").glob("*.png"))
    assert len(pngs) == len(page.images)
    for png in pngs:
        _decode_png(png.read_bytes())


def test_markdown_report_writes_its_images_beside_it(cli, tfidf_experiment, tmp_path):
    out = tmp_path / "out" / "summary.md"
    cli("report", "--experiment-id", "exp", "--format", "md", "--output", str(out))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Experiment exp")
    referenced = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert referenced
    for ref in referenced:
        _decode_png((out.parent / ref).read_bytes())
    # an existing --output is not replaced without --force
    result = cli("report", "--experiment-id", "exp", "--format", "md", "--output", str(out), expect=None)
    assert result.exit_code != 0 and "--force" in result.output and "Traceback" not in result.output
    cli("report", "--experiment-id", "exp", "--format", "md", "--output", str(out), "--force")


def test_report_of_an_experiment_without_runs_is_a_clear_error(cli, small_csv):
    generate_splits(cli, "empty", small_csv, folds=2, columns=REVIEW_COLUMNS)
    result = cli("report", "--experiment-id", "empty", expect=None)
    assert result.exit_code != 0 and "run-backtesting" in result.output and "Traceback" not in result.output


def test_tiny_encoder_report_has_learning_curves_and_calibration(cli, artifacts, tmp_path):
    data = write_topic_csv(tmp_path / "topics.csv", 150, seed=4)
    config = write_tiny_encoder_config(tmp_path / "tiny_encoder.json", tmp_path / "bert")
    generate_splits(cli, "enc", data, folds=2)
    cli("run-backtesting", "--experiment-id", "enc", "--model-config-name", str(config))
    cli("run-backtesting", "--experiment-id", "enc", "--model-config-name", "tfidf_logreg")
    cli("report", "--experiment-id", "enc")
    path = artifacts / "experiments" / "enc" / "reports" / "report.html"
    _check_report(path, ["tfidf_logreg", "tiny_encoder"], final=False)
    images = sorted(p.name for p in path.parent.joinpath("images").glob("*.png"))
    assert "tiny_encoder_learning_curves.png" in images
    assert "tiny_encoder_reliability.png" in images
    assert "tiny_encoder_holdout_confusion.png" not in images  # no hold-out estimate was run


def test_reliability_bins_and_ece_by_hand():
    from mlops.evaluation.report.collect import Predictions, reliability

    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    curve = reliability(Predictions(np.array([0, 1, 1, 0]), proba.argmax(1), proba), n_bins=2)
    # bin (0, 0.5]: empty; bin (0.5, 1]: confidences .9 .8 .7 .55, correct 1 0 1 0 -> |0.5 - 0.7375|
    assert curve["ece"] == pytest.approx(abs(0.5 - 0.7375))
    assert [b["count"] for b in curve["bins"]] == [4]
