"""The XLA backend of the Sodarace simulator: the step in pure JAX, for every device.

:func:`simulate` is the ``xla`` entry of :mod:`jelm.sim.backends`; :mod:`.step` holds the
algorithm (ELM paper, Lehman et al. 2022, §4), :mod:`.slots` the walkers' layout and
:mod:`.contact` the terrain contact.
"""

from jelm.sim.xla.slots import Topology, topology
from jelm.sim.xla.step import chunk_rows, simulate

__all__ = ["Topology", "chunk_rows", "simulate", "topology"]
