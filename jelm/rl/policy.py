"""The terrain-conditioned inventor of ELM's stage 3 (§7): the stage-2 program model, a
terrain embedding network (TEN) whose output it reads as a gated soft prompt, and a value
head on its final hidden states.

Parameters are one pytree ``{"lm", "ten", "gate", "value"}``. The gate (one per layer and
head, :class:`jelm.lm.model.Adapter`) starts at zero, so the untrained policy samples
exactly what the stage-2 model samples and its KL to it starts at zero. The value head
shares the model's trunk (one forward pass gives the log-probabilities and the values,
which matters on a CPU) and starts at zero.

A response is the program after the header ``<NME> walker.py\\n<BEF>``: token ``j`` of
a response is predicted at position ``P - 1 + j`` of the sequence (``P`` the header's
length), where its value is read too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jelm.lm import model as M
from jelm.lm import shard as lm_shard
from jelm.lm.kv import LayerCache, View
from jelm.rl.encoders import make_encoder

Params = Any


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The policy's shape: its language model, TEN kind and size, and the temperature its
    distribution is sampled and scored at (PPO's ratio needs both to be the same)."""

    model: M.ModelConfig
    encoder: str = "codes"
    n_terrains: int = 3
    prefix_len: int = 8
    temperature: float = 1.0

    def encoder_module(self) -> Any:
        """The Flax TEN module of this configuration."""
        return make_encoder(self.encoder, self.n_terrains, self.prefix_len, self.model.d_model)


class Sampled(NamedTuple):
    """A batch of responses: ``tokens`` [B, T] (the stop token included, ``pad`` after
    it) and ``mask`` [B, T], true on the tokens up to and including the first stop."""

    tokens: jax.Array
    mask: jax.Array


def init_policy(cfg: PolicyConfig, lm_params: Params, inputs: jax.Array, key: jax.Array) -> Params:
    """A policy around ``lm_params``: a fresh TEN (initialised on example ``inputs``),
    a closed gate and a zero value head."""
    ten = cfg.encoder_module().init(key, inputs)["params"]
    d, layers, heads = cfg.model.d_model, cfg.model.n_layer, cfg.model.n_head
    return {
        "lm": lm_params,
        "ten": ten,
        "gate": jnp.zeros((layers, heads), jnp.float32),
        "value": {"kernel": jnp.zeros((d,), jnp.float32), "bias": jnp.zeros((), jnp.float32)},
    }


def adapter(params: Params, cfg: PolicyConfig, inputs: jax.Array) -> M.Adapter:
    """The soft prompt of each row's terrain (``inputs``: the TEN's input, ids or images)."""
    prefix = cfg.encoder_module().apply({"params": params["ten"]}, inputs)
    return M.Adapter(prefix.astype(jnp.float32), params["gate"])


