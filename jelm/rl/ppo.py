"""PPO with GAE for tuning the program model on walker distance (ELM, Lehman et al. 2022, §7):
per-token rewards with a KL penalty, advantages, the clipped loss and the adaptive KL coefficient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

#: Added to the variance before the square root in `whiten`.
WHITEN_EPS = 1e-8


def _real(mask: jax.Array) -> jax.Array:
    return jnp.asarray(mask).astype(bool)


def _on(mask: jax.Array, x: jax.Array) -> jax.Array:
    """``x`` as float32 on real positions and 0 elsewhere. A ``where`` rather than a product,
    so that anything at padded positions (even inf or NaN) reaches neither a result nor a
    gradient."""
    return jnp.where(mask, jnp.asarray(x, jnp.float32), 0.0)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` over real positions; 0 when there is none."""
    n = jnp.sum(mask, dtype=jnp.float32)
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(n, 1.0)


def token_rewards(
    score: jax.Array,
    logp: jax.Array,
    ref_logp: jax.Array,
    mask: jax.Array,
    kl_coef: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Per-token rewards of a batch of sampled programs, for GAE (ELM §7).

    Each program is one episode whose environment reward ``score`` [B] (the distance its
    walker travels) comes at its last real token; every real token also pays the KL penalty
    ``-kl_coef * (logp - ref_logp)`` against the frozen reference model, as in RLHF (Ziegler
    et al. 2019, §2; Stiennon et al. 2020). ``logp``/``ref_logp`` are the log-probabilities of
    the sampled tokens [B, T] and ``mask`` [B, T] marks the real response tokens (a prefix of
    each row). Returns ``(rewards, kl)``, both [B, T] float32 and 0 at padded positions, where
    ``kl`` is the per-token sample estimate ``logp - ref_logp``. A row without a real token
    gets no score.
    """
    mask = _real(mask)
    kl = _on(mask, jnp.asarray(logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32))
    t = mask.shape[-1]
    # The last real position of each row: the first True counted from the end.
    last = t - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
    at_last = (jnp.arange(t)[None, :] == last[:, None]) & jnp.any(mask, axis=-1, keepdims=True)
    score = jnp.asarray(score, jnp.float32)[:, None]
    rewards = -jnp.asarray(kl_coef, jnp.float32) * kl + jnp.where(at_last, score, 0.0)
    return rewards, kl


def gae(
    rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Token-level generalized advantage estimation (Schulman et al. 2016, §3, eq. 16) for
    the PPO update of the program model (ELM §7).

    ``rewards`` and ``values`` [B, T] are per token; ``mask`` [B, T] marks the real tokens.
    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    computed with a reverse ``lax.scan`` over T. The episode ends at the last real token, so
    the value and advantage after it are 0 (a padded position also ends the episode, were the
    mask not a prefix). Returns ``(advantages, returns)`` [B, T] float32 with
    ``returns = advantages + values`` on real positions; both are 0 at padded positions, and
    rewards and values there are never read.
    """
    mask = _real(mask)
    rewards = _on(mask, rewards)
    values = _on(mask, values)
    gamma = jnp.asarray(gamma, jnp.float32)
    lam = jnp.asarray(lam, jnp.float32)

    def step(carry, xs):
        next_value, next_adv = carry
        r, v, m = xs
        delta = r + gamma * next_value - v
        adv = jnp.where(m, delta + gamma * lam * next_adv, 0.0)
        return (v, adv), adv  # v is already 0 at a padded position

    zeros = jnp.zeros(rewards.shape[:1], jnp.float32)
    _, adv = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, mask.T), reverse=True)
    advantages = adv.T
    returns = jnp.where(mask, advantages + values, 0.0)
    return advantages, returns


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True) -> jax.Array:
    """Normalise ``x`` to mean 0 and standard deviation 1 over its real positions, as PPO
    implementations do with the advantages (Schulman et al. 2017; Ziegler et al. 2019) before
    the update of the program model (ELM §7).

    Mean and (population) variance are taken over the positions where ``mask`` is true;
    ``(x - mean) / sqrt(var + 1e-8)``. With ``shift_mean=False`` the mean is added back (only
    the scale changes, as in lm-human-preferences and TRL). Padded positions are 0, and so is
    everything when no position is real.
    """
    mask = _real(mask)
    x = _on(mask, x)
    mean = _masked_mean(x, mask)
    var = _masked_mean(jnp.square(x - mean), mask)
    out = (x - mean) * jax.lax.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask, out, 0.0)


