"""Helpers the tests share: ``cli`` (driving the CLI), ``hf`` (tiny BERTs, topic data), ``llm`` (tiny LMs)."""
