"""jelm.sim: Sodarace physics in JAX (ELM paper, Lehman et al. 2022, §4 and appendix).

Importable alone: nothing here imports the rest of jelm, transformers or QDax. Importing
it before JAX starts its backend turns off FMA contraction in XLA:CPU
(``--xla_cpu_max_isa=AVX``) when JAX is going to run on the CPU, so that results are
bit-identical across batch shapes; ``JELM_SIM_ALLOW_FMA=1`` opts out
(:mod:`jelm.sim.platforms`; ``jelm/sim/README.md``, "Determinism").
"""

from jelm.sim import platforms as _platforms

_platforms.pin_cpu_isa()

from jelm.sim.base import (  # noqa: E402
    ACCURATE_PARAMS,
    DEFAULT_PARAMS,
    DEFAULT_STEPS,
    BackendUnavailable,
    Evaluation,
    PhysicsParams,
    SimState,
    SurfaceSpec,
    as_arrays,
)
from jelm.sim.physics import (  # noqa: E402
    evaluate,
    evaluate_jit,
    evaluate_walkers,
    init_state,
    rollout,
    simulate,
)
from jelm.sim.terrain import (  # noqa: E402
    TERRAINS,
    Terrain,
    bumpy,
    flat,
    heightfield,
    hills,
    left_wall,
    make_terrain,
    resample,
    right_wall,
    stack,
    tunnel,
)
from jelm.sim.walker import (  # noqa: E402
    BucketShape,
    WalkerBatch,
    WalkerDoesNotFit,
    bucket_of,
    default_ladder,
    pack,
    pack_buckets,
    unpack,
)

__all__ = [
    "ACCURATE_PARAMS",
    "DEFAULT_PARAMS",
    "DEFAULT_STEPS",
    "TERRAINS",
    "BackendUnavailable",
    "BucketShape",
    "Evaluation",
    "PhysicsParams",
    "SimState",
    "SurfaceSpec",
    "Terrain",
    "WalkerBatch",
    "WalkerDoesNotFit",
    "as_arrays",
    "bucket_of",
    "bumpy",
    "default_ladder",
    "evaluate",
    "evaluate_jit",
    "evaluate_walkers",
    "flat",
    "heightfield",
    "hills",
    "init_state",
    "left_wall",
    "make_terrain",
    "pack",
    "pack_buckets",
    "resample",
    "right_wall",
    "rollout",
    "simulate",
    "stack",
    "tunnel",
    "unpack",
]
