"""The ledger: every candidate an ELM run ever evaluated, in one SQLite file.

ELM (Lehman et al. 2022, arXiv 2206.08896) keeps only the elites in the MAP-Elites archive,
but stage 2 trains the language model on *all* the diffs that improved a parent (§5), and a
killed run must resume without losing evaluated work. The ledger is that record: one row
per candidate (parents, operator, commit message, diff, program, status or failure class,
fitness, descriptors, niche, accepted), one row per generation (metrics), written in one
transaction per generation.

Usage::

    with Ledger(run_dir / "ledger.sqlite", run_config=cfg) as ledger:
        with ledger.generation(g, metrics={"qd_score": 12.5}) as gen:
            ids = gen.add_many(records)      # ids known now, before the commit
            ...                              # e.g. put ids into the archive
        # here the candidates and the generation row are committed, together

Decisions (the "why" a user of the file needs):

- **Crash safety.** WAL journal, ``synchronous=FULL``. In WAL mode ``NORMAL`` already
  survives a killed process (``kill -9``): a commit is in the WAL before it returns. It does
  not survive an OS crash or power loss, which may drop the last committed generations.
  jelm writes its device checkpoint *after* the ledger commit and assumes the ledger is never
  behind it, so a commit must be durable when it returns: ``FULL`` fsyncs the WAL once per
  commit, i.e. once per generation (a few ms; measured in tests/test_ledger.py).
- **Atomic generations.** ``ledger.generation(g)`` opens ``BEGIN IMMEDIATE``; the candidates
  and the ``generations`` row commit together at the end of the ``with`` block, and an
  exception inside it rolls all of them back. A generation row therefore always has exactly
  ``n_candidates`` candidate rows, and no candidate exists without its generation row.
  Generations are append-only: ``g`` must be greater than every committed generation
  (committing one twice raises :class:`LedgerError`). Seeds are generation 0, ``parent_ids=()``.
- **Ids.** Assigned by the ledger when a candidate is added (so the loop can put them in the
  archive before the commit), strictly increasing, never reused: a high-water mark is kept in
  the ``meta`` table and in memory, so the ids of a rolled-back generation are skipped, not
  handed out again, and ids stay monotonic across reopen. (After a crash the ids of the
  generation that was being written may be handed out again: nothing durable refers to them,
  because the checkpoint is written after the commit.)
- **NaN.** SQLite cannot store a REAL NaN (it binds it as NULL), so NaN fitness, descriptors
  or timings are stored as NULL and read back as ``None``: "no value". ``±inf`` is kept.
- **Run config.** A SHA-256 of the canonical JSON of the run config is stored at creation;
  reopening with a different config raises :class:`LedgerError` naming the keys that
  differ. Opening without a config (readers, analysis) skips the check. Pass only the part
  of the config that must not change on resume.
- **Bad files.** A file that is not SQLite, is truncated or corrupt, or is SQLite but not a
  ledger raises ``LedgerError("… is not a jelm ledger (reason)")``, never a raw sqlite3
  error. Opening checks the header, the meta table and the schema version (cheap);
  :meth:`Ledger.integrity_check` runs SQLite's full check on demand.
- **Concurrency.** One writer at a time (SQLite serialises writers); any number of readers,
  in other processes too, read the last committed generation while the writer writes
  (``Ledger(path, readonly=True)``).

Only the standard library (sqlite3, json); no JAX, so notebooks and dataset builders can
read a ledger without loading a device runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_VERSION = 1
FORMAT = "jelm-ledger"
SYNCHRONOUS = "FULL"  # see the module docstring: durable commits, one fsync per generation

#: Status values the loop writes; the column is free text so operators can add classes.
STATUSES = (
    "ok",  # executed, valid walker, simulated: fitness and descriptors set
    "not_evaluated",  # produced but not (yet) run, e.g. a batch cut short
    "mutation_failed",  # the operator produced no program (no failure class given)
    # lm_diff: the model's diff did not give a program (jelm.programs.diff.DiffError kinds)
    "diff_empty",
    "diff_malformed_header",
    "diff_no_hunk",
    "diff_context_mismatch",
    "diff_unchanged",  # the diff applied but changed nothing
    "backend_error",  # the language-model backend failed (HTTP error, timeout, ...)
    "lm_empty",  # lm_prompt / lm_crossover: the model wrote no function body
    "syntax_error",  # the program did not parse
    "runtime_error",  # the program raised
    "timeout",  # the sandbox killed it
    "invalid_walker",  # it returned something walker validation refused
    "sandbox_error",  # the sandbox itself failed (resource limit, crash)
)

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
    "height",
    "width",
    "mass",
    "niche",
    "accepted",
    "created",
    "elapsed_s",
)
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM candidates"
_INSERT = (
    f"INSERT INTO candidates ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
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
    height REAL,
    width REAL,
    mass REAL,
    niche INTEGER,
    accepted INTEGER NOT NULL,
    created REAL NOT NULL,
    elapsed_s REAL
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

_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-variable limit


class LedgerError(Exception):
    """A ledger that cannot be opened or written as asked; the message says why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateRecord:
    """One candidate, mirroring a row of the ``candidates`` table.

    ``id`` is ``None`` until the ledger assigns it (``gen.add`` returns it) and
    ``generation`` may be left ``None``: the generation being written fills it in.
    ``created`` defaults to the time of ``add``. Floats that are NaN read back as ``None``.
    """

    id: int | None = None
    generation: int | None = None
    parent_ids: tuple[int, ...] = ()
    operator: str = ""
    message: str | None = ""
    diff: str | None = ""
    program: str | None = None
    status: str = "not_evaluated"
    error: str | None = None
    fitness: float | None = None
    height: float | None = None
    width: float | None = None
    mass: float | None = None
    niche: int | None = None
    accepted: bool = False
    created: float | None = None
    elapsed_s: float | None = None

    @classmethod
    def from_child(cls, child: Any, **fields: Any) -> CandidateRecord:
        """A record from a ``jelm.mutation.base.Child`` (duck-typed: no import of mutation).

        A child without a program gets the operator's failure class as its status
        (``child.failure``, e.g. ``diff_context_mismatch``; ``mutation_failed`` when the
        operator gave none) and the operator's error; ``fields`` (status, fitness,
        descriptors, ...) override.
        """
        ok = child.program is not None and child.error is None
        base: dict[str, Any] = {
            "parent_ids": tuple(int(p) for p in child.parent_ids),
            "operator": child.operator,
            "message": child.message,
            "diff": child.diff,
            "program": child.program,
            "status": "not_evaluated"
            if ok
            else (getattr(child, "failure", None) or "mutation_failed"),
            "error": child.error,
        }
        base.update(fields)
        return cls(**base)


