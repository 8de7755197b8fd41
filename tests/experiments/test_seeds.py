"""``python -m jelm.experiments.seeds``: every seed walker scored on the terrains asked
for, with fitness the centre of mass's x displacement times the terrain's direction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jelm.domains.sodarace.seeds import SEED_NAMES
from jelm.experiments import seeds


def test_scores_every_seed_on_every_terrain(tmp_path: Path, capsys):
    out = tmp_path / "run"
    code = seeds.main(
        ["--out", str(out), "--steps", "30", "--terrains", "flat", "right_wall", "--no-gifs"]
    )
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["steps"] == 30
    rows = {(r["seed"], r["terrain"]): r for r in data["results"]}
    assert set(rows) == {(s, t) for s in SEED_NAMES for t in ("flat", "right_wall")}
    for name in SEED_NAMES:
        flat, wall = rows[name, "flat"], rows[name, "right_wall"]
        assert flat["valid"] and wall["valid"]
        assert flat["fitness"] == flat["displacement"]  # flat ground runs to the right
        assert wall["fitness"] == -wall["displacement"]  # the right wall: to the left
        assert flat["descriptors"] == wall["descriptors"]  # initial height, width, mass
        assert (out / "walkers" / f"{name}.png").stat().st_size > 0
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| seed | flat | right_wall |") and len(table) == 2 + len(SEED_NAMES)
    assert f"writing to {out}/" in capsys.readouterr().out


def test_refuses_a_used_directory_and_a_bad_horizon(tmp_path: Path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(SystemExit) as info:
        seeds.main(["--out", str(tmp_path / "used"), "--no-gifs"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        seeds.main(["--out", str(tmp_path / "new"), "--steps", "0"])
    assert info.value.code == 2
