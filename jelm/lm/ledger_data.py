"""Training sets taken from run ledgers: diffs for the diff model (ELM §5: fine-tuning on
accepted diffs) and elite programs for stage 2 (§6).

The paper fine-tunes its diff model on the diffs of the children that entered the
archive. :func:`ledger_edits` reads one or more ledgers (:mod:`jelm.qd.ledger`) and keeps
each single-parent child that changed its parent and passes the selection:

- ``accepted`` (default): the child entered the archive (the paper's set);
- ``valid``: the child ran to a valid phenotype (status ``ok``), accepted or not;
- ``changed``: any child whose program differs from its parent's.

Each kept pair becomes an example in the diff format with the diff rewritten from the two
programs (the canonical unified diff, whatever the operator wrote), the commit message the
candidate had (a message outside the domain's set, e.g. a GP child's empty one, is drawn
from the domain's odds, seeded by the pair), duplicates (same parent and child) dropped.
The held-out split is a hash of the child program, so a child is never on both sides and
the split does not move when ledgers are added.

:func:`elite_programs` is stage 2's dataset: every program ever admitted to a run's map
whose fitness is within a share of the best fitness seen in its niche across the runs
(§6: p = 0.5 and 0.8 of the best), runs from excluded seeds (Radial, as in the paper) left
out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jelm.domains.base import CorpusExample
from jelm.mutation.base import unified_diff
from jelm.programs.diff import sample_message
from jelm.qd.ledger import Ledger, LedgerError
from jelm.qd.records import Edit

__all__ = [
    "SELECTIONS",
    "DatasetError",
    "EditSet",
    "EliteProgram",
    "EliteSet",
    "LedgerExample",
    "corpus_examples",
    "dataset_version",
    "elite_programs",
    "held_out_share",
    "ledger_edits",
    "ledger_path",
    "read_dataset",
    "read_elites",
    "write_dataset",
    "write_elites",
]

#: The selections :func:`ledger_edits` offers, from the narrowest to the widest.
SELECTIONS = ("accepted", "valid", "changed")


class DatasetError(ValueError):
    """A training set cannot be built or read; the message says why."""


@dataclasses.dataclass(frozen=True)
class LedgerExample:
    """One training example and where it came from."""

    example: CorpusExample
    split: str  # "train" or "held_out"
    source: str  # the ledger file
    child_id: int
    operator: str


@dataclasses.dataclass
class EditSet:
    """The examples of :func:`ledger_edits` and what happened to every ledger's rows."""

    examples: list[LedgerExample]
    ledgers: list[dict[str, Any]]  # per ledger: path, edits, selected, duplicates, error

    def split(self, name: str) -> list[CorpusExample]:
        """The examples of one split (``train`` or ``held_out``)."""
        return [e.example for e in self.examples if e.split == name]


def ledger_path(path: str | os.PathLike[str]) -> Path:
    """The ledger file of ``path``: the file itself, or a run directory's ledger."""
    path = Path(path)
    return path / "ledger.sqlite" if path.is_dir() else path


def _digest(*texts: str) -> bytes:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.digest()


def held_out_share(child: str) -> float:
    """Where ``child`` falls in [0, 1): the split puts it in ``held_out`` below the share."""
    return int.from_bytes(_digest(child)[:8], "big") / 2.0**64


def _keep(edit: Edit, select: str, operators: frozenset[str]) -> bool:
    if edit.child_program == edit.parent_program:
        return False
    if operators and edit.operator not in operators:
        return False
    if select == "accepted":
        return edit.accepted
    if select == "valid":
        return edit.status == "ok"
    return True


