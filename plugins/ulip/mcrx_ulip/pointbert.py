"""ULIP-2's point-cloud encoder, PointBERT (Yu et al. 2022), in pure PyTorch (CPU or GPU).

A cloud (B, N, 3) is cut into G patches: farthest point sampling picks G centres, each
centre takes its K nearest points, a mini-PointNet turns each patch into a token. A CLS
token joins the G patch tokens, a 12-block pre-norm transformer mixes them with a position
embedding of the centres re-added before every block, and the output is the concatenation
of the final CLS token and the max over patch tokens: (B, 2·width) = (B, 768).

Module and attribute names follow salesforce/ULIP (``models/pointbert/point_encoder.py`` and
``dvae.py``) so that ``state_dict()`` keys are the upstream ones, e.g.
``blocks.blocks.3.attn.qkv.weight``. Upstream needs CUDA extensions (pointnet2_ops for FPS,
knn_cuda in the dVAE); here both are plain torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PointBertConfig:
    width: int = 384  # token width (upstream trans_dim)
    depth: int = 12  # transformer blocks
    heads: int = 6  # attention heads
    groups: int = 512  # FPS centres = patch tokens per cloud (num_group)
    group_size: int = 32  # neighbours per patch (group_size)
    encoder_dims: int = 256  # mini-PointNet output, before reduce_dim
    mlp_ratio: float = 4.0  # hidden width of the block MLPs, relative to width
    # how the G centres are picked (see farthest_point_sample): "torch" = ULIP's torch
    # ``misc.fps`` (start point drawn at random, here from ``fps_seed``), which ULIP shipped
    # until 2024 and the C-MCR / Ex-MCR code runs; "pointnet2_ops" = the CUDA kernel of
    # ULIP's 2024 code (start at point 0, points with |p|^2 <= 1e-3 never chosen)
    centre_fps: str = "torch"
    fps_seed: int | None = 0  # start of the "torch" rule; None = point 0

    @property
    def out_dim(self) -> int:
        return 2 * self.width  # concat(CLS, max over patches)


# ---------------------------------------------------------------------------------------
# Grouping: farthest point sampling and k nearest neighbours
# ---------------------------------------------------------------------------------------
@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run a loop of tiny kernels on one CPU thread: OpenMP threads only add synchronisation
    there (FPS of 2 × 8192 points on a busy 2-core machine: 0.14 s on one thread, 2.7 s on
    two). The setting is process-wide, so it is restored right after."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def farthest_point_sample(
    xyz: torch.Tensor, n: int, skip_near_origin: bool = False, seed: int | None = None
) -> torch.Tensor:
    """Indices (B, n) of ``n`` farthest points of each cloud in ``xyz`` (B, N, 3).

    Repeatedly takes the point farthest from those chosen (ties go to the lowest index).
    The first point is point 0 when ``seed`` is None; otherwise it is
    ``torch.randint(0, N, (1,))`` drawn from a generator seeded with ``seed``, the draw of
    salesforce/ULIP ``models/pointbert/misc.py`` ``fps`` (commit 1998594, the code of the
    ULIP-2 release, vendored unchanged by MCR-PEFT/Ex-MCR and MCR-PEFT/C-MCR as
    ``{ex,c}mcr/ULIP/models/pointbert/misc.py``), which draws from torch's global generator:
    there, a cloud alone under ``torch.manual_seed(seed)`` starts where it starts here. The
    draw depends only on ``seed`` and N, so a cloud gets the same centres alone or inside a
    batch. With ``skip_near_origin`` it follows the pointnet2_ops CUDA kernel that ULIP's
    2024 code (commit b3474d0) switched to: start at point 0, points with |p|^2 <= 1e-3 never
    chosen after the first (a ball of radius ~0.032 around the centroid of a normalised
    cloud). The loop runs over the ``n`` centres, vectorised over the batch and the points.
    """
    B, N, _ = xyz.shape
    coords = xyz.permute(2, 0, 1).contiguous()  # (3, B, N): one plane per coordinate
    batch = torch.arange(B, device=xyz.device)
    chosen = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    # squared distance of every point to the chosen set; excluded points sit at -1 forever
    nearest = torch.full((B, N), 1e10, dtype=xyz.dtype, device=xyz.device)  # (B, N)
    if skip_near_origin:
        nearest.masked_fill_(coords.square().sum(0) <= 1e-3, -1.0)
    start = 0
    if seed is not None:
        start = int(torch.randint(0, N, (1,), generator=torch.Generator().manual_seed(seed)))
    farthest = torch.full((B,), start, dtype=torch.long, device=xyz.device)  # (B,)
    with _one_cpu_thread(xyz.device):
        for i in range(n):
            chosen[:, i] = farthest
            centre = coords[:, batch, farthest].unsqueeze(-1)  # (3, B, 1)
            dist = (coords - centre).square_().sum(0)  # (B, N): dx² + dy² + dz²
            torch.minimum(nearest, dist, out=nearest)
            farthest = nearest.argmax(-1)  # first maximum: lowest index on ties
    return chosen


CENTRE_FPS = ("torch", "pointnet2_ops")


def knn(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the ``k`` points of ``xyz`` (B, N, 3) nearest to each of the
    ``centres`` (B, G, 3), nearest first. Distances are summed coordinate by coordinate
    (exact differences, not the |a|²+|b|²-2ab expansion) so near-ties resolve alike on any
    batch size."""
    dist = torch.zeros(centres.shape[0], centres.shape[1], xyz.shape[1],
                       dtype=xyz.dtype, device=xyz.device)  # (B, G, N)
    for c in range(3):
        dist += (centres[:, :, None, c] - xyz[:, None, :, c]) ** 2
    return dist.topk(k, dim=-1, largest=False, sorted=True).indices


