"""PPO over sampled programs (ELM §7): score a batch of responses, turn the episode
rewards into token advantages with a KL penalty to the stage-2 model, and update the
policy with optax over epochs of minibatches, all in one jitted call per batch.

On several local devices (:func:`jelm.lm.shard.local_mesh`) both calls are data
parallel: the rows they score (the whole batch in :func:`make_prepare`, each minibatch
in :func:`make_update`) are split over the devices, parameters and optimizer state are
replicated, and XLA's partitioner adds the devices' sums."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jelm.lm import shard as lm_shard
from jelm.rl import ppo
from jelm.rl.policy import PolicyConfig, reference_logp, score

Params = Any


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """PPO's and GAE's numbers (Schulman et al., 2017; 2016), the KL penalty's
    (Ziegler et al., 2019) and the optimizer's."""

    epochs: int = 4
    minibatch: int = 8
    lr: float = 1e-5  # the language model's
    head_lr: float = 1e-3  # the TEN's, the gate's and the value head's (new, small)
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 1.0  # a program is hundreds of tokens: lam < 1 starves its first ones

    def optimizer(self) -> optax.GradientTransformation:
        """Adam after clipping the global gradient norm, at ``lr`` for the pretrained
        language model and ``head_lr`` for the parts stage 3 adds (a policy pytree
        ``{"lm", "ten", "gate", "value"}``)."""
        labels = lambda params: {k: "lm" if k == "lm" else "head" for k in params}
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.multi_transform(
                {"lm": optax.adam(self.lr), "head": optax.adam(self.head_lr)}, labels
            ),
        )


class Batch(NamedTuple):
    """What one update learns from (every array has the batch axis first)."""

    inputs: jax.Array  # the TEN's input of each row's terrain
    responses: jax.Array  # [B, T] int32
    mask: jax.Array  # [B, T] bool
    old_logp: jax.Array  # [B, T]
    old_values: jax.Array  # [B, T]
    advantages: jax.Array  # [B, T]
    returns: jax.Array  # [B, T]


def prepare(
    params: Params,
    ref_params: Params,
    cfg: PolicyConfig,
    settings: PPOSettings,
    inputs: jax.Array,
    prompt: jax.Array,
    responses: jax.Array,
    mask: jax.Array,
    episode: jax.Array,
    kl_coef: jax.Array,
    terrain_ids: jax.Array,
) -> tuple[Batch, dict[str, jax.Array]]:
    """The batch of an update from sampled ``responses`` and their ``episode`` rewards
    [B]: the policy's log-probabilities and values, the reference's log-probabilities,
    per-token rewards (KL penalty, the episode reward at the last token) and GAE, the
    advantages whitened within each terrain (``terrain_ids`` [B]): a program is judged
    against the others written for its terrain, so a hard terrain's samples are not all
    pushed down for earning less than an easy terrain's."""
    old_logp, values = score(params, cfg, inputs, prompt, responses)
    ref = reference_logp(ref_params, cfg, prompt, responses)
    rewards, kl = ppo.token_rewards(episode, old_logp, ref, mask, kl_coef)
    adv, returns = ppo.gae(rewards, values, mask, settings.gamma, settings.lam)
    adv = ppo.whiten_groups(adv, mask, terrain_ids, cfg.n_terrains)
    batch = Batch(inputs, responses, mask, old_logp, values, adv, returns)
    m = mask.astype(jnp.float32)
    seq_kl = jnp.sum(kl, axis=1)
    stats = {
        "kl": jnp.mean(seq_kl),
        "tokens": jnp.mean(jnp.sum(m, axis=1)),
        "value_mean": jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0),
    }
    return batch, stats


def _split_rows(tree: Any, mesh: Any) -> Any:
    """Inside a jitted function: every leaf of ``tree`` with its leading (row) axis split
    over ``mesh`` (unchanged without one; a row count that is not a multiple of the
    devices is padded by XLA's partitioner, not by the caller)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, lm_shard.rows(mesh))


def _replicated_jit(fn: Callable[..., Any], mesh: Any, **jit_kw: Any) -> Callable[..., Any]:
    """``fn`` jitted; on a mesh its arguments are first placed on every device (no copy
    when they already are: the previous call's results) and its results stay so."""
    if mesh is None:
        return jax.jit(fn, **jit_kw)
    jitted = jax.jit(fn, out_shardings=lm_shard.replicated(mesh), **jit_kw)
    static = set(jit_kw.get("static_argnums", ()))

    def placed(*args: Any) -> Any:
        args = tuple(a if i in static else lm_shard.replicate(a, mesh) for i, a in enumerate(args))
        return jitted(*args)

    return placed


def make_prepare(shard: bool | None = None) -> Callable[..., tuple[Batch, dict[str, jax.Array]]]:
    """:func:`prepare`, jitted (the configurations static); on several local devices
    (``shard=False`` or ``$JELM_LM_SHARD=0``: one) the scored rows are split over them."""
    mesh = lm_shard.local_mesh(shard)

    def body(params, ref_params, cfg, settings, inputs, prompt, responses, mask, episode,
             kl_coef, terrain_ids):  # fmt: skip
        rows = _split_rows((inputs, responses, mask, episode, terrain_ids), mesh)
        inputs, responses, mask, episode, terrain_ids = rows
        return prepare(
            params, ref_params, cfg, settings, inputs, prompt, responses, mask, episode,
            kl_coef, terrain_ids,
        )  # fmt: skip

    return _replicated_jit(body, mesh, static_argnums=(2, 3))


def make_update(
    cfg: PolicyConfig, settings: PPOSettings, shard: bool | None = None
) -> Callable[..., tuple[Params, Any, dict[str, jax.Array]]]:
    """``update(params, opt_state, prompt, batch, key) -> (params, opt_state, metrics)``:
    ``settings.epochs`` passes over ``batch`` in shuffled minibatches of
    ``settings.minibatch`` rows (a ``lax.scan``), jitted; metrics are the means over
    the minibatch steps. On several local devices (``shard=False`` or
    ``$JELM_LM_SHARD=0``: one) each minibatch's rows are split over them, gathered from
    the replicated batch by the same permutation as on one device, so the update equals
    one device's within the rounding of a reordered sum."""
    optimizer = settings.optimizer()
    mesh = lm_shard.local_mesh(shard)

    def loss_fn(params: Params, prompt: jax.Array, mb: Batch) -> tuple[jax.Array, Any]:
        logp, values = score(params, cfg, mb.inputs, prompt, mb.responses)
        return ppo.ppo_loss(
            logp,
            mb.old_logp,
            mb.advantages,
            values,
            mb.old_values,
            mb.returns,
            mb.mask,
            clip_eps=settings.clip_eps,
            value_clip=settings.value_clip,
            vf_coef=settings.vf_coef,
        )

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(
        params: Params, opt_state: Any, prompt: jax.Array, batch: Batch, key: jax.Array
    ) -> tuple[Params, Any, dict[str, jax.Array]]:
        b = batch.responses.shape[0]
        n_mb = max(1, b // settings.minibatch)
        keys = jax.random.split(key, settings.epochs)
        order = jax.vmap(lambda k: jax.random.permutation(k, b))(keys)
        order = order[:, : n_mb * settings.minibatch].reshape(-1, settings.minibatch)

        def step(carry, idx):
            params, opt_state = carry
            mb = _split_rows(jax.tree.map(lambda a: a[idx], batch), mesh)
            (loss, metrics), grads = grad_fn(params, prompt, mb)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    return _replicated_jit(update, mesh)
