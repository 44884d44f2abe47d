"""More training data: clustering pseudo-labels (``pseudo_label``) and LLM-generated rows (``synthetic``)."""
