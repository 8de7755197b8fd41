"""The ledger: every candidate an ELM run evaluated, in one SQLite file (ELM §5-6).

One row per candidate (parents, operator, commit message, diff, program, status or
failure class, fitness, one column per descriptor of the domain, niche, accepted) and one
row per generation (metrics), written in one transaction per generation::

    with Ledger(run / "ledger.sqlite", run_config=cfg, descriptors=("height", "width")) as led:
        with led.generation(g, metrics={"qd_score": 12.5}) as gen:
            ids = gen.add_many(records)      # ids known now, before the commit
            ...                              # e.g. put ids into the archive
        # here the candidates and the generation row are committed, together

Durability, ids, NaN, the run-config check, bad files and concurrency are described in
``jelm/qd/README.md``. Only the standard library: notebooks and dataset builders read a
ledger without loading JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jelm.io.rundir import config_differences
from jelm.qd.generation import GenerationWriter
from jelm.qd.records import (
    CandidateRecord,
    Edit,
    GenerationInfo,
    Improvement,
    LedgerError,
    config_hash,
    dumps,
)

#: The schema this module writes. Version 1 (no ``descriptor_names`` in ``meta``) had the
#: Sodarace columns height, width and mass; it is read as such.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
LEGACY_DESCRIPTORS = ("height", "width", "mass")
FORMAT = "jelm-ledger"
SYNCHRONOUS = "FULL"  # see the module docstring: durable commits, one fsync per generation

_COLUMNS = (
    "id",
    "generation",
    "parent_ids",
    "operator",
    "message",
    "diff",
    "program",
    "status",
    "error",
    "fitness",
    "niche",
    "accepted",
    "created",
    "elapsed_s",
)
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    parent_ids TEXT NOT NULL,
    operator TEXT NOT NULL,
    message TEXT,
    diff TEXT,
    program TEXT,
    status TEXT NOT NULL,
    error TEXT,
    fitness REAL,
    niche INTEGER,
    accepted INTEGER NOT NULL,
    created REAL NOT NULL,
    elapsed_s REAL{descriptor_columns}
);
CREATE INDEX candidates_generation ON candidates (generation);
CREATE INDEX candidates_accepted ON candidates (accepted);
CREATE TABLE generations (
    generation INTEGER PRIMARY KEY,
    committed REAL NOT NULL,
    n_candidates INTEGER NOT NULL,
    metrics TEXT NOT NULL
);
"""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-variable limit


def _check_names(names: tuple[str, ...]) -> None:
    """Descriptor names become columns: lower-case identifiers, distinct, not a base
    column's name."""
    bad = [n for n in names if not _NAME.match(n) or n in _COLUMNS]
    if bad or len(set(names)) != len(names):
        raise LedgerError(
            f"descriptor names {list(names)} cannot be ledger columns: each must be a distinct "
            f"lower-case identifier and none of {', '.join(_COLUMNS)}"
        )


def _filters(
    generation: int | None, accepted: bool | None, status: str | Iterable[str] | None
) -> tuple[str, list[Any]]:
    where, args = [], []
    if generation is not None:
        where.append("generation = ?")
        args.append(int(generation))
    if accepted is not None:
        where.append("accepted = ?")
        args.append(1 if accepted else 0)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    return (" WHERE " + " AND ".join(where) if where else ""), args


