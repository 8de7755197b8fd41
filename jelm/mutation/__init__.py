"""Mutation operators of the ELM loop (paper §3.1 and §4.2): program-text operators
(``gp``; the language-model operators come later) and the pure-JAX ``direct`` baseline.

This package knows nothing of ``jelm.qd``: operators take parents and return children.
"""
