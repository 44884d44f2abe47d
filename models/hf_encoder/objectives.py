"""Extra training objectives, switched on in ``training_arguments`` and added through the ``batch_loss`` hook.

* ``mixup: {alpha, ratio}``: embedding MixUp (Sun et al. 2020, "Mixup-Transformer"). Each batch gets
  ``round(ratio * batch size)`` extra samples, each a mix ``lam * h_i + (1 - lam) * h_j`` of two of its
  examples' last hidden states (lam ~ Beta(alpha, alpha), j a random other row), scored by the model's own
  classification head against the same mix of their one-hot labels. The batch loss becomes the row-weighted
  mean of the plain and the mixed losses.
* ``supcon: {weight, temperature, k}``: a supervised contrastive term (Khosla et al. 2020) on the mean-pooled,
  L2-normalised last hidden states, added as ``weight * supcon``. An anchor counts only when the batch holds
  another row of its class *and* one of another class: with one class there is nothing to contrast, so the
  term is zero (and has no gradient) rather than pulling every embedding together. After training the run
  reports the validation embeddings' Recall@k and kNN accuracy (``runtime.embedding_quality``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mlops.core.callbacks import LoopState, TrainingBatch, TrainingCallback
from mlops.core.errors import ConfigError

logger = logging.getLogger(__name__)


# --- the pieces, as plain functions (tested on their own) -----------------------------------------------------


def mix_pairs(hidden, targets, n_classes: int, alpha: float, n_mixed: int, generator):
    """``n_mixed`` mixes of random row pairs: (mixed hidden states, soft labels whose rows sum to one, lam)."""
    import torch

    rows = hidden.shape[0]
    first = torch.randint(rows, (n_mixed,), generator=generator)
    second = (first + torch.randint(1, max(rows, 2), (n_mixed,), generator=generator)) % rows  # another row
    lam = _beta_sample(alpha, n_mixed, generator).to(hidden.device)
    shape = (n_mixed,) + (1,) * (hidden.dim() - 1)
    mixed = lam.view(shape).to(hidden.dtype) * hidden[first] + (1 - lam.view(shape)).to(hidden.dtype) * hidden[second]
    one_hot = torch.nn.functional.one_hot(targets, n_classes).float()
    soft = lam[:, None] * one_hot[first] + (1 - lam[:, None]) * one_hot[second]
    return mixed, soft, lam


def _beta_sample(alpha: float, n: int, generator):
    """Beta(alpha, alpha) from two seeded Gamma draws (torch's Beta takes no generator)."""
    import torch

    shape = torch.full((2, n), float(alpha))
    gammas = torch._standard_gamma(shape, generator=generator)
    return gammas[0] / gammas.sum(dim=0)


def soft_cross_entropy(logits, soft, class_weights=None):
    """Cross-entropy against soft labels; with ``class_weights``, normalised like ``F.cross_entropy(weight=)``
    (by the rows' total weight), so the mixed and the plain loss are on one scale."""
    import torch

    log_p = torch.log_softmax(logits.float(), dim=-1)
    if class_weights is None:
        return -(soft * log_p).sum(dim=-1).mean()
    weighted = soft * class_weights[None, :]
    return -(weighted * log_p).sum() / weighted.sum().clamp(min=1e-12)


def mean_pool(hidden, attention_mask):
    """Mean of the token states where the mask is 1, L2-normalised (sentence-transformers' pooling)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def pooled_embeddings(model, encode, batches, n: int, autocast) -> np.ndarray:
    """``mean_pool`` of the model's last hidden states for ``n`` rows, batch by batch (``encode(idx)``: inputs)."""
    import torch

    out, was_training = None, model.training
    model.eval()
    with torch.inference_mode():
        for idx in batches:
            inputs = encode(idx)
            with autocast():
                hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
            pooled = mean_pool(hidden, inputs["attention_mask"]).cpu().numpy()
            out = np.empty((n, pooled.shape[1]), dtype=np.float32) if out is None else out
            out[idx] = pooled
    model.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def supcon_loss(embeddings, targets, temperature: float):
    """Supervised contrastive loss of normalised ``embeddings``; anchors without a positive and a negative in the
    batch are left out (0 when none is left)."""
    import torch

    n = embeddings.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    same = (targets[:, None] == targets[None, :]) & ~eye
    other = targets[:, None] != targets[None, :]
    anchors = same.any(dim=1) & other.any(dim=1)
    if not anchors.any():
        return embeddings.sum() * 0.0  # keeps the graph, gives zero gradient
    logits = (embeddings @ embeddings.T) / temperature
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = same.float()
    per_anchor = -(log_prob.masked_fill(~same, 0.0) * positives).sum(dim=1) / positives.sum(dim=1).clamp(min=1)
    return per_anchor[anchors].mean()


def embedding_quality(embeddings: np.ndarray, labels: np.ndarray, k: int, block: int = 1024) -> dict[str, Any]:
    """Recall@k (a row's k nearest others hold one of its class) and kNN accuracy (their majority vote);
    similarities are computed ``block`` rows at a time, so memory stays at ``block x n``."""
    n = len(labels)
    k = min(k, n - 1)
    if k < 1:
        return {"k": 0, "recall_at_k": None, "knn_accuracy": None, "n": int(n)}
    hits = votes_right = 0
    for start in range(0, n, block):
        similarity = embeddings[start:start + block] @ embeddings.T
        rows = np.arange(similarity.shape[0])
        similarity[rows, start + rows] = -np.inf  # not its own neighbour
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        neighbour_labels = labels[nearest]
        own = labels[start:start + block, None]
        hits += int((neighbour_labels == own).any(axis=1).sum())
        votes = np.array([np.bincount(row, minlength=labels.max() + 1).argmax() for row in neighbour_labels])
        votes_right += int((votes == own[:, 0]).sum())
    return {"k": int(k), "recall_at_k": hits / n, "knn_accuracy": votes_right / n, "n": int(n)}


def classifier_head(model):
    """A function from last hidden states (batch, tokens, hidden) to logits, through the model's own head."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    kind = base.config.model_type
    if kind == "bert":
        return lambda h: base.classifier(base.dropout(base.bert.pooler(h) if base.bert.pooler is not None else h[:, 0]))
    if kind in ("roberta", "xlm-roberta", "camembert", "mpnet", "electra"):
        return base.classifier
    if kind == "distilbert":
        return lambda h: base.classifier(base.dropout(torch.relu(base.pre_classifier(h[:, 0]))))
    if kind in ("deberta", "deberta-v2"):
        return lambda h: base.classifier(base.dropout(base.pooler(h)))
    raise ConfigError(f"training_arguments.mixup does not know the classification head of model type {kind!r}; "
                      "it supports bert, roberta, xlm-roberta, camembert, mpnet, electra, distilbert and deberta.")


# --- the callbacks --------------------------------------------------------------------------------------------


class EmbeddingMixUp(TrainingCallback):
    needs_hidden_states = True

    def __init__(self, alpha: float, ratio: float, n_classes: int, seed: int, class_weights=None) -> None:
        import torch

        self.alpha, self.ratio, self.n_classes = alpha, ratio, n_classes
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.class_weights = class_weights
        self.head = None

    def on_fit_start(self, state: LoopState) -> None:
        self.head = classifier_head(state.model)
        state.info["mixup"] = {"alpha": self.alpha, "ratio": self.ratio}

    def batch_loss(self, state: LoopState, batch: TrainingBatch, loss: Any) -> Any:
        rows = len(batch.indices)
        n_mixed = round(self.ratio * rows)
        if rows < 2 or n_mixed < 1:
            return loss
        hidden = batch.outputs.hidden_states[-1]
        mixed, soft, _ = mix_pairs(hidden, batch.targets, self.n_classes, self.alpha, n_mixed, self.generator)
        with batch.autocast():
            logits = self.head(mixed)
        mixed_loss = soft_cross_entropy(logits, soft.to(logits.device), self.class_weights)
        return (loss * rows + mixed_loss * n_mixed) / (rows + n_mixed)


class SupervisedContrastive(TrainingCallback):
    needs_hidden_states = True

    def __init__(self, weight: float, temperature: float, k: int, embed_validation=None) -> None:
        self.weight, self.temperature, self.k = weight, temperature, k
        self.embed_validation = embed_validation  # () -> (normalised embeddings, class indices), or None

    def batch_loss(self, state: LoopState, batch: TrainingBatch, loss: Any) -> Any:
        embeddings = mean_pool(batch.outputs.hidden_states[-1], batch.inputs["attention_mask"])
        return loss + self.weight * supcon_loss(embeddings, batch.targets, self.temperature)

    def on_fit_end(self, state: LoopState) -> None:
        state.info["supcon"] = {"weight": self.weight, "temperature": self.temperature}
        if state.failed or self.embed_validation is None:
            return
        embeddings, labels = self.embed_validation()
        quality = embedding_quality(embeddings, labels, self.k)
        state.info["embedding_quality"] = quality
        if quality["recall_at_k"] is not None:
            logger.info("validation embeddings: Recall@%d %.4f, kNN accuracy %.4f (%d rows)", quality["k"],
                        quality["recall_at_k"], quality["knn_accuracy"], quality["n"])
