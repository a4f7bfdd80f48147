"""open_clip spaces: where the weights come from, the model, and its image and text encoders.

Imported only by the factory (it imports torch and open_clip). Everything a model sees is
its reference implementation's own: for open_clip weights (OpenAI's TorchScript releases
included) open_clip's model configs, state-dict conversions, image transform and tokenizer;
for a transformers-format folder, transformers' CLIPModel, the folder's tokenizer and image
processor (:mod:`mcrx_clip.transformers_format`). This module decides which weights and
activation to use and feeds inputs through."""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from mcrx import Encoder, McrxError, Space, fingerprint_of
from mcrx.device import default_batch_size, encoder_autocast, resolve_device, to_device
from mcrx.store.inputs import open_image, read_inputs
from mcrx.store.weights import is_torchscript, load_weights
from mcrx_clip import transformers_format
from mcrx_clip.params import WEIGHT_SUFFIXES, ClipParams, looks_like_path

log = logging.getLogger("mcrx.clip")

#: bump whenever loading or preprocessing changes what a model sees: cached embeddings are
#: keyed by the encoders' fingerprints, which include it
PREPROCESS_VERSION = 1
#: random weights are drawn from this seed, so that two builds give the same space
RANDOM_SEED = 0
#: entries OpenAI's CLIP checkpoints carry beside the weights (open_clip's own do not)
OPENAI_METADATA_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})
#: weight files of a release folder, best first (the names open_clip and the Hub use)
FOLDER_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
#: preprocessing fields that belong to a set of weights (open_clip's PreprocessCfg names)
#: and the create_model_and_transforms arguments that override them
PREPROCESS_OVERRIDES = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Weights:
    """Where a space's weights come from, resolved before the model is built."""

    kind: str  # "random", "file", "tag" or "transformers" (a transformers CLIP folder)
    pretrained: str | None = None  # the tag, the weights file, or the transformers folder
    quick_gelu: bool | None = False  # trained with QuickGELU; None: the source cannot tell
    why: str = ""  # how ``quick_gelu`` was decided (logged)
    torchscript: bool = False  # an OpenAI-style TorchScript archive
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessCfg fields
    identity: dict[str, Any] = field(default_factory=dict)  # for fingerprints


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def checkpoint_keys(path: Path) -> set[str]:
    """The entry names of a weights file (not a TorchScript archive), read without loading
    the tensors where the format allows (safetensors headers, memory-mapped torch zips)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return set(handle.keys())
        if suffix == ".npz":
            return set(np.load(path, allow_pickle=False).files)
    except Exception as exc:  # any reader failure means an unusable file: say which
        raise McrxError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    content = load_weights(path, mmap=zipfile.is_zipfile(path))
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict):
        return set()
    return {str(key).removeprefix("module.") for key in content}


def _folder_weights(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The weights file of an open_clip release folder and its open_clip_config.json."""
    config_path = folder / "open_clip_config.json"
    if not config_path.is_file():  # what `mcrx validate` requires of a weights folder too
        raise McrxError(f"{folder}: a weights folder holds open_clip_config.json (open_clip's "
                        "layout) or config.json (transformers'); for a bare weights file, "
                        "set `pretrained:` to the file itself")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise McrxError(f"{config_path}: not valid JSON ({exc})") from None
    for name in FOLDER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name, config
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0], config
    if not candidates:
        raise McrxError(f"{folder}: the folder holds no weights file "
                        f"({', '.join(WEIGHT_SUFFIXES)})")
    raise McrxError(f"{folder}: several weights files ({', '.join(p.name for p in candidates)}); "
                    "set `pretrained:` to the one to use")


def _architecture_preprocess(arch: str) -> dict[str, Any]:
    """Preprocessing shared by every open_clip release of ``arch`` (empty when releases
    disagree): a bare weights file says nothing about its preprocessing, but e.g. every
    SigLIP release normalises with mean 0.5 where open_clip's default is OpenAI's."""
    seen = set()
    for tag in open_clip.list_pretrained_tags_by_model(arch):
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        seen.add(tuple((key, json.dumps(cfg[key])) for key in PREPROCESS_OVERRIDES if key in cfg))
    if len(seen) != 1:
        return {}
    return {key: json.loads(value) for key, value in seen.pop()}