class Ledger:
    """An SQLite ledger of every candidate of a run; see the module docstring.

    ``Ledger(path)`` opens ``path`` or creates it; ``run_config`` (a JSON-able mapping) is
    stored at creation and checked on reopen; ``descriptors`` names the domain's
    descriptors, one column each (lower-case identifiers): a new ledger takes them, an
    existing one must have the same (``None``: whatever it has); ``readonly=True`` opens an
    existing ledger for reading only (safe next to a running writer).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        run_config: Mapping[str, Any] | None = None,
        descriptors: Iterable[str] | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        wanted = None if descriptors is None else tuple(descriptors)
        if wanted is not None:
            _check_names(wanted)
        self._open_generation: GenerationWriter | None = None
        if self.path.is_dir():
            raise LedgerError(f"{self.path} is a directory, not a jelm ledger file")
        if readonly and not self.path.exists():
            raise LedgerError(f"cannot open ledger {self.path} read-only: no such file")
        try:
            if readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30
                )
            else:
                self._db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30
                )
        except sqlite3.Error as e:
            raise LedgerError(f"cannot open ledger {self.path}: {e}") from None
        try:
            self._init(run_config, wanted)
        except LedgerError:
            self._db.close()
            raise
        except sqlite3.Error as e:
            self._db.close()
            name = getattr(e, "sqlite_errorname", "")
            if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or not isinstance(
                e, sqlite3.OperationalError
            ):
                raise LedgerError(f"{self.path} is not a jelm ledger ({e})") from None
            raise LedgerError(f"cannot open ledger {self.path}: {e}") from None

    def _init(self, run_config: Mapping[str, Any] | None, wanted: tuple[str, ...] | None) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if self.readonly:
                raise LedgerError(f"{self.path} is not a jelm ledger (empty database)")
            self._create(run_config, wanted or ())
            tables = {"meta", "candidates", "generations"}
        elif "meta" not in tables:
            raise LedgerError(
                f"{self.path} is not a jelm ledger (an SQLite file without a meta table)"
            )
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise LedgerError(f"{self.path} is not a jelm ledger (meta table has no ledger mark)")
        version = int(meta.get("schema_version", -1))
        if version not in READABLE_VERSIONS:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}; this jelm reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Open it with the jelm that wrote it "
                "or export it to JSONL."
            )
        names = (
            tuple(json.loads(meta["descriptor_names"]))
            if "descriptor_names" in meta
            else LEGACY_DESCRIPTORS
        )
        if wanted is not None and wanted != names:
            raise LedgerError(
                f"ledger {self.path} records the descriptors {list(names)}; this run has "
                f"{list(wanted)}. Use a new run directory."
            )
        self.descriptor_names: tuple[str, ...] = names
        #: The configuration of the run that wrote the ledger (``None`` if it gave none).
        self.run_config: dict[str, Any] | None = (
            json.loads(meta["run_config"]) if "run_config" in meta else None
        )
        self._columns = (*_COLUMNS, *names)
        self._select = f"SELECT {', '.join(self._columns)} FROM candidates"
        if not {"candidates", "generations"} <= tables:
            raise LedgerError(f"{self.path} is not a jelm ledger (tables missing)")
        if not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        stored = meta.get("run_config_hash")
        if run_config is not None:
            digest = config_hash(run_config)
            if stored is None and not self.readonly:
                self._set_meta(
                    {"run_config_hash": digest, "run_config": dumps(run_config)}, commit=True
                )
                self.run_config = json.loads(dumps(run_config))
            elif stored is not None and stored != digest:
                old = json.loads(meta.get("run_config", "{}"))
                new = json.loads(dumps(run_config))
                raise LedgerError(
                    f"ledger {self.path} was written by a run with a different config "
                    f"(hash {stored[:12]} in the ledger, {digest[:12]} now): "
                    f"{'; '.join(config_differences(old, new)[:5])}. Resume with the original "
                    "config or use a new run directory."
                )
        # Touch the candidates b-tree so a truncated or corrupt file fails here, not later.
        (max_id,) = db.execute("SELECT max(id) FROM candidates").fetchone()
        db.execute("SELECT max(generation) FROM generations").fetchone()
        self._next_id = max(int(meta.get("next_id", 1)), (max_id or 0) + 1)

    def _create(self, run_config: Mapping[str, Any] | None, names: tuple[str, ...]) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        meta = {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "created": repr(time.time()),
            "next_id": "1",
            "descriptor_names": json.dumps(list(names)),
        }
        columns = "".join(f",\n    {name} REAL" for name in names)
        if run_config is not None:
            meta["run_config_hash"] = config_hash(run_config)
            meta["run_config"] = dumps(run_config)
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.format(descriptor_columns=columns).split(";"):
                if stmt.strip():
                    db.execute(stmt)
            self._set_meta(meta, commit=False)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _set_meta(self, items: Mapping[str, str], *, commit: bool) -> None:
        sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
        if commit:
            self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(sql, items.items())
        if commit:
            self._db.execute("COMMIT")

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (an open generation is rolled back). Idempotent."""
        if self._db is None:
            return
        if self._open_generation is not None:
            self._open_generation._finish(commit=False)
        self._db.close()
        self._db = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise LedgerError(f"ledger {self.path} is closed")
        return self._db

    # -- writing ---------------------------------------------------------------------------

    def generation(self, generation: int, metrics: Mapping[str, Any] | None = None):
        """A context manager writing generation ``generation`` in one transaction.

        ``with ledger.generation(g) as gen: ids = gen.add_many(records)``; the candidates and
        the generation row (with ``metrics``, which ``gen.metrics`` can still update) commit
        at the end of the block; an exception inside it rolls everything back.
        """
        if self.readonly:
            raise LedgerError(f"ledger {self.path} is open read-only")
        return GenerationWriter(self, int(generation), dict(metrics or {}))

    def integrity_check(self) -> None:
        """SQLite's full ``PRAGMA integrity_check``; raises :class:`LedgerError` if not ok."""
        rows = [r[0] for r in self._conn().execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            raise LedgerError(f"ledger {self.path} failed the integrity check: {rows[:5]}")

    # -- reading ---------------------------------------------------------------------------

    def last_generation(self) -> int | None:
        """The last committed generation, or ``None`` for an empty ledger."""
        return self._conn().execute("SELECT max(generation) FROM generations").fetchone()[0]

    def count(
        self,
        generation: int | None = None,
        accepted: bool | None = None,
        status: str | Iterable[str] | None = None,
    ) -> int:
        """The number of committed candidates matching the filters (all by default)."""
        where, args = _filters(generation, accepted, status)
        return self._conn().execute(f"SELECT count(*) FROM candidates{where}", args).fetchone()[0]

    def get(self, id: int) -> CandidateRecord:
        """The candidate with this id; ``KeyError`` if there is none."""
        row = self._conn().execute(f"{self._select} WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {int(id)} in ledger {self.path}")
        return self._record(row)

    def programs(self, ids: Iterable[int]) -> dict[int, str]:
        """Program text by id; ``KeyError`` for ids that are absent or have no program."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        out: dict[int, str] = {}
        db = self._conn()
        for k in range(0, len(wanted), _CHUNK):
            chunk = wanted[k : k + _CHUNK]
            sql = (
                f"SELECT id, program FROM candidates WHERE id IN ({', '.join('?' * len(chunk))})"
                " AND program IS NOT NULL"
            )
            out.update(db.execute(sql, chunk))
        missing = [i for i in wanted if i not in out]
        if missing:
            raise KeyError(f"no program for ids {missing[:10]} in ledger {self.path}")
        return {i: out[i] for i in wanted}

    def iter_candidates(
        self,
        generation: int | None = None,
        accepted: bool | None = None,
        status: str | Iterable[str] | None = None,
    ) -> Iterator[CandidateRecord]:
        """Committed candidates matching the filters, in id order (lazily)."""
        where, args = _filters(generation, accepted, status)
        for row in self._conn().execute(f"{self._select}{where} ORDER BY id", args):
            yield self._record(row)

    def _record(self, row: tuple) -> CandidateRecord:
        base = len(_COLUMNS)
        d = dict(zip(_COLUMNS, row[:base], strict=True))
        d["parent_ids"] = tuple(json.loads(d["parent_ids"]))
        d["accepted"] = bool(d["accepted"])
        d["descriptors"] = dict(zip(self.descriptor_names, row[base:], strict=True))
        return CandidateRecord(**d)

    def generations(self) -> list[GenerationInfo]:
        """Every committed generation row, in order."""
        rows = self._conn().execute(
            "SELECT generation, committed, n_candidates, metrics FROM generations "
            "ORDER BY generation"
        )
        return [GenerationInfo(g, c, n, json.loads(m)) for g, c, n, m in rows]

    def generation_metrics(self) -> dict[int, dict[str, Any]]:
        """The metrics dict stored with each committed generation, by generation."""
        return {info.generation: info.metrics for info in self.generations()}

    def iter_improvements(self, min_fitness_gain: float = 0.0) -> Iterator[Improvement]:
        """Stage-2 examples: accepted children with one parent, both with a fitness and a
        program, whose fitness exceeds the parent's by *more than* ``min_fitness_gain``
        (pass ``-math.inf`` for every accepted single-parent child). In child-id order."""
        sql = """
            SELECT p.program, c.program, c.diff, c.message, c.fitness - p.fitness
            FROM candidates AS c
            JOIN candidates AS p ON p.id = json_extract(c.parent_ids, '$[0]')
            WHERE c.accepted = 1 AND json_array_length(c.parent_ids) = 1
              AND c.fitness IS NOT NULL AND p.fitness IS NOT NULL
              AND c.program IS NOT NULL AND p.program IS NOT NULL
              AND c.fitness - p.fitness > ?
            ORDER BY c.id
        """
        for row in self._conn().execute(sql, (float(min_fitness_gain),)):
            yield Improvement(*row)

    def iter_edits(self) -> Iterator[Edit]:
        """Every child with one parent where both programs are known (any status), in
        child-id order: the raw material of diff-model fine-tuning sets."""
        sql = """
            SELECT c.id, p.program, c.program, c.message, c.operator, c.status, c.accepted
            FROM candidates AS c
            JOIN candidates AS p ON p.id = json_extract(c.parent_ids, '$[0]')
            WHERE json_array_length(c.parent_ids) = 1
              AND c.program IS NOT NULL AND p.program IS NOT NULL
            ORDER BY c.id
        """
        for cid, parent, child, message, operator, status, accepted in self._conn().execute(sql):
            yield Edit(cid, parent, child, message, operator, status, bool(accepted))

    def export_jsonl(
        self,
        path: str | os.PathLike,
        generation: int | None = None,
        accepted: bool | None = None,
        status: str | Iterable[str] | None = None,
    ) -> int:
        """Write matching candidates as JSON lines (one object per candidate, ``None`` as
        null); the file appears whole or not at all. Returns the number written."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        n = 0
        try:
            with tmp.open("w", encoding="utf-8") as f:
                for rec in self.iter_candidates(generation, accepted, status):
                    d = dataclasses.asdict(rec)
                    d["parent_ids"] = list(rec.parent_ids)
                    f.write(json.dumps(d, ensure_ascii=False, allow_nan=False) + "\n")
                    n += 1
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return n
