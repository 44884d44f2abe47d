"""Fine-tuned Hugging Face encoders."""
