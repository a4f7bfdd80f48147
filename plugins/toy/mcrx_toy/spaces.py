"""Four small contrastive spaces of the toy world, each trained for real, CLIP-style.

toy/clip pairs image with text, toy/clap audio with text, toy/ulip pointcloud with image,
toy/haptic tactile with audio (tactile is a modality the toy plugin adds to mcrx).
Each space sees only paired samples of its own two modalities, rendered from its own latent
draws (a stream named after the space), and fits one MLP encoder per modality with the
symmetric InfoNCE loss at a fixed temperature. Nothing ties the spaces to one another: like
the real CLIP and CLAP, they agree on text only in the sense that both were trained on
texts of the same world.

Like real MCRs they keep a modality gap. At initialisation each random encoder maps its
modality into its own narrow cone (‖mean embedding‖ ≈ 0.8, the cone effect of Liang et al.,
"Mind the Gap", 2022), and contrastive training at CLIP's final temperature (0.01) aligns
the two modalities without pulling the cones together; at 0.07 the gap would almost close.

Training is cached: the weights go to ``$MCRX_CACHE_DIR/toy/`` (default
``~/.cache/mcrx/toy/``) in a safetensors file named by a fingerprint of the world and the
training config. Files are written to a temporary name and moved into place with
``os.replace``, under an advisory lock, so a crash never leaves half a file and concurrent
processes neither corrupt it nor train twice.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mcrx import Encoder, McrxError, Space, fingerprint_of
from mcrx_toy.config import (
    CORE_RAW_DIMS,
    FORMAT_VERSION,
    RAW_DIMS,
    SpaceDefinition,
    ToySpaceParams,
)
from mcrx_toy.world import derive_rng, derive_seed, world_for


class ModalityEncoderNet(nn.Module):
    """raw (raw_dim) → hidden → hidden → dim, GELU between, L2-normalised output."""

    def __init__(self, raw_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(raw_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(raw), dim=-1)  # (n, raw_dim) → (n, dim)


# -- training -------------------------------------------------------------------------------


def training_pairs(
    definition: SpaceDefinition, params: ToySpaceParams
) -> tuple[np.ndarray, np.ndarray]:
    """The space's paired training data: ``params.pairs`` latents drawn from the space's own
    stream, rendered in both of its modalities (row i of each is one latent item)."""
    world = world_for(params.world)
    stream = (params.world.seed, "space-training", definition.name, params.seed)
    latents = world.sample_latents(params.pairs, derive_rng(*stream, "latents"))
    first, second = definition.modalities
    return (
        world.render(first, latents, derive_rng(*stream, "render", first)),  # (pairs, raw_1)
        world.render(second, latents, derive_rng(*stream, "render", second)),  # (pairs, raw_2)
    )


def symmetric_info_nce(
    first: torch.Tensor, second: torch.Tensor, temperature: float
) -> torch.Tensor:
    """CLIP's loss: row i of ``first`` and ``second`` (both (B, d), normalised) match."""
    logits = first @ second.T / temperature  # (B, B)
    targets = torch.arange(len(first))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def train_encoders(
    definition: SpaceDefinition, params: ToySpaceParams
) -> dict[str, ModalityEncoderNet]:
    """Fit one encoder per modality of ``definition`` on its own paired samples."""
    first, second = definition.modalities
    raw_first, raw_second = (torch.from_numpy(x) for x in training_pairs(definition, params))
    seed_keys = (params.world.seed, definition.name, params.seed)

    # seed the initialisation without disturbing the caller's global torch random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_keys, "init"))
        nets = {
            m: ModalityEncoderNet(RAW_DIMS[m], params.hidden, definition.dim)
            for m in definition.modalities
        }
    shuffle = torch.Generator().manual_seed(derive_seed(*seed_keys, "shuffle"))

    batch_size = min(params.batch_size, params.pairs)
    # drop each epoch's ragged tail: a tiny batch has too few negatives for InfoNCE
    steps_per_epoch = params.pairs // batch_size
    total_steps = steps_per_epoch * params.epochs
    trainable = [p for net in nets.values() for p in net.parameters()]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)

    with torch.enable_grad():
        for _ in range(params.epochs):
            order = torch.randperm(params.pairs, generator=shuffle)
            for step in range(steps_per_epoch):
                batch = order[step * batch_size : (step + 1) * batch_size]  # (B,)
                loss = symmetric_info_nce(
                    nets[first](raw_first[batch]),  # (B, dim)
                    nets[second](raw_second[batch]),  # (B, dim)
                    params.temperature,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    for net in nets.values():
        net.eval().requires_grad_(False)
    return nets


# -- cache ----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where trained toy spaces are kept: ``$MCRX_CACHE_DIR/toy`` or ``~/.cache/mcrx/toy``."""
    root = os.environ.get("MCRX_CACHE_DIR") or Path.home() / ".cache" / "mcrx"
    return Path(root).expanduser() / "toy"


def cache_key(definition: SpaceDefinition, params: ToySpaceParams) -> str:
    """Fingerprint of everything the trained weights depend on."""
    # CORE_RAW_DIMS, not RAW_DIMS: adding a modality to the world must not change the keys
    # (and retrain the spaces, re-encode the memories) of spaces that do not cover it
    extra_dims = {m: RAW_DIMS[m] for m in definition.modalities if m not in CORE_RAW_DIMS}
    return fingerprint_of(
        "mcrx-toy-space",
        FORMAT_VERSION,
        definition.name,
        list(definition.modalities),
        definition.dim,
        CORE_RAW_DIMS,
        params.model_dump(mode="json"),
        *([extra_dims] if extra_dims else []),
    )


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (POSIX; elsewhere the atomic ``os.replace``
    alone keeps the file whole, at worst two processes both train)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_tensors(nets: dict[str, ModalityEncoderNet]) -> dict[str, torch.Tensor]:
    return {
        f"{modality}.{key}": value.contiguous()
        for modality, net in nets.items()
        for key, value in net.state_dict().items()
    }


def _load_cached(
    path: Path, definition: SpaceDefinition, params: ToySpaceParams
) -> dict[str, ModalityEncoderNet] | None:
    """The encoders stored at ``path``, or None when the file is missing or unusable."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        nets = {}
        for modality in definition.modalities:
            # the throwaway initialisation must not advance the caller's random state
            with torch.random.fork_rng(devices=[]):
                net = ModalityEncoderNet(RAW_DIMS[modality], params.hidden, definition.dim)
            prefix = f"{modality}."
            net.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
            nets[modality] = net.eval().requires_grad_(False)
    except Exception:  # a damaged or foreign file: train again and overwrite it
        return None
    return nets


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], key: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"cache_key": key, "format": str(FORMAT_VERSION)})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache is readable by all
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_or_train(
    definition: SpaceDefinition, params: ToySpaceParams
) -> tuple[dict[str, ModalityEncoderNet], Path]:
    """The space's encoders from the cache, training (and caching) them on a miss."""
    key = cache_key(definition, params)
    path = cache_dir() / f"{definition.name}-{key}.safetensors"
    nets = _load_cached(path, definition, params)
    if nets is not None:
        return nets, path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(path.with_suffix(".lock")):
        nets = _load_cached(path, definition, params)  # another process may have finished
        if nets is None:
            nets = train_encoders(definition, params)
            _write_atomically(path, _state_tensors(nets), key)
    return nets, path


# -- the mcrx objects -----------------------------------------------------------------------


class ToyEncoder(Encoder):
    """Embeds raw toy vectors of one modality. Items: a 2-D array (n, raw_dim), or a sequence
    of 1-D vectors (arrays, lists, or paths of ``.npy`` files holding one vector)."""

    batch_size = 4096  # a few small matrix products per batch

    def __init__(
        self, space_name: str, modality: str, network: ModalityEncoderNet, space_fingerprint: str
    ) -> None:
        self.space_name = space_name
        self.modality = modality
        self.raw_dim = RAW_DIMS[modality]
        self.dim = network.layers[-1].out_features
        self.network = network
        self._space_fingerprint = space_fingerprint

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        raw = self._raw_matrix(items)  # (n, raw_dim) float32
        with torch.no_grad():
            return self.network(torch.from_numpy(raw)).contiguous()  # (n, dim)

    def fingerprint(self) -> str:
        return fingerprint_of(self._space_fingerprint, self.modality)

    def _raw_matrix(self, items: Sequence[Any]) -> np.ndarray:
        what = f"{self.space_name} {self.modality} encoder"
        if isinstance(items, np.ndarray | torch.Tensor):
            array = np.asarray(items)
        else:
            rows = [self._raw_row(item, what) for item in items]
            if not rows:
                return np.zeros((0, self.raw_dim), dtype=np.float32)
            array = np.stack(rows)
        if array.ndim != 2:
            raise McrxError(
                f"{what}: expected raw vectors as an (n, {self.raw_dim}) array, got shape "
                f"{tuple(array.shape)}"
            )
        if array.shape[1] != self.raw_dim:
            raise McrxError(
                f"{what}: raw {self.modality} vectors of the toy world have {self.raw_dim} "
                f"numbers, got {array.shape[1]}"
            )
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise McrxError(f"{what}: expected numbers, got dtype {array.dtype}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise McrxError(f"{what}: raw vectors contain NaN or infinite values")
        return array

    def _raw_row(self, item: Any, what: str) -> np.ndarray:
        if isinstance(item, str | os.PathLike):
            if Path(item).suffix != ".npy":
                raise McrxError(
                    f"{what}: toy encoders read raw vectors (or .npy files holding one), "
                    f"got {str(item)[:80]!r}"
                )
            try:
                item = np.load(item, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise McrxError(f"{what}: cannot read {item}: {exc}") from None
        try:
            row = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError):
            raise McrxError(
                f"{what}: expected a raw vector of {self.raw_dim} numbers, got "
                f"{type(item).__name__}"
            ) from None
        if row.ndim != 1:
            raise McrxError(
                f"{what}: each item must be one raw vector of {self.raw_dim} numbers, got "
                f"shape {tuple(row.shape)}"
            )
        return row


class ToySpace(Space):
    """A trained toy contrastive space (toy/clip, toy/clap, toy/ulip or toy/haptic)."""

    def __init__(
        self,
        name: str,
        definition: SpaceDefinition,
        params: ToySpaceParams,
        networks: dict[str, ModalityEncoderNet],
        weights_path: Path,
    ) -> None:
        self.name = name
        self.dim = definition.dim
        self.modalities = definition.modalities
        self.definition = definition
        self.params = params
        self.weights_path = weights_path
        self._fingerprint = fingerprint_of(name, self.dim, cache_key(definition, params))
        self._encoders = {
            m: ToyEncoder(name, m, networks[m], self._fingerprint) for m in self.modalities
        }

    def encoder(self, modality: str) -> ToyEncoder:
        if modality not in self._encoders:
            raise McrxError(
                f"space {self.name} has no {modality!r} encoder; it covers {self.modalities}"
            )
        return self._encoders[modality]

    def fingerprint(self) -> str:
        return self._fingerprint


def build_space(name: str, definition: SpaceDefinition, params: ToySpaceParams) -> ToySpace:
    """The space ``definition`` trained on ``params`` (from the cache when possible);
    ``name`` is its registered full name (``toy/clip``)."""
    networks, weights_path = load_or_train(definition, params)
    return ToySpace(name, definition, params, networks, weights_path)
