"""Cases computed on several forced CPU devices in a subprocess and on one device in the
test process, for bit-for-bit comparison.

``--xla_force_host_platform_device_count`` only counts when it is set before JAX starts
its CPU backend, so the multi-device side runs as ``python -m tests.devices CASE OUT``
with that flag in ``XLA_FLAGS``; :func:`on_devices` starts it and loads what it saved.
Each case is a function returning a dict of NumPy arrays, the same code on both sides.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before the JAX backend starts)
from jelm.lm.shard import ENV as LM_ENV
from jelm.sim.shard import ENV

#: Devices the subprocess forces.
DEVICES = 4
ROOT = Path(__file__).resolve().parent.parent


def _walkers(rows: int):
    """The seven seed walkers cycled over ``rows - 2`` rows, then two empty rows."""
    from jelm.sim.seed_walkers import seed_walkers

    seeds = list(seed_walkers().values())
    return [seeds[k % len(seeds)] for k in range(rows - 2)] + [None, None]


def _terrains(rows: int):
    """Flat ground (one terrain: the native lane kernel, no lookups) and a per-row stack
    of hills, tunnel and right wall (slopes, ceiling and walls; padded by repeating its
    last row)."""
    import jelm.sim as sim

    index = np.arange(rows) % 3
    return {
        "flat": sim.flat(),
        "stack": sim.stack([sim.hills(), sim.tunnel(), sim.right_wall()], index),
    }


def _meta() -> dict[str, np.ndarray]:
    """The local device count and the size of the mesh the simulator spreads over (0:
    none), under ``meta.`` keys that :func:`assert_same` skips."""
    from jelm.sim.shard import local_mesh

    mesh = local_mesh()
    return {
        "meta.devices": np.asarray(len(jax.local_devices())),
        "meta.mesh": np.asarray(0 if mesh is None else mesh.size),
    }


def simulator(backend: str) -> dict[str, np.ndarray]:
    """``evaluate`` and ``rollout`` of a batch of 9 rows (not a multiple of the device
    count) on every terrain of :func:`_terrains`, and of the user's call: a batch of 12
    placed with ``NamedSharding(mesh, P("b"))`` over every device."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jelm.sim as sim

    out: dict[str, np.ndarray] = {}
    batch = sim.pack(_walkers(9))
    for name, terrain in _terrains(9).items():
        ev = sim.evaluate(batch, terrain, steps=30, backend=backend)
        for field in ("fitness", "displacement", "descriptors", "valid"):
            out[f"{name}.{field}"] = np.asarray(getattr(ev, field))
        out[f"{name}.pos"] = np.asarray(ev.final.pos)
        out[f"{name}.vel"] = np.asarray(ev.final.vel)
        frames = sim.rollout(batch, terrain, steps=20, record_every=5, backend=backend)
        out[f"{name}.rollout"] = np.asarray(frames)
    placed = sim.pack(_walkers(12))
    mesh = Mesh(np.array(jax.devices()), ("b",))
    placed = jax.device_put(placed, NamedSharding(mesh, P("b")))
    ev = sim.evaluate(placed, sim.flat(), steps=30, backend=backend)
    out["placed.fitness"] = np.asarray(ev.fitness)
    return out | _meta()


def loop(mutation: str) -> dict[str, np.ndarray]:
    """A two-generation ELM run of the test configuration (``gp``: the host loop;
    ``direct``: the jitted device loop) in a fresh run directory: the final archive."""
    import tempfile

    from jelm.experiments.config import from_mapping
    from jelm.experiments.run import evolve
    from tests.qd.test_loop import TINY

    config = from_mapping({**TINY, "mutation": mutation, "generations": 2})
    with tempfile.TemporaryDirectory() as tmp:
        _, _, state, metrics = evolve(config, Path(tmp) / "run", log=str)
    rep = state.repertoire
    out = {
        "fitness": np.asarray(rep.fitnesses),
        "descriptors": np.asarray(rep.descriptors),
        "qd_score": np.asarray(metrics["qd_score"]),
    } | _meta()
    for name, leaf in jax.tree_util.tree_leaves_with_path(rep.genotypes):
        out["genotype" + jax.tree_util.keystr(name)] = np.asarray(leaf)
    return out


