"""Tiny BERT encoders built from a config with a locally trained WordPiece tokenizer: no network, ~1 s to build.

Also synthetic, learnable text data (topics marked by keywords) for the encoder tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOPICS: dict[str, list[str]] = {
    "sports": ["football", "goal", "match", "team", "coach", "league"],
    "tech": ["software", "computer", "chip", "code", "server", "laptop"],
    "food": ["pasta", "recipe", "bread", "cheese", "soup", "dinner"],
}
FILLER = [
    "the", "a", "this", "that", "we", "they", "it", "was", "is", "very", "really", "quite", "about", "some", "new",
    "old", "big", "small", "today", "yesterday", "people", "said", "think", "one", "two", "more", "most", "good", "bad",
]

#: Set by ``build_tiny_bert`` so a packaged-model registry entry can point at ``helpers.hf:packaged_tiny_bert``.
_LAST_BUILT: Path | None = None


def topic_sentence(rng: np.random.Generator, topic: str | None, n_filler: int = 6) -> str:
    words = list(rng.choice(FILLER, size=n_filler))
    if topic is not None:
        for word in rng.choice(TOPICS[topic], size=2, replace=False):
            words.insert(int(rng.integers(0, len(words) + 1)), str(word))
    return " ".join(words)


def topic_data(n: int, seed: int = 0, topics: tuple[str, ...] = ("sports", "tech", "food")) -> tuple[list[str], list[str]]:
    """``n`` sentences, balanced over ``topics``; each holds two keywords of its topic among filler words."""
    rng = np.random.default_rng(seed)
    labels = [topics[i % len(topics)] for i in range(n)]
    rng.shuffle(labels)
    texts = [topic_sentence(rng, label, n_filler=int(rng.integers(3, 10))) for label in labels]
    return texts, labels


def corpus() -> list[str]:
    rng = np.random.default_rng(123)
    lines = [" ".join(words) for words in TOPICS.values()] + [" ".join(FILLER)]
    lines += [topic_sentence(rng, topic) for topic in TOPICS for _ in range(20)]
    return lines


def build_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # A fixed vocabulary (every corpus word, then single characters), not a trained one: the trainer breaks
    # frequency ties in hash order, which differs between processes, and so would the tiny models' results.
    words = sorted({w for line in corpus() for w in line.lower().split()})
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + words + chars + [f"##{c}" for c in chars]))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(directory)
    return fast


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT encoder (no head) + tokenizer into ``directory``."""
    import torch
    from transformers import BertConfig, BertModel

    global _LAST_BUILT
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(directory)
    _LAST_BUILT = directory
    return directory


def packaged_tiny_bert() -> Path:
    """A stand-in for a package's ``get_model_path()``: the folder the last ``build_tiny_bert`` wrote."""
    if _LAST_BUILT is None:
        raise RuntimeError("build_tiny_bert has not run")
    return _LAST_BUILT


def write_topic_csv(path: Path, n: int, seed: int) -> Path:
    """``n`` topic sentences with their labels as a ``text,label`` CSV."""
    import pandas as pd

    texts, labels = topic_data(n, seed=seed)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def write_tiny_encoder_config(path: Path, base_dir: Path, **extra) -> Path:
    """A model config JSON for a tiny BERT built in ``base_dir`` (1 thread, fp32, quick); ``extra`` may hold
    top-level keys (``resources``) and ``training_arguments`` overrides."""
    import json

    arguments = {"epochs": 3, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0, "max_length": 16,
                 "num_threads": 1, "precision": "fp32", **extra.pop("training_arguments", {})}
    path.write_text(json.dumps({"module_path": "models.hf_encoder.model", "class_name": "HFEncoderClassifier",
                                "model_name": str(build_tiny_bert(base_dir)), "training_arguments": arguments,
                                **extra}))
    return path


def multi_topic_data(n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]]]:
    """``n`` sentences with label sets: each row mentions 0 to 3 of the topics (two keywords each), the empty set
    and every combination occurring; sets are tuples in the order of ``TOPICS``."""
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    texts, sets = [], []
    for i in range(n):
        k = [0, 1, 1, 2, 2, 3][i % 6]
        chosen = sorted(rng.choice(len(topics), size=k, replace=False).tolist())
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 7))))
        for t in chosen:
            for word in rng.choice(TOPICS[topics[t]], size=2, replace=False):
                words.insert(int(rng.integers(0, len(words) + 1)), str(word))
        texts.append(" ".join(words) + f" {i}")
        sets.append(tuple(topics[t] for t in chosen))
    return texts, sets
