"""Parity of the ``ulip/pointbert`` preprocessing with the pipelines it reproduces.

The references below are compact re-implementations written from the upstream code:

- C-MCR / Ex-MCR (MCR-PEFT/C-MCR ``cmcr/trunks.py`` at 038dec1, MCR-PEFT/Ex-MCR
  ``exmcr/trunks.py`` at 0f2baa5): ``load_and_transform_point_cloud_data`` loads the dict
  ``.npy``, takes ``obj['xyz']`` as it is and ``.float()``s it; ``get_3d_feature`` encodes one
  cloud per forward pass. Their vendored ULIP groups points with ``misc.fps`` (random first
  point, ``torch.randint``) and ``dvae.knn_point`` (squared distances by expansion, topk).
- ULIP's loaders (salesforce/ULIP ``data/dataset_3d.py`` at 1998594, the ULIP-2 release):
  ``farthest_point_sample`` (first point ``np.random.randint``) only when a cloud has more
  than ``npoints`` points, then ``pc_normalize``; the 2024 code (b3474d0) groups with the
  pointnet2_ops kernel (first point 0, points with |p|^2 <= 1e-3 skipped).
- Images: ULIP's ``pil_loader`` (``Image.open(f).convert('RGB')``) and SLIP's evaluation
  transform (facebookresearch/SLIP ``eval_zeroshot.py`` at d1de3e7).

Real PointBERT / ViT architectures with random weights; no stand-ins.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageOps

from mcrx import McrxError
from mcrx_ulip.params import PointBertParams
from mcrx_ulip.pointbert import farthest_point_sample
from mcrx_ulip.pointclouds import prepare_cloud
from mcrx_ulip.space import UlipSpace

AUTHORS = dict(sampling="none", normalize=False, centre_fps="torch", fps_seed=0)
ULIP_LOADER = dict(sampling="fps", normalize=True, centre_fps="torch", fps_seed=0)
EARLIER_MCRX = dict(sampling="fps", normalize=True, centre_fps="pointnet2_ops", fps_seed=None)
SMALL = dict(depth=2, width=48, heads=6, groups=64, group_size=16, image_depth=1,
             text_depth=1, batch_size=3, device="cpu", random_weights=True)


def space_with(**params) -> UlipSpace:
    return UlipSpace("ulip/pointbert", PointBertParams(**{**SMALL, **params}))


# ---------------------------------------------------------------------------------------
# The references
# ---------------------------------------------------------------------------------------
def ref_authors_load(path) -> torch.Tensor:
    """trunks.py load_and_transform_point_cloud_data: (1, N, 3) float32, nothing else."""
    obj = np.load(path, allow_pickle=True).item()
    return torch.from_numpy(obj["xyz"]).unsqueeze_(0).float()


def ref_ulip_fps(point: np.ndarray, npoint: int, seed: int) -> np.ndarray:
    """dataset_3d.py farthest_point_sample, numpy's global generator seeded with ``seed``."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        N = point.shape[0]
        xyz = point[:, :3]
        centroids = np.zeros((npoint,))
        distance = np.ones((N,)) * 1e10
        farthest = np.random.randint(0, N)
        for i in range(npoint):
            centroids[i] = farthest
            dist = np.sum((xyz - xyz[farthest, :]) ** 2, -1)
            mask = dist < distance
            distance[mask] = dist[mask]
            farthest = np.argmax(distance, -1)
        return point[centroids.astype(np.int32)]
    finally:
        np.random.set_state(state)


def ref_pc_normalize(pc: np.ndarray) -> np.ndarray:
    pc = pc - np.mean(pc, axis=0)
    return pc / np.max(np.sqrt(np.sum(pc**2, axis=1)))


def ref_ulip_loader(points: np.ndarray, npoints: int, seed: int) -> np.ndarray:
    """ModelNet._get_item: FPS only when there are more points, then pc_normalize."""
    points = points[:, :3].astype(np.float32)
    if npoints < points.shape[0]:
        points = ref_ulip_fps(points, npoints, seed)
    return ref_pc_normalize(points)