def _response_logp(logits: jax.Array, tokens: jax.Array, temperature: float) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def _sequence(prompt: jax.Array, responses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Header + responses without the last response token (it predicts nothing), and the
    positions that predict the response tokens."""
    b = responses.shape[0]
    seq = jnp.concatenate([jnp.broadcast_to(prompt, (b, prompt.shape[0])), responses], axis=1)
    return seq[:, :-1], jnp.arange(responses.shape[1]) + prompt.shape[0] - 1


def score(
    params: Params,
    cfg: PolicyConfig,
    inputs: jax.Array,
    prompt: jax.Array,
    responses: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Log-probabilities [B, T] of ``responses`` under the policy and the values [B, T]
    of the states they are chosen in, in one causal pass over header + responses."""
    seq, at = _sequence(prompt, responses)
    ones = jnp.ones(seq.shape, bool)
    hidden = M.hidden_states(
        params["lm"],
        cfg.model,
        seq,
        M.positions_from_mask(ones),
        ones,
        adapter(params, cfg, inputs),
    )[:, at]
    logits = M.logits_of(params["lm"], cfg.model, hidden)
    values = hidden.astype(jnp.float32) @ params["value"]["kernel"] + params["value"]["bias"]
    return _response_logp(logits, responses, cfg.temperature), values


def reference_logp(
    lm_params: Params, cfg: PolicyConfig, prompt: jax.Array, responses: jax.Array
) -> jax.Array:
    """Log-probabilities [B, T] of ``responses`` under the frozen stage-2 model (no
    terrain), at the policy's temperature: the KL penalty's reference."""
    seq, at = _sequence(prompt, responses)
    ones = jnp.ones(seq.shape, bool)
    logits = M.forward(lm_params, cfg.model, seq, M.positions_from_mask(ones), ones)[:, at]
    return _response_logp(logits, responses, cfg.temperature)


def response_mask(tokens: jax.Array, stop_ids: jax.Array) -> jax.Array:
    """True on each row's tokens up to and including its first stop token (all of a row
    that never stops: it was cut at the budget)."""
    stops = jnp.isin(tokens, stop_ids)
    before = jnp.cumsum(stops, axis=1) - stops  # stops strictly before each position
    return before == 0


#: The first size of the sampler's per-row key/value cache (it doubles up to ``max_new``).
FIRST_CACHE = 256


def cache_sizes(max_new: int, first: int = FIRST_CACHE) -> list[int]:
    """The row-cache sizes :func:`sample` passes through: ``first``, doubling, then
    ``max_new`` (one size when ``max_new <= first``)."""
    sizes = []
    size = max(1, first)
    while size < max_new:
        sizes.append(size)
        size *= 2
    return [*sizes, max_new]


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "real", "first_cache"))
def sample(
    params: Params,
    cfg: PolicyConfig,
    inputs: jax.Array,
    prompt: jax.Array,
    key: jax.Array,
    stop_ids: jax.Array,
    pad_id: jax.Array,
    max_new: int,
    real: int | None = None,
    first_cache: int = FIRST_CACHE,
) -> Sampled:
    """Sample one response per row of ``inputs`` after ``prompt`` [P] (the header, the
    same for every row), from the policy at its temperature, with a KV cache.
    ``real``: the real rows (the rest is padding, done from the start); ``None``: all.

    Row ``b``'s token ``t`` is drawn with ``fold_in(key, t)`` over the batch; a row stops
    at its first token in ``stop_ids`` and is padded with ``pad_id`` after it; the loop
    ends when every row has stopped or after ``max_new`` tokens.

    A decode step reads every slot of the rows' cache, so the cache starts at
    ``first_cache`` slots and doubles (:func:`cache_sizes`) only when a row is still
    sampling when it is full: most programs end long before ``max_new``, and a step's
    time grows with the cache (measured in ``jelm/rl/README.md``, "Sampling").
    """
    mc = cfg.model
    b, p = inputs.shape[0], prompt.shape[0]
    ad = adapter(params, cfg, inputs)
    module = M.Transformer(mc)
    variables = {"params": params["lm"]}
    heads = jnp.broadcast_to(prompt, (b, p))
    positions = jnp.broadcast_to(jnp.arange(p), (b, p))
    logits, kv = module.apply(
        variables, heads, positions, M.causal_mask(jnp.ones((b, p), bool)), adapter=ad
    )

    def draw(logits: jax.Array, t: jax.Array) -> jax.Array:
        scaled = logits[:, -1].astype(jnp.float32) / cfg.temperature
        return jax.random.categorical(jax.random.fold_in(key, t), scaled).astype(jnp.int32)

    sizes = cache_sizes(max_new, first_cache)
    rows = (b, 1, mc.kv_heads, sizes[0], mc.head_dim)
    cache = tuple(
        LayerCache(k, v, jnp.zeros(rows, jnp.float32), jnp.zeros(rows, jnp.float32)) for k, v in kv
    )
    first = draw(logits, jnp.int32(0))
    tokens = jnp.full((b, max_new), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, stop_ids)
    if real is not None:
        done = done | (jnp.arange(b) >= real)

    def phase(state, size: int):
        """Steps while the token fed at step ``t`` has a slot (``t < size``)."""
        slots = jnp.arange(size)

        def cond(state):
            t, _, done, _ = state
            return (t < size) & (t < max_new - 1) & ~jnp.all(done)

        def body(state):
            t, tokens, done, cache = state
            view = View(
                jnp.ones((b, p), bool),
                jnp.broadcast_to(slots <= t, (b, 1, 1, size)),
                t,
            )
            logits, cache = module.apply(
                variables,
                jax.lax.dynamic_slice_in_dim(tokens, t, 1, axis=1),
                jnp.full((b, 1), p + t, jnp.int32),
                view,
                cache=cache,
                adapter=ad,
            )
            nxt = jnp.where(done, pad_id, draw(logits, t + 1))
            tokens = jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], t + 1, axis=1)
            return t + 1, tokens, done | jnp.isin(nxt, stop_ids), cache

        return jax.lax.while_loop(cond, body, state)

    state = (jnp.int32(0), tokens, done, cache)
    for k, size in enumerate(sizes):
        if k:  # grow the rows' slots to the next size (the new ones empty)
            t, tokens, done, cache = state
            grow = [(0, 0)] * 3 + [(0, size - sizes[k - 1]), (0, 0)]
            cache = tuple(
                LayerCache(c.prefix_k, c.prefix_v, jnp.pad(c.rows_k, grow), jnp.pad(c.rows_v, grow))
                for c in cache
            )
            state = (t, tokens, done, cache)
        state = phase(state, size)
    tokens = state[1]
    return Sampled(tokens, response_mask(tokens, stop_ids))


