"""The native CPU backend of the Sodarace simulator: ``native.cc`` as an XLA FFI call.

``native.cc`` computes the XLA step's physics (ELM paper, Lehman et al. 2022, §4; the
stages are listed in :mod:`jelm.sim.xla.step`) one walker at a time with its joints in
registers and cache, and runs the rows on a pool of threads. :mod:`.build` compiles and
caches the library, :mod:`.ffi` registers it and binds it as a traceable op
(:func:`simulate`, the ``native`` entry of :mod:`jelm.sim.backends`). The two backends
agree to float32 rounding; ``jelm/sim/README.md`` ("Backends") says how closely.
"""

from jelm.sim.native.build import (
    NativeUnavailable,
    available,
    cache_dir,
    library,
    unavailable_reason,
)
from jelm.sim.native.ffi import simulate

__all__ = [
    "NativeUnavailable",
    "available",
    "cache_dir",
    "library",
    "simulate",
    "unavailable_reason",
]
