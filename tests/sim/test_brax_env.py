"""The Sodarace brax environment: shapes, jit and vmap, agreement with the plain simulator,
terrains, the registry, brax's PPO and a QDax MAP-Elites run on MLP controllers."""

from __future__ import annotations

import functools
import subprocess
import sys

import brax.envs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jelm.sim as sim
from jelm.sim import backends
from jelm.sim.brax_env import SodaraceEnv, init_mlp, make_scoring_fn


def _zero_rollout(env: SodaraceEnv, steps: int, key: jax.Array | None = None):
    """States after each of ``steps`` zero-action steps (stacked), jitted."""
    key = jax.random.PRNGKey(0) if key is None else key

    def body(state, _):
        state = env.step(state, jnp.zeros(env.action_size))
        return state, state

    return jax.jit(lambda k: jax.lax.scan(body, env.reset(k), None, length=steps)[1])(key)


def test_reset_and_step_have_the_documented_shapes_and_dtypes():
    env = SodaraceEnv("square")  # 5 joints, padded to 8; 3 muscles
    assert (env.n_joints, env.n_muscles) == (8, 3)
    assert env.observation_size == 4 * 8 + 5
    assert env.action_size == 6
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state = jax.jit(env.step)(state, jnp.full(env.action_size, 0.5))
    assert state.obs.shape == (env.observation_size,) and state.obs.dtype == jnp.float32
    for value in (state.reward, state.done, *state.metrics.values(), state.info["time_out"]):
        assert value.shape == () and value.dtype == jnp.float32
    assert state.pipeline_state.pos.shape == (8, 2)
    assert state.pipeline_state.step == env.action_repeat
    obs = np.asarray(state.obs)
    rel_pos, rel_vel = obs[:16].reshape(8, 2), obs[16:32].reshape(8, 2)
    assert np.all(rel_pos[5:] == 0.0) and np.all(rel_vel[5:] == 0.0)  # padding joints
    assert np.all(np.abs(rel_pos[:5]) > 0.0)
    np.testing.assert_allclose(rel_pos[:5].sum(axis=0), 0.0, atol=1e-4)  # about the COM
    clock = 3.0 * env.action_repeat / 60.0
    np.testing.assert_allclose(obs[-2:], [np.sin(clock), np.cos(clock)], rtol=1e-5)
    with pytest.raises(ValueError, match="has no muscles"):
        SodaraceEnv({"joints": [[0.0, 0.0], [1.0, 0.0]], "muscles": [[0, 1, {}]]})


def test_zero_action_is_the_plain_simulator():
    """Bit for bit: the env steps ``jelm.sim``'s XLA step with the walker's own muscles."""
    env = SodaraceEnv("galloper", "hills", action_repeat=5)  # a gait on slopes
    states = _zero_rollout(env, 12)
    frames = sim.rollout(env.walker, env.terrain, steps=60, record_every=5, backend="xla")
    np.testing.assert_array_equal(np.asarray(states.pipeline_state.pos), frames[0, 1:])
    fitness = sim.evaluate(env.walker, env.terrain, steps=60, backend="xla").fitness[0]
    np.testing.assert_allclose(states.metrics["displacement"].sum(), fitness, atol=1e-4)
    np.testing.assert_allclose(states.reward.sum() * float(env.dt), fitness, atol=1e-4)


