"""Synthetic data generation: planning, filters, resume, verification, with scripted and tiny real LMs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from mlops.augment.synthetic import GenerationProgress, GenerationRequest, generate, plan_counts
from mlops.augment.synthetic.generator import split_total, validate_request
from mlops.augment.synthetic.quality import NearDuplicateIndex, QualityFilter, dedup_key, looks_like_wrong_language, normalise
from mlops.core.errors import ConfigError, DataError, ExperimentError


# -- pure pieces ---------------------------------------------------------------------------------
def test_normalise_and_dedup_key():
    assert normalise('  "A  fine\tfilm."  \nSentiment: positive') == "A fine film."
    assert normalise("Review: Great fun", ("Review:",)) == "Great fun"
    assert normalise("ｆｕｌｌ width") == "full width"  # NFKC
    assert dedup_key("Great film!!") == dedup_key("great   FILM") == "great film"


def test_near_duplicate_index():
    index = NearDuplicateIndex(0.8)
    index.add("the acting is superb and the story moves along at a steady pace")
    assert index.is_near_duplicate("The acting is superb, and the story moves along at a steady pace!")
    assert index.is_near_duplicate("the acting is superb and the story moves along at a steady pace today")
    assert not index.is_near_duplicate("the acting is poor and the plot never moves at all sadly")


@pytest.mark.parametrize(("text", "lang", "wrong"), [
    ("This is one of the best films I have seen in years, and the cast is great.", "en", False),
    ("To jest jeden z najlepszych filmów, jakie widziałem, i obsada jest świetna.", "en", True),
    ("To jest jeden z najlepszych filmów, jakie widziałem, i obsada jest świetna.", "pl", False),
    ("This is one of the best films I have seen in years, and the cast is great.", "pl", True),
    ("Das ist einer der besten Filme, die ich seit Jahren gesehen habe, und die Besetzung ist toll.", "de", False),
    ("Это один из лучших фильмов, которые я видел за последние годы.", "en", True),
    ("Это один из лучших фильмов, которые я видел за последние годы.", "ru", False),
    ("Great film!", "pl", False),  # too short to judge
])
def test_language_heuristic(text, lang, wrong):
    assert looks_like_wrong_language(text, lang) is wrong


def test_quality_filter_reasons_in_order():
    q = QualityFilter(lang="en", min_chars=10, max_chars=80, near_threshold=0.8,
                      examples=["A warm, funny and beautifully acted film that earns every one of its tears."])
    assert q.reason("") == "empty"
    assert q.reason("...!") == "empty"
    assert q.reason("Too short") == "too_short"
    assert q.reason("x" * 81) == "too_long"
    assert q.reason("To jest naprawdę bardzo dobry film, ale nie dla mnie.") == "wrong_language"
    assert q.reason("a warm, funny and beautifully acted film that earns every one of its tears") == "copy_of_example"
    first = "The story drags in the middle but the ending is worth the wait."
    assert q.reason(first) is None
    q.remember(first)
    assert q.reason(first.upper()) == "duplicate"
    assert q.reason("The story drags in the middle, but the ending is worth the wait!") == "duplicate"
    assert q.reason("Honestly the story drags in the middle but the ending is worth the wait.") == "near_duplicate"


def test_split_total_and_plan_counts(tmp_path):
    assert split_total(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_total(7, {"neg": 30, "pos": 70}) == {"neg": 2, "pos": 5}
    dist = tmp_path / "dist.csv"
    pd.DataFrame({"text": ["x"] * 10, "label": ["pos"] * 7 + ["neg"] * 3}).to_csv(dist, index=False)
    assert plan_counts(GenerationRequest(name="n", distribution_from_file=dist, total_examples=20)) == {
        "neg": 6, "pos": 14}
    assert plan_counts(GenerationRequest(name="n", examples_per_label=3)) == {
        "negative": 3, "neutral": 3, "positive": 3}
    assert plan_counts(GenerationRequest(name="n", total_examples=5, labels=["a", "b"])) == {"a": 3, "b": 2}
    with pytest.raises(DataError, match="has no rows labelled"):
        plan_counts(GenerationRequest(name="n", distribution_from_file=dist, total_examples=5, labels=["neutral"]))
    with pytest.raises(DataError, match="not found in"):
        plan_counts(GenerationRequest(name="n", distribution_from_file=dist, total_examples=5, label_column="y"))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "say how many rows"),
    ({"examples_per_label": 2, "total_examples": 4}, "not both"),
    ({"examples_per_label": 2, "distribution_from_file": Path("x.csv")}, "needs --total-examples"),
    ({"examples_per_label": 2, "filter_disagreeing": True}, "needs --verify-with"),
    ({"examples_per_label": 2, "name": "../evil"}, "--name"),
    ({"examples_per_label": 2, "lang": "english"}, "--lang"),
    ({"examples_per_label": 0}, "examples_per_label must be >= 1"),
    ({"examples_per_label": 2, "top_p": 1.5}, "top_p"),
])
def test_bad_requests_are_config_errors(tmp_path, kwargs, match):
    request = GenerationRequest(**{"name": "ok", "output_dir": tmp_path, **kwargs})
    with pytest.raises(ConfigError, match=match):
        generate(request, backend=ScriptedBackend([]))


# -- the run, with a scripted backend ------------------------------------------------------------
class ScriptedBackend:
    """Returns pre-written completions in order; records the prompts it was given."""

    name = source = "scripted"
    uses_chat_template = False

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.prompts: list[str] = []

    def complete(self, prompts, *, seed, max_new_tokens, temperature, top_p):
        self.prompts += prompts
        batch, self.outputs = self.outputs[: len(prompts)], self.outputs[len(prompts):]
        return batch + [""] * (len(prompts) - len(batch))


def _good(i: int) -> str:
    words = ["bright", "clever", "honest", "tender", "vivid", "bold", "quiet", "sharp", "gentle", "fierce",
             "lively", "calm"]
    places = ["Paris", "a farm", "the sea", "Rome", "a prison", "space"]
    return f" The {words[i % 12]} story set in {places[i // 12 % 6]} keeps the tension going until the very last scene.\nSentiment:"


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_generate_filters_and_reports_rejections(tmp_path):
    outputs = [
        _good(0),
        "",  # empty
        "Meh.",  # too short
        " To jest naprawdę bardzo dobry film, ale nie dla mnie i nie dla nich.",  # wrong language
        "A warm, funny and beautifully acted film that earns every one of its tears.",  # built-in example copy
        _good(0),  # duplicate
    ] + [_good(i) for i in range(1, 40)]
    backend = ScriptedBackend(outputs)
    events: list[GenerationProgress] = []
    request = GenerationRequest(name="demo", output_dir=tmp_path, examples_per_label=3,
                                labels=["negative", "positive"], batch_size=6, shots=2)
    report = generate(request, events.append, backend=backend)  # batch 1: the six crafted rows

    rows = _read(tmp_path / "demo.csv")
    assert len(rows) == 6 and report.produced == 6 and report.requested == 6
    assert sorted(r["label"] for r in rows).count("positive") == 3
    assert all(r["text"].startswith("The ") and "\n" not in r["text"] for r in rows)
    assert len({r["text"] for r in rows}) == 6
    total = {h: v for h, v in zip(*(report.table()[0], report.table()[1][-1]), strict=True)}
    assert total["empty"] == 1 and total["too_short"] == 1 and total["wrong_language"] == 1
    assert total["copy_of_example"] == 1 and total["duplicate"] == 1
    assert total["rejected"] == 5 and total["produced"] == 6
    assert sum(s.surplus for s in report.per_label.values()) == total["candidates"] - 11
    assert events and events[-1].produced == 6 and events[-1].requested == 6
    # prompts are few-shot completions that end with the asked label
    assert backend.prompts[0].startswith("The following are movie reviews written in English")
    assert backend.prompts[0].rstrip().endswith("Review:")
    meta = json.loads((tmp_path / "demo.meta.json").read_text())
    assert meta["model"]["prompt_format"] == "plain few-shot completion"
    assert "Sentiment:" in meta["prompt"]["example_prompt"]
    assert meta["report"]["produced"] == 6
    assert not (tmp_path / "demo.partial.csv").exists() and not (tmp_path / "demo.state.json").exists()

    with pytest.raises(ExperimentError, match="already exists"):
        generate(request, backend=ScriptedBackend([_good(i) for i in range(20, 40)]))
    forced = GenerationRequest(**{**request.__dict__, "force": True})
    generate(forced, backend=ScriptedBackend([_good(i).replace("story", "tale") for i in range(20, 40)]))
    assert all("tale" in r["text"] for r in _read(tmp_path / "demo.csv"))


def test_gives_up_on_a_label_after_the_attempt_budget(tmp_path):
    request = GenerationRequest(name="junk", output_dir=tmp_path, examples_per_label=2, labels=["negative", "positive"],
                                batch_size=4, max_attempts_factor=2)
    report = generate(request, backend=ScriptedBackend(["no"] * 100))
    assert report.produced == 0
    assert report.shortfall == {"negative": 2, "positive": 2}
    assert all(s.candidates == 2 * 2 + 4 for s in report.per_label.values())
    assert any("produced 0 of 2" in w for w in report.warnings)
    assert _read(tmp_path / "junk.csv") == []


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    request = GenerationRequest(name="res", output_dir=tmp_path, examples_per_label=4, labels=["negative", "positive"],
                                batch_size=2)

    def stop_after_two_batches(event: GenerationProgress) -> None:
        if event.candidates >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(request, stop_after_two_batches, backend=ScriptedBackend([_good(i) for i in range(100)]))
    partial = _read(tmp_path / "res.partial.csv")
    assert len(partial) == 4 and not (tmp_path / "res.csv").exists()
    state = json.loads((tmp_path / "res.state.json").read_text())
    assert state["rows_written"] == 4 and state["batch_index"] == 2

    # a changed request does not silently continue the old rows
    changed = GenerationRequest(**{**request.__dict__, "temperature": 0.5})
    with pytest.raises(ExperimentError, match="different arguments"):
        generate(changed, backend=ScriptedBackend([]))

    # the resumed run must not re-accept the earlier rows: feed it the same texts first
    backend = ScriptedBackend([_good(i) for i in range(100)])
    report = generate(request, backend=backend)
    assert report.resumed
    rows = _read(tmp_path / "res.csv")
    assert rows[:4] == partial
    assert len(rows) == 8 and len({r["text"] for r in rows}) == 8
    assert report.per_label["negative"].rejected["duplicate"] + report.per_label["positive"].rejected["duplicate"] == 4
    assert report.produced == 8 and not (tmp_path / "res.state.json").exists()


def test_seed_examples_file_and_missing_labels(tmp_path):
    seeds = tmp_path / "seeds.csv"
    pd.DataFrame({"review": ["Loved it, the cast shines.", "Awful, avoid it at all costs.", "Plain."],
                  "stars": ["good", "bad", "good"]}).to_csv(seeds, index=False)
    request = GenerationRequest(name="s", output_dir=tmp_path, examples_per_label=1, labels=["bad", "good"],
                                seed_examples=seeds, text_column="review", label_column="stars", shots=2,
                                domain="product reviews")
    backend = ScriptedBackend([_good(1), "Loved it, the cast shines.", _good(2)])
    report = generate(request, backend=backend)
    assert report.produced == 2
    assert report.per_label["good"].rejected["copy_of_example"] + report.per_label["bad"].rejected["copy_of_example"] == 1
    assert "Label: good" in backend.prompts[0] or "Label: bad" in backend.prompts[0]
    with pytest.raises(DataError, match="no examples of the labels"):
        generate(GenerationRequest(**{**request.__dict__, "labels": ["bad", "ugly"], "name": "s2"}),
                 backend=ScriptedBackend([]))
    with pytest.raises(DataError, match="no built-in examples for the labels"):
        generate(GenerationRequest(name="s3", output_dir=tmp_path, examples_per_label=1, labels=["bad", "good"]),
                 backend=ScriptedBackend([]))


# -- verification with a trained classifier ------------------------------------------------------
@pytest.fixture
def verifier_folder(tmp_path) -> Path:
    """A TF-IDF model trained on obvious words, saved the way train-final-model saves it."""
    from mlops.core.config import ModelConfig
    from mlops.core.model_interface import FitContext
    from mlops.core.text_dataset import TextDataset
    from models.tfidf_linear.model import TfidfLinearClassifier

    config = ModelConfig(module_path="models.tfidf_linear.model", class_name="TfidfLinearClassifier",
                         training_arguments={"char_ngram_range": None, "C": 10.0})
    texts = [f"{w} film number {i}" for i in range(20) for w in ("wonderful", "terrible")]
    labels = ["positive" if t.startswith("wonderful") else "negative" for t in texts]
    model = TfidfLinearClassifier(config).fit(TextDataset(texts, labels), labels=["negative", "positive"],
                                              context=FitContext())
    folder = tmp_path / "verifier"
    folder.mkdir()
    model.save(folder)
    (folder / "mlops_model.json").write_text(json.dumps({
        "format_version": 1, "module_path": config.module_path, "class_name": config.class_name,
        "labels": ["negative", "positive"], "text_pair": False, "config_name": "tfidf",
        "model_config": config.model_dump(mode="json"),
    }))
    return folder


LETTERS = [chr(c) * 3 for c in range(ord("a"), ord("z") + 1)]


class LabelAwareBackend(ScriptedBackend):
    """Writes 'wonderful' for positive prompts and 'terrible' for negative ones, except every third row."""

    def __init__(self) -> None:
        super().__init__([])
        self.count = 0

    def complete(self, prompts, **kwargs):
        out = []
        for prompt in prompts:
            asked = prompt.rstrip().rsplit("Sentiment: ", 1)[1].split("\n")[0]
            word = "wonderful" if asked == "positive" else "terrible"
            if self.count % 3 == 2:
                word = "terrible" if word == "wonderful" else "wonderful"
            tag = LETTERS[self.count % 26] + " " + LETTERS[self.count // 26 % 26]
            out.append(f"A {word} film, honestly, number {tag} today.")
            self.count += 1
        return out


@pytest.mark.parametrize("filter_disagreeing", [False, True])
def test_verify_with_reports_and_filters_agreement(tmp_path, verifier_folder, filter_disagreeing):
    request = GenerationRequest(name="v", output_dir=tmp_path / "out", examples_per_label=6,
                                labels=["negative", "positive"], verify_with=verifier_folder,
                                filter_disagreeing=filter_disagreeing, batch_size=4)
    report = generate(request, backend=LabelAwareBackend())
    v = report.verification
    assert v is not None and v.candidates_scored >= 12
    assert v.agreement_before_filtering == pytest.approx(2 / 3, abs=0.1)
    rows = _read(tmp_path / "out" / "v.csv")
    assert len(rows) == 12
    if filter_disagreeing:
        assert v.agreement_written == 1.0
        assert all(("wonderful" in r["text"]) == (r["label"] == "positive") for r in rows)
        assert sum(s.rejected["verifier_disagrees"] for s in report.per_label.values()) >= 4
    else:
        assert v.agreement_written < 0.8
        assert sum(s.rejected["verifier_disagrees"] for s in report.per_label.values()) == 0


def test_verifier_with_other_labels_is_rejected(tmp_path, verifier_folder):
    request = GenerationRequest(name="v", output_dir=tmp_path, examples_per_label=1, verify_with=verifier_folder)
    with pytest.raises(DataError, match="neutral"):
        generate(request, backend=ScriptedBackend([]))


# -- a tiny real causal LM -----------------------------------------------------------------------
def test_generate_with_a_tiny_causal_lm(tmp_path):
    from helpers.llm import build_tiny_causal_lm

    model_dir = build_tiny_causal_lm(tmp_path / "lm", arch="llama", tokenizer="word")
    request = GenerationRequest(name="tiny", output_dir=tmp_path / "out", examples_per_label=3,
                                labels=["negative", "positive"], model=str(model_dir), max_new_tokens=12,
                                min_chars=5, batch_size=4, lang="yo")
    report = generate(request)
    rows = _read(tmp_path / "out" / "tiny.csv")
    assert report.model == str(model_dir)
    assert len(rows) == report.produced
    assert report.produced + sum(report.shortfall.values()) == 6
    assert report.produced >= 4  # random words pass the filters (no language check for 'yo')
    assert report.rows_per_minute and report.rows_per_minute > 0
    assert all(5 <= len(r["text"]) <= 400 for r in rows)
    assert report.language_check.startswith("none")


def test_gemma_cache_location(monkeypatch, tmp_path):
    from models.hf_common import gemma_gguf

    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "c"))
    assert gemma_gguf.gemma_270m_cache_dir() == tmp_path / "c" / "models" / "gemma-3-270m"
    monkeypatch.delenv("MLOPS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert gemma_gguf.cache_root() == tmp_path / "x" / "textclf-mlops"
    assert not gemma_gguf.is_materialized()


@pytest.mark.slow
def test_offline_gemma_generates_english_reviews(tmp_path):
    request = GenerationRequest(name="gemma", output_dir=tmp_path, examples_per_label=2,
                                labels=["negative", "positive"], batch_size=4, max_new_tokens=48)
    report = generate(request)
    assert report.model == "google/gemma-3-270m"
    assert report.produced >= 3
    rows = _read(tmp_path / "gemma.csv")
    assert all(not looks_like_wrong_language(r["text"], "en") for r in rows)


@pytest.mark.parametrize("lang", ["xx-INVALID", "xx", "english", "EN", "en-invalid"])
def test_a_language_that_is_not_an_iso_639_1_code_is_refused(tmp_path, lang):
    request = GenerationRequest(name="l", output_dir=tmp_path, examples_per_label=1, lang=lang)
    with pytest.raises(ConfigError, match="ISO 639-1"):
        generate(request, backend=ScriptedBackend([]))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("lang", ["pt-BR", "es-419", "yo"])
def test_iso_codes_with_a_region_are_accepted(lang):
    validate_request(GenerationRequest(name="l", output_dir=Path("unused"), examples_per_label=1, lang=lang))