def _tiny_lm():
    """The tiny random model of ``tests/lm_fixtures.make_tiny_model`` (without its
    tokenizer: the LM cases feed token ids): its config and parameters."""
    from jelm.lm.model import ModelConfig, init_params

    config = ModelConfig(vocab_size=400, n_ctx=128, d_model=32, n_layer=2, n_head=2)
    return config, init_params(config, jax.random.key(0))


def _lm_meta() -> dict[str, np.ndarray]:
    """The local device count and the size of the LM's mesh (0: none)."""
    from jelm.lm.shard import local_mesh

    mesh = local_mesh()
    return {
        "meta.devices": np.asarray(len(jax.local_devices())),
        "meta.mesh": np.asarray(0 if mesh is None else mesh.size),
    }


def lm_sample() -> dict[str, np.ndarray]:
    """``generate`` of 11 prompts (children of shared parents and lone ones, not a multiple
    of the device count) greedy and sampled, with at most 2 and 8 rows at once (refills,
    packing): every row's tokens, padded with -1."""
    from jelm.lm.sampling import generate

    config, params = _tiny_lm()
    rng = np.random.default_rng(0)
    parents = [rng.integers(1, 400, size=n).tolist() for n in (40, 23, 9)]
    prompts = [parents[k % 3] + [k + 1, 7] for k in range(8)] + [
        rng.integers(1, 400, size=n).tolist() for n in (5, 31, 17)
    ]
    out: dict[str, np.ndarray] = {}
    for batch in (2, 8):
        for name, temperature, top_p in (("greedy", 0.0, 1.0), ("sampled", 1.0, 0.9)):
            gens = generate(
                params,
                config,
                prompts,
                jax.random.key(3),
                max_new_tokens=24,
                temperature=temperature,
                top_p=top_p,
                stop_token_ids=[5, 17, 99],
                max_batch=batch,
            )
            tokens = np.full((len(gens), 24), -1, np.int32)
            for i, gen in enumerate(gens):
                tokens[i, : len(gen.tokens)] = gen.tokens
            out[f"{name}.{batch}.tokens"] = tokens
            out[f"{name}.{batch}.stopped"] = np.asarray([g.finish_reason == "stop" for g in gens])
    return out | _lm_meta()


def lm_train() -> dict[str, np.ndarray]:
    """Three steps of ``make_step`` (gradient clipping and SGD: the parameters move by
    the summed gradients themselves, so a reordered sum shows as rounding; AdamW's first
    steps move near-zero gradient entries by about the learning rate whatever their size,
    jelm/lm/README.md, "Devices") on batches of 6 rows (not a multiple of the device count)
    with partial loss masks: each step's loss, the final parameters, and the logits of the
    first batch under the initial parameters (a forward pass, no sum over rows)."""
    import optax

    from jelm.lm import shard
    from jelm.lm.model import forward
    from jelm.lm.train import make_step

    config, params = _tiny_lm()
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5))
    step = make_step(config, optimizer)
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(3):
        tokens = rng.integers(0, 400, size=(6, 17)).astype(np.int32)
        mask = np.arange(17)[None, :] >= rng.integers(2, 12, size=(6, 1))
        batches.append((tokens, mask))

    tokens = batches[0][0]
    mesh = shard.local_mesh()
    placed = shard.split_rows(shard.pad_rows(tokens, shard.padded_rows(6, mesh)), mesh)
    inputs = placed[:, :-1]
    positions = jnp.broadcast_to(jnp.arange(16), inputs.shape)
    logits = jax.jit(forward, static_argnums=1)(
        shard.replicate(params, mesh), config, inputs, positions, jnp.ones(inputs.shape, bool)
    )
    out = {"forward.logits": np.asarray(logits)[:6]}

    opt_state = optimizer.init(params)
    for k, (tokens, mask) in enumerate(batches):
        params, opt_state, loss = step(params, opt_state, tokens, mask)
        out[f"loss.{k}"] = np.asarray(loss)
    for name, leaf in jax.tree_util.tree_leaves_with_path(params):
        out["params" + jax.tree_util.keystr(name)] = np.asarray(leaf)
    return out | _lm_meta()


