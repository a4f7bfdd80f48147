"""Tests of the ``clip`` plugin: a real open_clip ViT (tiny config written here) with
random weights, real image files of every common format, and weight files in the layouts
of the real releases: open_clip state dicts and Hub folders, OpenAI's TorchScript archives
(traced from an OpenAI-layout model, as OpenAI shipped theirs), and transformers CLIP
folders (save_pretrained, with tokenizer and image-processor files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import clip_release_format
import numpy as np
import pytest
import torch
from PIL import Image, features
from pydantic import ValidationError

from mcrx import McrxError
from mcrx.plugin.manager import get_registry

ARCH = "mcrx-test-tiny-vit"
DIM = 32
TINY_CONFIG = {
    "embed_dim": DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TEXTS = ["a dog barking", "a red car", "an orchestra tuning up", "rain on a tin roof"]


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configs") / f"{ARCH}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def build(config_file: Path, **params):
    """Build through the registry, exactly as a recipe does; the architecture is the one
    ``config_file`` defines (open_clip names a config by its file stem)."""
    name = f"clip/{config_file.stem}"
    return get_registry().space(name).build(name, params={"model_config": str(config_file),
                                                          **params})


@pytest.fixture(scope="module")
def space(config_file):
    return build(config_file, random_weights=True, batch_size=4)


def _pattern(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, size)
    base = np.stack(np.meshgrid(x, x[::-1]), -1).sum(-1) / 2
    rgb = np.stack([base, 1 - base, rng.random((size, size))], -1)
    return (rgb * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, Path]:
    """Real files written by PIL: every common format, odd sizes, alpha, palette, grey."""
    folder = tmp_path_factory.mktemp("images")
    files = {}
    writes = [
        ("png", "RGB", 40), ("jpg", "RGB", 57), ("bmp", "RGB", 33), ("gif", "P", 45),
        ("tiff", "RGB", 36), ("rgba.png", "RGBA", 48), ("grey.png", "L", 50),
    ]
    if features.check("webp"):
        writes.append(("webp", "RGB", 64))
    for i, (suffix, mode, size) in enumerate(writes):
        image = Image.fromarray(_pattern(size, i)).convert(mode)
        path = folder / f"{i:02d}.{suffix}"
        image.save(path)
        files[suffix] = path
    return files


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------
# Registration and params
# ---------------------------------------------------------------------------------------
def test_family_is_registered():
    from mcrx_clip.params import ClipParams

    spec = get_registry().space("clip/ViT-B-32")
    assert spec.name == "clip/*" and spec.plugin == "clip"
    assert spec.modalities == ("image", "text")
    assert spec.params is ClipParams


def test_missing_weights_file_fails_validation(tmp_path):
    from mcrx_clip.params import OPENAI_VIT_B32_URL, ClipParams

    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(ValidationError) as info:
        ClipParams.model_validate({"pretrained": str(missing)})
    (error,) = info.value.errors()
    assert error["loc"] == ("pretrained",)
    assert str(missing) in error["msg"] and OPENAI_VIT_B32_URL in error["msg"]
    # tags are words; a file name with a weights suffix is a path even without a folder
    assert ClipParams(pretrained="openai").pretrained == "openai"
    with pytest.raises(ValidationError):
        ClipParams(pretrained="ViT-B-32.pt")
    with pytest.raises(ValidationError, match="model config not found"):
        ClipParams.model_validate({"model_config": str(tmp_path / "tiny.json")})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ClipParams.model_validate({"pretrainde": "openai"})


def test_random_weights_are_asked_for_explicitly():
    """Without `pretrained` a space would have random weights: a recipe that forgot its
    weights must fail validation at the field, not train on noise (issue 7)."""
    from mcrx_clip.params import ClipParams

    with pytest.raises(ValidationError) as info:
        ClipParams.model_validate({})
    (error,) = info.value.errors()
    assert error["loc"] == ("pretrained",) and "random_weights: true" in error["msg"]
    with pytest.raises(ValidationError, match="not both"):
        ClipParams.model_validate({"pretrained": "openai", "random_weights": True})
    assert ClipParams(random_weights=True).pretrained is None


def test_validate_command_locates_the_missing_file(tmp_path):
    """``mcrx validate`` reports the missing weights at base.params.pretrained, no
    traceback."""
    (tmp_path / "texts.txt").write_text("a dog\na cat\n")
    (tmp_path / "images").mkdir()
    Image.fromarray(_pattern(32, 0)).save(tmp_path / "images" / "a.png")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: missing-weights
        method: ex-mcr
        base:
          space: clip/ViT-B-32
          params: {{pretrained: {tmp_path / "nowhere" / "ViT-B-32.pt"}}}
        leaves:
          - space: clip/RN50
            bridge: text
        memories:
          text: {{inputs: {tmp_path / "texts.txt"}}}
          image: {{inputs: {tmp_path / "images"}}}
        """))
    result = subprocess.run([sys.executable, "-m", "mcrx", "validate", str(recipe)],
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "base.params.pretrained" in output and "weights file not found" in output
    assert "Traceback" not in output


def test_hook_module_imports_without_torch():
    """``mcrx list-plugins`` must stay instant: the hook module and the params import (and
    validate) with torch and open_clip unavailable."""
    code = textwrap.dedent("""\
        import sys
        for name in ("torch", "open_clip", "torchvision", "PIL"):
            sys.modules[name] = None  # any import of these now fails
        from mcrx.plugin.registry import Registry
        import mcrx_clip.plugin as plugin
        registry = Registry()
        plugin.register_spaces(register=registry.register_callback("space", "clip"))
        spec = registry.space("clip/ViT-B-32")
        assert spec.validate_params({"pretrained": "openai"}).pretrained == "openai"
        assert not any(m in sys.modules and sys.modules[m] is not None
                       for m in ("torch", "open_clip"))
        print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------
def test_space_shape(space):
    assert space.name == f"clip/{ARCH}" and space.dim == DIM
    assert space.modalities == ("image", "text")
    assert space.quick_gelu is False and space.weights.kind == "random"
    with pytest.raises(McrxError, match="not 'audio'"):
        space.encoder("audio")


def test_every_image_format_encodes(space, image_files):
    encoder = space.encoder("image")
    paths = [str(p) for p in image_files.values()]
    rows = encoder.encode(paths)
    assert rows.shape == (len(paths), DIM) and rows.dtype == torch.float32
    assert rows.device.type == "cpu" and torch.isfinite(rows).all()
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(paths)))
    # different pictures, different embeddings
    assert torch.cdist(rows, rows).add(torch.eye(len(paths))).min() > 1e-4


def test_image_inputs_other_than_paths(space, image_files):
    encoder = space.encoder("image")
    png = image_files["png"]
    from_path = encoder.encode([str(png), png])
    with Image.open(png) as image:
        from_pil = encoder.encode([image.copy()])
        from_array = encoder.encode([np.asarray(image)])
    torch.testing.assert_close(from_path[0], from_path[1])
    torch.testing.assert_close(from_pil[0], from_path[0])
    torch.testing.assert_close(from_array[0], from_path[0])
    with pytest.raises(McrxError, match="cannot read the image"):
        encoder.encode([str(image_files["png"].with_suffix(".missing.png"))])


def test_exif_orientation_is_applied(space, tmp_path):
    """A photo stored sideways with an orientation tag encodes like the upright picture."""
    upright = Image.fromarray(_pattern(48, 7)[:, :40])
    upright.save(tmp_path / "upright.jpg", quality=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(
        tmp_path / "sideways.jpg", quality=100, exif=exif)
    rows = space.encoder("image").encode([str(tmp_path / "upright.jpg"),
                                          str(tmp_path / "sideways.jpg")])
    assert float(rows[0] @ rows[1]) > 0.99


def test_texts_encode(space):
    encoder = space.encoder("text")
    rows = encoder.encode(TEXTS)
    assert rows.shape == (len(TEXTS), DIM) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(TEXTS)))
    assert torch.cdist(rows, rows).add(torch.eye(len(TEXTS))).min() > 1e-4
    long_text = " ".join(["word"] * 200)  # longer than the context: truncated, not an error
    assert encoder.encode([long_text]).shape == (1, DIM)
    with pytest.raises(McrxError, match="text items are strings"):
        encoder.encode([3])


def test_one_item_alone_equals_the_same_item_in_a_batch(space, image_files):
    images = [str(p) for p in image_files.values()]
    image_encoder, text_encoder = space.encoder("image"), space.encoder("text")
    batch = image_encoder.encode(images)  # batch_size 4: crosses a batch boundary too
    for i in (0, len(images) - 1):
        assert _max_diff(image_encoder.encode([images[i]])[0], batch[i]) < 1e-5
    texts = image_encoder.encode_prepared([image_encoder.prepare(p) for p in images])
    assert _max_diff(texts, batch) < 1e-5
    batch = text_encoder.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        assert _max_diff(text_encoder.encode([text])[0], batch[i]) < 1e-5


def test_read_inputs_lists_only_images(space, image_files, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_pattern(20, 1)).save(folder / "b.png")
    Image.fromarray(_pattern(20, 2)).save(folder / "sub" / "a.jpg")
    (folder / "captions.txt").write_text("not an image\n")
    (folder / ".hidden.png").write_bytes(b"")
    items = space.encoder("image").read_inputs(folder)
    assert items == [str(folder / "b.png"), str(folder / "sub" / "a.jpg")]
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "x.txt").write_text("a\n")
    with pytest.raises(McrxError, match="no image files"):
        space.encoder("image").read_inputs(tmp_path / "texts")


# ---------------------------------------------------------------------------------------
# Weights: round trips through the real loading code, QuickGELU detection
# ---------------------------------------------------------------------------------------
def _quick_gelu_layers(space) -> int:
    from open_clip.transformer import QuickGELU

    return sum(isinstance(m, QuickGELU) for m in space.model.modules())


def _outputs(space, image_files):
    return (space.encoder("image").encode([str(p) for p in image_files.values()]),
            space.encoder("text").encode(TEXTS))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(space, config_file, image_files, tmp_path, suffix):
    """Weights saved in open_clip's formats load through `pretrained:` and give the same
    embeddings. A bare state dict says nothing about QuickGELU: refused, naming the param,
    until `quick_gelu` is set."""
    path = tmp_path / f"open_clip_model{suffix}"
    state = {k: v.contiguous() for k, v in space.model.state_dict().items()}
    if suffix == ".pt":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    with pytest.raises(McrxError, match=r"params\.quick_gelu: .*open_clip_model.* cannot "
                       r"tell whether .* QuickGELU") as refused:
        build(config_file, pretrained=str(path))
    assert "quick_gelu: true" in str(refused.value)
    loaded = build(config_file, pretrained=str(path), quick_gelu=False)
    assert loaded.weights.kind == "file" and loaded.quick_gelu is False
    assert _quick_gelu_layers(loaded) == 0
    for ours, theirs in zip(_outputs(loaded, image_files), _outputs(space, image_files),
                            strict=True):
        assert _max_diff(ours, theirs) < 1e-5
    assert loaded.fingerprint() != space.fingerprint()
    # a folder is a release folder, with its config: a bare file is named as a file
    with pytest.raises(McrxError, match="open_clip_config.json .* or config.json"):
        build(config_file, pretrained=str(tmp_path), quick_gelu=False)


def test_release_folder_config_is_honoured(space, config_file, tmp_path):
    """A Hub-style release folder: weights beside an open_clip_config.json whose model_cfg
    and preprocess_cfg say how the weights were trained."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in space.model.state_dict().items()},
              tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {**TINY_CONFIG, "quick_gelu": True},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }))
    loaded = build(config_file, pretrained=str(tmp_path))
    assert loaded.quick_gelu is True and _quick_gelu_layers(loaded) > 0
    assert tuple(loaded.model.visual.preprocess_cfg["mean"]) == (0.5, 0.5, 0.5)
    assert loaded.encoder("image").fingerprint() != space.encoder("image").fingerprint()


