"""The toy world: latent concepts rendered into five modalities through fixed nonlinear maps.

A latent item is ``z = centre[class] + class_spread · ε`` in ``latent_dim`` dimensions. Each
modality renders it through its own fixed, seeded two-layer tanh network that also reads a
few nuisance factors private to that modality (drawn afresh for every rendering, so they are
never shared across modalities), then adds Gaussian noise:

    x_m = W2_m · tanh(W1_m · [z ; n_m] + b1_m) + b2_m + noise · η        n_m, η ~ N(0, I)

So a modality's raw vector carries the shared concept, entangled nonlinearly with private
nuisance, in a modality-specific raw dimension: recovering a common space from paired
samples is a genuine learning problem, and the ground truth (class and latent) is known.

Everything is deterministic from seeds; every random draw comes from its own named stream
(:func:`derive_rng`), so e.g. the evaluation split never shares a draw with the memories or
with the spaces' training pairs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mcrx_toy.config import MODALITIES, RAW_DIMS, WorldConfig

#: hidden width of the rendering networks
RENDER_HIDDEN = 64
#: scale of the first rendering layer: large enough that tanh bends, small enough that it
#: does not saturate into a sign function (pre-activations get std ≈ 1.5)
RENDER_GAIN = 1.5


def _as_seed_word(key: int | str) -> int:
    """Map a stream key to a non-negative integer (strings through a stable hash)."""
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    if key < 0:
        raise ValueError(f"seed keys must be non-negative, got {key}")
    return int(key)


def derive_rng(*keys: int | str) -> np.random.Generator:
    """An independent random stream named by ``keys`` (e.g. ``(world_seed, "eval", 0)``)."""
    return np.random.default_rng(np.random.SeedSequence([_as_seed_word(k) for k in keys]))


def derive_seed(*keys: int | str) -> int:
    """A 63-bit integer seed for another library (torch), named by ``keys``."""
    state = np.random.SeedSequence([_as_seed_word(k) for k in keys]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True)
class Latents:
    """Latent items: ``classes`` (n,) int64 and ``codes`` (n, latent_dim) float64."""

    classes: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class RenderMap:
    """One modality's fixed two-layer tanh network from ``[z ; nuisance]`` to raw vectors."""

    w1: np.ndarray  # (latent_dim + nuisance_dim, RENDER_HIDDEN)
    b1: np.ndarray  # (RENDER_HIDDEN,)
    w2: np.ndarray  # (RENDER_HIDDEN, raw_dim)
    b2: np.ndarray  # (raw_dim,)


class World:
    """Class centres and rendering maps of one :class:`WorldConfig`. Build it through
    :func:`world_for` to share one instance per config."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        rng = derive_rng(config.seed, "class-centres")
        self.centres = rng.standard_normal((config.classes, config.latent_dim))  # (C, k)
        self.render_maps = {m: self._make_render_map(m) for m in MODALITIES}

    def _make_render_map(self, modality: str) -> RenderMap:
        config = self.config
        rng = derive_rng(config.seed, "render-map", modality)
        fan_in = config.latent_dim + config.nuisance_dim
        raw_dim = RAW_DIMS[modality]
        return RenderMap(
            w1=rng.standard_normal((fan_in, RENDER_HIDDEN)) * RENDER_GAIN / np.sqrt(fan_in),
            b1=rng.standard_normal(RENDER_HIDDEN) * 0.5,
            w2=rng.standard_normal((RENDER_HIDDEN, raw_dim)) / np.sqrt(RENDER_HIDDEN),
            b2=rng.standard_normal(raw_dim) * 0.5,
        )

    def sample_latents(self, count: int, rng: np.random.Generator) -> Latents:
        """``count`` latent items with uniformly drawn classes."""
        config = self.config
        classes = rng.integers(0, config.classes, size=count).astype(np.int64)  # (n,)
        spread = rng.standard_normal((count, config.latent_dim)) * config.class_spread
        return Latents(classes=classes, codes=self.centres[classes] + spread)  # codes: (n, k)

    def render(self, modality: str, latents: Latents, rng: np.random.Generator) -> np.ndarray:
        """Raw vectors of ``latents`` in ``modality``: (n, RAW_DIMS[modality]) float32. The
        nuisance factors and noise are drawn from ``rng``, i.e. private to this rendering."""
        if modality not in self.render_maps:
            raise ValueError(f"the toy world has no modality {modality!r}; it has {MODALITIES}")
        render_map = self.render_maps[modality]
        count = len(latents)
        nuisance = rng.standard_normal((count, self.config.nuisance_dim))  # (n, nuisance_dim)
        inputs = np.concatenate([latents.codes, nuisance], axis=1)  # (n, k + nuisance_dim)
        hidden = np.tanh(inputs @ render_map.w1 + render_map.b1)  # (n, RENDER_HIDDEN)
        raw = hidden @ render_map.w2 + render_map.b2  # (n, raw_dim)
        raw += self.config.noise * rng.standard_normal(raw.shape)
        return raw.astype(np.float32)


@lru_cache(maxsize=8)
def world_for(config: WorldConfig) -> World:
    """The (shared, immutable) world of ``config``."""
    return World(config)
