"""The entry points of ELM runs (ELM, arXiv 2206.08896v1, §4-5): configuration, the shared
runner, and ``python -m jelm.experiments.<sodarace | image | seeds>``."""