def _file_quick_gelu(path: Path, torchscript: bool,
                     model_cfg: dict[str, Any] | None) -> tuple[bool | None, str]:
    """Whether the weights in ``path`` were trained with QuickGELU, as far as the file and
    its open_clip config tell (None: they do not)."""
    if model_cfg is not None:  # open_clip builds a local-dir:/hf-hub: model from this config
        quick = bool(model_cfg.get("quick_gelu", False))
        return quick, f"open_clip_config.json model_cfg.quick_gelu={quick}"
    if torchscript:
        return True, "an OpenAI TorchScript archive"
    if path.suffix.lower() == ".npz":
        return False, "big_vision (SigLIP) weights, trained with GELU"
    keys = checkpoint_keys(path)
    if OPENAI_METADATA_KEYS & keys:
        return True, "a state dict in OpenAI's layout"
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        raise McrxError(f"{path}: transformers CLIPModel weights; give the folder that holds "
                        "them with config.json, preprocessor_config.json and the tokenizer "
                        "files as `pretrained:`")
    return None, "a bare state dict"


def _beside_config(path: Path) -> dict[str, Any]:
    """The open_clip_config.json beside a Hub-named weights file (or {})."""
    config_path = path.parent / "open_clip_config.json"
    if path.name not in FOLDER_WEIGHT_NAMES or not config_path.is_file():
        return {}
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise McrxError(f"{config_path}: not valid JSON ({exc})") from None


def resolve_weights(arch: str, pretrained: str | None) -> Weights:
    """Decide what ``pretrained`` names (nothing, a tag, an open_clip file or folder, or a
    transformers folder) and what it tells about QuickGELU and preprocessing."""
    if pretrained is None:
        return Weights("random", why="random weights", identity={"random_seed": RANDOM_SEED})
    if not looks_like_path(pretrained):
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise McrxError(f"{pretrained!r} is not an open_clip pretrained tag of {arch} "
                            f"(its tags: {', '.join(tags) or 'none'}); give a weights file "
                            "path instead")
        quick = bool(cfg.get("quick_gelu"))
        return Weights("tag", pretrained, quick_gelu=quick,
                       why=f"open_clip tag {pretrained!r} (quick_gelu={quick})",
                       identity={"tag": pretrained})

    path = Path(pretrained).expanduser()
    hf_folder = transformers_format.transformers_folder(path)
    if hf_folder is not None:
        transformers_format.check_folder(hf_folder)
        weights = transformers_format.weights_file(hf_folder)
        identity = {**_file_identity(weights), "format": "transformers"}
        for name in ("config.json", "preprocessor_config.json"):
            identity[name] = json.loads((hf_folder / name).read_text())
        return Weights("transformers", str(hf_folder), quick_gelu=None,
                       why="the folder's config.json hidden_act", identity=identity)
    if path.is_dir():
        path, folder_config = _folder_weights(path)
    else:
        folder_config = _beside_config(path)
    model_cfg = folder_config.get("model_cfg", {}) if folder_config else None
    torchscript = is_torchscript(path)
    quick, why = _file_quick_gelu(path, torchscript, model_cfg)
    preprocess = {
        key: value
        for key, value in folder_config.get("preprocess_cfg", {}).items()
        if key in PREPROCESS_OVERRIDES
    } or _architecture_preprocess(arch)
    return Weights("file", str(path), quick_gelu=quick, why=why, torchscript=torchscript,
                   preprocess=preprocess, identity=_file_identity(path))


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------
def _architecture(full_name: str) -> str:
    _, _, arch = full_name.partition("/")
    if not arch:
        raise McrxError(f"{full_name!r}: name the open_clip architecture, e.g. clip/ViT-B-32")
    return arch


