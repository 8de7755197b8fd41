"""The three-stage pipeline: the four stages end to end at a toy scale (real runs, a tiny
random model), every stage skipped on a second run, the orchestration with stand-in
stages, and bad input ending with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from jelm.experiments import pipeline
from jelm.experiments.pipeline import STAGES, main, resolve
from tests.lm_fixtures import make_tiny_model

# orbax and the sandbox's event loop leave objects the garbage collector meets later
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]

#: Test-only settings: every stage at a toy size (GP in stage 1, so the tiny random model
#: is not needed to write diffs that apply, and fine-tuning has accepted diffs).
TINY = {
    "stage1": {
        "seeds": ["square"],
        "mutation": "gp",
        "generations": 2,
        "batch": 8,
        "steps": 60,
        "bucket": [16, 64, 8],
        "qd": {"grid": [4, 4, 4]},
        "checkpoint_every": 1,
        "sandbox": {"workers": 2, "timeout_s": 1.0},
    },
    "finetune": {
        "max_steps": 2,
        "held_out": 0.3,
        "tokens_per_batch": 2048,
        "checkpoint_every": 1,
        "eval_every": 2,
        "eval_diffs": 1,
    },
    "stage2": {
        "held_out": 0.3,
        "max_steps": 2,
        "warmup": 1,
        "tokens_per_batch": 2048,
        "checkpoint_every": 1,
        "eval_every": 2,
        "samples": 4,
        "max_new_tokens": 8,
        "ood_samples": 1,
        "ood_lines": 3,
        "eval_batch": 8,
    },
    "stage3": {
        "terrains": "flat,tunnel",
        "iterations": 2,
        "batch": 4,
        "minibatch": 2,
        "epochs": 1,
        "max_new_tokens": 8,
        "prefix_len": 2,
        "steps": 60,
        "workers": 1,
    },
}


def _sets(settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [
        f"--set={stage}.{key}={json.dumps(value)}"
        for stage, values in settings.items()
        for key, value in values.items()
    ]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_four_stages_end_to_end_then_all_skipped(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny", n_ctx=2048, vocab_size=400)
    out = tmp_path / "pipe"
    argv = ["--out", str(out), "--model", str(model), "--no-progress", *_sets(TINY)]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "pipeline.json").read_text())
    assert record["preset"] == "cpu" and list(record["done"]) == list(STAGES)
    assert (out / "stage1/square-0/ledger.sqlite").is_file()
    assert (out / "finetune/model/config.json").is_file()
    assert (out / "stage2/model/config.json").is_file() and (out / "stage2/summary.json").exists()
    assert (out / "stage3/policy").is_dir()
    configs = record["configs"]
    assert configs["stage1"]["mutation"] == "gp" and configs["finetune"]["model"] == str(model)
    assert configs["stage2"]["model"] == str(out / "finetune/model")
    assert configs["stage2"]["ledgers"] == [str(out / "stage1/square-0")]
    assert configs["stage3"]["model"] == str(out / "stage2/model")
    assert record["done"]["stage1"]["summary"]["runs"][0]["children"] == 16
    assert record["done"]["finetune"]["summary"]["steps"] == 2
    assert record["done"]["stage2"]["summary"]["training"]["steps"] == 2
    assert record["done"]["stage3"]["summary"]["iteration"] == 2
    # again: every stage is skipped, no file is written
    before = _mtimes(out)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert all(f"{s}: done, skipped" in err for s in STAGES) and "running" not in err
    assert _mtimes(out) == before


@pytest.fixture
def fakes(monkeypatch) -> list[str]:
    """Stand-in stages that write what the real ones leave behind; returns the calls."""
    calls: list[str] = []

    def fake(stage: str):
        def run(cfg: Mapping[str, Any], out: Path, progress: bool) -> dict[str, Any]:
            calls.append(stage)
            out.mkdir(parents=True, exist_ok=True)
            if stage == "stage1":
                for path in pipeline.run_dirs(out.parent, cfg):
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "ledger.sqlite").write_text("")
                return {"runs": [{"seed": s} for s in cfg["seeds"]]}
            if stage in ("finetune", "stage2"):
                (out / "model").mkdir(exist_ok=True)
                (out / "model/config.json").write_text("{}")
            if stage == "stage2" and cfg.get("samples") == 13:
                from jelm.lm.stage2 import Stage2Error

                raise Stage2Error("the ledgers hold no program\nadmitted to a map")
            if stage == "stage2" and cfg.get("samples") == 7:  # a model that writes nothing
                return {"samples": {"n": 7, "valid": 0.0}}
            return {"steps": 1, "config": dict(cfg), "nested": {"a": 1}}

        return run

    monkeypatch.setattr(pipeline, "RUNNERS", {s: fake(s) for s in STAGES})
    return calls


def test_stages_chain_skip_and_run_alone(tmp_path, fakes, capsys):
    out = tmp_path / "pipe"
    assert main(["--out", str(out), "--stages", "stage1,finetune", "--no-progress"]) == 0
    assert fakes == ["stage1", "finetune"]
    record = json.loads((out / "pipeline.json").read_text())
    assert list(record["done"]) == ["stage1", "finetune"] and set(record["configs"]) == {
        "stage1",
        "finetune",
    }
    assert record["done"]["finetune"]["summary"] == {"steps": 1, "nested": {"a": 1}}
    assert record["configs"]["stage1"]["seeds"] == list(pipeline.CPU_SEEDS)
    # stage 2 alone reads what is in the directory; the stages done are not run again
    assert main(["--out", str(out), "--stages", "stage2"]) == 0
    assert main(["--out", str(out)]) == 0
    assert fakes == ["stage1", "finetune", "stage2", "stage3"]
    record = json.loads((out / "pipeline.json").read_text())
    assert list(record["done"]) == list(STAGES)
    assert record["configs"]["stage2"]["max_steps"] == pipeline.CPU_CHANGES["stage2"]["max_steps"]
    # a setting that differs from a stage done: another pipeline
    capsys.readouterr()
    assert main(["--out", str(out), "--set", "stage3.iterations=99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stage3 done with other settings" in err
    assert main(["--out", str(out), "--preset", "paper"]) == 2
    assert "preset 'cpu'" in capsys.readouterr().err


def test_a_stage_alone_reads_the_runs_stage1_made(tmp_path, fakes):
    out = tmp_path / "pipe"
    first = ["--stages", "stage1,finetune", '--set=stage1.seeds=["wheel"]']
    assert main(["--out", str(out), *first]) == 0
    assert main(["--out", str(out), "--stages", "stage2"]) == 0  # without stage 1's setting
    record = json.loads((out / "pipeline.json").read_text())
    assert record["configs"]["stage2"]["ledgers"] == [str(out / "stage1/wheel-0")]
    assert fakes == ["stage1", "finetune", "stage2"]


def test_a_stage2_model_without_valid_programs_is_reported(tmp_path, fakes, capsys):
    out = tmp_path / "pipe"
    assert main(["--out", str(out), "--stages", "stage1,finetune,stage2"]) == 0
    assert "warning" not in capsys.readouterr().err
    out = tmp_path / "other"
    assert (
        main(["--out", str(out), "--stages", "stage1,finetune,stage2", "--set=stage2.samples=7"])
        == 0
    )
    err = capsys.readouterr().err
    assert "stage2: warning: its model wrote no valid program" in err


def test_bad_input_is_one_line_and_code_2(tmp_path, fakes, capsys):
    out = tmp_path / "pipe"
    for argv, words in [
        (["--stages", "stage1,stage4"], "unknown stage 'stage4'"),
        (["--stages", "finetune"], "finetune needs stage1's output"),
        (["--stages", "stage2"], "stage2 needs stage1's output"),
        (["--set", "stage9.x=1"], "unknown stage 'stage9'"),
        (["--set", "stage2.nope=1", "--stages", "stage1,stage2"], "unknown setting 'nope'"),
        (["--set", "stage2"], "expected STAGE.KEY=VALUE"),
        (["--set", "stage1.generation=5"], "stage1: bad configuration: - unknown key"),
        (["--set", 'stage1.seeds=["nowhere"]'], "stage1: bad configuration"),
    ]:
        assert main(["--out", str(out), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (argv, err)
    assert fakes == [] and not (out / "pipeline.json").exists()
    # a stage's own error: one line, code 2, the earlier stages kept
    assert main(["--out", str(out), "--stages", "stage1"]) == 0
    assert main(["--out", str(out), "--stages", "finetune,stage2", "--set=stage2.samples=13"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "jelm.experiments.pipeline: stage2: the ledgers hold no program admitted to a map"
    )
    record = json.loads((out / "pipeline.json").read_text())
    assert list(record["done"]) == ["stage1", "finetune"]
    assert (out / "finetune/model/config.json").is_file()
    # the stage cut short runs again (resuming in its own directory) when asked again
    assert main(["--out", str(out), "--stages", "stage2"]) == 0
    assert fakes == ["stage1", "finetune", "stage2", "stage2"]


def test_presets_take_the_stage_commands_presets(tmp_path):
    from jelm.lm.stage2 import PRESETS as STAGE2
    from jelm.rl.stage3 import PRESETS as STAGE3

    cpu, paper = resolve("cpu", tmp_path), resolve("paper", tmp_path)
    for key, value in STAGE2["paper"].items():
        assert paper["stage2"][key] == value
    for key, value in STAGE3["paper"].items():
        assert paper["stage3"][key] == value
    for stage in ("finetune", "stage2", "stage3"):
        for key, value in pipeline.CPU_CHANGES[stage].items():
            assert cpu[stage][key] == value
    assert paper["stage1"]["seeds"] == ["square", "radial", "cppn_fixed", "cppn_mutable"]
    assert paper["stage1"]["generations"] > cpu["stage1"]["generations"]
    assert cpu["stage1"]["lm"]["backend"]["path"] == "shipped"
    # stage 3 samples as long programs as stage 2 does, unless told otherwise
    assert cpu["stage3"]["max_new_tokens"] == cpu["stage2"]["max_new_tokens"] > 768
    told = resolve("cpu", tmp_path, overrides={"stage3": {"max_new_tokens": 300}})
    assert told["stage3"]["max_new_tokens"] == 300


def test_stage3_alone_on_a_fresh_directory_exits_2(tmp_path):
    out = tmp_path / "fresh"
    cmd = [sys.executable, "-m", "jelm.experiments.pipeline", "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    got = subprocess.run([*cmd, "--stages", "stage3"], capture_output=True, text=True, cwd=root)
    assert got.returncode == 2
    assert got.stderr.count("\n") == 1 and "stage3 needs stage2's output" in got.stderr
    assert "run --stages stage2 first" in got.stderr
