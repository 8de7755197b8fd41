"""Real ledgers of small walker programs for the fine-tuning tests (no JAX)."""

from __future__ import annotations

from pathlib import Path

from jelm.qd.ledger import Ledger
from jelm.qd.records import CandidateRecord

MESSAGE = "Changed make_walker function."


def walker(a: float, b: float, amplitude: float = 3.0) -> str:
    """A short walker program whose numbers are ``a``, ``b`` and ``amplitude``."""
    return (
        "def make_walker():\n"
        "    wc = walker_creator()\n"
        f"    j0 = wc.add_joint(0.0, {a})\n"
        f"    j1 = wc.add_joint({b}, 0.0)\n"
        "    j2 = wc.add_joint(-1.0, 0.0)\n"
        f"    wc.add_muscle(j0, j1, False, {amplitude}, 0.25)\n"
        "    wc.add_muscle(j1, j2)\n"
        "    return wc.get_walker()\n"
    )


def write_ledger(path: Path, n_parents: int = 6, offset: int = 0) -> Path:
    """A ledger with ``n_parents`` seeds and, per seed, children of every kind the
    selections tell apart: accepted (lm_diff, with a message), valid but rejected (gp, no
    message), invalid, unchanged, and a two-parent crossover child."""
    with Ledger(path, descriptors=("height",)) as led:
        with led.generation(0) as g:
            seeds = g.add_many(
                [
                    CandidateRecord(operator="seed", program=walker(1.0 + k + offset, 2.0))
                    for k in range(n_parents)
                ]
            )
        with led.generation(1) as g:
            for k, sid in enumerate(seeds):
                a = 1.0 + k + offset
                g.add_many(
                    [
                        CandidateRecord(
                            parent_ids=(sid,),
                            operator="lm_diff",
                            message=MESSAGE,
                            program=walker(a, 2.5),
                            status="ok",
                            fitness=1.0,
                            accepted=True,
                        ),
                        CandidateRecord(
                            parent_ids=(sid,),
                            operator="gp",
                            message=None,
                            program=walker(a, 2.0, 4.0),
                            status="ok",
                            fitness=0.5,
                        ),
                        CandidateRecord(
                            parent_ids=(sid,),
                            operator="gp",
                            program=walker(a, 2.0, 40.0),
                            status="invalid_walker",
                        ),
                        CandidateRecord(
                            parent_ids=(sid,), operator="gp", program=walker(a, 2.0), status="ok"
                        ),
                        CandidateRecord(
                            parent_ids=(sid, seeds[0]),
                            operator="lm_crossover",
                            program=walker(a, 3.0),
                            status="ok",
                            accepted=True,
                        ),
                    ]
                )
    return path