def sample_over_devices(
    params: Params,
    cfg: PolicyConfig,
    inputs: jax.Array,
    prompt: jax.Array,
    key: jax.Array,
    stop_ids: jax.Array,
    pad_id: jax.Array,
    max_new: int,
    shard: bool | None = None,
) -> Sampled:
    """:func:`sample` with the rows spread over every local device
    (:func:`jelm.lm.shard.local_mesh`; ``shard=False`` or ``$JELM_LM_SHARD=0``: one):
    ``inputs`` padded to a multiple of the device count with rows that start done, the
    parameters replicated, the padding dropped. The tokens are one device's: a row's
    draws depend on its index, not on the batch size or the sharding (threefry
    partitionable, ``jelm/lm/README.md``, "Devices")."""
    mesh = lm_shard.local_mesh(shard)
    if mesh is None:
        return sample(params, cfg, inputs, prompt, key, stop_ids, pad_id, max_new)
    b = inputs.shape[0]
    placed = lm_shard.split_rows(lm_shard.pad_rows(inputs, lm_shard.padded_rows(b, mesh)), mesh)
    params, prompt, stop_ids, pad_id = lm_shard.replicate((params, prompt, stop_ids, pad_id), mesh)
    out = sample(params, cfg, placed, prompt, key, stop_ids, pad_id, max_new, real=b)
    return jax.tree.map(lambda a: a[:b], out)


def save_policy(
    path: str | Path, params: Params, cfg: PolicyConfig, tokenizer: Any, terrains: str
) -> None:
    """Write a policy directory: ``policy.json`` (the TEN kind and sizes, the
    temperature, the terrain distribution it was trained on), ``lm/`` (a jelm model
    directory) and ``head/`` (the TEN, the gate and the value head as an orbax tree)."""
    from jelm.io.checkpoint import Checkpoints
    from jelm.lm.checkpoint import save_model

    path = Path(path)
    save_model(path / "lm", params["lm"], cfg.model, tokenizer)
    with Checkpoints(path / "head", keep=1) as ckpts:
        ckpts.save(0, {k: v for k, v in params.items() if k != "lm"})
    spec = {f: getattr(cfg, f) for f in ("encoder", "n_terrains", "prefix_len", "temperature")}
    (path / "policy.json").write_text(json.dumps({**spec, "terrains": terrains}, indent=1))


def load_policy(path: str | Path) -> tuple[Params, PolicyConfig, Any, Any]:
    """``(params, config, tokenizer, terrain distribution)`` of a directory
    :func:`save_policy` wrote (``OSError``, ``ValueError`` or a
    :class:`jelm.io.checkpoint.CheckpointError` say what is wrong)."""
    from jelm.io.checkpoint import Checkpoints
    from jelm.lm.checkpoint import load_model
    from jelm.rl.encoders import encoder_inputs
    from jelm.rl.terrains import distribution

    path = Path(path)
    spec = json.loads((path / "policy.json").read_text())
    dist = distribution(spec.pop("terrains"))
    lm, model_config, tokenizer = load_model(path / "lm")
    cfg = PolicyConfig(model=model_config, **spec)
    example = encoder_inputs(cfg.encoder, dist, jnp.zeros((1,), jnp.int32))
    template = init_policy(cfg, lm, example, jax.random.key(0))
    with Checkpoints(path / "head", keep=1) as ckpts:
        _, head = ckpts.restore({k: v for k, v in template.items() if k != "lm"})
    return {"lm": lm, **head}, cfg, tokenizer, dist
