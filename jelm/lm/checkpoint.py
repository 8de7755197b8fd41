"""jelm model directories: ``config.json``, ``tokenizer.json`` and an orbax ``params/``.

The diff model (ELM §3.1) is saved and read back here; every problem with a directory is
one :class:`ModelLoadError` naming the path and what is wrong.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm.model import ModelConfig, Params, init_params

if TYPE_CHECKING:
    from jelm.lm.tokenizer import Tokenizer


class ModelLoadError(RuntimeError):
    """A model directory cannot be loaded; the message names the path and what is wrong."""


def save_model(
    directory: str | Path, params: Params, config: ModelConfig, tokenizer: Tokenizer
) -> None:
    """Write a jelm model directory: ``config.json``, ``tokenizer.json``, ``params/`` (orbax).

    An existing directory is overwritten file by file (the params checkpoint is replaced).
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tokenizer.save(directory / "tokenizer.json")
    params = jax.tree_util.tree_map(np.asarray, params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "params", params, force=True)
        ckptr.wait_until_finished()


def load_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a jelm model directory (raises :class:`ModelLoadError`)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist or is not a directory")
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: {directory} is not a jelm model directory")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    if "model_type" in raw:
        raise ModelLoadError(
            f"{path} is a Hugging Face config (model_type {raw['model_type']!r}), not a jelm "
            "ModelConfig; load it with jelm.lm.hf.load_hf"
        )
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a valid jelm ModelConfig: {exc}") from exc


def load_model(directory: str | Path) -> tuple[Params, ModelConfig, Tokenizer]:
    """Read a directory written by :func:`save_model`: ``(params, config, tokenizer)``.

    Every problem (missing directory or file, bad JSON, unreadable tokenizer, a params
    checkpoint that is damaged or does not match the config's shapes) raises
    :class:`ModelLoadError` naming the path and what is wrong.
    """
    import orbax.checkpoint as ocp

    from jelm.lm.tokenizer import Tokenizer

    directory = Path(directory).absolute()
    config = load_config(directory)
    tok_path = directory / "tokenizer.json"
    if not tok_path.is_file():
        raise ModelLoadError(f"{tok_path} is missing")
    try:
        tokenizer = Tokenizer.from_file(tok_path)
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise ModelLoadError(f"{tok_path} is not a readable tokenizer: {exc}") from exc
    params_path = directory / "params"
    if not params_path.is_dir():
        raise ModelLoadError(f"{params_path} (the orbax params checkpoint) is missing")
    abstract = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(params_path, abstract)
    except Exception as exc:  # orbax raises many kinds; the caller needs one
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise ModelLoadError(
            f"{params_path} does not restore for the model in {directory / 'config.json'} "
            f"({type(exc).__name__}: {first}); the checkpoint is damaged or was written for "
            "another configuration"
        ) from exc
    want = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), abstract)
    got = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params)
    if want != got:  # orbax restores the saved shapes whatever the template says
        raise ModelLoadError(
            f"{params_path}: the saved parameters do not match {directory / 'config.json'} "
            f"({_first_difference(want, got)}); the checkpoint was written for another "
            "configuration"
        )
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(
            f"{tok_path} has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    return jax.tree_util.tree_map(jnp.asarray, params), config, tokenizer


def _first_difference(want: Any, got: Any) -> str:
    """The first leaf path whose (shape, dtype) differs between two described trees."""
    is_leaf = lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)
    flat_w = dict(
        (jax.tree_util.keystr(k), v)
        for k, v in jax.tree_util.tree_flatten_with_path(want, is_leaf=is_leaf)[0]
    )
    flat_g = dict(
        (jax.tree_util.keystr(k), v)
        for k, v in jax.tree_util.tree_flatten_with_path(got, is_leaf=is_leaf)[0]
    )
    for key in sorted(set(flat_w) | set(flat_g)):
        w, g = flat_w.get(key), flat_g.get(key)
        if w != g:
            show = lambda x: "missing" if x is None else f"{x[0]} {x[1]}"
            return f"{key}: expected {show(w)}, found {show(g)}"
    return "structure differs"