def ref_misc_fps(xyz: torch.Tensor, npoint: int, seed: int) -> torch.Tensor:
    """misc.fps (torch, random first point) under torch.manual_seed(seed); indices (B, n)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        B, N, _ = xyz.shape
        centroids = torch.zeros(B, npoint, dtype=torch.long)
        distance = torch.ones(B, N) * 1e10
        farthest = torch.randint(0, N, (B,), dtype=torch.long)
        batch = torch.arange(B)
        for i in range(npoint):
            centroids[:, i] = farthest
            dist = torch.sum((xyz - xyz[batch, farthest, :].view(B, 1, 3)) ** 2, -1)
            distance = torch.min(distance, dist)
            farthest = torch.max(distance, -1)[1]
    return centroids


def ref_pointnet2_ops_fps(points: np.ndarray, n: int) -> np.ndarray:
    """pointnet2_ops furthest_point_sampling_kernel: first point 0, |p|^2 <= 1e-3 skipped."""
    nearest = np.full(len(points), 1e10, dtype=np.float32)
    nearest[(points**2).sum(1) <= 1e-3] = -1
    chosen = [0]
    for _ in range(n - 1):
        d = ((points - points[chosen[-1]]) ** 2).sum(1)
        keep = nearest >= 0
        nearest[keep] = np.minimum(nearest[keep], d[keep])
        chosen.append(int(nearest.argmax()))
    return np.array(chosen)


def ref_encode_pc(space: UlipSpace, xyz: torch.Tensor, seed: int) -> torch.Tensor:
    """ULIP_WITH_IMAGE.encode_pc as the authors run it: dvae.Group with misc.fps and
    knn_point (square_distance by expansion, topk unsorted), then the network's layers."""
    model, cfg = space.model, space.config.point
    net = model.point_encoder
    B, N, _ = xyz.shape
    centres = xyz[torch.arange(B)[:, None], ref_misc_fps(xyz, cfg.groups, seed)]
    sq = -2 * centres @ xyz.transpose(1, 2)
    sq = sq + (centres**2).sum(-1)[..., None] + (xyz**2).sum(-1)[:, None]
    idx = sq.topk(cfg.group_size, dim=-1, largest=False, sorted=False).indices
    patches = xyz[torch.arange(B)[:, None, None], idx] - centres.unsqueeze(2)
    tokens = net.reduce_dim(net.encoder(patches))
    x = torch.cat([net.cls_token.expand(B, -1, -1), tokens], 1)
    pos = torch.cat([net.cls_pos.expand(B, -1, -1), net.pos_embed(centres)], 1)
    x = net.norm(net.blocks(x, pos))
    return F.normalize(torch.cat([x[:, 0], x[:, 1:].max(1).values], -1) @ model.pc_projection,
                       dim=-1)


# ---------------------------------------------------------------------------------------
# Adversarial clouds and the files they are saved as
# ---------------------------------------------------------------------------------------
def adversarial_clouds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10000, 3)).astype(np.float32)
    dup = base[:9000].copy()
    dup[4500:] = dup[:4500]  # every point twice
    origin = base.copy()
    origin[:50] = 0  # exact zeros, which the pointnet2_ops kernel never picks
    origin[50:300] *= 1e-3
    return {
        "off_centre": base * 0.3 + np.float32([40.0, -7.0, 3.0]),
        "large_scale": base * 2500.0,
        "fewer": base[:3000] + 1.5,
        "more": np.concatenate([base, base[:2000] * 0.5 + 3]),
        "origin": origin,
        "duplicated": dup,
    }


CLOUDS = adversarial_clouds()


def save_authors_dict(path, xyz: np.ndarray) -> None:
    """The C-MCR / Ex-MCR asset layout (their assets/*.npy): a pickled dict with these
    keys; xyz and rgb are float16 (N, 3)."""
    obj = {"dataset": "Objaverse", "group": "000-021", "id": "dddd4ae8", "text": ["a thing"],
           "blip_caption": "a thing", "retrieval_text": ["a thing", "another"],
           "xyz": xyz.astype(np.float16), "rgb": np.full_like(xyz, 0.4, dtype=np.float16),
           "image_feat": np.zeros((12, 1280), np.float32)}
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)


def save_ply(path, xyz: np.ndarray) -> None:
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(xyz)}\nproperty float x\nproperty float y\n"
              "property float z\nend_header\n")
    path.write_bytes(header.encode() + xyz.astype("<f4").tobytes())


# ---------------------------------------------------------------------------------------
# Preprocessing parity, per input format
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CLOUDS))
def test_authors_dict_npy_is_fed_as_stored(tmp_path, name):
    path = tmp_path / f"{name}.npy"
    save_authors_dict(path, CLOUDS[name])
    reference = ref_authors_load(path)[0].numpy()
    got = prepare_cloud(str(path), 8192, "none", normalize=False, min_points=512)
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_array_equal(got, reference)  # exactly: no point moves


