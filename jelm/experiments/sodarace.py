"""``python -m jelm.experiments.sodarace``: ELM on Sodarace (ELM, arXiv 2206.08896v1, §4).

The main job: a MAP-Elites archive over (height, width, mass) grown by mutating walker
programs. Configuration is Hydra's (``configs/sodarace.yaml``; every key and default is a
field of :func:`jelm.experiments.config.config_class` for Sodarace)::

    python -m jelm.experiments.sodarace                      # the default run
    python -m jelm.experiments.sodarace preset=quick         # a smoke run
    python -m jelm.experiments.sodarace mutation=gp seeds=[radial] generations=100
    python -m jelm.experiments.sodarace hydra.run.dir=runs/x # resume runs/x if it exists
    python -m jelm.experiments.sodarace -m seed=0,1,2        # a sweep
"""

import jelm.sim  # noqa: F401  (first: pins XLA flags before JAX starts)
from jelm.experiments.run import hydra_main

main = hydra_main("sodarace")

if __name__ == "__main__":
    main()