def _openai_state(space) -> dict[str, torch.Tensor]:
    """The model's weights as OpenAI's checkpoints hold them: half precision plus the
    input_resolution / context_length / vocab_size entries."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in
             space.model.state_dict().items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16),
                 vocab_size=torch.tensor(49408))
    return state


def test_openai_state_dict_switches_quick_gelu_on(space, config_file, tmp_path):
    """A plain state dict converted from OpenAI's release keeps OpenAI's metadata entries:
    QuickGELU is switched on for it."""
    state = _openai_state(space)
    path = tmp_path / "ViT-B-32.pt"
    torch.save(state, path)
    loaded = build(config_file, pretrained=str(path))
    assert loaded.quick_gelu is True and _quick_gelu_layers(loaded) > 0
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key].float()), key
    rows = loaded.encoder("text").encode(TEXTS)
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(TEXTS)))
    # an explicit choice wins over detection; activation is part of the fingerprint
    plain = build(config_file, pretrained=str(path), quick_gelu=False)
    assert plain.quick_gelu is False and _quick_gelu_layers(plain) == 0
    assert plain.fingerprint() != loaded.fingerprint()
    assert _max_diff(plain.encoder("text").encode(TEXTS), rows) > 1e-4


def test_tags_and_offline_cache(config_file, monkeypatch, tmp_path):
    from mcrx_clip.space import resolve_weights

    assert resolve_weights("ViT-B-32", "openai").quick_gelu is True
    assert resolve_weights("ViT-B-32", "laion2b_s34b_b79k").quick_gelu is False
    with pytest.raises(McrxError, match="not an open_clip pretrained tag"):
        resolve_weights("ViT-B-32", "no_such_tag")
    # a tag that is not cached fails at once offline instead of hanging on a download
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    began = time.perf_counter()
    with pytest.raises(McrxError, match="offline"):
        get_registry().space("clip/ViT-B-32").build("clip/ViT-B-32",
                                                     params={"pretrained": "openai"})
    assert time.perf_counter() - began < 60
    if os.environ.get("HF_HUB_OFFLINE") != "0":
        assert huggingface_hub.constants.HF_HUB_OFFLINE


def test_configuration_errors(config_file, tmp_path):
    registry = get_registry()
    with pytest.raises(McrxError, match="no architecture 'not-a-model'"):
        registry.space("clip/not-a-model").build("clip/not-a-model",
                                                 params={"random_weights": True})
    with pytest.raises(McrxError, match="rename it to other.json"):
        registry.space("clip/other").build("clip/other",
                                           params={"model_config": str(config_file),
                                                   "random_weights": True})
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, wrong)
    with pytest.raises(McrxError, match="cannot load .*wrong.pt"):
        build(config_file, pretrained=str(wrong), quick_gelu=False)


def test_fingerprints(space, config_file):
    again = build(config_file, random_weights=True, batch_size=4)
    image, text = space.encoder("image"), space.encoder("text")
    assert again.fingerprint() == space.fingerprint()
    assert again.encoder("image").fingerprint() == image.fingerprint()
    assert image.fingerprint() != text.fingerprint()
    # seeded random weights: a rebuild gives the same space, so caching under it is sound
    assert _max_diff(again.encoder("text").encode(TEXTS), text.encode(TEXTS)) < 1e-6


# ---------------------------------------------------------------------------------------
# OpenAI's TorchScript release, open_clip Hub folders, transformers folders
# ---------------------------------------------------------------------------------------
#: an OpenAI-layout tiny ViT: attention heads of width 64 as in every OpenAI CLIP, so that
#: open_clip's own OpenAI loader (which derives heads as width // 64) can rebuild it
OPENAI_ARCH = "mcrx-test-openai-vit"
OPENAI_CONFIG = {
    "embed_dim": DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@pytest.fixture(scope="module")
def openai_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openai-configs") / f"{OPENAI_ARCH}.json"
    path.write_text(json.dumps(OPENAI_CONFIG))
    return path


def _rows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


@pytest.fixture(scope="module")
def openai_archive(openai_config_file, tmp_path_factory) -> Path:
    """A TorchScript archive made the way OpenAI made ViT-B-32.pt: the CLIP module (same
    parameter names as OpenAI's clip/model.py) with QuickGELU, traced (forward,
    encode_image, encode_text), weights in half precision, and the input_resolution /
    context_length / vocab_size entries in its state dict."""
    import open_clip

    open_clip.add_model_config(openai_config_file)
    torch.manual_seed(1)
    model = open_clip.create_model(OPENAI_ARCH, force_quick_gelu=True).eval()
    for name, value in (("input_resolution", 32), ("context_length", 16),
                        ("vocab_size", 49408)):
        if name in vars(model):  # open_clip keeps these as plain ints
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    # OpenAI's causal mask is a plain tensor attribute, traced as a constant; open_clip's
    # is a non-persistent buffer, which a traced module would save with the weights
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask
    image = torch.randn(2, 3, 32, 32)
    text = open_clip.get_tokenizer(OPENAI_ARCH)(TEXTS[:2])
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"forward": (image, text),
                                                "encode_image": (image,),
                                                "encode_text": (text,)})
    traced.half()
    path = tmp_path_factory.mktemp("openai") / "ViT-B-32.pt"
    traced.save(str(path))
    return path


def test_openai_torchscript_release(openai_config_file, openai_archive, image_files):
    """OpenAI's TorchScript file: QuickGELU is switched on, and mcrx's embeddings equal the
    archive's own compiled encode_image / encode_text and open_clip's OpenAI loader
    (load_openai_model) on the same inputs; with GELU they do not."""
    import open_clip

    from mcrx_clip.space import is_torchscript

    assert is_torchscript(openai_archive)
    space = build(openai_config_file, pretrained=str(openai_archive))
    assert space.quick_gelu is True and space.weights.torchscript
    assert _quick_gelu_layers(space) > 0
    images = [str(p) for p in image_files.values()]
    image_encoder, text_encoder = space.encoder("image"), space.encoder("text")
    pixels = torch.stack([image_encoder.prepare(p) for p in images])
    tokens = torch.stack([text_encoder.prepare(t) for t in TEXTS])
    ours_image, ours_text = image_encoder.encode(images), text_encoder.encode(TEXTS)

    archive = torch.jit.load(str(openai_archive), map_location="cpu").float()
    reference = open_clip.load_openai_model(str(openai_archive), precision="fp32",
                                            device="cpu").eval()
    with torch.no_grad():
        for model in (archive, reference):
            assert _max_diff(ours_image, _rows(model.encode_image(pixels))) < 1e-5
            assert _max_diff(ours_text, _rows(model.encode_text(tokens))) < 1e-5
        gelu = build(openai_config_file, pretrained=str(openai_archive), quick_gelu=False)
        assert _max_diff(gelu.encoder("image").encode(images),
                         _rows(archive.encode_image(pixels))) > 1e-3


def _hub_folder(space, folder: Path, quick_gelu: bool | None, weights_name: str) -> Path:
    """An open_clip Hub folder: weights beside open_clip_config.json (model_cfg carries
    quick_gelu only for OpenAI-trained models, as on the Hub)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in space.model.state_dict().items()}
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, folder / weights_name)
    else:
        torch.save(state, folder / weights_name)
    model_cfg = dict(TINY_CONFIG, **({} if quick_gelu is None else {"quick_gelu": quick_gelu}))
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    return folder / weights_name