@pytest.mark.parametrize("name", ["off_centre", "fewer", "more", "duplicated"])
def test_plain_npy_and_ply_follow_ulips_loader(tmp_path, name):
    cloud = CLOUDS[name]
    reference = ref_ulip_loader(cloud, 8192, seed=0)
    rgb = np.random.default_rng(1).uniform(size=cloud.shape).astype(np.float32)
    np.save(tmp_path / "xyz.npy", cloud)
    np.save(tmp_path / "xyzrgb.npy", np.concatenate([cloud, rgb], 1))
    save_ply(tmp_path / "c.ply", cloud)
    # ULIP's ModelNet loader takes a cloud with fewer points as it is: sampling none
    sampling = "none" if len(cloud) < 8192 else "fps"
    for item in ("xyz.npy", "xyzrgb.npy", "c.ply"):
        got = prepare_cloud(str(tmp_path / item), 8192, sampling, normalize=True, fps_seed=0)
        assert got.shape == reference.shape
        np.testing.assert_allclose(got, reference, atol=0, rtol=0)


def test_large_scale_and_points_at_the_origin_normalise_like_ulip():
    for name in ("large_scale", "origin"):
        cloud = CLOUDS[name][:2000]
        got = prepare_cloud(cloud, 1024, "fps", normalize=True, fps_seed=3)
        np.testing.assert_allclose(got, ref_ulip_loader(cloud, 1024, seed=3), atol=0, rtol=0)


def test_meshes_go_through_the_same_preprocessing(tmp_path):
    from mcrx_ulip.pointclouds import read_points

    vertices = CLOUDS["off_centre"][:4]
    (tmp_path / "t.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in vertices)
                                    + "f 1 2 3\nf 1 3 4\n")
    surface = read_points(tmp_path / "t.obj", 8192)  # area-weighted surface samples
    assert surface.shape == (8192, 3)
    for options, reference in (
        (dict(sampling="none", normalize=False), surface),
        (dict(sampling="none", normalize=True), ref_pc_normalize(surface)),
    ):
        got = prepare_cloud(str(tmp_path / "t.obj"), 8192, **options)
        np.testing.assert_allclose(got, reference, atol=0, rtol=0)


