"""A causal LM fine-tuned with a LoRA adapter (TRL SFTTrainer) to answer with the label."""
