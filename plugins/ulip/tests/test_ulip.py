"""Tests of the ``ulip`` plugin: offline, random weights, small architectures except where
the full-size layout itself is under test."""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from mcrx import McrxError
from mcrx.plugin.builtin import register_modalities
from mcrx.plugin.registry import ComponentSpec, Registry
from mcrx.recipe import parse_recipe
from mcrx.recipe.check import check_recipe
from mcrx_ulip import plugin
from mcrx_ulip.model import (
    Ulip2,
    Ulip2Config,
    load_model,
    random_model,
    read_checkpoint,
    save_checkpoint,
)
from mcrx_ulip.params import PointBertParams
from mcrx_ulip.pointbert import PointBERT, farthest_point_sample, group_points, knn
from mcrx_ulip.pointclouds import normalize, prepare_cloud, read_npy, resample
from mcrx_ulip.space import UlipSpace, prepare_image

SMALL = dict(depth=2, width=48, heads=6, groups=32, group_size=8, npoints=256,
             image_depth=1, text_depth=1, batch_size=2, device="cpu")


def small_space(**params) -> UlipSpace:
    return UlipSpace("ulip/pointbert", PointBertParams(**{**SMALL, **params}))


@pytest.fixture(scope="module")
def space() -> UlipSpace:
    return small_space(random_weights=True)


# ---------------------------------------------------------------------------------------
# The upstream layout: salesforce/ULIP ULIP_PointBERT (models/ULIP_models.py, with
# models/pointbert/point_encoder.py + dvae.py, PointTransformer_8192point.yaml, and
# timm's vit_base_patch16_224 as SLIP's image tower), as saved by DDP in pointbert_ULIP-2.pt
# ---------------------------------------------------------------------------------------
def upstream_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    pe = "module.point_encoder."
    for conv, c_in, c_mid, c_out in (("first_conv", 3, 128, 256), ("second_conv", 512, 512, 256)):
        shapes[f"{pe}encoder.{conv}.0.weight"] = (c_mid, c_in, 1)
        shapes[f"{pe}encoder.{conv}.0.bias"] = (c_mid,)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{pe}encoder.{conv}.1.{stat}"] = (c_mid,)
        shapes[f"{pe}encoder.{conv}.1.num_batches_tracked"] = ()
        shapes[f"{pe}encoder.{conv}.3.weight"] = (c_out, c_mid, 1)
        shapes[f"{pe}encoder.{conv}.3.bias"] = (c_out,)
    shapes.update({
        f"{pe}reduce_dim.weight": (384, 256), f"{pe}reduce_dim.bias": (384,),
        f"{pe}cls_token": (1, 1, 384), f"{pe}cls_pos": (1, 1, 384),
        f"{pe}pos_embed.0.weight": (128, 3), f"{pe}pos_embed.0.bias": (128,),
        f"{pe}pos_embed.2.weight": (384, 128), f"{pe}pos_embed.2.bias": (384,),
        f"{pe}norm.weight": (384,), f"{pe}norm.bias": (384,),
    })
    for i in range(12):
        b = f"{pe}blocks.blocks.{i}."
        shapes.update({
            b + "norm1.weight": (384,), b + "norm1.bias": (384,),
            b + "attn.qkv.weight": (1152, 384),  # no qkv bias
            b + "attn.proj.weight": (384, 384), b + "attn.proj.bias": (384,),
            b + "norm2.weight": (384,), b + "norm2.bias": (384,),
            b + "mlp.fc1.weight": (1536, 384), b + "mlp.fc1.bias": (1536,),
            b + "mlp.fc2.weight": (384, 1536), b + "mlp.fc2.bias": (384,),
        })
    v = "module.visual."
    shapes.update({
        v + "cls_token": (1, 1, 768), v + "pos_embed": (1, 197, 768),
        v + "patch_embed.proj.weight": (768, 3, 16, 16), v + "patch_embed.proj.bias": (768,),
        v + "norm.weight": (768,), v + "norm.bias": (768,),
    })
    for i in range(12):
        b = f"{v}blocks.{i}."
        shapes.update({
            b + "norm1.weight": (768,), b + "norm1.bias": (768,),
            b + "attn.qkv.weight": (2304, 768), b + "attn.qkv.bias": (2304,),
            b + "attn.proj.weight": (768, 768), b + "attn.proj.bias": (768,),
            b + "norm2.weight": (768,), b + "norm2.bias": (768,),
            b + "mlp.fc1.weight": (3072, 768), b + "mlp.fc1.bias": (3072,),
            b + "mlp.fc2.weight": (768, 3072), b + "mlp.fc2.bias": (768,),
        })
    for i in range(12):
        b = f"module.transformer.resblocks.{i}."
        shapes.update({
            b + "attn.in_proj_weight": (1536, 512), b + "attn.in_proj_bias": (1536,),
            b + "attn.out_proj.weight": (512, 512), b + "attn.out_proj.bias": (512,),
            b + "ln_1.weight": (512,), b + "ln_1.bias": (512,),
            b + "mlp.c_fc.weight": (2048, 512), b + "mlp.c_fc.bias": (2048,),
            b + "mlp.c_proj.weight": (512, 2048), b + "mlp.c_proj.bias": (512,),
            b + "ln_2.weight": (512,), b + "ln_2.bias": (512,),
        })
    shapes.update({
        "module.token_embedding.weight": (49408, 512),
        "module.positional_embedding": (77, 512),
        "module.ln_final.weight": (512,), "module.ln_final.bias": (512,),
        "module.text_projection": (512, 512),
        "module.image_projection": (768, 512),
        "module.pc_projection": (768, 512),
        "module.logit_scale": (),
    })
    return shapes


