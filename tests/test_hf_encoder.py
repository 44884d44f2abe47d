"""HFEncoderClassifier and model resolution, on a tiny BERT built locally (no network, no GPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.hf import topic_data
from mlops.core.config import ModelConfig, load_model_config_file
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext
from mlops.core.plugins import resolve_model_class, validate_training_arguments
from mlops.core.text_dataset import TextDataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABELS = ["tech", "food", "sports"]  # deliberately not sorted: columns must follow this order


def make_config(model_dir: Path | str, **training_arguments) -> ModelConfig:
    arguments = {
        "epochs": 8, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0, "max_length": 32,
        "num_threads": 1, "precision": "fp32", "early_stopping_patience": None,
    }
    arguments.update(training_arguments)
    return ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                       model_name=str(model_dir), training_arguments=arguments)


def fit(config: ModelConfig, train: TextDataset, val: TextDataset | None = None, labels=LABELS, **context):
    from models.hf_encoder.model import HFEncoderClassifier

    context = FitContext(seed=0, show_progress=False, **context)
    return HFEncoderClassifier(config).fit(train, val, labels=labels, context=context)


def accuracy(proba: np.ndarray, labels: list[str], truth) -> float:
    return float(np.mean(np.asarray(labels)[proba.argmax(axis=1)] == np.asarray(truth)))


def state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- training and prediction -----------------------------------------------------------------------------


def test_fit_predict_multiclass_with_bf16_autocast_and_absent_class(tiny_bert, topics):
    from sklearn.metrics import f1_score

    labels = [*LABELS, "unused"]  # a class absent from training still gets a column
    model = fit(make_config(tiny_bert, precision="auto", early_stopping_patience=3), topics["train"],
                topics["val"], labels=labels)
    proba = model.predict_proba(topics["test"])

    assert model.labels == labels
    assert proba.shape == (len(topics["test"]), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba >= 0).all()
    assert accuracy(proba, labels, topics["test"].labels) >= 0.9
    info = model.runtime_info()
    assert info["device"] == "cpu" and info["torch_threads"] == 1
    assert info["precision"] in {"bf16", "fp32"}  # bf16 where the CPU has avx512_bf16/amx
    assert info["freed_memory_reused"] is sys.platform.startswith("linux")  # glibc's mallopt, CPU training only
    assert info["tf32"] is False  # CUDA only
    # The model kept is the best validated epoch: its validation macro-F1 is the best in the history.
    best = max(h["validation_f1_macro"] for h in info["history"])
    val_pred = np.asarray(labels)[model.predict_proba(topics["val"]).argmax(axis=1)]
    assert f1_score(topics["val"].labels, val_pred, average="macro") == pytest.approx(best, abs=1e-12)
    assert info["history"][info["best_epoch"] - 1]["validation_f1_macro"] == best


def test_predictions_do_not_depend_on_batching(tiny_bert, topics):
    model = fit(make_config(tiny_bert, epochs=2, reuse_freed_memory=False), topics["train"])
    assert model.runtime_info()["freed_memory_reused"] is False
    full = model.predict_proba(topics["test"])
    model._eval_batch_size = 3  # different padding and batch composition
    subset = model.predict_proba(TextDataset(topics["test"].texts[5:17]))
    np.testing.assert_allclose(subset, full[5:17], atol=1e-5)
    assert model.predict_proba(TextDataset([])).shape == (0, 3)


def test_training_options_still_learn(tiny_bert, topics):
    config = make_config(tiny_bert, epochs=8, batch_size=8, gradient_accumulation_steps=2, scheduler="cosine",
                         warmup_ratio=0.2, label_smoothing=0.1, gradient_checkpointing=True, group_by_length=False,
                         max_grad_norm=None, class_weight="balanced", weight_decay=0.0)
    model = fit(config, topics["train"])
    assert accuracy(model.predict_proba(topics["test"]), LABELS, topics["test"].labels) >= 0.9
    assert model.runtime_info()["epochs_run"] == 8


def test_frozen_layers_keep_their_pretrained_weights(tiny_bert, topics):
    from transformers import AutoModel

    pretrained = {name: p.detach().clone() for name, p in AutoModel.from_pretrained(tiny_bert).named_parameters()}
    model = fit(make_config(tiny_bert, epochs=4, frozen_layers=1), topics["train"])
    trained = {name.split(".", 1)[1]: p for name, p in model.fitted_module().named_parameters()
               if name.startswith("bert.")}
    frozen = [n for n in pretrained if n.startswith(("embeddings.", "encoder.layer.0."))]
    tuned = [n for n in pretrained if n.startswith("encoder.layer.1.")]
    assert frozen and tuned
    assert all(trained[n].equal(pretrained[n]) for n in frozen)
    assert not any(trained[n].equal(pretrained[n]) for n in tuned if n.endswith(".weight"))
    info = model.runtime_info()
    assert info["trainable_parameters"] < info["total_parameters"]

    with pytest.raises(ModelError, match="frozen_layers is 2 but the model has 2 transformer layers"):
        fit(make_config(tiny_bert, epochs=1, frozen_layers=2), topics["train"])


def test_dropout_argument_sets_every_dropout_layer(tiny_bert, topics):
    import torch

    def rates(model):
        return {m.p for m in model.fitted_module().modules() if isinstance(m, torch.nn.Dropout)}

    assert rates(fit(make_config(tiny_bert, epochs=1), topics["train"])) == {0.1}  # the checkpoint's own
    model = fit(make_config(tiny_bert, epochs=1, dropout=0.0), topics["train"])
    assert rates(model) == {0.0}
    module = model.fitted_module().train()  # without dropout, training mode computes what eval mode does
    inputs = model.encode(list(topics["test"].texts), None, np.arange(8))
    with torch.no_grad():
        first, second = module(**inputs).logits, module(**inputs).logits
        assert torch.equal(first, second)
        assert torch.allclose(first, module.eval()(**inputs).logits, atol=1e-6)


def test_one_epoch_skips_the_validation_score_it_cannot_use(tiny_bert, topics):
    one = fit(make_config(tiny_bert, epochs=1), topics["train"], topics["val"]).runtime_info()
    two = fit(make_config(tiny_bert, epochs=2), topics["train"], topics["val"]).runtime_info()
    assert "validation_f1_macro" not in one["history"][0] and one["best_epoch"] is None
    assert all("validation_f1_macro" in record for record in two["history"]) and two["best_epoch"] in (1, 2)


def test_sentence_pairs_are_encoded_together(tiny_bert, tmp_path):
    """The label depends only on the second text: learning it proves pairs reach the model."""
    first, _ = topic_data(260, seed=3)
    second, labels = topic_data(260, seed=4)
    train = TextDataset(first[:200], labels[:200], text_pairs=second[:200])
    test = TextDataset(first[200:], labels[200:], text_pairs=second[200:])
    model = fit(make_config(tiny_bert, epochs=15), train)
    proba = model.predict_proba(test)
    assert accuracy(proba, LABELS, test.labels) >= 0.85
    with pytest.raises(ModelError, match="sentence pairs"):
        model.predict_proba(TextDataset(first[:3]))

    from transformers import pipeline

    model.save(tmp_path)
    pipe = pipeline("text-classification", model=str(tmp_path), top_k=None, device="cpu")
    scores = pipe({"text": first[200], "text_pair": second[200]})
    by_label = {item["label"]: item["score"] for item in scores}
    np.testing.assert_allclose([by_label[label] for label in LABELS], proba[0], atol=1e-5)


def test_class_weights_shift_the_decision(tiny_bert):
    """With labels independent of the text, the best constant guess under weights {a: 20, b: 1} is mostly 'a'."""
    texts, _ = topic_data(160, seed=5)
    labels = ["a", "b"] * 80
    data = TextDataset(texts, labels)
    plain = fit(make_config(tiny_bert, epochs=4), data, labels=["a", "b"])
    weighted = fit(make_config(tiny_bert, epochs=4, class_weight={"a": 20.0}), data, labels=["a", "b"])
    assert plain.predict_proba(data)[:, 0].mean() < 0.7
    assert weighted.predict_proba(data)[:, 0].mean() > 0.85

    with pytest.raises(ModelError, match="not in the label set"):
        fit(make_config(tiny_bert, epochs=1, class_weight={"c": 2.0}), data, labels=["a", "b"])


def test_balanced_class_weights_formula():
    from models.hf_common.training import class_weight_vector

    y = np.array([0] * 6 + [1] * 2)
    np.testing.assert_allclose(class_weight_vector("balanced", ["x", "y", "z"], y), [8 / 12, 8 / 4, 1.0])
    np.testing.assert_allclose(class_weight_vector({"y": 3.0}, ["x", "y"], y), [1.0, 3.0])
    assert class_weight_vector(None, ["x", "y"], y) is None


@pytest.mark.parametrize("storage", ["memory", "work_dir"])
def test_early_stopping_restores_the_best_epoch(tiny_bert, topics, tmp_path, monkeypatch, storage):
    """Validation scores are scripted so epoch 2 is best; training stops after patience and epoch 2 comes back."""
    from models.hf_encoder.model import HFEncoderClassifier

    scripted = iter([0.2, 0.9, 0.5, 0.4, 0.95, 0.99])
    snapshots: dict[int, dict] = {}

    def scripted_score(self, val, y_val):
        snapshots[len(snapshots) + 1] = state(self._model)
        return next(scripted)

    monkeypatch.setattr(HFEncoderClassifier, "_validation_score", scripted_score)
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    model = fit(make_config(tiny_bert, epochs=6, early_stopping_patience=2, best_weights_storage=storage),
                topics["train"], topics["val"], work_dir=work_dir)

    info = model.runtime_info()
    assert (info["epochs_run"], info["best_epoch"], info["stopped_early"]) == (4, 2, True)
    final = state(model._model)
    assert all(torch_equal(final[name], snapshots[2][name]) for name in final)
    assert not all(torch_equal(final[name], snapshots[4][name]) for name in final)
    assert list(work_dir.iterdir()) == []  # no stray checkpoint left behind


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# --- saving, loading, pipeline --------------------------------------------------------------------------


def test_saved_folder_loads_in_a_plain_pipeline(tiny_bert, topics, tmp_path):
    from transformers import pipeline

    from models.hf_encoder.model import HFEncoderClassifier

    config = make_config(tiny_bert)
    model = fit(config, topics["train"], topics["val"])
    texts = list(topics["test"].texts[:12])
    proba = model.predict_proba(TextDataset(texts))
    model.save(tmp_path)

    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and "pytorch_model.bin" not in files
    assert not files & {"mlops_model.json", "manifest.json"}
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}

    pipe = pipeline("text-classification", model=str(tmp_path), top_k=None, device="cpu")
    for text, row in zip(texts, pipe(texts), strict=True):
        by_label = {item["label"]: item["score"] for item in row}
        assert set(by_label) == set(LABELS)
        np.testing.assert_allclose([by_label[label] for label in LABELS], proba[texts.index(text)], atol=1e-5)

    loaded = HFEncoderClassifier.load(tmp_path, config, device="cpu")
    assert loaded.labels == LABELS
    np.testing.assert_allclose(loaded.predict_proba(TextDataset(texts)), proba, atol=1e-6)


@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_lora_train_save_load_round_trip(tiny_bert, topics, tmp_path, save):
    from models.hf_encoder.model import HFEncoderClassifier

    config = make_config(tiny_bert, epochs=10, learning_rate=2e-2,
                         peft={"r": 4, "alpha": 8, "dropout": 0.0, "save": save})
    model = fit(config, topics["train"])
    info = model.runtime_info()
    assert info["peft"]["target_modules"] == ["query", "value"]  # the BERT default
    assert info["trainable_parameters"] < 0.5 * info["total_parameters"]
    proba = model.predict_proba(topics["test"])
    assert accuracy(proba, LABELS, topics["test"].labels) >= 0.6  # frozen random encoder: LoRA + head must learn

    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    files = {p.name for p in out.iterdir()}
    if save == "merged":
        assert "model.safetensors" in files and "adapter_config.json" not in files
        assert "lora" not in " ".join(json.loads((out / "config.json").read_text()))
    else:
        assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(tiny_bert.resolve())

    loaded = HFEncoderClassifier.load(out, config, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(topics["test"]), proba, atol=1e-5)
    if save == "merged":
        assert not any("lora" in name for name, _ in loaded._model.named_parameters())


def test_load_rejects_a_foreign_folder(tmp_path, tiny_bert):
    from models.hf_encoder.model import HFEncoderClassifier

    with pytest.raises(ModelError, match="hf_encoder.json"):
        HFEncoderClassifier.load(tmp_path, make_config(tiny_bert))
    with pytest.raises(ModelError, match="not trained"):
        HFEncoderClassifier(make_config(tiny_bert)).predict_proba(TextDataset(["x"]))


# --- truncation ---------------------------------------------------------------------------------------------


def test_truncated_texts_are_counted(tiny_bert, topics):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = list(topics["train"].texts[:60])
    texts[::4] = [f"{t} {t} {t}" for t in texts[::4]]  # every fourth row is long
    expected = sum(len(tokenizer(t)["input_ids"]) > 12 for t in texts)
    assert 10 <= expected < 60

    model = fit(make_config(tiny_bert, epochs=1, max_length=12), TextDataset(texts, topics["train"].labels[:60]))
    assert model.runtime_info()["truncated"]["train"] == expected
    assert model.predict_proba(TextDataset(texts)).shape == (60, 3)
    assert model.predict_proba(TextDataset(texts[:4])).shape == (4, 3)
    long_in_first_four = sum(len(tokenizer(t)["input_ids"]) > 12 for t in texts[:4])
    assert model.runtime_info()["truncated"]["predict"] == expected + long_in_first_four


def test_token_lengths_and_length_grouped_batches(tiny_bert):
    from transformers import AutoTokenizer

    from models.hf_common.batching import length_grouped_batches, length_sorted_batches
    from models.hf_common.training import token_lengths

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["goal", "the team was very good today " * 5, "code"]
    pairs = ["pasta", "soup", "chip server laptop " * 4]
    lengths, truncated = token_lengths(tokenizer, texts, pairs, max_length=10, chunk_size=2)
    assert lengths.tolist() == [5, 10, 10] and truncated == 2

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=1000)
    batches = length_grouped_batches(lengths, 32, rng, megabatch_factor=8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 15  # random batches of 32 would spread over ~90
    sorted_batches = length_sorted_batches(lengths, 64)
    assert sorted(np.concatenate(sorted_batches).tolist()) == list(range(1000))
    assert lengths[sorted_batches[0]].min() >= lengths[sorted_batches[-1]].max()


# --- resolution -------------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_unknown_hub_id_offline_names_what_was_tried(offline, topics):
    with pytest.raises(ModelError) as error:
        fit(make_config("no-such-org/no-such-model-xyz", epochs=1), topics["train"])
    message = str(error.value)
    assert "no-such-org/no-such-model-xyz" in message
    assert "local: no folder" in message
    assert "package: no installed package" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "unset HF_HUB_OFFLINE" in message


def test_missing_local_path_is_not_sent_to_the_hub(offline, tmp_path):
    from models.hf_common.resolve import resolve_pretrained

    with pytest.raises(ModelError, match="looks like a file path") as error:
        resolve_pretrained(str(tmp_path / "missing" / "model"))
    assert "local: no folder" in str(error.value)
    with pytest.raises(ModelError, match="model_name is empty"):
        resolve_pretrained("")


def test_resolution_order_local_then_package_then_hub(offline, tiny_bert, monkeypatch):
    from models.hf_common import resolve

    local = resolve.resolve_pretrained(str(tiny_bert))
    assert (local.kind, local.source) == ("local", str(tiny_bert.resolve()))

    monkeypatch.setitem(resolve.PACKAGED_MODELS, "tiny-org/tiny-bert",
                        resolve.PackagedModel("helpers.hf:packaged_tiny_bert", "uv add tiny-bert"))
    packaged = resolve.resolve_pretrained("tiny-org/tiny-bert")
    assert packaged.kind == "package" and Path(packaged.source).is_dir()
    assert "helpers.hf:packaged_tiny_bert" in packaged.reason

    monkeypatch.setitem(resolve.PACKAGED_MODELS, "tiny-org/not-installed",
                        resolve.PackagedModel("no_such_package_xyz:get_model_path", "uv add no-such-package"))
    with pytest.raises(ModelError) as error:
        resolve.resolve_pretrained("tiny-org/not-installed")
    assert "uv add no-such-package" in str(error.value) and "hub:" in str(error.value)


def test_packaged_minilm_resolves_without_the_hub(offline):
    from models.hf_common.resolve import resolve_pretrained

    resolved = resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    assert resolved.kind == "package"
    assert (Path(resolved.source) / "model.safetensors").is_file()


# --- configs ---------------------------------------------------------------------------------------------


def encoder_configs() -> list[Path]:
    return sorted(p for p in (PROJECT_ROOT / "model_configs").glob("*.json")
                  if json.loads(p.read_text())["module_path"] == "models.hf_encoder.model")


def test_encoder_configs_validate():
    paths = encoder_configs()
    assert {p.stem for p in paths} >= {"minilm", "minilm_lora", "roberta_base", "bert_base_cased",
                                       "distilbert_base_uncased", "deberta_v3_base", "distilbert_multilingual",
                                       "mmbert_base", "finbert"}
    for path in paths:
        config = load_model_config_file(path)
        assert config.description and config.model_name
        validate_training_arguments(config, resolve_model_class(config), source=str(path))


def test_training_arguments_reject_unknown_and_invalid_keys(tiny_bert):
    from pydantic import ValidationError

    from models.hf_encoder.arguments import HFEncoderTrainingArguments

    with pytest.raises(ValidationError, match="extra"):
        HFEncoderTrainingArguments.model_validate({"epochz": 3})
    with pytest.raises(ValidationError, match="> 0"):
        HFEncoderTrainingArguments.model_validate({"class_weight": {"a": 0}})
    with pytest.raises(ValidationError):
        HFEncoderTrainingArguments.model_validate({"peft": {"rank": 8}})
    defaults = HFEncoderTrainingArguments()
    assert (defaults.epochs, defaults.batch_size, defaults.precision, defaults.peft) == (3, 32, "auto", None)


# --- the real packaged MiniLM ------------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_minilm_fine_tunes_on_real_reviews(mr_rows):
    frame = mr_rows.sample(n=1000, random_state=0)
    train, test = frame.iloc[:800], frame.iloc[800:]
    config = load_model_config_file(PROJECT_ROOT / "model_configs" / "minilm.json")
    config = config.model_copy(update={"training_arguments": {**config.training_arguments, "epochs": 2}})
    model = fit(config, TextDataset(train.text.tolist(), train.label.tolist()), labels=["negative", "positive"])
    proba = model.predict_proba(TextDataset(test.text.tolist()))
    assert accuracy(proba, ["negative", "positive"], test.label) >= 0.7
    assert model.runtime_info()["model_source"]["kind"] == "package"
