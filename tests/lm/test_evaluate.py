"""jelm.lm.evaluate: a diff model judged by what its diffs do to the seed programs (ELM
§3.1), with real models, the real diff applier and the real sandbox."""

from __future__ import annotations

import json

import pytest

from jelm.domains import make_domain
from jelm.lm import evaluate as E
from jelm.lm.backends import JelmBackend
from tests.lm_fixtures import WRITER_MAX_NEW, WRITTEN_DIFFS, make_tiny_model, make_writer_model

COMMIT_MESSAGES = make_domain("sodarace").prompts.commit_messages


@pytest.fixture(scope="module")
def writer_dir(tmp_path_factory):
    return make_writer_model(
        tmp_path_factory.mktemp("models") / "writer", WRITTEN_DIFFS, max_new_tokens=WRITER_MAX_NEW
    )


@pytest.fixture(scope="module")
def writer(writer_dir):
    return JelmBackend.from_dir(writer_dir)


def test_diffs_that_apply_to_one_seed_only(writer):
    """The writer model's diff changes the radial seed's radius: it applies to radial, the
    child runs and is a valid walker; on square its context matches nothing (sampled as
    the model writes it: not made to copy its parent)."""
    (result,) = E.evaluate(
        writer, ("square", "radial"), (0.8,), samples=2, max_new_tokens=WRITER_MAX_NEW, copy=False
    )
    n = 2 * len(COMMIT_MESSAGES) * 2
    assert result["outcomes"] == {"ok": n // 2, "diff_context_mismatch": n // 2}
    assert result["applied"] == result["changed"] == result["ran"] == result["valid"] == 0.5
    assert result["tokens_per_diff"] > 40 and result["diffs_per_s"] > 0
    assert result["applied_strict"] == 0.5
    ones, zeros = (dict(applied=x, applied_strict=x, changed=x, ran=x, valid=x) for x in (1.0, 0.0))
    assert result["by_parent"]["radial"] == ones
    assert result["by_parent"]["square"] == zeros


@pytest.mark.slow
def test_untrained_model_writes_nothing_that_applies(tmp_path):
    backend = JelmBackend.from_dir(make_tiny_model(tmp_path / "random", n_ctx=128))
    results = E.evaluate(backend, ("square",), (1.0, 0.0), samples=1, max_new_tokens=16)
    assert [r["temperature"] for r in results] == [1.0, 0.0]
    for r in results:
        assert r["applied"] == r["valid"] == 0.0
        assert sum(r["outcomes"].values()) == len(COMMIT_MESSAGES)
        assert all(k.startswith("diff_") for k in r["outcomes"])


@pytest.mark.slow
def test_cli_prints_one_json_line(writer_dir, tmp_path, capsys):
    path = writer_dir
    argv = ["--model", str(path), "--seeds", "radial", "--samples", "1"]
    assert E.main([*argv, "--max-new-tokens", str(WRITER_MAX_NEW), "--temperatures", "0.5"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["prompts"] == len(COMMIT_MESSAGES) and line["parents"] == ["radial"]
    assert line["domain"] == "sodarace"
    assert line["results"][0]["valid"] == 1.0 and line["results"][0]["temperature"] == 0.5
    assert E.main(["--model", str(tmp_path / "missing")]) == 2
    assert E.main(["--model", str(path), "--seeds", "no_such_seed"]) == 2
    assert "no_such_seed" in capsys.readouterr().err


@pytest.mark.slow  # the shipped model over a folder, ~7 s
def test_cli_reads_a_folder_of_parents(writer_dir, tmp_path, capsys):
    """--parents DIR: every .py file is a parent, named by its file."""
    domain = make_domain("sodarace")
    folder = tmp_path / "parents"
    folder.mkdir()
    (folder / "b_wheel_like.py").write_text(domain.seed_program("radial"))
    (folder / "a_box.py").write_text(domain.seed_program("square"))
    (folder / "notes.txt").write_text("not a parent")
    path = writer_dir
    argv = ["--model", str(path), "--parents", str(folder), "--samples", "1", "--no-copy"]
    records = tmp_path / "records.jsonl"
    argv += ["--records", str(records)]
    assert E.main([*argv, "--max-new-tokens", str(WRITER_MAX_NEW)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["parents"] == ["a_box", "b_wheel_like"]
    assert line["prompts"] == 2 * len(COMMIT_MESSAGES)
    by_parent = line["results"][0]["by_parent"]
    assert by_parent["b_wheel_like"]["valid"] == 1.0 and by_parent["a_box"]["applied"] == 0.0
    # --records: every sample, with its child and why it failed
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    assert len(rows) == line["prompts"]
    for r in rows:
        assert r["completion"] and r["temperature"] == 0.8
        if r["parent"] == "b_wheel_like":
            assert r["end"] == "ok" and r["child"] and r["error"] == ""
        else:  # the diff's context matches nothing in the box: no child, the diff's error
            assert r["end"] == "diff_context_mismatch" and r["child"] is None and r["error"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert E.main(["--model", str(path), "--parents", str(empty)]) == 2
    assert "no .py parent programs" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_against_an_openai_compatible_server(writer, capsys):
    """--base-url: the same model behind `jelm serve`'s HTTP API on localhost, sampled
    through OpenAIBackend, gives the same verdicts as in-process."""
    from jelm.lm.serve import Server

    with Server(writer, port=0, model_id="writer") as server:
        argv = ["--base-url", f"{server.url}/v1", "--model-name", "writer", "--samples", "1"]
        argv += ["--seeds", "square", "radial", "--max-new-tokens", str(WRITER_MAX_NEW)]
        assert E.main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["outcomes"] == {"ok": 3, "diff_context_mismatch": 3}
    assert result["valid"] == 0.5
