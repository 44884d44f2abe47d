"""The encoder's training recipe (step budget, class weights) and its extra objectives (MixUp, SupCon)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlops.core.class_balance import resolve_class_weight
from models.hf_encoder.arguments import HFEncoderTrainingArguments
from models.hf_encoder.objectives import (classifier_head, embedding_quality, mix_pairs, soft_cross_entropy,
                                          supcon_loss)
from models.hf_encoder.recipe import plan_epochs


# --- recipe -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, expected, why", [
    (900, 20, "capped by epochs"),  # 29 updates per epoch: 600 / 29 = 21 epochs, at most 20
    (3_000, 7, ""),  # 94 updates per epoch
    (100_000, 1, ""),  # 3,125 updates per epoch: one epoch already exceeds the budget
])
def test_a_step_budget_sets_the_epochs_from_the_data_size(rows, expected, why):
    args = HFEncoderTrainingArguments(epochs=20, train_steps=600, batch_size=32)
    epochs, plan = plan_epochs(args, rows)
    assert epochs == expected and plan["epochs"] == expected
    assert plan["planned_updates"] == expected * plan["updates_per_epoch"]
    assert why in plan["epochs_reason"] and "train_steps 600" in plan["epochs_reason"]


def test_without_a_step_budget_the_epochs_are_as_given_and_min_epochs_raises_them():
    assert plan_epochs(HFEncoderTrainingArguments(epochs=4), 50_000)[0] == 4
    assert plan_epochs(HFEncoderTrainingArguments(epochs=9, train_steps=10, min_epochs=3), 50_000)[0] == 3
    with pytest.raises(ValueError, match="min_epochs .5. is above epochs .3."):
        HFEncoderTrainingArguments(epochs=3, min_epochs=5, train_steps=100)


def test_class_weight_auto_weights_only_imbalanced_training_classes():
    labels = ["a", "b", "c"]
    imbalanced = np.array([0] * 60 + [1] * 25 + [2] * 15)
    assert resolve_class_weight("auto", labels, imbalanced)[0] == "balanced"
    assert "4.00 > 1.5" in resolve_class_weight("auto", labels, imbalanced)[1]
    assert resolve_class_weight("auto", labels, np.array([0] * 50 + [1] * 40 + [2] * 45))[0] is None
    assert resolve_class_weight(None, labels, imbalanced)[0] is None
    assert resolve_class_weight({"a": 2.0}, labels, imbalanced)[0] == {"a": 2.0}


# --- MixUp --------------------------------------------------------------------------------------------------------
def test_mixup_mixes_pairs_of_rows_and_their_labels_which_sum_to_one():
    hidden = torch.randn(8, 5, 4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixed, soft, lam = mix_pairs(hidden, targets, 3, alpha=0.4, n_mixed=12, generator=torch.Generator().manual_seed(0))
    assert mixed.shape == (12, 5, 4) and soft.shape == (12, 3)
    assert torch.allclose(soft.sum(dim=1), torch.ones(12))
    assert ((lam >= 0) & (lam <= 1)).all() and lam.std() > 0
    # every mix is lam * h_i + (1 - lam) * h_j of two different rows, and its label the same mix
    for m in range(12):
        found = [(i, j) for i in range(8) for j in range(8) if i != j and torch.allclose(
            mixed[m], lam[m] * hidden[i] + (1 - lam[m]) * hidden[j], atol=1e-6)]
        assert found, m
        i, j = found[0]
        expected = lam[m] * torch.eye(3)[targets[i]] + (1 - lam[m]) * torch.eye(3)[targets[j]]
        assert torch.allclose(soft[m], expected, atol=1e-6)
    again = mix_pairs(hidden, targets, 3, alpha=0.4, n_mixed=12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed)  # seeded


def test_soft_cross_entropy_of_one_hot_labels_is_the_cross_entropy_weighted_or_not():
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    one_hot = torch.nn.functional.one_hot(targets, 3).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, targets))
    weights = torch.tensor([0.5, 2.0, 3.0])
    assert torch.allclose(soft_cross_entropy(logits, one_hot, weights),
                          torch.nn.functional.cross_entropy(logits, targets, weight=weights))


def test_the_mixup_head_gives_the_models_own_logits_from_its_last_hidden_states(tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).eval()
    inputs = AutoTokenizer.from_pretrained(tiny_bert)(["the team scored a goal", "fresh bread"], padding=True,
                                                     return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
        assert torch.allclose(classifier_head(model)(outputs.hidden_states[-1]), outputs.logits, atol=1e-6)



TINY = {"vocab_size": 99, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 64, "num_labels": 3}


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "camembert", "mpnet", "electra", "distilbert",
                                  "deberta", "deberta-v2"])
def test_the_mixup_head_matches_every_supported_model_type(kind):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    extra = {"dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 32} if kind == "distilbert" else {}
    config = AutoConfig.for_model(kind, **TINY, **extra)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    input_ids = torch.randint(5, 99, (2, 7))
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True)
        assert torch.allclose(classifier_head(model)(outputs.hidden_states[-1]), outputs.logits, atol=1e-6)


# --- SupCon -------------------------------------------------------------------------------------------------------
def _naive_supcon(z: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    terms = []
    for i in range(len(y)):
        positives = [p for p in range(len(y)) if p != i and y[p] == y[i]]
        if not positives or all(y[a] == y[i] for a in range(len(y))):
            continue
        denominator = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in range(len(y)) if a != i]), dim=0)
        terms.append(-torch.stack([z[i] @ z[p] / t - denominator for p in positives]).mean())
    return torch.stack(terms).mean()


def test_supcon_matches_the_formula_and_pulls_classes_apart():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(10, 6), dim=1).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    loss = supcon_loss(z, y, 0.1)
    assert torch.allclose(loss, _naive_supcon(z, y, 0.1), atol=1e-5)
    loss.backward()
    assert z.grad.abs().sum() > 0
    separated = torch.nn.functional.normalize(torch.eye(6)[y] + 0.01, dim=1)
    assert supcon_loss(separated, y, 0.1) < loss  # embeddings grouped by class score better


def test_supcon_is_zero_with_zero_gradient_for_a_single_class():
    z = torch.nn.functional.normalize(torch.randn(7, 6), dim=1).requires_grad_(True)
    loss = supcon_loss(z, torch.zeros(7, dtype=torch.long), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(z.grad) == 0


def test_embedding_quality_on_separated_and_on_mixed_embeddings():
    labels = np.repeat([0, 1, 2], 10)
    separated = np.eye(3)[labels] + np.random.default_rng(0).normal(0, 0.01, (30, 3))
    separated /= np.linalg.norm(separated, axis=1, keepdims=True)
    quality = embedding_quality(separated, labels, k=5)
    assert quality == {"k": 5, "recall_at_k": 1.0, "knn_accuracy": 1.0, "n": 30}
    shuffled = embedding_quality(separated, np.random.default_rng(1).permutation(labels), k=5)
    assert shuffled["knn_accuracy"] < 0.8
    assert embedding_quality(separated, labels, k=5, block=7) == quality  # computed in blocks, the same


# --- in a real fit ------------------------------------------------------------------------------------------------
def _fit(tiny_bert, topics, **arguments):
    from mlops.core.config import ModelConfig
    from mlops.core.model_interface import FitContext
    from models.hf_encoder.model import HFEncoderClassifier

    config = ModelConfig.model_validate({
        "module_path": "models.hf_encoder.model", "class_name": "HFEncoderClassifier", "model_name": str(tiny_bert),
        "training_arguments": {"epochs": 3, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                               "max_length": 16, "num_threads": 1, "precision": "fp32", **arguments}})
    model = HFEncoderClassifier(config)
    model.fit(topics["train"], topics["val"], labels=["food", "sports", "tech"],
              context=FitContext(seed=3, show_progress=False))
    return model


def test_mixup_and_supcon_train_a_tiny_encoder_reproducibly_and_are_recorded(tiny_bert, topics):
    plain = _fit(tiny_bert, topics)
    both = _fit(tiny_bert, topics, mixup={"alpha": 0.4, "ratio": 0.5}, supcon={"weight": 0.2, "k": 3})
    again = _fit(tiny_bert, topics, mixup={"alpha": 0.4, "ratio": 0.5}, supcon={"weight": 0.2, "k": 3})
    proba = both.predict_proba(topics["test"])
    assert np.array_equal(proba, again.predict_proba(topics["test"]))
    assert not np.array_equal(proba, plain.predict_proba(topics["test"]))  # the objectives changed training
    info = both.runtime_info()
    assert info["mixup"] == {"alpha": 0.4, "ratio": 0.5} and info["supcon"]["weight"] == 0.2
    quality = info["embedding_quality"]
    assert quality["k"] == 3 and quality["n"] == len(topics["val"]) and 0 <= quality["knn_accuracy"] <= 1
    assert "embedding_quality" not in plain.runtime_info()
    json.dumps(info)  # the runtime facts go into metrics.json
    embeddings = both.embed(topics["test"])
    assert embeddings.shape[0] == len(topics["test"]) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_the_recipe_is_recorded_with_its_reasons(tiny_bert, topics):
    model = _fit(tiny_bert, topics, epochs=6, train_steps=20, class_weight="auto")
    recipe = model.runtime_info()["recipe"]
    assert recipe["updates_per_epoch"] == 13 and recipe["epochs"] == 2  # 200 rows / 16; ceil(20 / 13)
    assert recipe["class_weight"] is None and "auto" in recipe["class_weight_reason"]  # balanced topics


def test_tfidf_class_weight_auto_is_resolved_on_the_training_rows_and_recorded():
    from mlops.core.config import ModelConfig
    from mlops.core.text_dataset import TextDataset
    from models.tfidf_linear.model import TfidfLinearClassifier

    config = ModelConfig.model_validate({"module_path": "models.tfidf_linear.model",
                                         "class_name": "TfidfLinearClassifier",
                                         "training_arguments": {"class_weight": "auto"}})
    texts = [f"good film {i}" for i in range(40)] + [f"bad film {i}" for i in range(10)]
    model = TfidfLinearClassifier(config).fit(TextDataset(texts, ["pos"] * 40 + ["neg"] * 10), labels=["neg", "pos"])
    assert model.runtime_info()["class_weight"]["class_weight"] == "balanced"
    assert model._pipeline.named_steps["classifier"].class_weight == "balanced"
    even = TfidfLinearClassifier(config).fit(TextDataset(texts[:12] + texts[40:], ["pos"] * 12 + ["neg"] * 10),
                                             labels=["neg", "pos"])
    assert even.runtime_info()["class_weight"]["class_weight"] is None  # 12 / 10 = 1.2 <= 1.5


def test_a_saved_tfidf_model_keeps_its_auto_class_weight_record(tmp_path):
    from mlops.core.config import ModelConfig
    from mlops.core.text_dataset import TextDataset
    from models.tfidf_linear.model import TfidfLinearClassifier

    config = ModelConfig.model_validate({"module_path": "models.tfidf_linear.model",
                                         "class_name": "TfidfLinearClassifier",
                                         "training_arguments": {"class_weight": "auto"}})
    texts = [f"good film {i}" for i in range(40)] + [f"bad film {i}" for i in range(10)]
    model = TfidfLinearClassifier(config).fit(TextDataset(texts, ["pos"] * 40 + ["neg"] * 10), labels=["neg", "pos"])
    (tmp_path / "m").mkdir()
    model.save(tmp_path / "m")
    assert TfidfLinearClassifier.load(tmp_path / "m", config).runtime_info() == model.runtime_info()
