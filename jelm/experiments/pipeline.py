"""ELM's three stages, end to end, in one directory (ELM, arXiv 2206.08896v1, §5-7).

``python -m jelm.experiments.pipeline --out DIR [--preset cpu|paper]``. The stages run in
the paper's order, each from the previous one's output:

1. ``stage1``: ELM runs (MAP-Elites, diff-model mutation; §4-5) from seed programs, one
   run directory per seed and random seed (:func:`jelm.experiments.run.evolve`); their
   ledgers hold every candidate.
2. ``finetune``: the diff model fine-tuned on the diffs those runs accepted (§5, Fig. 11;
   :func:`jelm.lm.finetune.finetune`).
3. ``stage2``: a program model trained on the runs' elite programs, starting from the
   fine-tuned diff model (§6; :func:`jelm.lm.stage2.stage2`).
4. ``stage3``: a terrain-conditioned policy trained with PPO from the stage-2 model (§7;
   :func:`jelm.rl.stage3.train`).

``--out DIR`` holds ``stage1/<seed>-<random seed>/`` (run directories) and
``stage1/runs.jsonl`` (one row a finished run), ``finetune/``, ``stage2/`` and ``stage3/``
(the stage commands' run directories) and ``pipeline.json``: the preset, the resolved
configuration of every stage and, for each stage done, its summary. A stage recorded done
is skipped; a stage cut short (a crash, ``kill -9``) resumes through its command's own
resume when the pipeline runs again. ``--stages`` runs some stages only, from the outputs
of the earlier ones already in ``DIR``. ``--set STAGE.KEY=VALUE`` changes one setting of
one stage (VALUE is JSON, else a string). Bad input, a missing earlier output or a
stage's own error ends with one line on stderr and exit code 2; earlier outputs stay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jelm.sim  # noqa: F401  (first: pins XLA flags before JAX starts)

__all__ = [
    "PRESETS",
    "STAGES",
    "PipelineError",
    "main",
    "resolve",
    "run_dirs",
    "run_pipeline",
]

#: The stages, in the order they run.
STAGES = ("stage1", "finetune", "stage2", "stage3")

#: The presets: what each stage's preset starts from is :func:`resolve`'s business.
PRESETS = ("cpu", "paper")

#: Stage 1 of the ``cpu`` preset: the paper's seeds except radial (stage 2 leaves runs
#: from radial out, as the paper does), one random seed each.
CPU_SEEDS = ("square", "cppn_fixed", "cppn_mutable")

#: What the ``cpu`` preset changes in each stage's own defaults (``cpu`` presets of the
#: stage commands, or the rounds' :class:`jelm.experiments.finetune.Plan`). Those are each
#: sized to take up to about an hour alone on a 2-core CPU; four stages in an hour need
#: less of each. The sizes, from the figures jelm/lm/README.md and experiments/README.md
#: report for these commands on such a machine (estimates, not measurements of this
#: pipeline):
#:
#: - stage 1: three runs of the rounds' size (10 generations of 32, 600 simulated steps);
#:   the rounds' command ran 36 such runs and two fine-tunings in 104 minutes beside other
#:   jobs, so an ELM run of this size takes a few minutes at most.
#: - finetune: 60 steps with a 6-minute deadline, no corpus mixed in (the corpus keeps a
#:   long fine-tuning from forgetting what the model knew; 60 steps are short).
#: - stage 2: 200 steps with a 12-minute deadline (the README's step took 2.2 to 3.2 s),
#:   128 samples (its evaluation of 128 took 2 minutes) and 8 out-of-distribution
#:   completions per seed. Three short ELM runs leave a few dozen programs, which the
#:   command's 4 epochs cover in about 30 steps, after which the model writes no valid
#:   program; so the epochs are unbounded here and the steps and the deadline stop it.
#: - stage 3: 6 PPO iterations of its ``cpu`` batch; no timing of stage 3 is recorded, so
#:   a 12-minute deadline bounds it (the run stops after the iteration that passes it).
#:   It samples up to stage 2's token budget (:func:`resolve`): its own 768 cut off the
#:   programs of the CPPN seeds, which run to 900 tokens.
#:
#: Stage 1's and stage 2's evaluation have no deadline: on a slower or busier machine the
#: whole can take longer than an hour.
CPU_CHANGES: dict[str, dict[str, Any]] = {
    "stage1": {},
    "finetune": {"max_steps": 60, "max_minutes": 6.0, "corpus": 0},
    "stage2": {
        "epochs": 1000.0,
        "max_steps": 200,
        "max_minutes": 12.0,
        "samples": 128,
        "ood_samples": 8,
    },
    "stage3": {"iterations": 6, "max_minutes": 12.0},
}

#: Settings of an ELM run the pipeline always makes (no pictures, no progress bar).
_RUN_FIXED = {"renders": 0, "progress": False}


class PipelineError(RuntimeError):
    """The pipeline cannot run a stage (the message says why)."""


# ---------------------------------------------------------------------------------------
# Configurations


def _stage1_base(preset: str) -> dict[str, Any]:
    """Stage 1's settings before overrides: the seeds, the random seeds and the settings
    of each ELM run (keys of :class:`jelm.experiments.config.RunConfig` and the domain's).
    ``cpu``: the rounds' run size (:class:`jelm.experiments.finetune.Plan`) from
    :data:`CPU_SEEDS`; ``paper``: the Sodarace preset of the paper's setting
    (``configs/preset/paper.yaml``) from each of the paper's four seeds, with the rounds'
    random seeds."""
    from jelm.experiments.finetune import PAPER_SEEDS, Plan

    plan = Plan()
    if preset == "paper":
        import yaml

        from jelm.experiments.run import CONFIG_DIR

        run = yaml.safe_load((CONFIG_DIR / "preset" / "paper.yaml").read_text())
        run.pop("seeds", None)
        seeds, random_seeds = PAPER_SEEDS, plan.random_seeds
    else:
        run = {"generations": plan.generations, "batch": plan.batch, "steps": plan.steps}
        run["checkpoint_every"] = max(1, plan.generations // 2)
        seeds, random_seeds = CPU_SEEDS, plan.random_seeds[:1]
    return {
        "seeds": list(seeds),
        "random_seeds": list(random_seeds),
        "mutation": "lm_diff",
        **run,
        **_RUN_FIXED,
    }


def _finetune_base(preset: str) -> dict[str, Any]:
    """Fine-tuning's settings before the pipeline's paths: the rounds' (:class:`Plan`),
    scaled down by :data:`CPU_CHANGES` for ``cpu``."""
    from jelm.experiments.finetune import Plan
    from jelm.lm.finetune import FinetuneConfig

    plan = Plan()
    cfg = FinetuneConfig(
        select=plan.select,
        max_steps=plan.finetune_steps,
        lr=plan.lr,
        corpus=plan.corpus,
        rename=plan.rename,
    )
    return _asdict(cfg) | (CPU_CHANGES["finetune"] if preset == "cpu" else {})


def _stage2_base(preset: str) -> dict[str, Any]:
    """Stage 2's settings: its command's preset, scaled down by :data:`CPU_CHANGES`."""
    from jelm.lm import stage2

    cfg = stage2.Stage2Config(**_typed(stage2.Stage2Config, stage2.PRESETS[preset]))
    return _asdict(cfg) | (CPU_CHANGES["stage2"] if preset == "cpu" else {})


def _stage3_base(preset: str) -> dict[str, Any]:
    """Stage 3's settings: its command's preset, scaled down by :data:`CPU_CHANGES`."""
    from jelm.rl import stage3

    cfg = stage3.Stage3Config(**_typed(stage3.Stage3Config, stage3.PRESETS[preset]))
    return _asdict(cfg) | (CPU_CHANGES["stage3"] if preset == "cpu" else {})


def _asdict(cfg: Any) -> dict[str, Any]:
    """A configuration dataclass as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _typed(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as keyword arguments of dataclass ``cls`` (lists of tuple fields become
    tuples); :class:`PipelineError` names a key that is not a field."""
    defaults = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise PipelineError(f"unknown setting {key!r} of {cls.__name__}")
        if isinstance(getattr(defaults, key), tuple) and isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _classes() -> dict[str, type]:
    """The configuration dataclass of each stage but stage 1."""
    from jelm.lm.finetune import FinetuneConfig
    from jelm.lm.stage2 import Stage2Config
    from jelm.rl.stage3 import Stage3Config

    return {"finetune": FinetuneConfig, "stage2": Stage2Config, "stage3": Stage3Config}


def _check(configs: Mapping[str, Mapping[str, Any]]) -> None:
    """:class:`PipelineError` if a stage's settings have an unknown key (or, for stage 1,
    any problem :func:`jelm.experiments.config.from_mapping` finds): before any stage
    runs."""
    from jelm.experiments.config import ConfigError, from_mapping

    for stage, cls in _classes().items():
        _typed(cls, configs[stage])
    stage1 = configs["stage1"]
    run = {k: v for k, v in stage1.items() if k not in ("seeds", "random_seeds")}
    try:
        for seed in stage1["seeds"]:
            from_mapping({**run, "seeds": [seed], "seed": stage1["random_seeds"][0]})
    except (ConfigError, IndexError, TypeError) as exc:
        raise PipelineError(f"stage1: {_one_line(exc)}") from exc


def run_dirs(out: Path, stage1: Mapping[str, Any]) -> list[Path]:
    """The run directories of stage 1's configuration ``stage1`` in pipeline ``out``."""
    return [
        (out / "stage1" / f"{seed}-{rs}").absolute()
        for seed in stage1["seeds"]
        for rs in stage1["random_seeds"]
    ]


def resolve(
    preset: str,
    out: Path,
    model: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every stage's configuration (JSON-ready) for ``preset`` in pipeline ``out``: the
    stage's preset, then ``overrides[stage]``, then the paths that chain the stages (the
    diff model ``model``, by default fine-tuning's default, for stage 1 and fine-tuning;
    the stage-1 runs for fine-tuning and stage 2; the fine-tuned model for stage 2; the
    stage-2 model for stage 3)."""
    from jelm.lm.finetune import FinetuneConfig

    if preset not in PRESETS:
        raise PipelineError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(STAGES))
    if unknown:
        raise PipelineError(f"unknown stage {unknown[0]!r} in --set; stages: {', '.join(STAGES)}")
    model = model or FinetuneConfig().model
    configs = {
        "stage1": _stage1_base(preset),
        "finetune": _finetune_base(preset),
        "stage2": _stage2_base(preset),
        "stage3": _stage3_base(preset),
    }
    for stage, changes in overrides.items():
        configs[stage] = configs[stage] | dict(changes)
    ledgers = [str(p) for p in run_dirs(out, configs["stage1"])]
    if str(configs["stage1"]["mutation"]).startswith("lm"):
        configs["stage1"]["lm"] = {"backend": {"kind": "jelm", "path": model}}
    configs["finetune"] |= {"model": model, "ledgers": ledgers}
    tuned = str((out / "finetune" / "model").absolute())
    configs["stage2"] |= {"model": tuned, "ledgers": ledgers}
    configs["stage3"] |= {"model": str((out / "stage2" / "model").absolute())}
    # stage 3 samples the programs stage 2 learnt: a token budget below stage 2's cuts
    # them off (a cut program cannot run)
    if "max_new_tokens" not in overrides.get("stage3", {}):
        configs["stage3"]["max_new_tokens"] = max(
            configs["stage3"]["max_new_tokens"], configs["stage2"]["max_new_tokens"]
        )
    _check(configs)
    return json.loads(json.dumps(configs))


# ---------------------------------------------------------------------------------------
# The stages


def _run_stage1(cfg: Mapping[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    """Every ELM run of stage 1 not yet recorded in ``out/runs.jsonl`` (each resumes a
    run its directory holds part of); returns the runs' rows."""
    import jax

    from jelm.experiments.config import RunConfig, from_mapping
    from jelm.experiments.finetune import run_stats
    from jelm.experiments.run import evolve, use_xla_cache

    settings = {k: v for k, v in cfg.items() if k not in ("seeds", "random_seeds")}
    configs = {
        (seed, rs): from_mapping({**settings, "seeds": [seed], "seed": rs})
        for seed in cfg["seeds"]
        for rs in cfg["random_seeds"]
    }  # every run checked before any starts
    use_xla_cache(RunConfig.xla_cache)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "runs.jsonl"
    rows = [json.loads(x) for x in record.read_text().splitlines() if x] if record.exists() else []
    done = {(r["seed"], r["random_seed"]) for r in rows}
    for (seed, rs), config in configs.items():
        if (seed, rs) in done:
            continue
        t0 = time.time()
        path = out / f"{seed}-{rs}"
        evolve(config, path, None, log=lambda line: None)
        jax.clear_caches()  # as the rounds do: a process keeping every run's programs
        row = {"seed": seed, "random_seed": rs, **run_stats(path), "wall_s": time.time() - t0}
        rows.append(row)
        with record.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if progress:
            print(f"stage1: {json.dumps(row)}", file=sys.stderr, flush=True)
    return {"runs": rows}


def _run_finetune(cfg: Mapping[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    """Fine-tune the diff model on stage 1's accepted diffs in ``out``."""
    from jelm.lm.finetune import FinetuneConfig, finetune

    return finetune(FinetuneConfig(**_typed(FinetuneConfig, cfg)), out, progress=progress)


def _run_stage2(cfg: Mapping[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    """Stage 2 in ``out``: train on stage 1's elites from the fine-tuned model, evaluate."""
    from jelm.lm.stage2 import Stage2Config, stage2

    return stage2(Stage2Config(**_typed(Stage2Config, cfg)), out, progress=progress)


def _run_stage3(cfg: Mapping[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    """Stage 3 in ``out``: PPO of a terrain-conditioned policy from the stage-2 model."""
    from jelm.rl.stage3 import Stage3Config, train

    return train(Stage3Config(**_typed(Stage3Config, cfg)), out, progress=progress)


#: Each stage's runner: ``runner(config, stage directory, progress) -> summary``.
RUNNERS: dict[str, Callable[[Mapping[str, Any], Path, bool], dict[str, Any]]] = {
    "stage1": _run_stage1,
    "finetune": _run_finetune,
    "stage2": _run_stage2,
    "stage3": _run_stage3,
}


def _missing(stage: str, out: Path, configs: Mapping[str, Any], done: Mapping[str, Any]) -> str:
    """Why ``stage`` cannot start in pipeline ``out`` (empty when it can): the earlier
    stage whose output it reads is not done there."""
    needs: list[tuple[str, Path]] = []
    if stage in ("finetune", "stage2"):
        needs += [("stage1", p / "ledger.sqlite") for p in run_dirs(out, configs["stage1"])]
    if stage == "stage2":
        needs.append(("finetune", out / "finetune" / "model" / "config.json"))
    if stage == "stage3":
        needs.append(("stage2", out / "stage2" / "model" / "config.json"))
    for need, path in needs:
        if need not in done or not path.exists():
            return (
                f"{stage} needs {need}'s output ({path} and {need} recorded done in "
                f"{out / 'pipeline.json'}): run --stages {need} first"
            )
    return ""


def _compact(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a stage's summary ``pipeline.json`` keeps: numbers, strings and flat
    mappings of them (the stage's own directory keeps the whole)."""

    def plain(v: Any) -> bool:
        return v is None or isinstance(v, bool | int | float | str)

    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in ("config", "ledgers", "dataset"):
            continue
        if plain(value):
            out[key] = value
        elif isinstance(value, Mapping) and all(plain(v) for v in value.values()):
            out[key] = dict(value)
        elif key == "runs":
            out[key] = value
    return out


def _write(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def run_pipeline(
    out: Path,
    preset: str = "cpu",
    stages: Sequence[str] = STAGES,
    model: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``stages`` (in pipeline order) of the ``preset`` pipeline in ``out``, skipping
    those ``pipeline.json`` records done; returns the record. :class:`PipelineError` for
    an unknown stage, another pipeline's directory or a missing earlier output; a stage's
    own error passes through (the record keeps the stages done before it)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise PipelineError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    out = Path(out).absolute()
    configs = resolve(preset, out, model, overrides)
    path = out / "pipeline.json"
    record: dict[str, Any] = {"preset": preset, "configs": {}, "done": {}}
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except ValueError as exc:
            raise PipelineError(f"{path} cannot be read: {exc}") from exc
        if record.get("preset") != preset:
            raise PipelineError(
                f"{out} holds a pipeline of preset {record.get('preset')!r}, not {preset!r}; "
                "use another --out"
            )
    done = record.setdefault("done", {})
    for stage in done:  # a stage done and not asked for: as it ran
        if stage not in stages:
            configs[stage] = record["configs"][stage]
    if "stage1" in done and "stage1" not in stages:
        ledgers = [str(p) for p in run_dirs(out, configs["stage1"])]
        for stage in ("finetune", "stage2"):
            if stage not in done:
                configs[stage]["ledgers"] = ledgers
    for stage in (s for s in done if s in stages):
        if record["configs"].get(stage) != configs[stage]:
            raise PipelineError(
                f"{out} holds a {stage} done with other settings; use another --out"
            )
    for stage in (s for s in STAGES if s in stages):
        if stage in done:
            log(f"{stage}: done, skipped")
            continue
        why = _missing(stage, out, configs, done)
        if why:
            raise PipelineError(why)
        record["configs"][stage] = configs[stage]
        out.mkdir(parents=True, exist_ok=True)
        _write(path, record)
        log(f"{stage}: running in {out / stage}")
        t0 = time.time()
        summary = RUNNERS[stage](configs[stage], out / stage, progress)
        done[stage] = {"summary": _compact(summary), "wall_s": time.time() - t0}
        _write(path, record)
        log(f"{stage}: done")
        samples = (summary.get("samples") or {}) if stage == "stage2" else {}
        if samples.get("n") and not samples.get("valid"):
            log(
                "stage2: warning: its model wrote no valid program in its samples, so "
                "stage 3 sees only the penalty and learns nothing: train it longer "
                "(--set stage2.max_steps=...) or on more programs (more stage-1 runs)"
            )
    return record


def _stage_errors() -> tuple[type[BaseException], ...]:
    """The errors the stages raise for bad input or a run they cannot go on with."""
    from jelm.experiments.config import ConfigError
    from jelm.io.checkpoint import CheckpointError
    from jelm.io.rundir import RunDirError
    from jelm.lm.checkpoint import ModelLoadError
    from jelm.lm.finetune import FinetuneError
    from jelm.lm.ledger_data import DatasetError
    from jelm.lm.stage2 import Stage2Error
    from jelm.lm.trainer import TrainError
    from jelm.qd.loop import SeedError
    from jelm.qd.records import LedgerError
    from jelm.rl.stage3 import Stage3Error

    return (
        ConfigError,
        CheckpointError,
        RunDirError,
        ModelLoadError,
        FinetuneError,
        DatasetError,
        Stage2Error,
        TrainError,
        SeedError,
        LedgerError,
        Stage3Error,
    )


def _setting(text: str) -> tuple[str, str, Any]:
    """``STAGE.KEY=VALUE`` as (stage, key, value); VALUE is JSON, else a string."""
    head, sep, raw = text.partition("=")
    stage, dot, key = head.partition(".")
    if not sep or not dot or not key:
        raise PipelineError(f"--set {text!r}: expected STAGE.KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return stage, key.replace("-", "_"), value


def _one_line(exc: BaseException) -> str:
    """``exc``'s message on one line."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.experiments.pipeline --out DIR [--preset cpu|paper]
    [--stages stage1,finetune,stage2,stage3] [--model shipped|<dir>|hf:<dir>]
    [--set STAGE.KEY=VALUE ...] [--no-progress]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the pipeline's directory")
    parser.add_argument("--preset", choices=PRESETS, default=PRESETS[0])
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--model", default=None, help="the diff model stage 1 starts from")
    parser.add_argument(
        "--set", action="append", default=[], metavar="STAGE.KEY=VALUE", help="one setting"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    stage = "pipeline"
    try:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        overrides: dict[str, dict[str, Any]] = {}
        for text in args.set:
            name, key, value = _setting(text)
            overrides.setdefault(name, {})[key] = value

        def log(line: str) -> None:
            nonlocal stage
            stage = line.split(":", 1)[0]
            print(line, file=sys.stderr, flush=True)

        record = run_pipeline(
            args.out, args.preset, stages, args.model, overrides, not args.no_progress, log
        )
    except PipelineError as exc:
        print(f"jelm.experiments.pipeline: {_one_line(exc)}", file=sys.stderr)
        return 2
    except _stage_errors() as exc:
        print(f"jelm.experiments.pipeline: {stage}: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps({s: d["summary"] for s, d in record["done"].items() if s in stages}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
