"""Tests of the ``clip`` plugin: a real open_clip ViT (tiny config written here) with
random weights, real image files of every common format, and weight files in the layouts
of the real releases (open_clip state dicts, safetensors, OpenAI's TorchScript archives)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    """Build through the registry, exactly as a recipe does."""
    name = f"clip/{ARCH}"
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
    """Weights saved in open_clip's release formats load through `pretrained:` and give
    the same embeddings; such files carry no OpenAI marks, so GELU stays plain."""
    path = tmp_path / f"open_clip_model{suffix}"
    state = {k: v.contiguous() for k, v in space.model.state_dict().items()}
    if suffix == ".pt":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    loaded = build(config_file, pretrained=str(path))
    assert loaded.weights.kind == "file" and loaded.quick_gelu is False
    assert _quick_gelu_layers(loaded) == 0
    for ours, theirs in zip(_outputs(loaded, image_files), _outputs(space, image_files),
                            strict=True):
        assert _max_diff(ours, theirs) < 1e-5
    # the folder holding the file works too, and names the same weights
    from_folder = build(config_file, pretrained=str(tmp_path))
    assert from_folder.fingerprint() == loaded.fingerprint() != space.fingerprint()


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


def _torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose state dict is ``state``, as OpenAI ships CLIP."""
    root = torch.nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, torch.nn.Module())
            node = getattr(node, part)
        node.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))


@pytest.mark.parametrize("layout", ["state_dict", "torchscript"])
def test_openai_weights_switch_quick_gelu_on(space, config_file, tmp_path, layout):
    state = _openai_state(space)
    path = tmp_path / "ViT-B-32.pt"
    if layout == "torchscript":
        _torchscript_archive(state, path)
    else:
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
        build(config_file, pretrained=str(wrong))


def test_fingerprints(space, config_file):
    again = build(config_file, random_weights=True, batch_size=4)
    image, text = space.encoder("image"), space.encoder("text")
    assert again.fingerprint() == space.fingerprint()
    assert again.encoder("image").fingerprint() == image.fingerprint()
    assert image.fingerprint() != text.fingerprint()
    # seeded random weights: a rebuild gives the same space, so caching under it is sound
    assert _max_diff(again.encoder("text").encode(TEXTS), text.encode(TEXTS)) < 1e-6