def _register_config(arch: str, path: Path) -> None:
    """Make a custom open_clip model config (a JSON file or a folder of them) known."""
    if path.is_file():
        if path.stem != arch:
            raise McrxError(f"{path}: open_clip names a config after its file, so this one "
                            f"defines {path.stem!r}, not {arch!r}; rename it to {arch}.json "
                            f"or use clip/{path.stem}")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise McrxError(f"{path}: not valid JSON ({exc})") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
        if missing:
            raise McrxError(f"{path}: an open_clip model config needs {', '.join(missing)}")
    open_clip.add_model_config(path)


def _activation_kwargs(model_cfg: dict[str, Any], quick_gelu: bool) -> dict[str, Any]:
    # force_quick_gelu also marks the config, so open_clip's own tag check stays quiet;
    # turning it off for a *-quickgelu architecture needs the constructor keyword
    if quick_gelu:
        return {"force_quick_gelu": True}
    return {"quick_gelu": False} if model_cfg.get("quick_gelu") else {}


def _decide_quick_gelu(full_name: str, arch: str, model_cfg: dict[str, Any],
                       weights: Weights, params: ClipParams) -> tuple[bool, str]:
    """QuickGELU or not: what the user set, else a *-quickgelu architecture, else what the
    weights tell; weights that tell nothing are refused rather than guessed."""
    if params.quick_gelu is not None:
        return params.quick_gelu, "set in params"
    if model_cfg.get("quick_gelu"):
        return True, f"architecture {arch}"
    if weights.quick_gelu is not None:
        return weights.quick_gelu, weights.why
    raise McrxError(
        f"{full_name}: params.quick_gelu: {weights.pretrained} is {weights.why} without "
        "open_clip_config.json beside it, and cannot tell whether its weights were trained "
        "with QuickGELU (OpenAI's) or GELU (LAION's, DataComp's); guessing wrong gives "
        "silently wrong embeddings. Set `quick_gelu: true` for OpenAI-trained weights or "
        "`quick_gelu: false` for the others (or give OpenAI's TorchScript ViT-B-32.pt, or "
        "the Hub folder with its open_clip_config.json)")


def build_space(full_name: str, params: ClipParams) -> ClipSpace:
    """Build ``clip/<architecture>`` with the weights, activation and preprocessing that
    ``params`` name."""
    arch = _architecture(full_name)
    if params.config_file is not None:
        _register_config(arch, params.config_file)
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        known = ", ".join(open_clip.list_models()[:12])
        raise McrxError(f"{full_name}: open_clip has no architecture {arch!r} (e.g. {known}, "
                        "...; a custom one needs `model_config:`)")
    device = resolve_device(params.device)
    weights = resolve_weights(arch, params.pretrained)
    if weights.kind == "transformers":
        return _build_transformers_space(full_name, arch, model_cfg, weights, params, device)
    quick_gelu, why = _decide_quick_gelu(full_name, arch, model_cfg, weights, params)
    if weights.kind == "random":
        log.warning("%s: random_weights: the model has RANDOM weights (fine for "
                    "tests and benchmarks, meaningless embeddings)", full_name)
    log.info("%s: weights %s, quick_gelu=%s (%s)", full_name,
             weights.pretrained or "random", quick_gelu, why)

    preprocess_kwargs = {PREPROCESS_OVERRIDES[k]: v for k, v in weights.preprocess.items()}
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(RANDOM_SEED)  # random weights are reproducible across builds
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch,
                # a tag is open_clip's to resolve; files are loaded below, after the build
                pretrained=weights.pretrained if weights.kind == "tag" else None,
                device=device,
                # never fetch tower weights from the Hub for a model we fill ourselves
                pretrained_image=False,
                pretrained_text=False,
                **_activation_kwargs(model_cfg, quick_gelu),
                **preprocess_kwargs,
            )
            if weights.kind == "file":
                _load_file(model, weights)
        except McrxError:
            raise
        except Exception as exc:  # a failure here is about the weights the user named
            raise McrxError(_loading_error(full_name, weights, exc)) from None
    model.eval().requires_grad_(False)
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise McrxError(f"{full_name}: open_clip cannot make its tokenizer offline "
                        f"({type(exc).__name__}: {exc})") from None
    _check_tokenizer(full_name, tokenizer)
    return ClipSpace(
        name=full_name,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_cfg=model_cfg,
        weights=weights,
        quick_gelu=quick_gelu,
        device=device,
        # a GPU idles on CPU-sized batches: ViT-B/32 at 512 images takes ~3 GiB
        batch_size=params.batch_size or default_batch_size(device, cpu=32, gpu=512),
        autocast=params.autocast,
        exif_transpose=params.exif_transpose,
        preprocess_cfg=dict(getattr(model.visual, "preprocess_cfg", {})),
    )