@pytest.mark.parametrize("quick_gelu", [True, None])
@pytest.mark.parametrize("weights_name", ["open_clip_pytorch_model.bin",
                                          "open_clip_model.safetensors"])
def test_open_clip_hub_files_decide_quick_gelu(space, config_file, image_files, tmp_path,
                                               quick_gelu, weights_name):
    """The Hub folder (or its weights file named alone) takes QuickGELU from its own
    open_clip_config.json, and embeds exactly as open_clip's own `local-dir:` loading of
    the folder does."""
    import open_clip

    path = _hub_folder(space, tmp_path / "hub", quick_gelu, weights_name)
    expected = bool(quick_gelu)
    images = [str(p) for p in image_files.values()]
    reference, _, transform = open_clip.create_model_and_transforms(f"local-dir:{path.parent}")
    reference.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path.parent}")
    with torch.no_grad():
        ref_image = _rows(reference.encode_image(
            torch.stack([transform(load_image_upright(p)) for p in images])))
        ref_text = _rows(reference.encode_text(tokenizer(TEXTS)))
    for named in (path.parent, path):
        loaded = build(config_file, pretrained=str(named))
        assert loaded.quick_gelu is expected
        assert (_quick_gelu_layers(loaded) > 0) is expected
        assert "open_clip_config.json" in loaded_reason(loaded, config_file, named)
        assert _max_diff(loaded.encoder("image").encode(images), ref_image) < 1e-5
        assert _max_diff(loaded.encoder("text").encode(TEXTS), ref_text) < 1e-5