def test_earlier_pipeline_is_an_explicit_combination():
    cloud = CLOUDS["origin"][:1500]
    got = prepare_cloud(cloud, 700, "fps", normalize=True, fps_seed=None)
    nearest = np.full(len(cloud), 1e10, np.float32)
    chosen = [0]  # FPS from point 0, no skipping
    for _ in range(699):
        nearest = np.minimum(nearest, ((cloud - cloud[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(nearest.argmax()))
    np.testing.assert_allclose(got, ref_pc_normalize(cloud[chosen]), atol=0, rtol=0)
    xyz = torch.from_numpy(ref_pc_normalize(cloud).astype(np.float32))
    centres = farthest_point_sample(xyz[None], 64, skip_near_origin=True)[0].numpy()
    np.testing.assert_array_equal(centres, ref_pointnet2_ops_fps(xyz.numpy(), 64))


# ---------------------------------------------------------------------------------------
# PointBERT's centres
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["off_centre", "origin", "duplicated"])
def test_centre_fps_torch_matches_misc_fps(name):
    xyz = torch.from_numpy(CLOUDS[name][:3000])[None]
    for seed in (0, 7):
        got = farthest_point_sample(xyz, 128, seed=seed)
        torch.testing.assert_close(got, ref_misc_fps(xyz, 128, seed), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# End to end through the encoder (random PointBERT weights)
# ---------------------------------------------------------------------------------------
def test_authors_pipeline_end_to_end(tmp_path):
    space = space_with(**AUTHORS)
    files, references = [], []
    for name in ("off_centre", "fewer", "more", "origin", "duplicated"):
        path = tmp_path / f"{name}.npy"
        save_authors_dict(path, CLOUDS[name])
        files.append(str(path))
        xyz = ref_authors_load(path)
        with torch.inference_mode():
            direct = F.normalize(space.model.encode_pc(xyz), dim=-1)
            authors = ref_encode_pc(space, xyz, seed=0)
        torch.testing.assert_close(direct, authors, atol=2e-5, rtol=0)
        references.append(direct)
    got = space.encoder("pointcloud").encode(files)  # sizes differ: batched per size
    torch.testing.assert_close(got, torch.cat(references), atol=2e-5, rtol=0)


def test_ulip_loader_pipeline_end_to_end(tmp_path):
    space = space_with(**ULIP_LOADER, npoints=2048)
    cloud = CLOUDS["large_scale"][:5000]
    np.save(tmp_path / "c.npy", cloud)
    xyz = torch.from_numpy(ref_ulip_loader(cloud, 2048, seed=0).astype(np.float32))[None]
    with torch.inference_mode():
        reference = F.normalize(space.model.encode_pc(xyz), dim=-1)
    got = space.encoder("pointcloud").encode([str(tmp_path / "c.npy")])
    torch.testing.assert_close(got, reference, atol=2e-5, rtol=0)


def test_sampling_none_refuses_clouds_smaller_than_the_groups():
    space = space_with(**AUTHORS)
    with pytest.raises(McrxError, match="fewer than the 64 PointBERT needs.*sampling: fps"):
        space.encoder("pointcloud").encode([CLOUDS["fewer"][:40]])
    assert space_with(**ULIP_LOADER, npoints=256).encoder("pointcloud").encode(
        [CLOUDS["fewer"][:40]]).shape == (1, 512)  # fps pads to npoints


def test_options_are_in_the_fingerprints():
    prints = {str(o): space_with(**o).encoder("pointcloud").fingerprint()
              for o in (AUTHORS, ULIP_LOADER, EARLIER_MCRX, {**AUTHORS, "fps_seed": 1})}
    assert len(set(prints.values())) == 4
    images = {space_with(exif_transpose=e).encoder("image").fingerprint() for e in (True, False)}
    assert len(images) == 2


@pytest.mark.parametrize("recipe", ["recipes/audio_3d.yaml", "recipes/ulip_3d.yaml"])
def test_paper_recipes_state_the_authors_pipeline(recipe):
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    leaves = yaml.safe_load((root / recipe).read_text())["leaves"]
    params = next(leaf["params"] for leaf in leaves if leaf["space"] == "ulip/pointbert")
    assert {k: params[k] for k in AUTHORS} == AUTHORS
    assert params["exif_transpose"] is False


# ---------------------------------------------------------------------------------------
# Images: ULIP's loader + SLIP's evaluation transform
# ---------------------------------------------------------------------------------------
def ref_image(path) -> torch.Tensor:
    from torchvision import transforms

    with open(path, "rb") as f:  # dataset_3d.py pil_loader
        image = Image.open(f).convert("RGB")
    return transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), lambda x: x.convert("RGB"),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])(image)


def image_files(tmp_path) -> list[str]:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "exif.jpg", quality=95, exif=exif)
    Image.fromarray(rng.integers(0, 256, (500, 240, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (100, 120), dtype=np.uint8)).save(tmp_path / "l.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "p.png")
    Image.fromarray(pixels[:50, :400]).save(tmp_path / "wide.bmp")
    return [str(tmp_path / n) for n in ("exif.jpg", "a.png", "l.png", "p.png", "wide.bmp")]


def test_image_preprocessing_matches_ulip_and_slip(tmp_path):
    files = image_files(tmp_path)
    plain, upright = space_with(exif_transpose=False), space_with(exif_transpose=True)
    for path in files:
        reference = ref_image(path).numpy()
        got = plain.encoder("image").prepare(path)
        np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)
    # with exif_transpose the tagged photo is the reference of the upright picture
    with Image.open(files[0]) as image:
        ImageOps.exif_transpose(image).save(tmp_path / "upright.png")
    np.testing.assert_allclose(upright.encoder("image").prepare(files[0]),
                               ref_image(tmp_path / "upright.png").numpy(), atol=1e-5, rtol=0)
    assert upright.encoder("image").prepare(files[1]).shape == (3, 224, 224)


def test_image_end_to_end(tmp_path):
    files = image_files(tmp_path)
    space = space_with(exif_transpose=False)
    with torch.inference_mode():
        reference = F.normalize(space.model.encode_image(torch.stack(
            [ref_image(p) for p in files])), dim=-1)
    torch.testing.assert_close(space.encoder("image").encode(files), reference,
                               atol=2e-5, rtol=0)