def _build_transformers_space(full_name: str, arch: str, model_cfg: dict[str, Any],
                              weights: Weights, params: ClipParams,
                              device: torch.device) -> ClipSpace:
    """A transformers-format CLIP folder, run with transformers' CLIPModel and the folder's
    own tokenizer and image processor (see :mod:`mcrx_clip.transformers_format`)."""
    folder = Path(str(weights.pretrained))
    config = transformers_format.load_config(folder)
    transformers_format.check_architecture(folder, config, arch, model_cfg)
    folder_quick = transformers_format.config_quick_gelu(config)
    if params.quick_gelu is not None:
        quick_gelu, why = params.quick_gelu, "set in params"
        if folder_quick is not None and folder_quick != quick_gelu:
            log.warning("%s: quick_gelu=%s overrides %s/config.json (hidden_act %s)",
                        full_name, quick_gelu, folder, config.text_config.hidden_act)
    elif folder_quick is None:
        raise McrxError(f"{folder / 'config.json'}: the towers' hidden_act differ "
                        f"({config.text_config.hidden_act}, {config.vision_config.hidden_act}); "
                        "set params.quick_gelu")
    else:
        quick_gelu, why = folder_quick, f"{folder}/config.json hidden_act"
    log.info("%s: transformers CLIP folder %s, quick_gelu=%s (%s)", full_name, folder,
             quick_gelu, why)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        hf_model = transformers_format.load_model(folder, config, quick_gelu)
    model = transformers_format.TransformersClip(hf_model)
    model.to(device).eval().requires_grad_(False)
    preprocess = transformers_format.load_image_processor(folder)
    return ClipSpace(
        name=full_name,
        model=model,
        preprocess=preprocess,
        tokenizer=transformers_format.load_tokenizer(folder, config),
        model_cfg=model_cfg,
        weights=weights,
        quick_gelu=quick_gelu,
        device=device,
        batch_size=params.batch_size or default_batch_size(device, cpu=32, gpu=512),
        autocast=params.autocast,
        exif_transpose=params.exif_transpose,
        preprocess_cfg=preprocess.config(),
    )