def group_points(
    xyz: torch.Tensor, groups: int, group_size: int, centre_fps: str = "torch",
    seed: int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut clouds (B, N, 3) into patches: returns neighbourhoods (B, G, K, 3) relative to
    their centre, and the centres (B, G, 3). ``centre_fps`` picks the centres with ULIP's
    torch rule (``"torch"``, first point from ``seed``) or the pointnet2_ops kernel
    (``"pointnet2_ops"``, first point 0, points near the origin skipped). Any N works as
    long as N >= ``group_size`` (and N >= ``groups`` for distinct centres)."""
    if centre_fps not in CENTRE_FPS:
        raise ValueError(f"centre_fps must be one of {CENTRE_FPS}, got {centre_fps!r}")
    batch = torch.arange(xyz.shape[0], device=xyz.device)[:, None]
    if centre_fps == "pointnet2_ops":
        indices = farthest_point_sample(xyz, groups, skip_near_origin=True)
    else:
        indices = farthest_point_sample(xyz, groups, seed=seed)
    centres = xyz[batch, indices]  # (B, G, 3)
    neighbours = knn(xyz, centres, group_size)  # (B, G, K)
    patches = xyz[batch[:, :, None], neighbours]  # (B, G, K, 3)
    return patches - centres.unsqueeze(2), centres


# ---------------------------------------------------------------------------------------
# Modules (bottom-up)
# ---------------------------------------------------------------------------------------
class MiniPointNet(nn.Module):
    """Patch (K points) → one token: shared per-point MLP, max-pool, concat the pooled feature
    back onto every point, a second MLP, max-pool again. Upstream ``dvae.Encoder``."""

    def __init__(self, out_dim: int = 256) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Conv1d(512, out_dim, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        B, G, K, _ = patches.shape
        x = patches.reshape(B * G, K, 3).transpose(1, 2)  # (BG, 3, K)
        x = self.first_conv(x)  # (BG, 256, K)
        pooled = x.max(dim=2, keepdim=True).values  # (BG, 256, 1)
        x = torch.cat([pooled.expand(-1, -1, K), x], dim=1)  # (BG, 512, K)
        x = self.second_conv(x)  # (BG, C, K)
        return x.max(dim=2).values.reshape(B, G, self.out_dim)  # (B, G, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention; qkv without bias, as upstream."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√hd)·v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """The blocks; the position embedding is added again before each one."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointBERT(nn.Module):
    """Clouds (B, N, 3) → features (B, 2·width). N is free (N >= groups); the released
    model was trained on 8192 points centred and scaled to the unit sphere."""

    def __init__(self, config: PointBertConfig = PointBertConfig()) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.encoder = MiniPointNet(config.encoder_dims)
        self.reduce_dim = nn.Linear(config.encoder_dims, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.blocks = TransformerEncoder(width, config.depth, config.heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(width)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        B = points.shape[0]
        config = self.config
        patches, centres = group_points(points[..., :3].contiguous(), config.groups,
                                        config.group_size, config.centre_fps,
                                        config.fps_seed)  # (B, G, K, 3), (B, G, 3)
        tokens = self.reduce_dim(self.encoder(patches))  # (B, G, width)
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)  # (B, 1+G, width)
        pos = torch.cat([self.cls_pos.expand(B, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))  # (B, 1+G, width)
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)  # (B, 2·width)
