"""Flax diff models for ELM (arXiv 2206.08896v1, §3.1): the model, sampling, checkpoints,
tokenizer, training, Hugging Face conversion, completion backends and ``jelm serve``."""