def test_full_size_state_dict_is_the_upstream_layout():
    with torch.device("meta"):  # the full model without initialising 150 M parameters
        model = Ulip2(Ulip2Config())
    ours = {"module." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == upstream_shapes()


def test_upstream_state_dict_loads_strictly():
    upstream = {k.removeprefix("module."): torch.empty(s) for k, s in upstream_shapes().items()}
    model = load_model(upstream, Ulip2Config())
    assert model.towers == ("pointcloud", "image", "text")
    assert model.point_encoder.blocks.blocks[11].attn.qkv.weight.device.type == "cpu"
    # the point tower alone (a checkpoint without image and text weights) is enough ...
    point_only = {k: v for k, v in upstream.items()
                  if k.startswith(("point_encoder.", "pc_projection", "logit_scale"))}
    assert load_model(point_only, Ulip2Config()).towers == ("pointcloud",)
    # ... but every key of a tower must be there, nothing else, each with its shape
    with pytest.raises(McrxError, match="missing keys: point_encoder.norm.bias"):
        load_model({k: v for k, v in point_only.items() if k != "point_encoder.norm.bias"},
                   Ulip2Config())
    with pytest.raises(McrxError, match="unexpected keys: point_encoder.extra"):
        load_model({**point_only, "point_encoder.extra": torch.zeros(1)}, Ulip2Config())
    with pytest.raises(McrxError, match="shape mismatches: pc_projection"):
        load_model({**point_only, "pc_projection": torch.zeros(768, 256)}, Ulip2Config())


def test_full_size_pointbert_shapes():
    torch.manual_seed(0)
    encoder = PointBERT().eval()  # the paper's configuration: 512 groups × 32, width 384
    clouds = torch.from_numpy(np.stack([
        normalize(np.random.default_rng(i).normal(size=(8192, 3)).astype(np.float32))
        for i in range(2)
    ]))
    patches, centres = group_points(clouds, 512, 32)
    assert patches.shape == (2, 512, 32, 3) and centres.shape == (2, 512, 3)
    with torch.inference_mode():
        features = encoder(clouds)
    assert features.shape == (2, 768) and torch.isfinite(features).all()


# ---------------------------------------------------------------------------------------
# FPS and kNN against brute force
# ---------------------------------------------------------------------------------------
def fps_reference(points: np.ndarray, n: int, skip_near_origin: bool) -> list[int]:
    """pointnet2_ops' furthest_point_sampling_kernel, one point at a time."""
    nearest = np.full(len(points), 1e10, dtype=np.float32)
    chosen = [0]
    for _ in range(n - 1):
        last, best, best_index = points[chosen[-1]], -1.0, 0
        for k, p in enumerate(points):
            if skip_near_origin and (p * p).sum() <= 1e-3:
                continue
            nearest[k] = min(nearest[k], ((p - last) ** 2).sum())
            if nearest[k] > best:
                best, best_index = nearest[k], k
        chosen.append(best_index)
    return chosen


@pytest.mark.parametrize("skip_near_origin", [False, True])
def test_farthest_point_sample_matches_brute_force(skip_near_origin):
    rng = np.random.default_rng(0)
    clouds = rng.uniform(-1, 1, size=(3, 80, 3)).astype(np.float32)
    clouds[:, 5:9] *= 0.01  # points near the origin, which the CUDA kernel never picks
    got = farthest_point_sample(torch.from_numpy(clouds), 20, skip_near_origin)
    for cloud, indices in zip(clouds, got, strict=True):
        assert indices.tolist() == fps_reference(cloud, 20, skip_near_origin)
    if skip_near_origin:
        assert not set(got.flatten().tolist()) & {5, 6, 7, 8}


def test_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2, 100, 3)).astype(np.float32)
    centres = rng.normal(size=(2, 7, 3)).astype(np.float32)
    got = knn(torch.from_numpy(points), torch.from_numpy(centres), 5).numpy()  # (2, 7, 5)
    for b in range(2):
        dist = ((centres[b][:, None] - points[b][None]) ** 2).sum(-1)  # (7, 100)
        np.testing.assert_array_equal(got[b], np.argsort(dist, axis=1, kind="stable")[:, :5])