def read_state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: an OpenAI TorchScript archive (read with
    ``torch.jit.load``, which compiles TorchScript and unpickles no Python objects), a
    safetensors file, or a torch pickle read by mcrx's weights-only loader; unwrapped from
    a training checkpoint's ``state_dict``, ``module.`` prefixes and OpenAI's metadata
    entries dropped."""
    path = Path(str(weights.pretrained))
    if weights.torchscript:
        try:
            content: Any = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            raise McrxError(f"{path}: cannot read the TorchScript archive "
                            f"({type(exc).__name__}: {exc})") from None
    else:  # torch pickles and .safetensors alike: mcrx's one reader of weight files
        content = load_weights(path, mmap=zipfile.is_zipfile(path))
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict):
        raise McrxError(f"{path}: expected a state dict, found {type(content).__name__}")
    state = {}
    for key, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise McrxError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[str(key).removeprefix("module.")] = value
    for key in OPENAI_METADATA_KEYS:
        state.pop(key, None)
    return state


def _open_clip_layout(model: torch.nn.Module,
                      state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's own adjustments of a state dict before loading, in the order of
    ``load_checkpoint`` (mlfoundations/open_clip ``src/open_clip/factory.py``, v3.3.0):
    third-party layouts, the old text layout, scalar/1-d logit scale and bias, stale
    position ids, position-embedding resizing."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in state and own is not None and own.ndim != state[name].ndim:
            state[name] = state[name].reshape(own.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    position_ids = "text.transformer.embeddings.position_ids"
    if position_ids in state and position_ids not in model.state_dict():
        del state[position_ids]
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def _load_file(model: torch.nn.Module, weights: Weights) -> None:
    """Load a weights file into an open_clip model, requiring every weight of the model."""
    if Path(str(weights.pretrained)).suffix.lower() == ".npz":  # numpy, no pickle
        open_clip.load_checkpoint(model, weights.pretrained, strict=True)
        return
    state = _open_clip_layout(model, read_state_dict(weights))
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise McrxError(
            f"{weights.pretrained} does not hold this architecture's weights: "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}"
        )


def _some(keys: list[str], shown: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs "Model initialized randomly" for every model it builds without a
    tag, including those whose weights we load right after from a file; our own log says
    which weights a space has."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def _loading_error(full_name: str, weights: Weights, exc: Exception) -> str:
    detail = f"{type(exc).__name__}: {str(exc).strip()[:1500]}"
    if weights.kind == "tag":
        return (f"{full_name}: open_clip could not load tag {weights.pretrained!r} ({detail}). "
                "mcrx runs the Hugging Face Hub offline: a tag only works where open_clip's "
                "cache already holds its weights; download the weights file and set "
                "`pretrained:` to its path")
    if weights.kind == "file":
        return (f"{full_name}: cannot load {weights.pretrained} into this architecture "
                f"({detail}). Check that the file holds {full_name} weights")
    return f"{full_name}: open_clip could not build the model ({detail})"


def _check_tokenizer(full_name: str, tokenizer: Any) -> None:
    """Hugging Face tokenizers (used by some architectures) silently degrade offline to a
    handful of special tokens when their files are not cached: refuse those."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "__len__") and len(inner) < 100:
        raise McrxError(f"{full_name}: its Hugging Face tokenizer is not in the local cache "
                        f"(offline, transformers returned a {len(inner)}-token stand-in); run "
                        "once with network and HF_HUB_OFFLINE=0 to cache it")


