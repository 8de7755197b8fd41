"""jelm.sim: Sodarace physics in JAX (ELM paper, Lehman et al. 2022, §4 and appendix).

Importable alone: nothing here imports the rest of jelm, transformers or QDax.
"""

from jelm.sim.terrain import (
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
from jelm.sim.walker import (
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
    "TERRAINS",
    "BucketShape",
    "Terrain",
    "WalkerBatch",
    "WalkerDoesNotFit",
    "bucket_of",
    "bumpy",
    "default_ladder",
    "flat",
    "heightfield",
    "hills",
    "left_wall",
    "make_terrain",
    "pack",
    "pack_buckets",
    "resample",
    "right_wall",
    "stack",
    "tunnel",
    "unpack",
]
