"""Sodarace (ELM, arXiv 2206.08896v1, §4): programs build walkers of masses and springs.

``api`` is the walker API programs call (the paper's ``walker_creator``), ``seeds`` the
paper's seed programs, ``domain`` adapts the physics of :mod:`jelm.sim` to the
:class:`jelm.domains.base.Domain` protocol, ``direct`` is the direct-encoding operator
and ``corpus`` the synthetic training corpus of the diff model.
"""
