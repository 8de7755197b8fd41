"""jelm.experiments.config: one source for every default, read by Hydra and the validator
alike; every problem of a configuration reported before any work starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from jelm.domains import DOMAINS
from jelm.domains.sodarace.direct import DirectParams
from jelm.experiments.config import ConfigError, config_class, from_mapping, identity
from jelm.experiments.run import CONFIG_DIR, register_schema
from jelm.lm.operators import LMOptions
from jelm.mutation.gp import GPOptions

ENTRY_CONFIGS = sorted(p for p in Path(CONFIG_DIR).glob("*.yaml"))


def _hydra(domain: str, overrides: list[str] | None = None) -> dict:
    register_schema(domain)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name=domain, overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("path", ENTRY_CONFIGS, ids=lambda p: p.stem)
def test_entry_yaml_files_repeat_no_default(path: Path):
    """A domain's YAML names its schema and Hydra's settings; the defaults are the
    dataclasses'."""
    data = yaml.safe_load(path.read_text())
    assert set(data) <= {"defaults", "hydra"}, sorted(data)
    assert data["defaults"][0] == f"{path.stem}_schema"
    assert path.stem in DOMAINS


@pytest.mark.parametrize("domain", DOMAINS.names())
def test_hydra_and_the_validator_read_the_same_defaults(domain: str):
    raw = _hydra(domain)
    raw.pop("hydra", None)
    assert from_mapping(raw, domain) == from_mapping({}, domain)
    assert raw == dataclasses.asdict(config_class(domain)())


def test_sections_are_the_operators_options():
    config = from_mapping({})
    assert config.gp == GPOptions() and config.lm == LMOptions() and config.direct == DirectParams()
    assert config.mutation == DOMAINS.get("sodarace").default_operator
    assert config.qd.grid == list(DOMAINS.get("sodarace").default_grid)
    assert (config.steps, config.terrain, config.bucket) == (600, "flat", [32, 128, 8])
    image = from_mapping({}, "image")
    assert not hasattr(image, "direct") and not hasattr(image, "steps")
    assert image.qd.lower == [0.0, 0.0] and image.qd.fitness_offset == -1.0


def test_presets_only_override_known_keys():
    known = {f.name for f in dataclasses.fields(config_class("sodarace"))}
    for path in (Path(CONFIG_DIR) / "preset").glob("*.yaml"):
        data = yaml.safe_load(path.read_text()) or {}
        assert set(data) <= known | {"hydra"}, (path.name, sorted(set(data) - known))
        raw = _hydra("sodarace", [f"preset={path.stem}"])
        raw.pop("hydra", None)
        from_mapping(raw)  # every preset is a valid configuration


def test_identity_leaves_out_what_a_resume_may_change():
    a = from_mapping({"generations": 3, "renders": 0})
    b = from_mapping({"generations": 9, "renders": 2, "progress": False})
    assert identity(a) == identity(b)
    assert identity(a) != identity(from_mapping({"seed": 1}))


@pytest.mark.parametrize(
    ("raw", "domain", "message"),
    [
        ({"mutation": "direct"}, "image", "works on sodarace, not on 'image'"),
        ({}, "paint", "unknown domain 'paint'"),
        ({"qd": {"grid": [4, 4, 4]}}, "image", "qd.grid has 3 axes; the descriptors have 2"),
        ({"qd": {"lower": [0, 0]}}, "sodarace", "qd.lower and qd.upper need 3 values"),
        ({"size": 0}, "image", "size"),
        ({"gp": {"sigma": -1}, "mutation": "gp"}, "sodarace", "sigma must be a finite number > 0"),
        ({"gp": {"magic": 1}}, "sodarace", r"unknown gp keys \['magic'\]"),
        ({"lm": {"top_p": 2}, "mutation": "lm_diff"}, "sodarace", r"lm.top_p must be in \(0, 1\]"),
        ({"lm": {"retries": -1}}, "sodarace", "lm.retries must be an integer >= 0"),
        ({"seeds": []}, "sodarace", "seeds is empty"),
        ({"batch": 0, "renders": -1}, "sodarace", "batch must be at least 1"),
    ],
)
def test_problems_are_listed_before_any_work(raw: dict, domain: str, message: str):
    with pytest.raises(ConfigError, match=message):
        from_mapping(raw, domain)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        from_mapping({"batch": 0, "renders": -1, "terrain": "lava", "qd": {"deep": 0}})
    text = str(info.value)
    for part in ("batch must be at least 1", "renders must be at least 0", "lava", "qd.deep"):
        assert part in text


def test_the_xla_cache_is_set_unless_jax_already_has_one(tmp_path, monkeypatch):
    import jax

    from jelm.experiments.run import use_xla_cache

    before = jax.config.jax_compilation_cache_dir
    least = jax.config.jax_persistent_cache_min_compile_time_secs
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
    use_xla_cache(str(tmp_path / "ours"))
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    try:
        use_xla_cache("")
        assert jax.config.jax_compilation_cache_dir == before
        # every program is kept, unless the environment sets the threshold
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.5)
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2.5")
        use_xla_cache(str(tmp_path / "ours"))
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ours")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
        use_xla_cache(str(tmp_path / "ours"))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", least)