class Improvement(NamedTuple):
    """A stage-2 training example: an accepted child that beat its single parent."""

    parent_program: str
    child_program: str
    diff: str
    message: str
    fitness_gain: float


@dataclasses.dataclass(frozen=True)
class GenerationInfo:
    """One row of the ``generations`` table."""

    generation: int
    committed: float
    n_candidates: int
    metrics: dict[str, Any]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / jax scalars and arrays
        return obj.tolist()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in the ledger as JSON: {obj!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys, numpy values as lists)."""
    return hashlib.sha256(_dumps(config).encode()).hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _config_diff(old: Any, new: Any, limit: int = 5) -> str:
    a, b = _flatten(old), _flatten(new)
    missing = object()
    diffs = [
        f"{k}: {a.get(k, '<absent>')!r} (ledger) vs {b.get(k, '<absent>')!r} (now)"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def _real(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _record(row: tuple) -> CandidateRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["parent_ids"] = tuple(json.loads(d["parent_ids"]))
    d["accepted"] = bool(d["accepted"])
    return CandidateRecord(**d)


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
    stored at creation and checked on reopen; ``readonly=True`` opens an existing ledger for
    reading only (safe next to a running writer).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        run_config: Mapping[str, Any] | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
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
            self._init(run_config)
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

    def _init(self, run_config: Mapping[str, Any] | None) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if self.readonly:
                raise LedgerError(f"{self.path} is not a jelm ledger (empty database)")
            self._create(run_config)
            tables = {"meta", "candidates", "generations"}
        elif "meta" not in tables:
            raise LedgerError(
                f"{self.path} is not a jelm ledger (an SQLite file without a meta table)"
            )
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise LedgerError(f"{self.path} is not a jelm ledger (meta table has no ledger mark)")
        version = int(meta.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}; this jelm reads version "
                f"{SCHEMA_VERSION}. Open it with the jelm that wrote it or export it to JSONL."
            )
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
                    {"run_config_hash": digest, "run_config": _dumps(run_config)}, commit=True
                )
            elif stored is not None and stored != digest:
                old = json.loads(meta.get("run_config", "{}"))
                new = json.loads(_dumps(run_config))
                raise LedgerError(
                    f"ledger {self.path} was written by a run with a different config "
                    f"(hash {stored[:12]} in the ledger, {digest[:12]} now): "
                    f"{_config_diff(old, new)}. Resume with the original config or use a new "
                    "run directory."
                )
        # Touch the candidates b-tree so a truncated or corrupt file fails here, not later.
        (max_id,) = db.execute("SELECT max(id) FROM candidates").fetchone()
        db.execute("SELECT max(generation) FROM generations").fetchone()
        self._next_id = max(int(meta.get("next_id", 1)), (max_id or 0) + 1)

    def _create(self, run_config: Mapping[str, Any] | None) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        meta = {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "created": repr(time.time()),
            "next_id": "1",
        }
        if run_config is not None:
            meta["run_config_hash"] = config_hash(run_config)
            meta["run_config"] = _dumps(run_config)
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
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
        row = self._conn().execute(f"{_SELECT} WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {int(id)} in ledger {self.path}")
        return _record(row)

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
        for row in self._conn().execute(f"{_SELECT}{where} ORDER BY id", args):
            yield _record(row)

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


class GenerationWriter:
    """The open transaction of one generation (from :meth:`Ledger.generation`)."""

    def __init__(self, ledger: Ledger, generation: int, metrics: dict[str, Any]) -> None:
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
        rows = []
        start = led._next_id
        for k, r in enumerate(records):
            if r.id is not None:
                raise LedgerError(f"record already has id {r.id}; ids are assigned by the ledger")
            if r.generation is not None and r.generation != g:
                raise LedgerError(f"record of generation {r.generation} added to generation {g}")
            if not r.status:
                raise LedgerError("record without a status")
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
                    _real(r.fitness),
                    _real(r.height),
                    _real(r.width),
                    _real(r.mass),
                    _int(r.niche),
                    1 if r.accepted else 0,
                    now if r.created is None else float(r.created),
                    _real(r.elapsed_s),
                )
            )
        ids = list(range(start, start + len(rows)))
        led._next_id = start + len(rows)  # never handed out again, even after a rollback
        try:
            led._conn().executemany(_INSERT, rows)
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
            (1 if bool(a) else 0, _int(n), int(i))
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
                (self.generation, time.time(), len(self.ids), _dumps(self.metrics)),
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
