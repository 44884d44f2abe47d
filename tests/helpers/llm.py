"""Tiny causal LMs built from a config with a locally trained tokenizer: no network, seconds to build."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Review: a great film with a moving story and fine acting\nSentiment: positive",
    "Review: a dull mess, boring and far too long\nSentiment: negative",
    "Review: wonderful, funny and warm, I loved every minute\nSentiment: positive",
    "Review: the plot is weak and the jokes fall flat\nSentiment: negative",
    "Review: it is a film about a family in a small town\nSentiment: neutral",
    "Classify the sentiment of each movie review as one of: negative, neutral, positive.",
    "Here are movie reviews written in English, each with its sentiment.",
    "the movie was good bad great awful fine okay nice terrible brilliant slow",
    "N/A",
]


def build_tokenizer(directory: Path, *, kind: str = "bpe"):
    """A PreTrainedTokenizerFast trained on CORPUS: byte-level BPE (multi-token labels) or word-level."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordLevelTrainer(special_tokens=specials)
    tok.train_from_iterator(CORPUS * 3, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    fast.save_pretrained(directory)
    return fast


def build_tiny_causal_lm(directory: Path, *, arch: str = "llama", tokenizer: str = "bpe", seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer causal LM + tokenizer into ``directory`` and return it."""
    import torch
    from transformers import AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(directory, kind=tokenizer)
    common = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True, initializer_range=0.2,
    )
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(head_dim=8, sliding_window=16, **common)
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