def whiten_groups(x: jax.Array, mask: jax.Array, groups: jax.Array, n_groups: int) -> jax.Array:
    """:func:`whiten` within each group of rows: row ``b`` of ``x`` [B, T] is normalised
    by the mean and standard deviation of the real positions of the rows of its group
    ``groups[b]`` (in ``0 .. n_groups - 1``, static). For a policy conditioned on a
    terrain (ELM §7) the groups are the terrains: a sample is judged against the others
    of its terrain, not against those of an easier one. Padded positions are 0."""
    mask = _real(mask)
    x = _on(mask, x)
    member = jax.nn.one_hot(groups, n_groups, dtype=jnp.float32)  # [B, G]
    m = mask.astype(jnp.float32)
    count = jnp.maximum(member.T @ jnp.sum(m, axis=1), 1.0)  # [G]
    mean = (member.T @ jnp.sum(x, axis=1)) / count
    row_mean = member @ mean  # [B]
    dev = jnp.where(mask, x - row_mean[:, None], 0.0)
    var = (member.T @ jnp.sum(jnp.square(dev), axis=1)) / count
    row_std = jnp.sqrt(member @ var + WHITEN_EPS)
    return jnp.where(mask, dev / row_std[:, None], 0.0)


def ppo_loss(
    new_logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    new_values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    mask: jax.Array,
    *,
    clip_eps: float | jax.Array,
    value_clip: float | jax.Array,
    vf_coef: float | jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The PPO loss of one minibatch of program tokens (Schulman et al. 2017, eqs. 7 and 9;
    ELM §7), to minimise.

    Policy: the clipped surrogate ``max(-A * ratio, -A * clip(ratio, 1 - clip_eps,
    1 + clip_eps))`` with ``ratio = exp(new_logp - old_logp)``. Value: the clipped value loss
    of PPO's reference implementation (OpenAI baselines ppo2),
    ``0.5 * max((v - R)^2, (old_v + clip(v - old_v, -value_clip, value_clip) - R)^2)``. Both
    are means over the real tokens of ``mask``; ``loss = policy + vf_coef * value``. Old
    log-probabilities, old values, advantages and returns are constants (no gradient).

    Metrics, all scalars: ``policy_loss``, ``value_loss``; ``approx_kl``, the mean of
    ``(ratio - 1) - log(ratio)``, an unbiased and nonnegative estimate of KL(old || new) on
    tokens sampled from the old policy; ``clip_fraction``, the fraction of real tokens whose
    ratio lies outside ``[1 - clip_eps, 1 + clip_eps]`` (as in baselines; the clipped term
    binds only for those whose advantage pushes the ratio further out). With no real token
    the loss and every metric are 0, and padded positions affect neither loss nor gradient.
    """
    mask = _real(mask)
    new_logp = _on(mask, new_logp)
    new_values = _on(mask, new_values)
    old_logp, advantages, old_values, returns = (
        jax.lax.stop_gradient(_on(mask, x)) for x in (old_logp, advantages, old_values, returns)
    )
    clip_eps = jnp.asarray(clip_eps, jnp.float32)
    value_clip = jnp.asarray(value_clip, jnp.float32)

    log_ratio = new_logp - old_logp
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    policy_loss = _masked_mean(jnp.maximum(unclipped, clipped), mask)

    v_clipped = old_values + jnp.clip(new_values - old_values, -value_clip, value_clip)
    v_err = jnp.maximum(jnp.square(new_values - returns), jnp.square(v_clipped - returns))
    value_loss = 0.5 * _masked_mean(v_err, mask)

    loss = policy_loss + jnp.asarray(vf_coef, jnp.float32) * value_loss
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "approx_kl": _masked_mean(jax.lax.stop_gradient((ratio - 1.0) - log_ratio), mask),
        "clip_fraction": _masked_mean(
            jax.lax.stop_gradient(jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), mask
        ),
    }
    return loss, metrics


class KLController(NamedTuple):
    """The KL-penalty coefficient of `token_rewards` and its controller (Ziegler et al. 2019,
    §2.2), for tuning the program model (ELM §7).

    ``coef`` is the current coefficient; ``target`` the KL per program to aim at, or None for
    a fixed coefficient; ``horizon`` how many samples it takes to move the coefficient by the
    full proportional error. The fields may be Python floats (on the host) or arrays (under
    jit; a NamedTuple is a pytree, and a None target is no leaf).
    """

    coef: float | jax.Array
    target: float | jax.Array | None = None
    horizon: float | jax.Array = 10000.0


def update_kl(
    ctrl: KLController, observed_kl: float | jax.Array, n_steps: int | jax.Array
) -> KLController:
    """The controller after a PPO step that saw ``n_steps`` samples (programs) whose mean KL
    to the reference model was ``observed_kl`` (Ziegler et al. 2019, §2.2; ELM §7).

    ``error = clip(observed_kl / target - 1, -0.2, 0.2)`` and
    ``coef *= 1 + error * n_steps / horizon``: the coefficient rises when the policy drifts
    further than the target and falls when it stays closer. With ``target=None`` the
    controller is returned unchanged. Python numbers in give Python numbers out; arrays or
    tracers give arrays.
    """
    if ctrl.target is None:
        return ctrl
    ratio = observed_kl / ctrl.target - 1.0
    if isinstance(ratio, jax.Array):
        error = jnp.clip(ratio, -0.2, 0.2)
    else:
        error = min(max(ratio, -0.2), 0.2)
    return ctrl._replace(coef=ctrl.coef * (1.0 + error * n_steps / ctrl.horizon))
