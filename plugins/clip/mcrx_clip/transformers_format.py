"""CLIP saved in the transformers layout (the ``openai/clip-vit-base-patch32`` folder the
C-MCR and Ex-MCR authors load), run the way they run it.

The authors (MCR-PEFT/Ex-MCR ``exmcr/trunks.py``, ``get_clip_extractor`` /
``get_vision_feature`` / ``get_text_feature``, commit 1dd0197d; MCR-PEFT/C-MCR
``cmcr/trunks.py``, transformers 4.29.1 pinned in its ``requirements.txt``) call
``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained`` on that folder, then
``get_image_features`` / ``get_text_features`` and L2-normalise. So does mcrx, offline:

* the towers are transformers' own ``CLIPModel`` built from the folder's ``config.json``
  (its ``hidden_act`` decides QuickGELU) with the folder's weights;
* texts go through the folder's own tokenizer (``vocab.json`` + ``merges.txt`` or
  ``tokenizer.json``), truncated to the text tower's context (the authors' call does not
  truncate, so longer texts failed there), with the attention mask;
* images go through the folder's ``preprocessor_config.json`` with transformers' PIL
  implementation of ``CLIPImageProcessor`` (``CLIPImageProcessorPil`` since transformers 5,
  the ``CLIPImageProcessor`` class itself before): resize the shortest side with PIL bicubic,
  centre crop, rescale 1/255, normalise. The picture is first converted with PIL's
  ``convert("RGB")`` as transformers 4.29's ``convert_to_rgb``
  (``src/transformers/image_transforms.py``) did; transformers 5 composites transparency
  (an alpha band, or a palette's transparent index) on white instead, which would change
  the pixels of such images.

Imported only when such a folder is built (it imports torch and transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mcrx import McrxError
from mcrx.store.weights import load_weights

#: weight files of a transformers folder, best first
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
#: what the folder must hold besides its weights (tokenizer: either set)
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise McrxError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(content, dict):
        raise McrxError(f"{path}: expected a JSON object")
    return content


def transformers_folder(path: Path) -> Path | None:
    """The transformers CLIP folder ``path`` names (the folder itself, or its
    ``model.safetensors`` / ``pytorch_model.bin``), else None. A folder that also holds
    open_clip's ``open_clip_config.json`` (LAION's Hub folders hold both layouts) is left
    to open_clip unless one of the transformers weight files is named."""
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        return None
    if path.is_dir() and (folder / "open_clip_config.json").is_file():
        return None
    if path.is_file() and path.name not in WEIGHT_NAMES:
        return None
    if _read_json(config).get("model_type") != "clip":
        return None
    return folder


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise McrxError(f"{folder}: a transformers CLIP folder needs its weights, "
                    f"{' or '.join(WEIGHT_NAMES)}")


def check_folder(folder: Path) -> None:
    """Every file the authors' ``from_pretrained`` calls read, named when missing."""
    missing = [name for name in ("config.json", "preprocessor_config.json")
               if not (folder / name).is_file()]
    if not any(all((folder / n).is_file() for n in names) for names in TOKENIZER_FILES):
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    if missing:
        raise McrxError(f"{folder}: a transformers CLIP folder needs {', '.join(missing)} "
                        "(all in e.g. https://huggingface.co/openai/clip-vit-base-patch32)")
    weights_file(folder)


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise McrxError("a transformers-format CLIP folder is run with the transformers "
                        "package: pip install 'mcrx-clip[transformers]'") from None
    return transformers


def load_config(folder: Path) -> Any:
    transformers = _import_transformers()
    try:
        return transformers.CLIPConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise McrxError(f"{folder / 'config.json'}: transformers cannot read this CLIP "
                        f"config ({type(exc).__name__}: {exc})") from None


def config_quick_gelu(config: Any) -> bool | None:
    """True / False when both towers use QuickGELU / another activation; None if mixed."""
    acts = {config.text_config.hidden_act, config.vision_config.hidden_act}
    if acts == {"quick_gelu"}:
        return True
    return None if "quick_gelu" in acts else False


