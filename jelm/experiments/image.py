"""``python -m jelm.experiments.image``: ELM on image evolution (OpenELM's image domain).

Programs ``draw()`` pictures; MAP-Elites over their mean hue and brightness keeps the one
closest to a target picture per niche (ELM, arXiv 2206.08896v1, §3: programs as
genotypes). Configuration is Hydra's (``configs/image.yaml``; every key and default is a
field of :func:`jelm.experiments.config.config_class` for images)::

    python -m jelm.experiments.image mutation=gp                  # GP on the drawing code
    python -m jelm.experiments.image mutation=lm_diff lm.backend.kind=hf lm.backend.path=DIR
    python -m jelm.experiments.image target=night size=16 hydra.run.dir=runs/img
"""

from jelm.experiments.run import hydra_main

main = hydra_main("image")

if __name__ == "__main__":
    main()
