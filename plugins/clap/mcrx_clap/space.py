"""LAION CLAP spaces on laion_clap: building the model offline, loading a release
checkpoint, and the audio and text encoders.

Imported only by the factory. The model, the audio preprocessing (int16 round trip,
repeat-padding, fusion views, mel spectrograms) and the embedding heads are laion_clap's
own functions; this module feeds them and works around the library's online assumptions:
it builds the roberta text branch from its configuration instead of downloading pretrained
weights the checkpoint replaces anyway, and reads checkpoints saved by any transformers
version."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

from mcrx import Encoder, McrxError, Space, fingerprint_of
from mcrx.device import default_batch_size, encoder_autocast, resolve_device, to_device
from mcrx.store.inputs import read_inputs
from mcrx.store.weights import TRUST_HINT, load_weights
from mcrx_clap._laion import (
    clap_model,
    clap_module,
    float32_to_int16,
    get_audio_features,
    int16_to_float32,
)
from mcrx_clap.audio import RESAMPLER, SAMPLE_RATE, audio_suffixes, load_waveform
from mcrx_clap.params import (
    DEFAULT_AMODEL,
    PRESETS,
    ROBERTA_URL,
    ClapParams,
    Preset,
)

log = logging.getLogger("mcrx.clap")

#: bump whenever loading or preprocessing changes what a model sees: cached embeddings are
#: keyed by the encoders' fingerprints, which include it
PREPROCESS_VERSION = 1
#: random weights, and laion_clap's random crops of long clips, are drawn from this seed
RANDOM_SEED = 0
#: the fusion variant of every released fusion checkpoint (what CLAP_Module uses)
FUSION_TYPE = "aff_2d"
#: roberta-base's vocabulary and padding id: a tokenizer without them is not roberta-base's
ROBERTA_VOCAB_SIZE = 50265
ROBERTA_PAD_ID = 1


# ---------------------------------------------------------------------------------------
# The text branch, without a download
# ---------------------------------------------------------------------------------------
def roberta_base_config() -> RobertaConfig:
    """The architecture of ``roberta-base`` (its config.json, written out)."""
    return RobertaConfig(
        vocab_size=ROBERTA_VOCAB_SIZE, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=514, type_vocab_size=1, initializer_range=0.02,
        layer_norm_eps=1e-5, pad_token_id=ROBERTA_PAD_ID, bos_token_id=0, eos_token_id=2,
    )


class _RobertaFromConfig:
    """Stands in for ``transformers.RobertaModel`` inside laion_clap's CLAP constructor,
    whose one use of it is ``RobertaModel.from_pretrained('roberta-base')``: that downloads
    (offline: fails) or reads ~500 MB of pretrained weights which every CLAP checkpoint
    then overwrites with its own text branch. The same architecture from its configuration
    is what the checkpoint needs."""

    @staticmethod
    def from_pretrained(name: str, *args: Any, **kwargs: Any) -> RobertaModel:
        if name != "roberta-base":
            raise McrxError(f"laion_clap asked for text weights {name!r}; mcrx knows how to "
                            "build roberta-base only")
        return RobertaModel(roberta_base_config())


_PATCH_LOCK = threading.Lock()


@contextmanager
def _text_branch_from_config() -> Iterator[None]:
    with _PATCH_LOCK:
        original = clap_model.RobertaModel
        clap_model.RobertaModel = _RobertaFromConfig
        try:
            yield
        finally:
            clap_model.RobertaModel = original


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """laion_clap crops clips longer than 10 s (and picks the fusion views) with numpy's
    global generator: seed it per item so that an item's embedding never depends on what
    was encoded before it, then give the caller's generator state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------
