"""Terrain embedding networks (TENs) for stage 3 of ELM (Lehman et al., 2022, §7).

A TEN maps a terrain to ``prefix_len`` vectors of the LM's width, which the LM reads as a
soft prompt before the program text. The paper's TEN is a ResNet over an image of the
terrain; jelm offers two, both Flax linen modules used through pure ``init`` / ``apply``:

- ``"codes"`` (:class:`CodeEncoder`): one learned prefix per terrain id; it cannot
  generalise to an unseen terrain, and is the simplest baseline for a fixed distribution.
- ``"cnn"`` (:class:`ConvEncoder`): a small CNN over the occupancy image of
  :func:`jelm.rl.terrains.terrain_image`: a plain, small stand-in for the paper's ResNet.

:func:`encoder_inputs` turns terrain ids into what each kind reads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jelm.rl import terrains
from jelm.rl.terrains import TerrainDistribution

#: The initial scale of the prefixes: that of the LM's token embeddings (GPT-2's N(0, 0.02)).
PREFIX_INIT_STD = 0.02


class CodeEncoder(nn.Module):
    """One learned code per terrain: int ids ``[B]`` -> float32 ``[B, prefix_len, d_model]``."""

    n_terrains: int
    prefix_len: int
    d_model: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        codes = nn.Embed(
            num_embeddings=self.n_terrains,
            features=self.prefix_len * self.d_model,
            embedding_init=nn.initializers.normal(PREFIX_INIT_STD),
            name="codes",
        )(jnp.asarray(ids, dtype=jnp.int32))
        return codes.reshape(*codes.shape[:-1], self.prefix_len, self.d_model)


class ConvEncoder(nn.Module):
    """A small CNN over terrain images: float ``[B, H, W]`` -> float32
    ``[B, prefix_len, d_model]``.

    Each entry of ``features`` is a 3x3 convolution of stride 2 and a ReLU; the flattened
    maps go through a ReLU layer of ``hidden`` units and a linear layer to the prefix,
    initialised at the scale of the LM's token embeddings.
    """

    prefix_len: int
    d_model: int
    features: Sequence[int] = (16, 32)
    hidden: int = 128

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = jnp.asarray(images, dtype=jnp.float32)[..., None]
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), strides=(2, 2), name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        x = nn.Dense(
            self.prefix_len * self.d_model,
            kernel_init=nn.initializers.normal(PREFIX_INIT_STD),
            name="out",
        )(x)
        return x.reshape(x.shape[0], self.prefix_len, self.d_model)


#: The TEN kinds by name.
ENCODERS: dict[str, type[nn.Module]] = {"codes": CodeEncoder, "cnn": ConvEncoder}


def _check_kind(kind: str) -> None:
    if kind not in ENCODERS:
        raise ValueError(f"unknown terrain encoder {kind!r}; choose one of {sorted(ENCODERS)}")


def make_encoder(kind: str, n_terrains: int, prefix_len: int, d_model: int) -> nn.Module:
    """The TEN of ``kind`` (``"codes"`` or ``"cnn"``) for a distribution of ``n_terrains``
    terrains and a soft prompt of ``prefix_len`` vectors of width ``d_model``."""
    _check_kind(kind)
    if kind == "codes":
        return CodeEncoder(n_terrains=n_terrains, prefix_len=prefix_len, d_model=d_model)
    return ConvEncoder(prefix_len=prefix_len, d_model=d_model)


@functools.cache
def _images(dist: TerrainDistribution) -> jax.Array:
    """The rendered images of ``dist`` on the device, rendered once per distribution
    (concrete even when first asked for while a function is traced)."""
    with jax.ensure_compile_time_eval():
        return jnp.asarray(terrains.images(dist))


def encoder_inputs(kind: str, dist: TerrainDistribution, ids: jax.Array) -> jax.Array:
    """What the TEN of ``kind`` reads for terrain ids ``ids`` of ``dist``: the ids
    themselves (int32) for ``"codes"``, the terrains' images (float32 ``[..., H, W]``)
    for ``"cnn"``. Traceable in ``ids``; the images are rendered once per distribution."""
    _check_kind(kind)
    ids = jnp.asarray(ids, dtype=jnp.int32)
    if kind == "codes":
        return ids
    return _images(dist)[ids]
