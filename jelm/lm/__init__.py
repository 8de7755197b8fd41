"""Flax diff models for ELM (Lehman et al. 2022, §3.1): tokenizer, corpus, model, training."""