def load_image_upright(path: str):
    from PIL import ImageOps

    with Image.open(path) as image:
        return ImageOps.exif_transpose(image)


def loaded_reason(space, config_file, named) -> str:
    from mcrx_clip.space import resolve_weights

    return resolve_weights(ARCH, str(named)).why


# --- transformers folders ---------------------------------------------------------------
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _write_transformers_folder(folder: Path, weights: str = "model.safetensors") -> Path:
    """A transformers CLIP folder shaped like openai/clip-vit-base-patch32
    (``clip_release_format.write_transformers_folder``) with the tiny architecture."""
    return clip_release_format.write_transformers_folder(
        folder, weights=weights, image_size=32, projection_dim=DIM,
        text={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 2, "max_position_embeddings": 16},
        vision={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                "num_attention_heads": 2, "patch_size": 8})


@pytest.fixture(scope="module")
def transformers_dir(tmp_path_factory) -> Path:
    return _write_transformers_folder(tmp_path_factory.mktemp("hf") / "clip-vit-tiny")


@pytest.fixture(scope="module")
def parity_images(tmp_path_factory) -> dict[str, Path]:
    """Real files of the kinds that trip preprocessing up: a sideways JPEG with EXIF
    orientation 6, a PNG with alpha, a grey PNG, a palette GIF with a transparent index,
    and non-square pictures whose crop offsets are odd halves (x.5 where the two
    references round differently)."""
    folder = tmp_path_factory.mktemp("parity")
    files = {}
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_pattern(49, 11)[:, :40]).save(folder / "exif6.jpg", quality=95,
                                                    exif=exif)
    files["exif6.jpg"] = folder / "exif6.jpg"
    rgba = np.dstack([_pattern(48, 12), np.linspace(0, 255, 48 * 48).reshape(48, 48)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(folder / "alpha.png")
    files["alpha.png"] = folder / "alpha.png"
    Image.fromarray(_pattern(50, 13)).convert("L").save(folder / "grey.png")
    files["grey.png"] = folder / "grey.png"
    Image.fromarray(_pattern(45, 14)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "palette.gif", transparency=0)
    files["palette.gif"] = folder / "palette.gif"
    Image.fromarray(_pattern(64, 15)[:40]).save(folder / "wide.png")  # 64×40
    files["wide.png"] = folder / "wide.png"
    Image.fromarray(_pattern(49, 16)[:, :40]).save(folder / "tall.png")  # 40×49 → 32×39
    files["tall.png"] = folder / "tall.png"
    return files


def authors_pixels(path: Path, size: int = 32, crop: int = 32) -> torch.Tensor:
    """The Ex-MCR authors' image preprocessing, compactly: MCR-PEFT/Ex-MCR
    exmcr/trunks.py (commit 1dd0197d) opens each file with a plain ``Image.open`` (no EXIF
    rotation) and calls transformers' CLIPProcessor; with transformers 4.29.1 (pinned in
    MCR-PEFT/C-MCR requirements.txt) CLIPImageProcessor ran, in
    src/transformers/image_processing_clip.py and image_transforms.py: convert_to_rgb
    (PIL ``convert("RGB")``), resize the shortest side to ``size`` (long side
    ``int(size * long / short)``) with PIL bicubic, centre crop at ``(h - crop) // 2``,
    rescale 1/255, normalise with OpenAI's mean/std, channels first."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    array = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    array = array[top:top + crop, left:left + crop].astype(np.float64) / 255
    array = (array - OPENAI_MEAN) / OPENAI_STD
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32))


def open_clip_pixels(path: Path, size: int = 32) -> torch.Tensor:
    """open_clip's eval transform for a square 'shortest' resize, compactly
    (mlfoundations/open_clip src/open_clip/transform.py ``image_transform``, v3.3.0):
    torchvision Resize(size, bicubic) on the picture as it is (PIL resizes palette images
    with nearest), CenterCrop (offsets ``round((h - crop) / 2)``), then ``convert("RGB")``,
    ToTensor, Normalize with OpenAI's mean/std."""
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if width <= height else (new_long, size)
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    array = np.asarray(image).astype(np.float32) / 255
    array = (array - np.float32(OPENAI_MEAN)) / np.float32(OPENAI_STD)
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_transformers_folder_matches_clipmodel(config_file, transformers_dir, parity_images,
                                               tmp_path, weights):
    """A transformers CLIP folder embeds as the authors' code does: the pixels equal the
    reference preprocessing written from it, and the embeddings equal transformers'
    CLIPModel.get_image_features / get_text_features (normalised) on the reference pixels
    and the folder's tokenizer (padding=True, as the authors call it)."""
    from transformers import AutoTokenizer, CLIPModel

    folder = (transformers_dir if weights == "model.safetensors"
              else _write_transformers_folder(tmp_path / "bin", weights))
    space = build(config_file, pretrained=str(folder), exif_transpose=False)
    assert space.weights.kind == "transformers" and space.quick_gelu is True
    paths = [str(p) for p in parity_images.values()]
    encoder = space.encoder("image")
    for path in paths:
        assert _max_diff(encoder.prepare(path), authors_pixels(Path(path))) < 1e-5, path

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    texts = [*TEXTS, "A much longer caption that pads the others in its batch"]
    with torch.no_grad():
        image_out = model.get_image_features(
            pixel_values=torch.stack([authors_pixels(Path(p)) for p in paths]))
        text_out = model.get_text_features(**tokenizer(texts, padding=True,
                                                       return_tensors="pt"))
    pooled = [o if isinstance(o, torch.Tensor) else o.pooler_output
              for o in (image_out, text_out)]
    ours_image, ours_text = encoder.encode(paths), space.encoder("text").encode(texts)
    assert _max_diff(ours_image, _rows(pooled[0])) < 1e-5
    assert _max_diff(ours_text, _rows(pooled[1])) < 1e-5
    assert float((ours_image * _rows(pooled[0])).sum(-1).min()) > 1 - 1e-6
    # one text alone is the same row as in a padded batch
    assert _max_diff(space.encoder("text").encode(texts[:1])[0], ours_text[0]) < 1e-5


def test_transformers_folder_exif_and_checks(config_file, openai_config_file,
                                             transformers_dir, parity_images, tmp_path):
    """exif_transpose (default on) turns the sideways photo upright, which the authors'
    pipeline does not; the fingerprints keep the two apart. Wrong folders are named."""
    from PIL import ImageOps

    upright = build(config_file, pretrained=str(transformers_dir))
    plain = build(config_file, pretrained=str(transformers_dir), exif_transpose=False)
    photo = parity_images["exif6.jpg"]
    with Image.open(photo) as image:
        turned = ImageOps.exif_transpose(image)
    assert turned.size == (49, 40)
    assert _max_diff(upright.encoder("image").prepare(str(photo)),
                     upright.preprocess(turned)) < 1e-6
    assert _max_diff(upright.encoder("image").prepare(str(photo)),
                     authors_pixels(photo)) > 0.1
    assert upright.encoder("image").fingerprint() != plain.encoder("image").fingerprint()
    assert upright.encoder("text").fingerprint() == plain.encoder("text").fingerprint()
    # the weights file named alone finds its folder
    alone = build(config_file, pretrained=str(transformers_dir / "model.safetensors"))
    assert alone.weights.kind == "transformers"
    # another architecture in the folder, a missing tokenizer, mixed up weights
    with pytest.raises(McrxError, match="not the mcrx-test-openai-vit architecture"):
        build(openai_config_file, pretrained=str(transformers_dir))
    broken = _write_transformers_folder(tmp_path / "broken")
    (broken / "merges.txt").unlink()
    with pytest.raises(McrxError, match="vocab.json \\+ merges.txt"):
        build(config_file, pretrained=str(broken))
    loose = tmp_path / "loose" / "weights.safetensors"
    loose.parent.mkdir()
    loose.write_bytes((transformers_dir / "model.safetensors").read_bytes())
    with pytest.raises(McrxError, match="transformers CLIPModel weights; give the folder"):
        build(config_file, pretrained=str(loose))


def test_open_clip_preprocessing_parity(space, config_file, parity_images, tmp_path):
    """open_clip-format weights: mcrx's pixels (exif_transpose off) equal open_clip's
    transform written out from its source, for every kind of file; end to end the
    embeddings equal the open_clip model on those pixels."""
    path = _hub_folder(space, tmp_path / "hub", None, "open_clip_model.safetensors")
    loaded = build(config_file, pretrained=str(path.parent), exif_transpose=False)
    paths = [str(p) for p in parity_images.values()]
    encoder = loaded.encoder("image")
    for item in paths:
        assert _max_diff(encoder.prepare(item), open_clip_pixels(Path(item))) < 1e-5, item
    with torch.no_grad():
        reference = _rows(space.model.encode_image(
            torch.stack([open_clip_pixels(Path(p)) for p in paths])))
    assert _max_diff(encoder.encode(paths), reference) < 1e-5


def test_pretrained_is_checked_by_validate(openai_archive, transformers_dir, tmp_path):
    """`pretrained` is marked as a weights field: `mcrx validate` opens OpenAI's
    TorchScript archive and transformers / open_clip folders as such, and names a broken
    file; a tag is left to open_clip."""
    from mcrx.store.weights import weights_problems
    from mcrx_clip.params import ClipParams

    for good in (openai_archive, transformers_dir):
        assert weights_problems(ClipParams(pretrained=str(good))) == []
    assert weights_problems(ClipParams(pretrained="openai")) == []
    broken = tmp_path / "ViT-B-32.pt"
    broken.write_bytes(openai_archive.read_bytes()[:5000])
    ((field, message),) = weights_problems(ClipParams(pretrained=str(broken)))
    assert field == "pretrained" and str(broken) in message