# ---------------------------------------------------------------------------------------
# Input formats
# ---------------------------------------------------------------------------------------
CUBE = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0],
                 [0, 0, 3], [2, 0, 3], [2, 1, 3], [0, 1, 3]], dtype=np.float32) + 5
QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]


def write_ply(path, vertices, faces=None, binary=False):
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              "comment written by the mcrx-ulip tests", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue"]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    colours = np.full((len(vertices), 3), 200, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode())
        if binary:
            rows = np.empty(len(vertices), dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
            rows["xyz"], rows["rgb"] = vertices, colours
            f.write(rows.tobytes())
            for face in faces or []:
                f.write(np.uint8(len(face)).tobytes() + np.asarray(face, "<i4").tobytes())
        else:
            for p, c in zip(vertices, colours, strict=True):
                f.write((" ".join(repr(float(x)) for x in p) + " " + " ".join(map(str, c))
                         + "\n").encode())
            for face in faces or []:
                f.write((f"{len(face)} " + " ".join(map(str, face)) + "\n").encode())


def test_point_set_formats_agree(tmp_path):
    points = np.random.default_rng(2).normal(size=(300, 3)).astype(np.float32) * 4 + 7
    rgb = np.random.default_rng(3).uniform(size=(300, 3)).astype(np.float32)
    np.save(tmp_path / "xyz.npy", points)
    np.save(tmp_path / "xyzrgb.npy", np.concatenate([points, rgb], axis=1))
    # the C-MCR / Ex-MCR asset layout: a pickled dict with strings, lists and arrays
    asset = {"dataset": "Objaverse", "id": "abc", "text": ["a rock"], "xyz": points, "rgb": rgb}
    np.save(tmp_path / "asset.npy", np.array(asset, dtype=object), allow_pickle=True)
    write_ply(tmp_path / "ascii.ply", points)
    write_ply(tmp_path / "binary.ply", points, binary=True)

    files = ["xyz.npy", "xyzrgb.npy", "asset.npy", "ascii.ply", "binary.ply"]
    clouds = [prepare_cloud(str(tmp_path / name), npoints=256) for name in files]
    clouds += [prepare_cloud(points, npoints=256), prepare_cloud(asset, npoints=256),
               prepare_cloud(torch.from_numpy(points), npoints=256)]
    for cloud in clouds:
        np.testing.assert_array_equal(cloud, clouds[0])
    assert clouds[0].shape == (256, 3) and clouds[0].dtype == np.float32
    np.testing.assert_allclose(clouds[0].mean(0), 0, atol=1e-5)
    assert np.linalg.norm(clouds[0], axis=1).max() == pytest.approx(1, abs=1e-6)


def test_mesh_formats_agree(tmp_path):
    with open(tmp_path / "cube.obj", "w") as f:
        f.write("# cube\no cube\n" + "".join(f"v {x} {y} {z}\nvt 0 0\n" for x, y, z in CUBE))
        for face in QUADS[:-1]:  # v/vt/vn and v//vn forms, 1-based
            f.write("f " + " ".join(f"{i + 1}/{i + 1}/1" for i in face) + "\n")
        f.write("f " + " ".join(str(i - 8) for i in QUADS[-1]) + "\n")  # negative = relative
    with open(tmp_path / "cube.off", "w") as f:  # ModelNet's glued first line
        f.write(f"OFF{len(CUBE)} {len(QUADS)} 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in CUBE))
        f.write("".join(f"4 {' '.join(map(str, q))}\n" for q in QUADS))
    write_ply(tmp_path / "ascii.ply", CUBE, QUADS)
    write_ply(tmp_path / "binary.ply", CUBE, QUADS, binary=True)

    clouds = [prepare_cloud(str(tmp_path / name), npoints=512)
              for name in ("cube.obj", "cube.off", "ascii.ply", "binary.ply")]
    for cloud in clouds:
        np.testing.assert_array_equal(cloud, clouds[0])
    cloud = clouds[0]
    assert cloud.shape == (512, 3)
    np.testing.assert_allclose(cloud.mean(0), 0, atol=0.05)
    assert np.linalg.norm(cloud, axis=1).max() == pytest.approx(1, abs=1e-6)
    # surface samples: every point lies on a face of the (normalised) box
    lo, hi = cloud.min(0), cloud.max(0)
    on_face = (np.isclose(cloud, lo, atol=1e-4) | np.isclose(cloud, hi, atol=1e-4)).any(1)
    assert on_face.all()
    # area weighting: the two 2×3 faces (largest) get about 6/22 of the points each
    share = np.isclose(cloud[:, 1], lo[1], atol=1e-4).mean()
    assert 0.2 < share < 0.35


def test_npy_pickles_are_restricted(tmp_path):
    np.save(tmp_path / "evil.npy", np.array({"xyz": datetime.date(2020, 1, 1)}, dtype=object),
            allow_pickle=True)
    with pytest.raises(McrxError, match="refusing to load datetime"):
        prepare_cloud(str(tmp_path / "evil.npy"))
    np.save(tmp_path / "noxyz.npy", np.array({"points": np.zeros((4, 3))}, dtype=object),
            allow_pickle=True)
    with pytest.raises(McrxError, match="without an 'xyz' entry"):
        prepare_cloud(str(tmp_path / "noxyz.npy"))
    assert isinstance(read_npy(tmp_path / "noxyz.npy"), dict)


def test_resampling_is_deterministic():
    points = np.random.default_rng(4).normal(size=(100, 3)).astype(np.float32)
    padded = resample(points, 150)
    np.testing.assert_array_equal(padded[:100], points)
    np.testing.assert_array_equal(padded, resample(points, 150))
    np.testing.assert_array_equal(resample(points, 30, "random"), resample(points, 30, "random"))
    thinned = resample(points, 30, "fps")
    expected = fps_reference(points, 30, skip_near_origin=False)
    np.testing.assert_array_equal(thinned, points[expected])
    with pytest.raises(McrxError, match="N×3 or N×6"):
        prepare_cloud(np.zeros((10, 2)))


def test_image_preprocessing_matches_torchvision():
    from torchvision import transforms

    reference = transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    rng = np.random.default_rng(5)
    for h, w in ((300, 451), (500, 240), (224, 224), (100, 120)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_allclose(prepare_image(image), reference(image).numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------
def test_encoders_shapes_normalisation_and_batching(space, tmp_path):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "a.npy", rng.normal(size=(400, 6)))
    clouds = [rng.normal(size=(300, 3)), str(tmp_path / "a.npy"), rng.normal(size=(90, 3))]
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    images = [str(tmp_path / "i.png"), Image.fromarray(rng.integers(0, 256, (99, 77, 3), np.uint8)),
              rng.integers(0, 256, (224, 300, 3), dtype=np.uint8)]
    texts = ["a chair", "a photo of a big red car", "an airplane flying over mountains"]
    for modality, items in (("pointcloud", clouds), ("image", images), ("text", texts)):
        encoder = space.encoder(modality)
        together = encoder.encode(items)  # batch_size 2: two forward passes
        assert together.shape == (3, 512) and together.dtype == torch.float32
        assert together.device.type == "cpu"
        torch.testing.assert_close(together.norm(dim=1), torch.ones(3))
        alone = torch.cat([encoder.encode([item]) for item in items])
        torch.testing.assert_close(alone, together, atol=1e-5, rtol=0)
        assert not torch.allclose(together[0], together[1])
        assert encoder.encode([]).shape == (0, 512)


def test_one_cloud_alone_equals_inside_a_larger_batch():
    space = small_space(random_weights=True, batch_size=4)
    clouds = [np.random.default_rng(i).normal(size=(500, 3)) for i in range(4)]
    together = space.encoder("pointcloud").encode(clouds)
    alone = space.encoder("pointcloud").encode(clouds[2:3])
    torch.testing.assert_close(alone[0], together[2], atol=1e-5, rtol=0)


def test_text_padding_after_end_of_text_is_ignored(space):
    model, tokens = space.model, space.tokenizer(["a chair", "a photo of a big red car"])
    assert tokens.shape == (2, 77)
    x = model.token_embedding(tokens) + model.positional_embedding  # all 77 positions
    x = model.ln_final(model.transformer(x))
    reference = x[torch.arange(2), tokens.argmax(-1)] @ model.text_projection
    torch.testing.assert_close(model.encode_text(tokens), reference, atol=1e-5, rtol=0)


def test_read_inputs_lists_only_supported_files(space, tmp_path):
    np.save(tmp_path / "b.npy", np.zeros((10, 3)))
    write_ply(tmp_path / "a.ply", CUBE)
    (tmp_path / "notes.txt").write_text("not a cloud")
    (tmp_path / ".hidden.npy").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "c.png")
    (tmp_path / "sub").mkdir()
    write_ply(tmp_path / "sub" / "d.ply", CUBE)
    names = lambda items: [str(p).removeprefix(str(tmp_path) + "/") for p in items]  # noqa: E731
    assert names(space.encoder("pointcloud").read_inputs(tmp_path)) == ["a.ply", "b.npy",
                                                                         "sub/d.ply"]
    assert names(space.encoder("image").read_inputs(tmp_path)) == ["c.png"]
    np.save(tmp_path / "stack.npy", np.zeros((5, 64, 3), dtype=np.float32))
    assert len(space.encoder("pointcloud").read_inputs(tmp_path / "stack.npy")) == 5


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------
def test_checkpoint_round_trip(space, tmp_path):
    path = tmp_path / "pointbert_ULIP-2.pt"
    args = argparse.Namespace(model="ULIP_PointBERT", npoints=8192, evaluate_3d=True,
                              betas=(0.9, 0.98), lr=3e-3)
    save_checkpoint(space.model, path, args=args, best_acc1=60.4, optimizer={"state": {}})
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, weights_only=True)
    assert isinstance(raw["args"], argparse.Namespace)
    assert all(key.startswith("module.") for key in raw["state_dict"])
    loaded = small_space(checkpoint=str(path))
    cloud = [np.random.default_rng(7).normal(size=(300, 3))]
    image = [Image.new("RGB", (300, 240), (30, 120, 200))]
    for modality, items in (("pointcloud", cloud), ("image", image), ("text", ["a lamp"])):
        torch.testing.assert_close(loaded.encoder(modality).encode(items),
                                   space.encoder(modality).encode(items), atol=0, rtol=0)
    assert loaded.fingerprint() != space.fingerprint()
    assert loaded.encoder("pointcloud").fingerprint() != loaded.encoder("image").fingerprint()


def test_checkpoint_without_text_weights(space, tmp_path):
    path = tmp_path / "no_text.pt"
    text_keys = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
                 "text_projection")
    state = {"module." + k: v for k, v in space.model.state_dict().items()
             if not k.startswith(text_keys)}
    torch.save({"state_dict": state, "args": argparse.Namespace(model="ULIP_PointBERT")}, path)
    loaded = small_space(checkpoint=str(path))
    assert loaded.encoder("pointcloud").encode([np.ones((300, 3)) * np.arange(3)]).shape == (1, 512)
    with pytest.raises(McrxError, match="has no text weights"):
        loaded.encoder("text").encode(["a lamp"])


