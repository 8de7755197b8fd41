"""Sodarace (ELM, arXiv 2206.08896v1, §4): programs build walkers of masses and springs.

``api`` is the walker API programs call (the paper's ``walker_creator``), ``seeds`` the
paper's seed programs, ``domain`` adapts the physics of :mod:`jelm.sim` to the
:class:`jelm.domains.base.Domain` protocol, ``direct`` is the direct-encoding operator
and ``corpus`` the synthetic training corpus of the diff model.

Programs import the API as ``jelm.domains.sodarace.api`` or, as the seeds do, under its
earlier name ``jelm.programs.walker_api`` (the shipped diff model was trained on programs
that import it so): loading this package makes that name an alias of the API module.
"""

import sys

from jelm.domains.sodarace import api as _api

#: The earlier module name of the walker API, which program texts may import.
LEGACY_API = "jelm.programs.walker_api"
sys.modules.setdefault(LEGACY_API, _api)
