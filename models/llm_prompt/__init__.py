"""A causal LM used as a classifier by prompting: few-shot examples, label log-likelihood scoring."""