def test_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {}, "when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(McrxError, match="refused to unpickle"):
        read_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(McrxError, match="'state_dict' entry"):
        read_checkpoint(path)


def test_random_weights_are_reproducible():
    config = Ulip2Config()
    a = random_model(config, seed=3, towers=("pointcloud",))
    b = random_model(config, seed=3, towers=("pointcloud",))
    torch.testing.assert_close(a.pc_projection, b.pc_projection, atol=0, rtol=0)
    assert a.towers == ("pointcloud",)


# ---------------------------------------------------------------------------------------
# Plugin, params and validation
# ---------------------------------------------------------------------------------------
def test_hook_module_imports_without_torch():
    code = "import sys, mcrx_ulip.plugin; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def registry_with_ulip() -> Registry:
    registry = Registry()
    register_modalities(register=registry.register_callback("modality", "mcrx"))
    plugin.register_spaces(register=registry.register_callback("space", "ulip"))
    # a base space to attach the leaf to: only its registry entry is needed for validation
    registry.add(ComponentSpec(kind="space", name="test/base", plugin="test",
                               modalities=("image", "text"), dim=512))
    return registry


def validation_errors(params: dict) -> dict[str, str]:
    recipe = parse_recipe({
        "name": "t", "method": "ex-mcr",
        "base": {"space": "test/base"},
        "leaves": [{"space": "ulip/pointbert", "bridge": "image", "params": params}],
        "memories": {"image": {"inputs": "images"}, "text": {"inputs": "t.txt"},
                     "pointcloud": {"inputs": "clouds"}},
    })
    return dict(check_recipe(recipe, registry_with_ulip(), check_files=False))


