"""Writing one generation into the ledger: one SQLite transaction (ELM §5-6).

:meth:`jelm.qd.ledger.Ledger.generation` returns a :class:`GenerationWriter`; the
candidates added in its ``with`` block and the generation's row commit together, or not
at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from jelm.qd.records import CandidateRecord, LedgerError, dumps, int_or_none, real_or_none

__all__ = ["GenerationWriter"]


class GenerationWriter:
    """The open transaction of one generation (from :meth:`Ledger.generation`)."""

    def __init__(self, ledger: Any, generation: int, metrics: dict[str, Any]) -> None:
        """``ledger``: the :class:`jelm.qd.ledger.Ledger` being written."""
        if generation < 0:
            raise LedgerError(f"generation must be >= 0, got {generation}")
        self.ledger = ledger
        self.generation = generation
        self.metrics = metrics
        self.ids: list[int] = []
        self._active = False

    def __enter__(self) -> GenerationWriter:
        led = self.ledger
        db = led._conn()
        if led._open_generation is not None:
            raise LedgerError(
                f"generation {led._open_generation.generation} is still open in {led.path}; "
                "generations are written one at a time"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute("SELECT max(generation) FROM generations").fetchone()[0]
            if last is not None and self.generation <= last:
                done = db.execute(
                    "SELECT 1 FROM generations WHERE generation = ?", (self.generation,)
                ).fetchone()
                what = "is already committed" if done else f"is not after the last ({last})"
                raise LedgerError(
                    f"generation {self.generation} {what} in ledger {led.path}; "
                    "generations are appended once, in increasing order"
                )
            (next_id,) = db.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
            (max_id,) = db.execute("SELECT max(id) FROM candidates").fetchone()
            led._next_id = max(led._next_id, int(next_id), (max_id or 0) + 1)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        led._open_generation = self
        self._active = True
        return self

    def add(self, record: CandidateRecord) -> int:
        """Insert one candidate; returns its id."""
        return self.add_many([record])[0]

    def add_many(self, records: Iterable[CandidateRecord]) -> list[int]:
        """Insert candidates (not yet committed); returns their ids, in order."""
        if not self._active:
            raise LedgerError("add outside the `with ledger.generation(g) as gen:` block")
        led, g, now = self.ledger, self.generation, time.time()
        names = led.descriptor_names
        rows = []
        start = led._next_id
        for k, r in enumerate(records):
            if r.id is not None:
                raise LedgerError(f"record already has id {r.id}; ids are assigned by the ledger")
            if r.generation is not None and r.generation != g:
                raise LedgerError(f"record of generation {r.generation} added to generation {g}")
            if not r.status:
                raise LedgerError("record without a status")
            unknown = set(r.descriptors) - set(names)
            if unknown:
                raise LedgerError(
                    f"record has descriptors {sorted(unknown)} this ledger does not record "
                    f"(it records {list(names)})"
                )
            rows.append(
                (
                    start + k,
                    g,
                    json.dumps([int(p) for p in r.parent_ids]),
                    r.operator,
                    r.message,
                    r.diff,
                    r.program,
                    r.status,
                    r.error,
                    real_or_none(r.fitness),
                    int_or_none(r.niche),
                    1 if r.accepted else 0,
                    now if r.created is None else float(r.created),
                    real_or_none(r.elapsed_s),
                    *(real_or_none(r.descriptors.get(name)) for name in names),
                )
            )
        ids = list(range(start, start + len(rows)))
        led._next_id = start + len(rows)  # never handed out again, even after a rollback
        try:
            columns = led._columns
            insert = (
                f"INSERT INTO candidates ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            led._conn().executemany(insert, rows)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot write to ledger {led.path}: {e}") from e
        self.ids.extend(ids)
        return ids

    def set_outcome(
        self, ids: Iterable[int], accepted: Iterable[bool], niche: Iterable[Any]
    ) -> None:
        """Record the archive's verdict on candidates added in this generation.

        The archive stores a candidate's ledger id, so ids are assigned (``add_many``)
        before the archive decides; this writes its decision before the commit.
        """
        if not self._active:
            raise LedgerError("set_outcome outside the `with ledger.generation(g) as gen:` block")
        rows = [
            (1 if bool(a) else 0, int_or_none(n), int(i))
            for i, a, n in zip(ids, accepted, niche, strict=True)
        ]
        mine = set(self.ids)
        stray = [i for _, _, i in rows if i not in mine]
        if stray:
            raise LedgerError(f"ids {stray[:5]} were not added in generation {self.generation}")
        try:
            self.ledger._conn().executemany(
                "UPDATE candidates SET accepted = ?, niche = ? WHERE id = ?", rows
            )
        except sqlite3.Error as e:
            raise LedgerError(f"cannot write to ledger {self.ledger.path}: {e}") from e

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._finish(commit=exc_type is None)

    def _finish(self, *, commit: bool) -> None:
        if not self._active:
            return
        led = self.ledger
        db = led._conn()
        self._active = False
        led._open_generation = None
        if not commit:
            db.execute("ROLLBACK")
            return
        try:
            db.execute(
                "INSERT INTO generations (generation, committed, n_candidates, metrics) "
                "VALUES (?, ?, ?, ?)",
                (self.generation, time.time(), len(self.ids), dumps(self.metrics)),
            )
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_id', ?)",
                (str(led._next_id),),
            )
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise LedgerError(
                    f"cannot commit generation {self.generation} to {led.path}: {e}"
                ) from e
            raise
