"""jelm.rl.ppo: token rewards, GAE, whitening, the PPO loss and the adaptive KL controller."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.rl.ppo import (
    KLController,
    gae,
    ppo_loss,
    token_rewards,
    update_kl,
    whiten,
    whiten_groups,
)

#: Two rows of three slots: the first is all real, the second has two real tokens.
MASK = np.array([[True, True, True], [True, True, False]])
GAMMA, LAM = 0.9, 0.8  # gamma * lam = 0.72
REWARDS = np.array([[0.1, -0.2, 1.0], [0.0, 2.0, 5.0]], np.float32)  # 5.0 is padding
VALUES = np.array([[0.5, 0.4, 0.2], [1.0, 0.5, 9.0]], np.float32)  # 9.0 is padding
# Row 0, from the end:
#   t=2: delta = 1.0 + 0.9 * 0 - 0.2 = 0.8;                A = 0.8
#   t=1: delta = -0.2 + 0.9 * 0.2 - 0.4 = -0.42;           A = -0.42 + 0.72 * 0.8 = 0.156
#   t=0: delta = 0.1 + 0.9 * 0.4 - 0.5 = -0.04;            A = -0.04 + 0.72 * 0.156 = 0.07232
# Row 1 (the episode ends at t=1, so V_2 counts as 0 and t=2 is ignored):
#   t=1: delta = 2.0 + 0.9 * 0 - 0.5 = 1.5;                A = 1.5
#   t=0: delta = 0.0 + 0.9 * 0.5 - 1.0 = -0.55;            A = -0.55 + 0.72 * 1.5 = 0.53
GAE_ADV = np.array([[0.07232, 0.156, 0.8], [0.53, 1.5, 0.0]], np.float32)
# returns = A + V on real positions: 0.07232 + 0.5, 0.156 + 0.4, 0.8 + 0.2; 0.53 + 1, 1.5 + 0.5.
GAE_RET = np.array([[0.57232, 0.556, 1.0], [1.53, 2.0, 0.0]], np.float32)

# The PPO case: one row, four real tokens and one padded. old_logp = 0, so ratio = exp(new).
RATIOS = np.array([1.1, 1.5, 0.5, 0.7], np.float32)
ADV = np.array([1.0, 1.0, 1.0, -1.0], np.float32)
# With clip_eps = 0.2 the ratio is clipped to [0.8, 1.2]; per token max(-A r, -A clip(r)):
#   1.1, A=+1: inside the range                     -> max(-1.1, -1.1) = -1.1
#   1.5, A=+1: clipped, the clipped term binds      -> max(-1.5, -1.2) = -1.2
#   0.5, A=+1: outside, but the unclipped term binds -> max(-0.5, -0.8) = -0.5
#   0.7, A=-1: clipped, the clipped term binds      -> max(0.7, 0.8) = 0.8
# policy = (-1.1 - 1.2 - 0.5 + 0.8) / 4 = -0.5; three of four ratios are outside the range.
POLICY_LOSS, CLIP_FRACTION = -0.5, 0.75
OLD_V = np.array([0.0, 0.0, 0.0, 1.0], np.float32)
NEW_V = np.array([0.1, 0.5, 0.5, 1.0], np.float32)
RET = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
# With value_clip = 0.2, per token max((v - R)^2, (old + clip(v - old, +-0.2) - R)^2):
#   v=0.1, R=1: inside            -> (0.1 - 1)^2 = 0.81
#   v=0.5, R=1: clipped to 0.2    -> max(0.25, 0.64) = 0.64
#   v=0.5, R=0: clipped to 0.2    -> max(0.25, 0.04) = 0.25
#   v=1.0, R=0: inside            -> 1.0
# value = 0.5 * (0.81 + 0.64 + 0.25 + 1.0) / 4 = 0.5 * 0.675 = 0.3375
VALUE_LOSS = 0.3375
VF_COEF = 0.1  # loss = -0.5 + 0.1 * 0.3375 = -0.46625
LOSS = -0.46625


def ppo_case(pad: float = 0.0) -> dict[str, np.ndarray]:
    """The PPO case as [1, 5] arrays, the fifth slot padded and filled with ``pad``."""

    def row(x):
        return np.append(x, np.float32(pad))[None, :].astype(np.float32)

    return {
        "new_logp": row(np.log(RATIOS)),
        "old_logp": row(np.zeros(4)),
        "advantages": row(ADV),
        "new_values": row(NEW_V),
        "old_values": row(OLD_V),
        "returns": row(RET),
        "mask": np.array([[True, True, True, True, False]]),
    }


KW = {"clip_eps": 0.2, "value_clip": 0.2, "vf_coef": VF_COEF}


def prefix_mask(lengths, t: int) -> np.ndarray:
    return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


# --- token_rewards ---------------------------------------------------------------------------


def test_token_rewards_score_on_last_real_token_and_kl_everywhere():
    mask = prefix_mask([3, 1, 4, 0], 4)
    rng = np.random.default_rng(0)
    logp = rng.normal(size=(4, 4)).astype(np.float32)
    ref = rng.normal(size=(4, 4)).astype(np.float32)
    score = np.array([2.0, -1.0, 5.0, 7.0], np.float32)
    rewards, kl = token_rewards(score, logp, ref, mask, 0.1)
    want_kl = np.where(mask, logp - ref, 0.0)
    np.testing.assert_allclose(kl, want_kl, rtol=1e-6, atol=1e-7)
    want = -0.1 * want_kl
    want[0, 2] += 2.0
    want[1, 0] += -1.0
    want[2, 3] += 5.0  # row 3 has no real token: no score, no penalty
    np.testing.assert_allclose(rewards, want, rtol=1e-6, atol=1e-6)
    assert rewards.dtype == jnp.float32 and kl.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(rewards)[3], 0.0)


def test_token_rewards_kl_coef_zero_leaves_only_the_score():
    mask = prefix_mask([2, 3], 3)
    logp = np.full((2, 3), -1.0, np.float32)
    rewards, _ = token_rewards(np.array([1.5, -2.0]), logp, 2 * logp, mask, 0.0)
    np.testing.assert_array_equal(rewards, [[0.0, 1.5, 0.0], [0.0, 0.0, -2.0]])


# --- gae -------------------------------------------------------------------------------------


def test_gae_hand_computed():
    adv, ret = gae(REWARDS, VALUES, MASK, GAMMA, LAM)
    np.testing.assert_allclose(adv, GAE_ADV, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, GAE_RET, rtol=1e-5, atol=1e-6)


def test_gae_lam_one_is_discounted_return_minus_value():
    """With lam = 1 the advantage telescopes to the discounted return-to-go minus V_t."""
    rng = np.random.default_rng(1)
    mask = prefix_mask([5, 3], 5)
    r = rng.normal(size=(2, 5)).astype(np.float32)
    v = rng.normal(size=(2, 5)).astype(np.float32)
    adv, ret = gae(r, v, mask, 0.95, 1.0)
    want = np.zeros((2, 5), np.float32)
    for b in range(2):
        g = 0.0
        for t in reversed(range(int(mask[b].sum()))):
            g = r[b, t] + 0.95 * g
            want[b, t] = g
    np.testing.assert_allclose(ret, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, np.where(mask, want - v, 0.0), rtol=1e-5, atol=1e-5)


# --- whiten ----------------------------------------------------------------------------------


def test_whiten_mean_zero_std_one_over_real_positions():
    rng = np.random.default_rng(2)
    mask = prefix_mask([7, 2, 5], 8)
    x = (3.0 + 4.0 * rng.normal(size=(3, 8))).astype(np.float32)
    w = np.asarray(whiten(x, mask))
    assert abs(w[mask].mean()) < 1e-5
    assert abs(w[mask].std() - 1.0) < 1e-4
    np.testing.assert_array_equal(w[~mask], 0.0)
    # Whitening is affine on the real positions: it keeps their order and relative spacing.
    real = x[mask]
    np.testing.assert_allclose(w[mask], (real - real.mean()) / real.std(), rtol=1e-4, atol=1e-5)


def test_whiten_groups_whitens_each_group_on_its_own():
    """Rows of a group are normalised by their group's real positions only: the same as
    whitening the group alone, and one group's scale does not reach another's."""
    rng = np.random.default_rng(4)
    mask = prefix_mask([7, 2, 5, 8, 3], 8)
    x = (3.0 + 4.0 * rng.normal(size=(5, 8))).astype(np.float32)
    x[[1, 3]] *= 100.0  # group 1 lives on another scale
    groups = np.asarray([0, 1, 0, 1, 2])
    w = np.asarray(whiten_groups(x, mask, groups, 3))
    for g in range(3):
        rows = groups == g
        alone = np.asarray(whiten(x[rows], mask[rows]))
        np.testing.assert_allclose(w[rows], alone, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(w[~mask], 0.0)
    one = np.asarray(whiten_groups(x, mask, np.zeros(5, np.int32), 1))
    np.testing.assert_allclose(one, np.asarray(whiten(x, mask)), rtol=1e-4, atol=1e-5)


def test_whiten_without_shift_keeps_the_mean():
    rng = np.random.default_rng(3)
    mask = prefix_mask([4, 6], 6)
    x = (2.5 + 3.0 * rng.normal(size=(2, 6))).astype(np.float32)
    w = np.asarray(whiten(x, mask, shift_mean=False))
    real = x[mask]
    assert abs(w[mask].mean() - real.mean()) < 1e-4
    assert abs(w[mask].std() - 1.0) < 1e-4
    np.testing.assert_array_equal(w[~mask], 0.0)


# --- ppo_loss --------------------------------------------------------------------------------


def test_ppo_loss_hand_computed():
    loss, m = ppo_loss(**ppo_case(), **KW)
    assert math.isclose(float(m["policy_loss"]), POLICY_LOSS, abs_tol=1e-6)
    assert math.isclose(float(m["value_loss"]), VALUE_LOSS, abs_tol=1e-6)
    assert math.isclose(float(loss), LOSS, abs_tol=1e-6)
    assert math.isclose(float(m["clip_fraction"]), CLIP_FRACTION, abs_tol=1e-7)
    # approx_kl = mean((r - 1) - log r) over the four real tokens.
    want_kl = float(np.mean((RATIOS.astype(np.float64) - 1) - np.log(RATIOS.astype(np.float64))))
    assert math.isclose(float(m["approx_kl"]), want_kl, rel_tol=1e-4)
    assert set(m) == {"policy_loss", "value_loss", "approx_kl", "clip_fraction"}
    assert all(v.shape == () for v in m.values())


def test_ppo_loss_on_policy_ratio_one_is_minus_mean_advantage():
    """At ratio 1 nothing is clipped and the surrogate is -mean(A); its gradient in new_logp
    is -A / n per real token (the policy-gradient step), and zero at padded tokens."""
    case = ppo_case()
    case["new_logp"] = case["old_logp"].copy()
    _, m = ppo_loss(**case, **KW)
    assert math.isclose(float(m["policy_loss"]), -float(ADV.mean()), abs_tol=1e-6)
    assert float(m["clip_fraction"]) == 0.0 and abs(float(m["approx_kl"])) < 1e-7

    def f(new_logp):
        return ppo_loss(**{**case, "new_logp": new_logp}, **KW)[0]

    g = np.asarray(jax.grad(f)(jnp.asarray(case["new_logp"])))
    np.testing.assert_allclose(g[0], np.append(-ADV / 4, 0.0), atol=1e-6)


# --- padded positions ------------------------------------------------------------------------


def test_padded_positions_change_no_result():
    rng = np.random.default_rng(4)
    b, t = 3, 6
    mask = prefix_mask([6, 2, 4], t)
    arrays = {k: rng.normal(size=(b, t)).astype(np.float32) for k in "abcdef"}

    def junk(x, fill):
        return np.where(mask, x, np.float32(fill))

    def results(fill):
        a = {k: junk(v, fill) for k, v in arrays.items()}
        rew, kl = token_rewards(np.array([1.0, 2.0, 3.0]), a["a"], a["b"], mask, 0.05)
        adv, ret = gae(junk(np.asarray(rew), fill), a["c"], mask, 0.99, 0.95)
        loss, m = ppo_loss(
            a["d"], a["e"], junk(np.asarray(adv), fill), a["f"], a["c"],
            junk(np.asarray(ret), fill), mask, **KW,
        )  # fmt: skip
        grad = jax.grad(
            lambda nl, nv: ppo_loss(nl, a["e"], adv, nv, a["c"], ret, mask, **KW)[0],
            argnums=(0, 1),
        )(jnp.asarray(a["d"]), jnp.asarray(a["f"]))
        out = [rew, kl, adv, ret, whiten(a["a"], mask), loss, *m.values(), *grad]
        return [np.asarray(x) for x in out]

    base = results(0.0)
    for fill in (123.0, -1e6, np.inf, np.nan):
        for x, y in zip(base, results(fill), strict=True):
            np.testing.assert_array_equal(x, y)
    # and the gradients do not leak into padded positions
    for g in base[-2:]:
        np.testing.assert_array_equal(g[~mask], 0.0)


def test_all_false_mask_gives_finite_zeros():
    mask = np.zeros((2, 4), bool)
    x = np.ones((2, 4), np.float32)
    rew, kl = token_rewards(np.array([3.0, 4.0]), x, 2 * x, mask, 0.1)
    adv, ret = gae(x, x, mask, 0.9, 0.8)
    for a in (rew, kl, adv, ret, whiten(x, mask), whiten(x, mask, shift_mean=False)):
        np.testing.assert_array_equal(a, 0.0)
    loss, m = ppo_loss(x, 0 * x, x, x, 0 * x, 2 * x, mask, **KW)
    assert float(loss) == 0.0
    assert all(float(v) == 0.0 for v in m.values())
    grads = jax.grad(lambda nl, nv: ppo_loss(nl, 0 * x, x, nv, 0 * x, 2 * x, mask, **KW)[0], (0, 1))
    for g in grads(jnp.asarray(x), jnp.asarray(x)):
        np.testing.assert_array_equal(g, 0.0)


# --- jit -------------------------------------------------------------------------------------


def test_functions_run_under_jit():
    rew, kl = jax.jit(token_rewards)(np.array([1.0, 2.0]), REWARDS, VALUES, MASK, 0.1)
    rew0, kl0 = token_rewards(np.array([1.0, 2.0]), REWARDS, VALUES, MASK, 0.1)
    np.testing.assert_allclose(rew, rew0, rtol=1e-6)
    np.testing.assert_allclose(kl, kl0, rtol=1e-6)

    adv, ret = jax.jit(gae)(REWARDS, VALUES, MASK, GAMMA, LAM)
    np.testing.assert_allclose(adv, GAE_ADV, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, GAE_RET, rtol=1e-5, atol=1e-6)

    w = jax.jit(whiten, static_argnames="shift_mean")(REWARDS, MASK, shift_mean=False)
    np.testing.assert_allclose(w, whiten(REWARDS, MASK, shift_mean=False), rtol=1e-6)

    loss, m = jax.jit(lambda c, eps: ppo_loss(**c, clip_eps=eps, value_clip=0.2, vf_coef=VF_COEF))(
        ppo_case(), 0.2
    )
    assert math.isclose(float(loss), LOSS, abs_tol=1e-6)
    assert math.isclose(float(m["clip_fraction"]), CLIP_FRACTION, abs_tol=1e-7)

    ctrl = jax.jit(update_kl)(KLController(0.1, 6.0, 10000.0), jnp.float32(12.0), 256)
    assert isinstance(ctrl.coef, jax.Array)
    assert math.isclose(float(ctrl.coef), 0.1 * (1 + 0.2 * 256 / 10000), rel_tol=1e-6)


# --- KL controller ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "error"),
    [
        (12.0, 0.2),  # twice the target: 1.0, clipped to +0.2
        (6.6, 0.1),  # 10% over: +0.1
        (6.0, 0.0),  # on target: unchanged
        (5.4, -0.1),  # 10% under: -0.1
        (0.0, -0.2),  # no KL at all: -1.0, clipped to -0.2
    ],
)
def test_kl_controller_moves_the_coefficient_towards_the_target(observed, error):
    ctrl = KLController(coef=0.1, target=6.0, horizon=10000.0)
    new = update_kl(ctrl, observed, 256)
    assert math.isclose(new.coef, 0.1 * (1 + error * 256 / 10000), rel_tol=1e-9)
    assert isinstance(new.coef, float)  # Python floats stay on the host
    assert new.target == 6.0 and new.horizon == 10000.0
    if error > 0:
        assert new.coef > ctrl.coef
    elif error < 0:
        assert new.coef < ctrl.coef


def test_kl_controller_is_clipped_at_twenty_percent():
    ctrl = KLController(coef=1.0, target=1.0, horizon=100.0)
    # n_steps == horizon: one step moves the coefficient by the whole (clipped) error.
    assert math.isclose(update_kl(ctrl, 1e6, 100).coef, 1.2)
    assert math.isclose(update_kl(ctrl, 0.0, 100).coef, 0.8)
    assert math.isclose(update_kl(ctrl, 1.1, 100).coef, 1.1)


def test_kl_controller_fixed_coefficient_is_unchanged():
    ctrl = KLController(coef=0.2)
    assert ctrl.target is None
    assert update_kl(ctrl, 100.0, 512) is ctrl
    out = jax.jit(update_kl)(ctrl, jnp.float32(100.0), 512)
    assert float(out.coef) == pytest.approx(0.2) and out.target is None


def test_kl_controller_with_arrays_matches_floats():
    ctrl = KLController(jnp.float32(0.05), jnp.float32(3.0), jnp.float32(1000.0))
    for observed in (0.5, 3.3, 9.0):
        new = update_kl(ctrl, jnp.float32(observed), jnp.int32(64))
        ref = update_kl(KLController(0.05, 3.0, 1000.0), observed, 64)
        assert math.isclose(float(new.coef), ref.coef, rel_tol=1e-6)