def test_missing_checkpoint_is_reported_at_its_location(tmp_path):
    spec = registry_with_ulip().space("ulip/pointbert")
    assert spec.modalities == ("pointcloud", "image", "text") and spec.dim == 512
    errors = validation_errors({})
    message = errors["leaves.0.params.checkpoint"]
    assert "pointbert_ULIP-2.pt" in message and "salesforce/ULIP" in message
    missing = tmp_path / "nowhere" / "pointbert_ULIP-2.pt"
    message = validation_errors({"checkpoint": str(missing)})["leaves.0.params.checkpoint"]
    assert str(missing) in message and "not found" in message
    assert "leaves.0.params.checkpoint" not in validation_errors({"random_weights": True})
    assert "leaves.0.params.depht" in validation_errors({"random_weights": True, "depht": 2})


def test_params_validation(tmp_path):
    path = tmp_path / "pointbert_ULIP-2.pt"
    path.write_bytes(b"")
    assert PointBertParams(checkpoint=str(path)).npoints == 8192
    with pytest.raises(ValidationError, match="not both"):
        PointBertParams(checkpoint=str(path), random_weights=True)
    with pytest.raises(ValidationError, match="must divide width"):
        PointBertParams(random_weights=True, heads=5)
    with pytest.raises(ValidationError, match="npoints"):
        PointBertParams(random_weights=True, npoints=100)
    for field, info in PointBertParams.model_fields.items():
        assert info.description, field
