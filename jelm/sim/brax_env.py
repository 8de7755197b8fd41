"""Sodarace as a brax environment: a policy drives the muscles of one fixed walker.

The walker and physics are the ELM paper's Sodarace (Lehman et al. 2022, §4 and appendix),
stepped by :func:`jelm.sim.simulate`; importing this module registers the environment
with brax as ``"sodarace"`` (``brax.envs.get_environment("sodarace", ...)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import brax.envs
import chex
import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State

from jelm.sim.backends import resolve
from jelm.sim.base import DEFAULT_PARAMS, PhysicsParams, SimState, SurfaceSpec, as_arrays
from jelm.sim.physics import init_state
from jelm.sim.seed_walkers import seed_walkers
from jelm.sim.terrain import Terrain, ground_height, make_terrain
from jelm.sim.walker import BucketShape, WalkerBatch, pack

#: The paper's amplitude cap (a muscle's length swings by at most ±50 % of its rest length).
AMPLITUDE_CAP = 10.0
#: Extra observation entries after the per-joint ones: centre-of-mass velocity (2), its
#: height above the ground below it (1), and the muscle clock's sine and cosine (2).
GLOBAL_OBS = 5


class SodaraceEnv(Env):
    """One walker on one terrain; each step holds an action for ``action_repeat`` steps.

    **Action** ``(2 M,)`` in [-1, 1] for the walker's ``M`` muscles (in link order): first
    ``M`` amplitude offsets, then ``M`` phase offsets. Muscle ``m`` runs with amplitude
    ``clip(A_m + amplitude_range * a_m, ±max(10, |A_m|))`` and phase
    ``P_m + phase_range * p_m`` cycles, where ``A_m`` and ``P_m`` are the walker's own
    values; bones stay bones. Offsets rather than target lengths, because

    * the simulator's muscle is an oscillator with target
      ``L0 * (1 + 0.05 * amplitude * sin(3 t + 2 pi phase))``: a target-length action would
      need another muscle law, that is a second physics;
    * the zero action is the walker's own gait, so the environment at zero action is the
      plain simulator, and a policy learns a correction to an evolved gait;
    * with the clock in the observation, amplitude and phase together reach every target
      in ``[0.5 L0, 1.5 L0]`` at every control step, so nothing of target control is lost.

    **Observation** ``(4 J + 5,)`` for the ``J`` padded joints: joint positions relative
    to the centre of mass ``(J, 2)``, joint velocities relative to the centre of mass's
    ``(J, 2)``, the centre of mass's velocity, its height above the ground below it, and
    ``sin, cos`` of the muscle clock ``3 t``. Padding joints are zeros. Unit joint masses,
    so the centre of mass is the mean of the joints.

    **Reward**: the forward speed of the centre of mass over the step (x displacement
    times the terrain's direction, divided by ``action_repeat * dt``), so ``sum(reward) *
    dt * action_repeat`` over an episode is the paper's fitness over that horizon; the
    metric ``displacement`` is the per-step displacement, whose episode sum is that
    fitness. ``done`` is 1 when the state goes non-finite (the step returns the previous,
    finite state then) or, when ``episode_length`` is set, after that many steps (with
    ``info["time_out"] = 1``). Leave ``episode_length`` ``None`` under brax's trainers,
    which end episodes themselves (their ``episode_length``) and mark the truncation.

    **Physics.** ``step`` calls :func:`jelm.sim.simulate` on the walker's one-row batch,
    with its amplitude and phase replaced by the action's: no physics of its own. The
    default backend is ``"xla"``, pure JAX, which brax's trainers ``jit`` and ``vmap``.
    ``backend="native"`` runs the C++ step: it works under ``jit`` and ``vmap``, but its
    FFI call batches by looping (``vmap_method="sequential"``), so a vmapped batch of N
    environments makes N one-walker calls, without the native step's lanes or threads; and
    it runs on the CPU only.

    Args:
      walker: a seed walker's name (:func:`jelm.sim.seed_walkers.seed_walkers`), a walker
        dict in the paper's layout, or an object with ``to_dict()``.
      terrain: a name of :data:`jelm.sim.TERRAINS` or an unbatched :class:`Terrain`.
      action_repeat: simulator steps (of ``params.dt``) per environment step.
      episode_length: environment steps until ``done``, or ``None`` for no time limit.
      amplitude_range: amplitude change at ``|a| = 1`` (paper units; 10 is the cap).
      phase_range: phase change at ``|p| = 1``, in cycles (0.5 reaches every phase).
      reset_noise: initial joint velocities are uniform in ``±reset_noise`` (units/s);
        0 makes ``reset`` deterministic.
      params: the simulator's physical constants.
      shape: the padded bucket (default: the smallest that fits the walker), which fixes
        the observation size.
      backend: the :mod:`jelm.sim.backends` entry that steps the physics.
    """

    def __init__(
        self,
        walker: str | Mapping[str, Any] | Any = "square",
        terrain: str | Terrain = "flat",
        action_repeat: int = 6,
        episode_length: int | None = None,
        amplitude_range: float = AMPLITUDE_CAP,
        phase_range: float = 0.5,
        reset_noise: float = 0.0,
        params: PhysicsParams = DEFAULT_PARAMS,
        shape: BucketShape | None = None,
        backend: str = "xla",
    ):
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
        if episode_length is not None and episode_length < 1:
            raise ValueError(f"episode_length must be at least 1 or None, got {episode_length}")
        if isinstance(walker, str):
            seeds = seed_walkers()
            if walker not in seeds:
                raise ValueError(f"unknown seed walker {walker!r}; choose one of {sorted(seeds)}")
            walker = seeds[walker]
        if isinstance(terrain, str):
            terrain = make_terrain(terrain)
        if terrain.is_batched:
            raise ValueError("SodaraceEnv takes one terrain, not a stack")
        self._batch: WalkerBatch = pack([walker], shape=shape)
        muscles = np.flatnonzero(np.asarray(self._batch.muscle[0] & self._batch.link_mask[0]))
        if muscles.size == 0:
            raise ValueError("the walker has no muscles, so there is nothing to control")
        self._muscles = jnp.asarray(muscles, jnp.int32)
        self._terrain = terrain
        self._surfaces = SurfaceSpec.of(terrain)
        self._params = as_arrays(params)
        chosen = resolve(backend)
        self._backend = chosen.name
        self._simulate = chosen.simulate
        self.action_repeat = action_repeat
        self.episode_length = episode_length
        self.amplitude_range = float(amplitude_range)
        self.phase_range = float(phase_range)
        self.reset_noise = float(reset_noise)

    # -- sizes and names ---------------------------------------------------------------

    @property
    def n_joints(self) -> int:
        """Padded joint count ``J`` of the observation."""
        return int(self._batch.joints.shape[-2])

    @property
    def n_muscles(self) -> int:
        """Muscles ``M`` the action drives."""
        return int(self._muscles.shape[0])

    @property
    def observation_size(self) -> int:
        """``4 J + 5`` (see the class docstring)."""
        return 4 * self.n_joints + GLOBAL_OBS

    @property
    def action_size(self) -> int:
        """``2 M``: amplitude offsets, then phase offsets."""
        return 2 * self.n_muscles

    @property
    def backend(self) -> str:
        """The :mod:`jelm.sim.backends` entry that steps the physics."""
        return self._backend

    @property
    def dt(self) -> jax.Array:
        """Simulated seconds per environment step."""
        return self._params.dt * self.action_repeat

    @property
    def walker(self) -> WalkerBatch:
        """The walker as a one-row batch with its own muscle parameters."""
        return self._batch

    @property
    def terrain(self) -> Terrain:
        """The terrain the walker runs on."""
        return self._terrain

    # -- the environment ---------------------------------------------------------------

    def reset(self, rng: jax.Array) -> State:
        """The walker placed on the terrain as :func:`jelm.sim.init_state` places it, at
        rest unless ``reset_noise`` > 0 (the only use of ``rng``)."""
        start = init_state(self._batch, self._terrain, self._traced_params())
        mask = self._batch.joint_mask[0][:, None]
        noise = jax.random.uniform(rng, start.pos.shape[1:], minval=-1.0, maxval=1.0)
        vel = jnp.where(mask, self.reset_noise * noise, 0.0)
        sim = SimState(pos=start.pos[0], vel=vel.astype(jnp.float32), step=start.step[0])
        zero = jnp.zeros((), jnp.float32)
        return State(
            pipeline_state=sim,
            obs=self._observe(sim),
            reward=zero,
            done=zero,
            metrics={"forward_speed": zero, "displacement": zero},
            info={"time_out": zero},
        )

    def step(self, state: State, action: jax.Array) -> State:
        """Hold ``action`` (clipped to [-1, 1]) for ``action_repeat`` simulator steps."""
        chex.assert_shape(action, (self.action_size,))
        sim: SimState = state.pipeline_state
        chex.assert_shape([sim.pos, sim.vel], (self.n_joints, 2))
        batch = self.drive(jnp.clip(action.astype(jnp.float32), -1.0, 1.0))
        rows = SimState(pos=sim.pos[None], vel=sim.vel[None], step=sim.step[None])
        out = self._simulate(
            batch, self._terrain, rows, self.action_repeat, self._traced_params(), self._surfaces
        )
        new = SimState(pos=out.pos[0], vel=out.vel[0], step=out.step[0])
        finite = jnp.all(jnp.isfinite(new.pos)) & jnp.all(jnp.isfinite(new.vel))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, sim)
        moved = self._centre(new.pos)[0] - self._centre(sim.pos)[0]
        displacement = jnp.where(finite, moved * self._terrain.direction, 0.0)
        speed = displacement / self.dt
        if self.episode_length is None:
            time_out = jnp.zeros((), jnp.float32)
        else:
            limit = self.episode_length * self.action_repeat
            time_out = (new.step >= limit).astype(jnp.float32)
        done = jnp.maximum(1.0 - finite.astype(jnp.float32), time_out)
        info = {**state.info, "time_out": time_out}
        return state.replace(
            pipeline_state=new,
            obs=self._observe(new),
            reward=speed,
            done=done,
            metrics={**state.metrics, "forward_speed": speed, "displacement": displacement},
            info=info,
        )

    def drive(self, action: jax.Array) -> WalkerBatch:
        """The walker's batch with the muscle amplitudes and phases of ``action`` (see the
        class docstring); the zero action gives the walker's own values exactly."""
        m = self.n_muscles
        base_amp = self._batch.amplitude[0, self._muscles]
        base_phase = self._batch.phase[0, self._muscles]
        cap = jnp.maximum(AMPLITUDE_CAP, jnp.abs(base_amp))
        amplitude = jnp.clip(base_amp + self.amplitude_range * action[:m], -cap, cap)
        phase = base_phase + self.phase_range * action[m:]
        return dataclasses.replace(
            self._batch,
            amplitude=self._batch.amplitude.at[0, self._muscles].set(amplitude),
            phase=self._batch.phase.at[0, self._muscles].set(phase),
        )

    def _traced_params(self) -> PhysicsParams:
        """The physical constants as values XLA cannot fold, as :func:`jelm.sim.evaluate`
        passes them (folded constants round differently; see :func:`jelm.sim.as_arrays`)."""
        return jax.lax.optimization_barrier(self._params)

    def _centre(self, pos: jax.Array) -> jax.Array:
        """``(2,)`` centre of mass of the walker's joints (unit masses)."""
        mask = self._batch.joint_mask[0][:, None]
        count = jnp.sum(self._batch.joint_mask[0]).astype(pos.dtype)
        return jnp.sum(jnp.where(mask, pos, 0.0), axis=0) / count

    def _observe(self, sim: SimState) -> jax.Array:
        """The observation of the class docstring, float32 ``(4 J + 5,)``."""
        mask = self._batch.joint_mask[0][:, None]
        com, com_vel = self._centre(sim.pos), self._centre(sim.vel)
        rel_pos = jnp.where(mask, sim.pos - com, 0.0)
        rel_vel = jnp.where(mask, sim.vel - com_vel, 0.0)
        ground, _ = ground_height(self._terrain, com[0])
        clock = self._params.phase_speed * sim.step.astype(jnp.float32) * self._params.dt
        obs = jnp.concatenate(
            [
                rel_pos.ravel(),
                rel_vel.ravel(),
                com_vel,
                (com[1] - ground)[None],
                jnp.stack([jnp.sin(clock), jnp.cos(clock)]),
            ]
        ).astype(jnp.float32)
        chex.assert_shape(obs, (self.observation_size,))
        return obs