def check_architecture(folder: Path, config: Any, arch: str, model_cfg: dict[str, Any]) -> None:
    """The folder must hold the architecture the space is named after: cached embeddings
    and the space's dimension are keyed by that name."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    width = vision.get("width")
    head_width = vision.get("head_width", 64)
    expected = {
        "projection_dim": model_cfg.get("embed_dim"),
        "vision hidden_size": width,
        "vision num_hidden_layers": vision.get("layers"),
        "vision patch_size": vision.get("patch_size"),
        "vision image_size": vision.get("image_size"),
        "vision num_attention_heads": width // head_width if width else None,
        "text hidden_size": text.get("width"),
        "text num_hidden_layers": text.get("layers"),
        "text num_attention_heads": text.get("heads"),
        "text max_position_embeddings": text.get("context_length"),
        "text vocab_size": text.get("vocab_size"),
    }
    found = {
        "projection_dim": config.projection_dim,
        "vision hidden_size": config.vision_config.hidden_size,
        "vision num_hidden_layers": config.vision_config.num_hidden_layers,
        "vision patch_size": config.vision_config.patch_size,
        "vision image_size": config.vision_config.image_size,
        "vision num_attention_heads": config.vision_config.num_attention_heads,
        "text hidden_size": config.text_config.hidden_size,
        "text num_hidden_layers": config.text_config.num_hidden_layers,
        "text num_attention_heads": config.text_config.num_attention_heads,
        "text max_position_embeddings": config.text_config.max_position_embeddings,
        "text vocab_size": config.text_config.vocab_size,
    }
    wrong = [f"{key} {found[key]} (expected {value})" for key, value in expected.items()
             if value is not None and found[key] != value]
    if wrong:
        raise McrxError(f"{folder / 'config.json'}: not the {arch} architecture: "
                        f"{'; '.join(wrong)}; name the space after the folder's model")


def load_model(folder: Path, config: Any, quick_gelu: bool) -> torch.nn.Module:
    """transformers' CLIPModel with the folder's weights, every weight required. The
    weights are read by mcrx (safetensors, or a pickle through mcrx's weights-only
    loader), not by ``from_pretrained``."""
    transformers = _import_transformers()
    if config_quick_gelu(config) is not quick_gelu:  # `quick_gelu:` set against the config
        config.text_config.hidden_act = config.vision_config.hidden_act = (
            "quick_gelu" if quick_gelu else "gelu")
    path = weights_file(folder)
    state = load_weights(path)  # safetensors or a torch pickle: mcrx's one reader
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise McrxError(f"{path}: expected a state dict, found {type(state).__name__}")
    model = transformers.CLIPModel(config)
    result = model.load_state_dict(state, strict=False)
    # position ids are buffers that older checkpoints saved and newer models rebuild
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if result.missing_keys or unexpected:
        raise McrxError(f"{path}: does not hold this CLIPModel's weights: missing "
                        f"{result.missing_keys[:5] or 'none'}, "
                        f"unexpected {unexpected[:5] or 'none'}")
    return model.float()


class TransformersClip(torch.nn.Module):
    """open_clip's ``encode_image`` / ``encode_text`` over a transformers CLIPModel, so that
    the rest of the plugin feeds both the same way. Text inputs are (B, 2, L): token ids and
    attention mask stacked."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def _pooled(output: Any) -> torch.Tensor:
        # transformers 5 returns the output object (projected pooler_output), 4.x a tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_text_features(input_ids=tokens[:, 0],
                                                         attention_mask=tokens[:, 1]))


class TransformersTokenizer:
    """The folder's tokenizer as the plugin calls open_clip's: strings → (N, 2, L) tensor
    of ids and attention mask, padded to and truncated at the text context ``L``."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True,
                                 max_length=self.context_length, return_tensors="pt")
        return torch.stack([encoded["input_ids"], encoded["attention_mask"]], dim=1)


class TransformersImagePreprocess:
    """PIL image → the folder's CLIP image processing (PIL implementation) → (3, H, W)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = image.convert("RGB")  # transformers 4.29's convert_to_rgb: alpha dropped
        # a palette or RGB picture with a transparent colour keeps it in info after the
        # conversion, and transformers 5 would composite that colour on white
        rgb.info.pop("transparency", None)
        pixels = self.processor(images=[rgb], return_tensors="pt")["pixel_values"]
        return pixels[0].float()

    def config(self) -> dict[str, Any]:
        """The processing settings, for fingerprints."""
        settings = self.processor.to_dict()
        settings.pop("transformers_version", None)
        return settings


def load_tokenizer(folder: Path, config: Any) -> TransformersTokenizer:
    transformers = _import_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder),
                                                               local_files_only=True)
    except Exception as exc:
        raise McrxError(f"{folder}: transformers cannot make the folder's tokenizer "
                        f"({type(exc).__name__}: {exc})") from None
    size = len(tokenizer)
    # offline, transformers may hand back a stand-in with a handful of special tokens
    if size < 1000 or size > config.text_config.vocab_size:
        raise McrxError(f"{folder}: the tokenizer has {size} tokens, the text tower "
                        f"{config.text_config.vocab_size}; check vocab.json / merges.txt")
    return TransformersTokenizer(tokenizer, config.text_config.max_position_embeddings)


def load_image_processor(folder: Path) -> TransformersImagePreprocess:
    transformers = _import_transformers()
    # the PIL implementation the authors' transformers 4.29 ran; transformers 5 named it
    # CLIPImageProcessorPil and gave the CLIPImageProcessor name to a torchvision one
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor_class is None:
        processor_class = transformers.CLIPImageProcessor
    try:
        processor = processor_class.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise McrxError(f"{folder / 'preprocessor_config.json'}: transformers cannot read it "
                        f"({type(exc).__name__}: {exc})") from None
    return TransformersImagePreprocess(processor)