def ledger_edits(
    paths: Sequence[str | os.PathLike[str]],
    *,
    file_name: str,
    messages: Sequence[tuple[str, float]],
    select: str = "accepted",
    operators: Iterable[str] = (),
    held_out: float = 0.1,
) -> EditSet:
    """The diff examples of the ledgers at ``paths`` (files or run directories); see the
    module docstring. A ledger that cannot be read is recorded with its error in
    ``EditSet.ledgers`` and skipped; :class:`DatasetError` if ``select`` is unknown or no
    ledger could be read at all."""
    if select not in SELECTIONS:
        raise DatasetError(f"unknown selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    if not 0.0 <= held_out < 1.0:
        raise DatasetError(f"held_out must be in [0, 1), got {held_out}")
    wanted = frozenset(operators)
    known = {m for m, _ in messages}
    seen: set[bytes] = set()
    examples: list[LedgerExample] = []
    report: list[dict[str, Any]] = []
    for raw in paths:
        path = ledger_path(raw)
        row: dict[str, Any] = {"path": str(path), "edits": 0, "selected": 0, "duplicates": 0}
        report.append(row)
        try:
            with Ledger(path, readonly=True) as ledger:
                edits = list(ledger.iter_edits())
        except (LedgerError, OSError) as exc:
            row["error"] = str(exc)
            continue
        row["edits"] = len(edits)
        for edit in edits:
            if not _keep(edit, select, wanted):
                continue
            key = _digest(edit.parent_program, edit.child_program)
            if key in seen:
                row["duplicates"] += 1
                continue
            seen.add(key)
            row["selected"] += 1
            message = edit.message
            if message not in known:
                rng = np.random.default_rng(int.from_bytes(key[:8], "big"))
                message = sample_message(rng, messages)
            example = CorpusExample(
                parent=edit.parent_program,
                child=edit.child_program,
                message=message,
                diff=unified_diff(edit.parent_program, edit.child_program, file_name),
            )
            split = "held_out" if held_out_share(edit.child_program) < held_out else "train"
            examples.append(LedgerExample(example, split, str(path), edit.child_id, edit.operator))
    if report and all("error" in r for r in report):
        raise DatasetError(
            "no ledger could be read: " + "; ".join(f"{r['path']}: {r['error']}" for r in report)
        )
    return EditSet(examples, report)


def corpus_examples(examples: Sequence[CorpusExample], held_out: float) -> list[LedgerExample]:
    """A domain corpus's examples (``Domain.corpus``) in a training set, split by the same
    hash of the child as ledger examples."""
    return [
        LedgerExample(
            e, "held_out" if held_out_share(e.child) < held_out else "train", "corpus", k, "corpus"
        )
        for k, e in enumerate(examples)
    ]


def write_dataset(path: Path, edits: EditSet) -> str:
    """Write the examples as JSON lines (whole or not at all); returns the file's sha256,
    the dataset's version."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for e in edits.examples:
            row = {
                **dataclasses.asdict(e.example),
                "split": e.split,
                "source": e.source,
                "child_id": e.child_id,
                "operator": e.operator,
            }
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return dataset_version(path)


def dataset_version(path: Path) -> str:
    """The sha256 of a dataset file: what a model's summary names its data by."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_dataset(path: Path) -> EditSet:
    """Read a file written by :func:`write_dataset` (:class:`DatasetError` if it is not one)."""
    fields = {f.name for f in dataclasses.fields(CorpusExample)}
    examples = []
    where = ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            where = f" (line {number})"
            row = json.loads(line)
            example = CorpusExample(**{k: row[k] for k in fields})
            examples.append(
                LedgerExample(
                    example, row["split"], row["source"], int(row["child_id"]), row["operator"]
                )
            )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a jelm diff dataset{where}: {exc}") from exc
    return EditSet(examples, [])


@dataclasses.dataclass(frozen=True)
class EliteProgram:
    """A stage-2 training program: its text, fitness and niche, where it came from."""

    program: str
    fitness: float
    niche: int
    split: str
    source: str
    candidate_id: int


def _archive_of(config: dict[str, Any] | None) -> Any:
    """The part of a run's configuration that fixes what a niche index means."""
    if config is None:
        return None
    qd = dict(config.get("qd") or {})
    return json.dumps(
        {k: qd.get(k) for k in ("kind", "grid", "lower", "upper", "n_centroids", "deep")}
        | ({"seed": config.get("seed")} if qd.get("kind") == "cvt" else {}),
        sort_keys=True,
    )


def elite_programs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    share: float = 0.5,
    exclude_seeds: Iterable[str] = ("radial",),
    held_out: float = 0.05,
) -> tuple[list[EliteProgram], list[dict[str, Any]]]:
    """Stage 2's dataset (§6): from the ledgers at ``paths``, every program ever admitted
    to its run's map whose fitness is at least ``share`` x the best fitness of its niche
    across the runs (for a niche whose best is not positive: within ``(1 - share) x
    |best|`` of it), one copy of each program (its fittest), split by a hash of the text.
    Runs started from a seed in ``exclude_seeds`` are left out; runs whose archives differ
    (grid, bounds; a CVT's seed) cannot share niche indices: :class:`DatasetError`.
    Returns the programs and a report per ledger (``error`` for one that could not be
    read)."""
    if not 0.0 < share <= 1.0:
        raise DatasetError(f"share must be in (0, 1], got {share}")
    excluded = set(exclude_seeds)
    rows: list[tuple[str, float, int, str, int]] = []
    report: list[dict[str, Any]] = []
    archive = None
    for raw in paths:
        path = ledger_path(raw)
        entry: dict[str, Any] = {"path": str(path), "programs": 0}
        report.append(entry)
        try:
            with Ledger(path, readonly=True) as ledger:
                config = ledger.run_config
                seeds = {Path(str(s)).stem for s in (config or {}).get("seeds", [])}
                if seeds & excluded:
                    entry["excluded"] = sorted(seeds & excluded)
                    continue
                this = _archive_of(config)
                if archive is None:
                    archive = this
                elif this != archive:
                    raise DatasetError(
                        f"{path} was run with another archive than the ledgers before it "
                        f"({this} vs {archive}); niche indices would not match"
                    )
                for rec in ledger.iter_candidates(accepted=True, status="ok"):
                    if rec.fitness is None or rec.niche is None or rec.program is None:
                        continue
                    rows.append(
                        (
                            rec.program,
                            float(rec.fitness),
                            int(rec.niche),
                            str(path),
                            int(rec.id or 0),
                        )
                    )
                    entry["programs"] += 1
        except (LedgerError, OSError) as exc:
            entry["error"] = str(exc)
    if report and all("error" in r for r in report):
        raise DatasetError(
            "no ledger could be read: " + "; ".join(f"{r['path']}: {r['error']}" for r in report)
        )
    best: dict[int, float] = {}
    for _, fitness, niche, _, _ in rows:
        best[niche] = max(best.get(niche, -np.inf), fitness)
    keep: dict[str, EliteProgram] = {}
    for program, fitness, niche, source, cid in rows:
        top = best[niche]
        bar = share * top if top > 0 else top - (1.0 - share) * abs(top)
        if fitness < bar:
            continue
        old = keep.get(program)
        if old is None or fitness > old.fitness:
            split = "held_out" if held_out_share(program) < held_out else "train"
            keep[program] = EliteProgram(program, fitness, niche, split, source, cid)
    return sorted(keep.values(), key=lambda e: (e.niche, -e.fitness)), report