brax.envs.register_environment("sodarace", SodaraceEnv)


def _restore_device_put_replicated() -> None:
    """Give ``jax`` back ``device_put_replicated`` if it lacks it: jax 0.10 removed the
    name, and brax 0.14's trainers (``brax.training.agents.ppo.train`` among them) still
    call it. JAX keeps the function in ``jax._src.api``; this puts that same function
    back under its old name, and changes nothing on a JAX that still has it."""
    try:
        jax.device_put_replicated  # noqa: B018  (raises AttributeError once removed)
    except AttributeError:
        from jax._src import api

        jax.device_put_replicated = api.device_put_replicated


_restore_device_put_replicated()


# -- neuroevolution: a small MLP policy and a QDax-style scoring function -------------------

#: Parameters of :func:`mlp_policy`: one ``(weights, bias)`` pair per layer.
MLPParams = list[tuple[jax.Array, jax.Array]]


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> MLPParams:
    """An MLP of layer ``sizes`` (``[obs, hidden..., action]``), LeCun-normal weights and
    zero biases; ``jax.vmap`` over keys gives a population."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (n_in, n_out)) / jnp.sqrt(n_in), jnp.zeros(n_out))
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_policy(params: MLPParams, obs: jax.Array) -> jax.Array:
    """A deterministic tanh MLP: actions in [-1, 1]."""
    h = obs
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return jnp.tanh(h @ w + b)


def make_scoring_fn(
    env: SodaraceEnv,
    episode_length: int,
    policy: Callable[[Any, jax.Array], jax.Array] = mlp_policy,
) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]:
    """A QDax scoring function ``(genotypes, key) -> (fitnesses, descriptors, extra)``
    (jittable) that runs ``policy(genotype, obs)`` for ``episode_length`` steps, one
    episode per genotype (a pytree with a leading population axis), all in one scan.

    fitness: ``(N,)`` the centre of mass's forward displacement over the episode (the
      paper's Sodarace fitness, §4), counted until the first ``done``.
    descriptors: ``(N, 2)`` in [0, 1]: the mean ``|amplitude offset|`` and mean
      ``|phase offset|`` of the actions, i.e. how far the controller departs from the
      walker's own gait in each respect.
    extra: ``{"alive": (N,)}`` the fraction of steps before ``done``.
    """
    m = env.n_muscles

    def one(genotype: Any, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def body(carry: tuple[State, jax.Array], _: None):
            state, alive = carry
            action = jnp.clip(policy(genotype, state.obs), -1.0, 1.0)
            state = env.step(state, action)
            usage = jnp.stack([jnp.mean(jnp.abs(action[:m])), jnp.mean(jnp.abs(action[m:]))])
            out = (alive * state.metrics["displacement"], alive * usage, alive)
            return (state, alive * (1.0 - state.done)), out

        start = (env.reset(key), jnp.ones((), jnp.float32))
        _, (moved, usage, alive) = jax.lax.scan(body, start, None, length=episode_length)
        steps = jnp.maximum(jnp.sum(alive), 1.0)
        return jnp.sum(moved), jnp.sum(usage, axis=0) / steps, jnp.sum(alive) / episode_length

    def scoring_fn(
        genotypes: Any, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        n = jax.tree_util.tree_leaves(genotypes)[0].shape[0]
        fitness, descriptors, alive = jax.vmap(one)(genotypes, jax.random.split(key, n))
        chex.assert_shape([fitness, alive], (n,))
        chex.assert_shape(descriptors, (n, 2))
        return fitness, descriptors, {"alive": alive}

    return scoring_fn
