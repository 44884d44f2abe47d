"""Pieces shared by the Hugging Face based models (imports torch lazily, inside functions)."""