def read_checkpoint(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a CLAP checkpoint, keys without DataParallel's ``module.``.

    The released files (``630k-fusion-best.pt``, ...) are whole training states as
    ``src/laion_clap/training/main.py`` saves them (LAION-AI/CLAP, commit
    1e1e659f23871dc147c7ca2f8181c37c0861bf04): ``{"epoch", "name", "state_dict",
    "optimizer"}``, the state dict under DataParallel's ``module.`` names and the optimizer's
    learning rate a ``numpy.float64`` (``training/scheduler.py``'s ``cosine_lr``). They load
    through :func:`mcrx.store.weights.load_weights`, whose allowlist covers numpy scalars,
    so no code from the file can run; a file with other objects is refused unless
    ``trust`` (``trust_checkpoint: true``)."""
    content = load_weights(path, mmap=True, trust=trust, trust_hint=TRUST_HINT)  # maps tensors
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not state:
        raise McrxError(f"{path}: holds no state dict (expected a LAION-AI/CLAP checkpoint)")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def has_fusion_layers(state: dict[str, torch.Tensor]) -> bool:
    return any(".fusion_model." in key or ".mel_conv2d." in key for key in state)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path,
               amodel: str) -> None:
    """Load ``state`` key for key. Entries the model keeps out of its state dict are
    dropped: checkpoints saved with transformers < 4.31 carry roberta's position_ids
    buffer, which newer versions compute instead (laion_clap's own loader deletes that key
    unconditionally and fails with KeyError on checkpoints that lack it)."""
    expected = set(model.state_dict())
    transient = {name for name, _ in model.named_buffers()} - expected
    state = {key: value for key, value in state.items() if key not in transient}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    hint = (f"; check `amodel` (the music checkpoints need HTSAT-base, the others "
            f"{DEFAULT_AMODEL}) and `tmodel`")
    if missing or unexpected:
        raise McrxError(f"{source} does not fit {amodel}: missing {_some(missing)}, unexpected "
                        f"{_some(unexpected)}{hint}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # same names, other shapes
        raise McrxError(f"{source} does not fit {amodel}: {str(exc)[:800]}{hint}") from None


def _some(keys: list[str], shown: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------
def _decide_fusion(full_name: str, preset: Preset | None, params: ClapParams,
                   state: dict[str, torch.Tensor] | None) -> bool:
    in_checkpoint = has_fusion_layers(state) if state is not None else None
    if params.fusion is not None:
        chosen, who = params.fusion, f"`fusion: {str(params.fusion).lower()}`"
    elif preset is not None:
        chosen, who = preset.fusion, full_name
    else:  # a custom model is as its checkpoint is
        return bool(in_checkpoint)
    if in_checkpoint is not None and in_checkpoint != chosen:
        kind = "a fusion" if in_checkpoint else "a non-fusion"
        raise McrxError(f"{params.checkpoint} is {kind} checkpoint but {who} asks for the "
                        f"{'fusion' if chosen else 'non-fusion'} model; use the matching "
                        f"clap/ name or set `fusion: {str(in_checkpoint).lower()}`")
    return chosen


def build_space(full_name: str, params: ClapParams) -> ClapSpace:
    """Build ``clap/<model>``: the named release's architecture (or params'), filled with
    the checkpoint's weights, or seeded random weights when ``random_weights`` is set."""
    preset = PRESETS.get(full_name.partition("/")[2])
    device = resolve_device(params.device)
    state = (read_checkpoint(params.checkpoint, trust=params.trust_checkpoint)
             if params.checkpoint is not None else None)
    fusion = _decide_fusion(full_name, preset, params, state)
    amodel = params.amodel or (preset.amodel if preset else DEFAULT_AMODEL)
    if amodel not in clap_module.list_models():
        raise McrxError(f"laion_clap has no audio model {amodel!r} "
                        f"(it has {', '.join(clap_module.list_models())})")
    if state is None:
        log.warning("%s: random_weights: the model has RANDOM weights (fine for tests and "
                    "benchmarks, meaningless embeddings)", full_name)
    with torch.random.fork_rng(devices=[]), _text_branch_from_config():
        torch.manual_seed(RANDOM_SEED)  # random weights are reproducible across builds
        model, model_cfg = clap_module.create_model(
            amodel, params.tmodel, precision="fp32", device=torch.device("cpu"),
            enable_fusion=fusion, fusion_type=FUSION_TYPE if fusion else "None",
        )
    if state is not None:
        load_state(model, state, params.checkpoint, amodel)
        del state
    model.to(device).eval().requires_grad_(False)
    log.info("%s: %s + %s%s, weights %s", full_name, amodel, params.tmodel,
             " (fusion)" if fusion else "", params.checkpoint or "random")
    if params.checkpoint is not None:
        stat = params.checkpoint.stat()
        weights = {"file": str(params.checkpoint.resolve()), "size": stat.st_size,
                   "mtime_ns": stat.st_mtime_ns}
    else:
        weights = {"random_seed": RANDOM_SEED}
    return ClapSpace(name=full_name, model=model, model_cfg=model_cfg, params=params,
                     amodel=amodel, fusion=fusion, weights=weights, device=device)


# ---------------------------------------------------------------------------------------
# The space and its encoders
# ---------------------------------------------------------------------------------------
class ClapSpace(Space):
    """A CLAP model: audio and text encoders sharing one 512-d space."""

    modalities = ("audio", "text")

    def __init__(self, *, name: str, model: torch.nn.Module, model_cfg: dict[str, Any],
                 params: ClapParams, amodel: str, fusion: bool, weights: dict[str, Any],
                 device: torch.device) -> None:
        self.name = name
        self.model = model
        self.model_cfg = model_cfg
        self.params = params
        self.amodel = amodel
        self.tmodel = params.tmodel
        self.fusion = fusion
        self.weights = weights
        self.device = device
        # a GPU idles on CPU-sized batches: HTSAT at 128 fusion clips takes a few GiB
        self.batch_size = params.batch_size or default_batch_size(device, cpu=16, gpu=128)
        self.autocast = params.autocast
        self.dim = int(model.joint_embed_shape)
        self._encoders: dict[str, Encoder] = {}

    def encoder(self, modality: str) -> Encoder:
        if modality not in self._encoders:
            if modality == "audio":
                self._encoders[modality] = ClapAudioEncoder(self)
            elif modality == "text":  # built on demand: it may need tokenizer files
                self._encoders[modality] = ClapTextEncoder(self)
            else:
                raise McrxError(f"{self.name} encodes audio and text, not {modality!r}")
        return self._encoders[modality]

    def fingerprint(self) -> str:
        # autocast changes the embeddings: part of the key, left out when off so that
        # float32 caches written before the option existed are still found
        extra = [] if self.autocast == "none" else [f"autocast={self.autocast}"]
        return fingerprint_of("mcrx-clap", self.name, self.amodel, self.tmodel, self.fusion,
                              self.model_cfg, self.weights, *extra)


class ClapAudioEncoder(Encoder):
    """Audio files or 48 kHz waveforms → mono, 48 kHz → laion_clap's preprocessing (int16
    round trip; clips over 10 s: the 4 fusion views, or a crop for non-fusion models;
    shorter clips repeat-padded to 10 s) → audio branch → L2-normalised rows."""

    modality = "audio"

    def __init__(self, space: ClapSpace) -> None:
        self.space = space
        self.dim = space.dim
        self.batch_size = space.batch_size
        self.audio_cfg = space.model_cfg["audio_cfg"]
        self.max_len = int(self.audio_cfg["clip_samples"])
        self.truncating = "fusion" if space.fusion else "rand_trunc"

    def prepare(self, item: Any) -> dict[str, torch.Tensor]:
        waveform = load_waveform(item)
        # CLAP was trained on 16-bit audio: the library quantises every input the same way
        waveform = torch.from_numpy(int16_to_float32(float32_to_int16(waveform))).float()
        with _numpy_seed(RANDOM_SEED):
            return get_audio_features({}, waveform, self.max_len,
                                      data_truncating=self.truncating,
                                      data_filling="repeatpad", audio_cfg=self.audio_cfg)

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        if not prepared:
            return torch.empty(0, self.dim)
        with torch.no_grad(), encoder_autocast(self.space.autocast, self.space.device):
            rows = self.space.model.get_audio_embedding(prepared)  # normalised by laion_clap
        return rows.float().cpu()

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        return self.encode_in_batches(items)

    def read_inputs(self, path: Path) -> Sequence[Any]:
        """A folder gives its audio files only (recursively, sorted); otherwise as the
        default (a .npy file holds one 48 kHz waveform per row)."""
        path = Path(path)
        if not path.is_dir():
            return read_inputs(path)
        suffixes = audio_suffixes()
        files = [p for p in read_inputs(path) if Path(p).suffix.lower() in suffixes]
        if not files:
            raise McrxError(f"{path}: the folder holds no audio files "
                            f"({', '.join(sorted(suffixes))})")
        return files

    def fingerprint(self) -> str:
        return fingerprint_of(self.space.fingerprint(), self.modality, SAMPLE_RATE, RESAMPLER,
                              self.truncating, self.audio_cfg, RANDOM_SEED, PREPROCESS_VERSION)


def load_roberta_tokenizer(source: str) -> RobertaTokenizer:
    """roberta-base's tokenizer from a local folder or the Hugging Face cache; refuses the
    few-token stand-in transformers 5 returns offline when the files are missing."""
    how = (f"CLAP's text encoder needs roberta-base's tokenizer files (vocab.json, merges.txt "
           f"from {ROBERTA_URL}): put them in a folder and set `tokenizer:` to it, or cache "
           "them once with network: HF_HUB_OFFLINE=0 python -c \"from transformers import "
           "AutoTokenizer; AutoTokenizer.from_pretrained('roberta-base')\"")
    try:
        tokenizer = RobertaTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise McrxError(f"cannot load the tokenizer {source!r} ({exc}). {how}") from None
    if tokenizer.vocab_size != ROBERTA_VOCAB_SIZE or tokenizer.pad_token_id != ROBERTA_PAD_ID:
        raise McrxError(f"the tokenizer {source!r} is not roberta-base's (vocabulary of "
                        f"{tokenizer.vocab_size} tokens, padding id {tokenizer.pad_token_id}; "
                        f"expected {ROBERTA_VOCAB_SIZE} and {ROBERTA_PAD_ID}): offline, "
                        f"transformers answers a missing tokenizer with a stand-in. {how}")
    return tokenizer


class ClapTextEncoder(Encoder):
    """Strings → the text branch's tokenizer (roberta-base's, padded to 77 tokens, as
    laion_clap does; or laion_clap's CLIP tokenizer for tmodel 'transformer') → text
    branch → L2-normalised rows."""

    modality = "text"

    def __init__(self, space: ClapSpace) -> None:
        self.space = space
        self.dim = space.dim
        self.batch_size = max(space.batch_size, 64)  # text is cheap next to 10 s of audio
        self.context_length = int(space.model_cfg["text_cfg"]["context_length"])
        if space.tmodel == "roberta":
            self.tokenizer_source = space.params.tokenizer
            self.tokenizer = load_roberta_tokenizer(self.tokenizer_source)
        else:
            self.tokenizer_source = "laion_clap bundled CLIP BPE"
            self.tokenizer = None

    def prepare(self, item: Any) -> Any:
        if not isinstance(item, str):
            raise McrxError(f"text items are strings, got {type(item).__name__}: {item!r:.80}")
        if self.tokenizer is None:
            return clap_module.tokenize([item], context_length=self.context_length)[0]
        tokens = self.tokenizer(item, padding="max_length", truncation=True,
                                max_length=self.context_length, return_tensors="pt")
        return {"input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        if not prepared:
            return torch.empty(0, self.dim)
        model = self.space.model
        with torch.no_grad(), encoder_autocast(self.space.autocast, self.space.device):
            if self.tokenizer is None:
                tokens = to_device(torch.stack(prepared), self.space.device)
                rows = F.normalize(model.encode_text(tokens, device=self.space.device), dim=-1)
            else:
                batch = {key: torch.stack([p[key] for p in prepared])
                         for key in ("input_ids", "attention_mask")}
                rows = model.get_text_embedding(batch)  # normalised by laion_clap
        return rows.float().cpu()

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        return self.encode_in_batches(items)

    def fingerprint(self) -> str:
        vocab = None if self.tokenizer is None else self.tokenizer.vocab_size
        return fingerprint_of(self.space.fingerprint(), self.modality, self.tokenizer_source,
                              vocab, self.context_length, PREPROCESS_VERSION)
