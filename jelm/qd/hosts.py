"""The host loop over several processes of one ``jax.distributed`` job (ELM, arXiv
2206.08896v1, §3: the sandbox and the simulator scale out with the batch).

Every process runs :func:`run_hosts` with a :class:`HostsLoop`; each call below is
collective (every process makes it, in the same order). Process 0 selects parents,
mutates them and sends the children to all; each process runs its contiguous share of
the children in its own sandbox and evaluates it on its own devices; the shares are
gathered so every process holds the whole generation and makes the same archive update.
Only process 0 opens the run directory: it writes the ledger, metrics and checkpoints,
and on a rerun restores and replays alone, then sends the archive to the others. Design
and recipes: ``jelm/qd/README.md``, "Many hosts".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jelm.mutation.base import Child
from jelm.qd.archive import ArchiveState
from jelm.qd.loop import Evaluated, HostLoop, _resume, run_generations
from jelm.qd.records import CandidateRecord
from jelm.qd.run import Run, Schedule

__all__ = ["Hosts", "HostsLoop", "run_hosts"]


class Hosts:
    """The processes of the job as the loop sees them: this one's index, their count,
    and exchanging host data (arrays and JSON-able objects) between them."""

    def __init__(self) -> None:
        self.index = jax.process_index()
        self.count = jax.process_count()

    @property
    def main(self) -> bool:
        """Whether this is process 0, the one that writes the run directory."""
        return self.index == 0

    def gather(self, tree: Any) -> Any:
        """Every process's ``tree`` (same structure and shapes everywhere), stacked along
        a new leading axis in process order."""
        if self.count == 1:
            return jax.tree.map(lambda a: np.asarray(a)[None], tree)
        from jax.experimental.multihost_utils import process_allgather

        return process_allgather(jax.device_get(tree))

    def broadcast(self, tree: Any) -> Any:
        """Process 0's ``tree`` on every process (the others pass one of the same
        structure and shapes)."""
        return jax.tree.map(lambda a: a[0], self.gather(tree))

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's JSON-able ``value``, in process order."""
        data = np.frombuffer(json.dumps(value).encode(), np.uint8)
        sizes = self.gather(np.array(data.size, np.int64))
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[: data.size] = data
        rows = self.gather(padded)
        return [json.loads(bytes(row[: int(n)])) for row, n in zip(rows, sizes, strict=True)]

    def broadcast_objects(self, value: Any) -> Any:
        """Process 0's JSON-able ``value`` on every process (the others' is ignored)."""
        return self.gather_objects(value if self.main else None)[0]


def _child(fields: dict[str, Any]) -> Child:
    return Child(**{**fields, "parent_ids": tuple(fields["parent_ids"])})


def _record(fields: dict[str, Any]) -> CandidateRecord:
    return CandidateRecord(**{**fields, "parent_ids": tuple(fields["parent_ids"])})


def _pad(a: np.ndarray, rows: int, value: Any) -> np.ndarray:
    a = np.asarray(a)
    out = np.full((rows, *a.shape[1:]), value, a.dtype)
    out[: a.shape[0]] = a
    return out


class HostsLoop(HostLoop):
    """A :class:`HostLoop` whose :meth:`ask`, :meth:`evaluate` and :meth:`tell` are
    collective over the processes of ``hosts``.

    ``ask`` runs on process 0 (the only one with the ledger, and an LM operator is asked
    once) and sends the children to all; ``evaluate`` runs this process's contiguous share
    of ``ceil(n / count)`` children (sandbox, pack, evaluate in two halves as the one-process
    loop) and gathers all shares; ``tell`` inserts under the ledger ids process 0 sends.
    Inside :meth:`solo` the methods are the one-process ones (process 0's resume).
    """

    def __init__(self, *args: Any, hosts: Hosts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hosts = hosts
        self._solo = hosts.count == 1
        self._share = 0

    @contextlib.contextmanager
    def solo(self) -> Iterator[None]:
        """The loop of this process alone (no collective) inside the ``with`` block."""
        before, self._solo = self._solo, True
        try:
            yield
        finally:
            self._solo = before

    def ask(
        self,
        state: ArchiveState,
        generation: int,
        programs: Callable[[Sequence[int]], dict[int, str]] | None,
    ) -> list[Child]:
        """Process 0's children of generation ``generation`` on every process (the others
        pass ``programs=None``)."""
        if self._solo:
            assert programs is not None
            return super().ask(state, generation, programs)
        children = None
        if self.hosts.main:
            assert programs is not None
            children = [dataclasses.asdict(c) for c in super().ask(state, generation, programs)]
        return [_child(c) for c in self.hosts.broadcast_objects(children)]

    def evaluate(self, children: Sequence[Child], generation: int) -> Evaluated:
        """The generation's records and evaluation on every process; this process runs
        and evaluates its share of ``children`` (the same list on every process)."""
        if self._solo:
            return super().evaluate(children, generation)
        n, count = len(children), self.hosts.count
        share = max(1, -(-n // count))
        start = self.hosts.index * share
        self._share = share
        try:
            mine = super().evaluate(children[start : start + share], generation)
        finally:
            self._share = 0
        local = {
            "genotypes": jax.tree.map(lambda a: _pad(a, share, 0), jax.device_get(mine.genotypes)),
            "fitness": _pad(mine.fitness, share, -np.inf),
            "descriptors": _pad(mine.descriptors, share, 0.0),
            "valid": _pad(mine.valid, share, False),
        }
        every = self.hosts.gather(local)
        flat = jax.tree.map(lambda a: a.reshape(count * share, *a.shape[2:]), every)
        records = [
            _record(r)
            for part in self.hosts.gather_objects([dataclasses.asdict(r) for r in mine.records])
            for r in part
        ]
        return Evaluated(
            records,
            flat["genotypes"],
            flat["fitness"][:n],
            flat["descriptors"][:n],
            flat["valid"][:n],
        )

    def tell(
        self, state: ArchiveState, evaluated: Evaluated, ids: Sequence[int] | None
    ) -> tuple[ArchiveState, np.ndarray, np.ndarray]:
        """Insert a generation under process 0's ledger ``ids`` (the others pass None)."""
        if not self._solo:
            sent = np.zeros(len(evaluated.records), np.int64)
            if self.hosts.main:
                assert ids is not None
                sent[:] = ids
            ids = [int(i) for i in self.hosts.broadcast(sent)]
        assert ids is not None
        return super().tell(state, evaluated, ids)

    def _slice_rows(self) -> int:
        """Half of this process's share while it evaluates one (else the batch's half)."""
        if self._share:
            return self._share // 2 if self._share % 2 == 0 else self._share
        return super()._slice_rows()


def run_hosts(
    loop: HostsLoop,
    run: Run | None,
    schedule: Schedule,
    seeds: Sequence[tuple[str, str]],
    progress: Callable[[dict], None] | None = None,
) -> tuple[ArchiveState, dict[str, Any]]:
    """:func:`jelm.qd.loop.run_host` over the processes of ``loop.hosts``: process 0 passes
    the run directory, the others ``None``; every process ends with the same archive.
    Returns it and the final metrics (process 0's; the others' hold the archive's)."""
    hosts = loop.hosts
    if hosts.main:
        assert run is not None
        with loop.solo():
            state, first = _resume(loop, run, loop.init())
    else:
        state, first = loop.init(), 0
    state = jax.tree.map(jax.numpy.asarray, hosts.broadcast(jax.device_get(state)))
    first = int(hosts.broadcast(np.array(first, np.int64)))
    return run_generations(loop, run, schedule, seeds, state, first, progress)