#: The first line of a stage-2 dataset file names its format.
ELITES_FORMAT = "jelm-stage2-programs"


@dataclasses.dataclass
class EliteSet:
    """A stage-2 training set (§6): the programs of :func:`elite_programs`, how they were
    chosen (``share``, ``exclude_seeds``, ``held_out``), the configuration of the runs
    they came from (what their niche indices mean: the archive, the domain and its
    options) and the report per ledger."""

    programs: list[EliteProgram]
    share: float
    exclude_seeds: tuple[str, ...]
    held_out: float
    run_config: dict[str, Any]
    ledgers: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def split(self, name: str) -> list[EliteProgram]:
        """The programs of one split (``train`` or ``held_out``)."""
        return [p for p in self.programs if p.split == name]


def write_elites(path: Path, elites: EliteSet) -> str:
    """Write a stage-2 dataset as JSON lines, whole or not at all: a header (format,
    ``share``, ``exclude_seeds``, ``held_out``, ``run_config``), then one program a line.
    Returns the file's sha256, the dataset's version."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    header = {
        "format": ELITES_FORMAT,
        "share": elites.share,
        "exclude_seeds": list(elites.exclude_seeds),
        "held_out": elites.held_out,
        "run_config": elites.run_config,
    }
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for program in elites.programs:
            f.write(json.dumps(dataclasses.asdict(program)) + "\n")
    os.replace(tmp, path)
    return dataset_version(path)


def read_elites(path: Path) -> EliteSet:
    """Read a file written by :func:`write_elites` (:class:`DatasetError` if it is not one)."""
    where = " (line 1)"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if not isinstance(header, dict) or header.get("format") != ELITES_FORMAT:
            raise DatasetError(f"{path} is not a jelm stage-2 dataset (no {ELITES_FORMAT} header)")
        programs = []
        for number, line in enumerate(lines[1:], 2):
            where = f" (line {number})"
            row = json.loads(line)
            programs.append(
                EliteProgram(
                    str(row["program"]),
                    float(row["fitness"]),
                    int(row["niche"]),
                    str(row["split"]),
                    str(row["source"]),
                    int(row["candidate_id"]),
                )
            )
        return EliteSet(
            programs,
            float(header["share"]),
            tuple(header["exclude_seeds"]),
            float(header["held_out"]),
            dict(header["run_config"]),
        )
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON and Unicode errors too
        raise DatasetError(f"{path} is not a jelm stage-2 dataset{where}: {exc}") from exc
