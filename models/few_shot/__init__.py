"""SetFit: contrastive few-shot fine-tuning of a sentence transformer, then a logistic regression head."""
