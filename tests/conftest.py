"""Shared pytest setup.

``jelm.sim`` must be imported before anything starts JAX's backend: on import it pins XLA
to no-FMA code so results are bit-identical across batch shapes (see jelm/sim/__init__.py).
"""

import jelm.sim  # noqa: F401  (first: pins XLA flags before the JAX backend starts)