def rl_sample() -> dict[str, np.ndarray]:
    """Stage 3's policy (the tiny GPT-2 of ``tests/rl/test_policy.py``, its gate open)
    sampling 7 rows (not a multiple of the device count) on three terrains, with a stop
    token: ``sample_over_devices``' tokens and masks."""
    from jelm.rl.policy import sample_over_devices
    from tests.rl.test_policy import PROMPT, _policy

    cfg, _, params = _policy("gpt2")
    params = {**params, "gate": params["gate"] + 0.7}
    ids = jnp.asarray(np.arange(7) % 3, jnp.int32)
    key = jax.random.key(4)
    free = sample_over_devices(params, cfg, ids, PROMPT, key, jnp.asarray([-1]), jnp.int32(0), 16)
    tokens = np.asarray(free.tokens)
    stops = jnp.asarray([tokens[0, 4], tokens[2, 9]], jnp.int32)  # tokens the rows write
    drawn = sample_over_devices(params, cfg, ids, PROMPT, key, stops, jnp.int32(0), 16)
    return {
        "free.tokens": tokens,
        "tokens": np.asarray(drawn.tokens),
        "mask": np.asarray(drawn.mask),
    } | _lm_meta()


def rl_update() -> dict[str, np.ndarray]:
    """Stage 3's PPO step on the tiny policy of ``tests/rl/test_policy.py`` (its gate
    open): ``make_prepare`` on 6 responses over three terrains (not a multiple of the
    device count) with ragged masks, then two ``make_update`` calls of 2 epochs of
    minibatches of 3 rows, with plain SGD (a reordered sum shows as rounding, as in
    :func:`lm_train`): the batch's advantages, returns and statistics, each call's
    metrics, and the final parameters."""
    import optax

    from jelm.rl.learner import PPOSettings, make_prepare, make_update
    from tests.rl.test_policy import PROMPT, _policy

    class SGD(PPOSettings):
        def optimizer(self) -> optax.GradientTransformation:
            return optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.05))

    settings = SGD(epochs=2, minibatch=3)
    cfg, lm, params = _policy("gpt2")
    params = {**params, "gate": params["gate"] + 0.7}
    rng = np.random.default_rng(5)
    ids = jnp.asarray(np.arange(6) % 3, jnp.int32)
    responses = jnp.asarray(rng.integers(0, 211, (6, 9)), jnp.int32)
    mask = jnp.asarray(np.arange(9)[None, :] < rng.integers(3, 10, (6, 1)))
    episode = jnp.asarray(rng.normal(size=6), jnp.float32)
    batch, stats = make_prepare()(
        params, lm, cfg, settings, ids, PROMPT, responses, mask, episode, jnp.float32(0.1), ids
    )
    out = {"batch." + k: np.asarray(v) for k, v in batch._asdict().items()}
    out |= {"stats." + k: np.asarray(v) for k, v in stats.items()}
    update = make_update(cfg, settings)
    opt_state = settings.optimizer().init(params)
    for k in range(2):
        params, opt_state, metrics = update(params, opt_state, PROMPT, batch, jax.random.key(6 + k))
        out |= {f"metrics.{k}.{name}": np.asarray(v) for name, v in metrics.items()}
    for name, leaf in jax.tree_util.tree_leaves_with_path(params):
        out["params" + jax.tree_util.keystr(name)] = np.asarray(leaf)
    return out | _lm_meta()


CASES: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "rl.sample": rl_sample,
    "rl.update": rl_update,
    "lm.sample": lm_sample,
    "lm.train": lm_train,
    "simulator.native": lambda: simulator("native"),
    "simulator.xla": lambda: simulator("xla"),
    "loop.gp": lambda: loop("gp"),
    "loop.direct": lambda: loop("direct"),
}


def on_devices(case: str, tmp: Path, devices: int = DEVICES) -> dict[str, np.ndarray]:
    """Run ``case`` in a fresh process with ``devices`` forced CPU devices; its arrays."""
    out = tmp / f"{case}.npz"
    flags = os.environ.get("XLA_FLAGS", "")
    env = os.environ | {
        ENV: "1",
        LM_ENV: "1",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # a cache of its own: programs of 4 devices written beside the workers' own
        "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax-cache"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.devices", case, str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as saved:
        return dict(saved)


def assert_same(one: dict[str, np.ndarray], many: dict[str, np.ndarray]) -> None:
    """Every array of ``one`` equals its namesake in ``many`` bit for bit (NaN == NaN),
    ``meta.`` keys aside."""
    assert sorted(one) == sorted(many)
    for name in one:
        if name.startswith("meta."):
            continue
        np.testing.assert_array_equal(one[name], many[name], err_msg=name, strict=True)


if __name__ == "__main__":
    case, path = sys.argv[1], sys.argv[2]
    np.savez(path, **CASES[case]())