# ---------------------------------------------------------------------------------------
# The space and its encoders
# ---------------------------------------------------------------------------------------
class ClipSpace(Space):
    """An open_clip model: image and text encoders sharing one embedding space."""

    modalities = ("image", "text")

    def __init__(
        self,
        *,
        name: str,
        model: torch.nn.Module,
        preprocess: Any,
        tokenizer: Any,
        model_cfg: dict[str, Any],
        weights: Weights,
        quick_gelu: bool,
        device: torch.device,
        batch_size: int,
        autocast: str = "none",
        exif_transpose: bool = True,
        preprocess_cfg: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.weights = weights
        self.quick_gelu = quick_gelu
        self.device = device
        self.batch_size = batch_size
        self.autocast = autocast
        self.exif_transpose = exif_transpose
        self.preprocess_cfg = preprocess_cfg or {}  # what the image transform does
        self.dim = int(model_cfg["embed_dim"])
        self._encoders: dict[str, Encoder] = {}

    def encoder(self, modality: str) -> Encoder:
        if modality not in self._encoders:
            if modality == "image":
                self._encoders[modality] = ClipImageEncoder(self)
            elif modality == "text":
                self._encoders[modality] = ClipTextEncoder(self)
            else:
                raise McrxError(f"{self.name} encodes image and text, not {modality!r}")
        return self._encoders[modality]

    def fingerprint(self) -> str:
        # autocast changes the embeddings: part of the key, left out when off so that
        # float32 caches written before the option existed are still found
        extra = [] if self.autocast == "none" else [f"autocast={self.autocast}"]
        return fingerprint_of("mcrx-clip", self.name, self.model_cfg, self.weights.identity,
                              self.quick_gelu, *extra)


def image_suffixes() -> frozenset[str]:
    """File suffixes PIL can open here (``.jpg``, ``.png``, ``.webp``, ``.gif``, ...)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def load_image(item: Any, exif_transpose: bool = True) -> Image.Image:
    """A PIL image from a path, a PIL image or an H×W(×C) uint8 array; a file is turned
    upright by its EXIF orientation tag when ``exif_transpose`` (the CLIP references, which
    read files with a plain ``Image.open``, do not)."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        try:
            return Image.fromarray(item)
        except (TypeError, ValueError) as exc:
            raise McrxError(f"cannot read an image from an array of shape {item.shape} and "
                            f"dtype {item.dtype} ({exc}); expected H×W or H×W×3 uint8") from None
    if not isinstance(item, (str, Path)):
        raise McrxError(f"image items are file paths, PIL images or arrays, got {type(item)}")
    try:
        with open_image(item) as image:  # bombs and 1×60000 strips refused before decoding
            # photos are often stored sideways with an orientation tag: show them upright;
            # either way the result is a loaded copy that outlives the file handle
            if exif_transpose:
                return ImageOps.exif_transpose(image)
            image.load()
            return image.copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise McrxError(f"{item}: cannot read the image ({exc})") from None


class ClipImageEncoder(Encoder):
    """Images → open_clip's eval transform (resize, centre crop, RGB, normalise) → image
    tower → L2-normalised rows."""

    modality = "image"

    def __init__(self, space: ClipSpace) -> None:
        self.space = space
        self.dim = space.dim
        self.batch_size = space.batch_size

    def prepare(self, item: Any) -> torch.Tensor:
        return self.space.preprocess(load_image(item, self.space.exif_transpose))

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        if not prepared:
            return torch.empty(0, self.dim)
        pixels = to_device(torch.stack(prepared), self.space.device)
        with torch.no_grad(), encoder_autocast(self.space.autocast, self.space.device):
            features = self.space.model.encode_image(pixels)
        return F.normalize(features.float(), dim=-1).cpu()

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        return self.encode_in_batches(items)

    def read_inputs(self, path: Path) -> Sequence[Any]:
        """A folder gives its image files only (recursively, sorted); otherwise as the
        default (a .txt file lists one path per line, a .npy file holds arrays)."""
        path = Path(path)
        if not path.is_dir():
            return read_inputs(path)
        suffixes = image_suffixes()
        files = [p for p in read_inputs(path) if Path(p).suffix.lower() in suffixes]
        if not files:
            raise McrxError(f"{path}: the folder holds no image files")
        return files

    def fingerprint(self) -> str:
        # exif_transpose off changes what the model sees; left out when on, so caches
        # written before the option existed are still found
        extra = [] if self.space.exif_transpose else ["exif_transpose=false"]
        return fingerprint_of(self.space.fingerprint(), self.modality,
                              self.space.preprocess_cfg, PREPROCESS_VERSION, *extra)


class ClipTextEncoder(Encoder):
    """Strings → open_clip's tokenizer of the architecture → text tower → L2-normalised
    rows."""

    modality = "text"

    def __init__(self, space: ClipSpace) -> None:
        self.space = space
        self.dim = space.dim
        self.batch_size = space.batch_size

    def prepare(self, item: Any) -> torch.Tensor:
        if not isinstance(item, str):
            raise McrxError(f"text items are strings, got {type(item).__name__}: {item!r:.80}")
        return self.space.tokenizer([item])[0]

    def encode_prepared(self, prepared: list[Any]) -> torch.Tensor:
        if not prepared:
            return torch.empty(0, self.dim)
        tokens = to_device(torch.stack(prepared), self.space.device)
        with torch.no_grad(), encoder_autocast(self.space.autocast, self.space.device):
            features = self.space.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1).cpu()

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        return self.encode_in_batches(items)

    def fingerprint(self) -> str:
        tokenizer = self.space.tokenizer
        return fingerprint_of(self.space.fingerprint(), self.modality, type(tokenizer).__name__,
                              getattr(tokenizer, "context_length", None), PREPROCESS_VERSION)