@pytest.mark.slow  # ~6 s
def test_jit_and_vmap_give_the_single_environment_results():
    env = SodaraceEnv("galloper", reset_noise=0.5)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (4, env.action_size), minval=-1.0)
    many = jax.jit(jax.vmap(env.step))(jax.jit(jax.vmap(env.reset))(keys), actions)
    assert many.obs.shape == (4, env.observation_size) and many.reward.shape == (4,)
    starts = np.asarray(many.pipeline_state.pos)
    assert not np.allclose(starts[0], starts[1])  # the reset noise differs by key
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    # to float tolerance, not bit for bit: batches of 4 and of 1 are programs of other
    # shapes, which round alike only under the FMA pin (jelm/sim/README.md,
    # "Determinism"), and a process that started JAX before importing jelm.sim lacks it;
    # velocities (differences over dt) carry those last bits into the 4th digit
    for row in range(4):
        one = step(reset(keys[row]), actions[row])
        np.testing.assert_allclose(many.obs[row], one.obs, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(many.reward[row], one.reward, rtol=1e-3, atol=1e-3)


@pytest.mark.slow  # ~6 s
def test_actions_offset_the_walkers_muscles():
    env = SodaraceEnv("square")
    own = env.walker
    muscles = np.flatnonzero(np.asarray(own.muscle[0]))
    zero = env.drive(jnp.zeros(env.action_size))
    np.testing.assert_array_equal(zero.amplitude, own.amplitude)
    np.testing.assert_array_equal(zero.phase, own.phase)
    driven = env.drive(jnp.asarray([-1.0, -0.5, 1.0, 0.5, 0.0, -1.0]))
    np.testing.assert_allclose(driven.amplitude[0, muscles], [0.0, 5.0, 10.0])  # capped at 10
    shifts = np.asarray([0.25, 0.0, -0.5])
    np.testing.assert_allclose(driven.phase[0, muscles], np.asarray(own.phase[0, muscles]) + shifts)
    bones = ~np.asarray(own.muscle[0])
    np.testing.assert_array_equal(driven.amplitude[0, bones], own.amplitude[0, bones])
    # Actions beyond [-1, 1] act as the bound, and a non-zero action changes the motion.
    start = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    far = step(start, jnp.full(env.action_size, 3.0))
    np.testing.assert_array_equal(far.obs, step(start, jnp.ones(env.action_size)).obs)
    assert not np.allclose(far.obs, step(start, jnp.zeros(env.action_size)).obs)


@pytest.mark.slow  # compiles the step for several terrains or backends
def test_terrain_changes_the_dynamics_and_the_direction_of_progress():
    flat, hills = (_zero_rollout(SodaraceEnv("galloper", t), 20) for t in ("flat", "hills"))
    gap = np.abs(np.asarray(flat.pipeline_state.pos) - np.asarray(hills.pipeline_state.pos))
    assert gap.max() > 0.5
    # On right_wall progress is leftwards: the reward is the leftward speed.
    env = SodaraceEnv("galloper", sim.right_wall())
    states = _zero_rollout(env, 20)
    real = np.asarray(env.walker.joint_mask[0])
    com_x = np.asarray(states.pipeline_state.pos)[:, real, 0].mean(axis=1)
    start_x = np.asarray(env.reset(jax.random.PRNGKey(0)).pipeline_state.pos)[real, 0].mean()
    np.testing.assert_allclose(
        states.metrics["displacement"].sum(), -(com_x[-1] - start_x), atol=1e-4
    )


def test_episode_length_and_non_finite_states_end_episodes():
    env = SodaraceEnv("square", episode_length=3)
    states = _zero_rollout(env, 3)
    np.testing.assert_array_equal(states.done, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(states.info["time_out"], [0.0, 0.0, 1.0])
    start = env.reset(jax.random.PRNGKey(0))
    broken = start.replace(
        pipeline_state=sim.SimState(
            pos=start.pipeline_state.pos,
            vel=start.pipeline_state.vel.at[0, 0].set(jnp.nan),
            step=start.pipeline_state.step,
        )
    )
    out = jax.jit(env.step)(broken, jnp.zeros(env.action_size))
    assert float(out.done) == 1.0 and float(out.reward) == 0.0
    assert float(out.info["time_out"]) == 0.0


def test_registry_builds_the_environment_and_jelm_sim_does_not_import_brax():
    env = brax.envs.get_environment("sodarace", walker="galloper", terrain="hills")
    assert isinstance(env, SodaraceEnv) and env.n_muscles == 8 and env.backend == "xla"
    assert float(env.terrain.ground.max()) > 1.0
    code = "import sys, jelm.sim; print(any(m.split('.')[0] == 'brax' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # compiles the step for several terrains or backends
def test_native_backend_agrees_with_xla_and_runs_under_vmap():
    reason = backends.get("native").why_not()
    if reason is not None:
        pytest.skip(f"native backend unavailable: {reason}")
    envs = {name: SodaraceEnv("galloper", "hills", backend=name) for name in ("xla", "native")}
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    actions = jax.random.uniform(jax.random.PRNGKey(3), (3, 16), minval=-1.0)
    out = {}
    for name, env in envs.items():
        assert env.backend == name
        out[name] = jax.jit(jax.vmap(env.step))(jax.vmap(env.reset)(keys), actions)
    np.testing.assert_allclose(
        out["native"].pipeline_state.pos, out["xla"].pipeline_state.pos, rtol=1e-4, atol=1e-4
    )
    single = jax.jit(envs["native"].step)(envs["native"].reset(keys[1]), actions[1])
    np.testing.assert_array_equal(single.pipeline_state.pos, out["native"].pipeline_state.pos[1])


@pytest.mark.slow  # half a minute of CPU
def test_brax_ppo_trains_a_controller_that_beats_the_walkers_own_gait():
    """A few PPO iterations (about 31k environment steps): the deterministic evaluation
    return rises above the untrained policy's and above the zero action's (the square's
    own gait), averaged over 16 noisy resets. Learning this short is noisy across seeds;
    the seed is fixed, and CPU runs are deterministic."""
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    env = brax.envs.get_environment("sodarace", walker="square", reset_noise=1.0)
    episode = 30
    evals: list[float] = []
    ppo.train(
        env,
        num_timesteps=30_000,
        episode_length=episode,
        num_envs=32,
        batch_size=32,
        num_minibatches=4,
        unroll_length=10,
        num_updates_per_batch=4,
        learning_rate=1e-3,
        entropy_cost=1e-3,
        discounting=0.95,
        normalize_observations=True,
        num_evals=2,
        num_eval_envs=16,
        deterministic_eval=True,
        seed=1,
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=(32, 32),
            value_hidden_layer_sizes=(32, 32),
        ),
        progress_fn=lambda _, metrics: evals.append(float(metrics["eval/episode_reward"])),
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    own_gait = float(
        jnp.mean(jax.vmap(lambda k: _zero_rollout(env, episode, k).reward.sum())(keys))
    )
    assert len(evals) == 2
    before, after = evals
    assert after > before + 20.0, evals
    assert after > own_gait + 20.0, (evals, own_gait)


@pytest.mark.slow  # half a minute of CPU
def test_qdax_map_elites_evolves_mlp_controllers():
    from qdax.core.containers.mapelites_repertoire import compute_euclidean_centroids
    from qdax.core.emitters.mutation_operators import isoline_variation
    from qdax.core.emitters.standard_emitters import MixingEmitter
    from qdax.core.map_elites import MAPElites
    from qdax.utils.metrics import default_qd_metrics

    env = SodaraceEnv("square")
    episode, population = 20, 16
    sizes = [env.observation_size, 8, env.action_size]
    scoring_fn = jax.jit(make_scoring_fn(env, episode))
    genotypes = jax.vmap(lambda k: init_mlp(k, sizes))(
        jax.random.split(jax.random.PRNGKey(0), population)
    )

    # The scores are the environment's: a zero network is the zero action, the walker's
    # own gait, whose fitness is the plain simulator's over the same horizon.
    zeros = jax.tree_util.tree_map(jnp.zeros_like, genotypes)
    fitness, descriptors, extra = scoring_fn(zeros, jax.random.PRNGKey(0))
    own = sim.evaluate(env.walker, env.terrain, steps=episode * env.action_repeat, backend="xla")
    np.testing.assert_allclose(fitness, own.fitness[0], atol=1e-4)
    np.testing.assert_array_equal(descriptors, 0.0)
    np.testing.assert_array_equal(extra["alive"], 1.0)

    emitter = MixingEmitter(
        mutation_fn=None,
        variation_fn=functools.partial(isoline_variation, iso_sigma=0.05, line_sigma=0.1),
        variation_percentage=1.0,
        batch_size=population,
    )
    map_elites = MAPElites(
        scoring_function=scoring_fn,
        emitter=emitter,
        metrics_function=functools.partial(default_qd_metrics, qd_offset=50.0),
    )
    centroids = compute_euclidean_centroids(grid_shape=(5, 5), minval=0.0, maxval=1.0)
    repertoire, emitter_state, first = map_elites.init(genotypes, centroids, jax.random.PRNGKey(1))
    update = jax.jit(map_elites.update)
    key = jax.random.PRNGKey(2)
    for _ in range(5):
        key, sub = jax.random.split(key)
        repertoire, emitter_state, metrics = update(repertoire, emitter_state, sub)
    assert float(metrics["coverage"]) >= float(first["coverage"]) > 0.0
    assert float(metrics["qd_score"]) > float(first["qd_score"])
    # An elite scores again what the repertoire holds for it (reset is deterministic), to
    # within rounding: scored alone it runs in a program of another batch shape, and the
    # closed loop of controller and walker carries last-bit differences to the third digit
    # of the fitness and of the descriptors (mean action offsets, in [0, 1])
    best = int(jnp.argmax(repertoire.fitnesses[:, 0]))
    elite = jax.tree_util.tree_map(lambda a: a[best : best + 1], repertoire.genotypes)
    again, again_desc, _ = scoring_fn(elite, jax.random.PRNGKey(9))
    np.testing.assert_allclose(again[0], repertoire.fitnesses[best, 0], rtol=1e-2)
    np.testing.assert_allclose(again_desc[0], repertoire.descriptors[best], atol=1e-2)
    assert np.all((np.asarray(again_desc) >= 0.0) & (np.asarray(again_desc) <= 1.0))
