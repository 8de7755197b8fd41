"""Run machinery: run directories, orbax checkpoints and plots (ELM §5: long searches)."""
