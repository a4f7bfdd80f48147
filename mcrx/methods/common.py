"""What both papers share: the shapes a connector is built for, the MLP blocks, InfoNCE, the
memories one leaf needs, the bridge-centric pool, and the closed-form linear baseline.

Roles of a pseudo pair (one leaf space L attached to its parent space P through a shared
bridge modality b; x is the leaf's other modality, y the parent's):

    leaf_x         x̃ in L        (audio in CLAP for CLAP → CLIP)
    leaf_bridge    b̃ in L        (text in CLAP)
    parent_bridge  b̃ in P        (text in CLIP, the same texts as leaf_bridge)
    parent_y       ỹ in P        (image in CLIP)

Memories: X^L (leaf_x), B^L and B^P (the same bridge items encoded by both spaces, row
aligned), Y^P (parent_y). All rows are L2-normalised. Each paper's own parts (its other
pools, connector, loss) are in :mod:`mcrx.methods.exmcr` and :mod:`mcrx.methods.cmcr`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcrx.methods.params import LinearParams
from mcrx.methods.retrieval import soft_retrieve

#: the API a plugin's connector, loss or method builds on (documented in CONTRIBUTING.md,
#: "Writing a connector, a loss or a method")
__all__ = [
    "PAIR_ROLES", "Connector", "ConnectorSpec", "HalfMlpBlock", "LeafMemories", "LinearConnector",
    "Method", "MlpBlock", "Pool", "bridge_centric", "info_nce", "mean_distance", "module_device",
    "on_device_of", "retrieve_rows", "xavier_",
]

PAIR_ROLES = ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")


# ---------------------------------------------------------------------------------------
# Methods: the pools that make pseudo pairs
# ---------------------------------------------------------------------------------------
@dataclass
class LeafMemories:
    """The four memories one leaf needs. ``leaf_bridge`` and ``parent_bridge`` hold the
    same bridge items (row i is one text, image, ...) encoded by each space."""

    leaf_x: torch.Tensor  # (N_x, d_L)
    leaf_bridge: torch.Tensor  # (N_b, d_L)
    parent_bridge: torch.Tensor  # (N_b, d_P)
    parent_y: torch.Tensor  # (N_y, d_P)

    def __post_init__(self) -> None:
        if self.leaf_bridge.shape[0] != self.parent_bridge.shape[0]:
            raise ValueError(
                "the bridge memory must hold the same items in both spaces: "
                f"{self.leaf_bridge.shape[0]} rows in the leaf, "
                f"{self.parent_bridge.shape[0]} in the parent"
            )

    def widths(self) -> dict[str, int]:
        return {role: getattr(self, role).shape[1] for role in PAIR_ROLES}


#: A pool computes the pseudo pairs of one slice of its query rows:
#: ``pool(memories, rows, temperature, **blocks) -> {role: (len(rows), d) tensor}``.
Pool = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    """A way of making pseudo pairs: its pools, each with the role whose rows are its
    queries. The pools' outputs are concatenated; the aligner shuffles all rows every epoch.
    The method's connector, loss and recipe rules are registered with it (``register_methods``
    hook, see :mod:`mcrx.plugin.builtin`)."""

    name: str
    pools: tuple[tuple[Pool, str], ...]

    def count(self, memories: LeafMemories) -> int:
        """How many pseudo pairs the method makes from ``memories``."""
        return sum(len(getattr(memories, queries)) for _, queries in self.pools)

    def chunks(
        self, memories: LeafMemories, temperature: float = 0.01, chunk: int = 65536,
        rank: int = 0, world: int = 1, **blocks: int,
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """(first row, pairs) of consecutive chunks of at most ``chunk`` rows. Under several
        processes, process ``rank`` of ``world`` computes every world-th chunk only."""
        offset, index = 0, 0
        for pool, queries in self.pools:
            size = len(getattr(memories, queries))
            for start in range(0, size, chunk):
                if index % world == rank:
                    yield offset + start, pool(memories, slice(start, start + chunk),
                                               temperature, **blocks)
                index += 1
            offset += size

    def build(self, memories: LeafMemories, temperature: float = 0.01, **blocks: int):
        """Every pseudo pair in memory (small memories, tests); :mod:`mcrx.store.pairs`
        streams them to disk instead."""
        from mcrx.tuning import retain_freed_memory

        retain_freed_memory()  # retrieval tiles are large and short-lived
        parts = [rows for _, rows in self.chunks(memories, temperature, **blocks)]
        return {role: torch.cat([part[role] for part in parts]) for role in PAIR_ROLES}


def retrieve_rows(queries: torch.Tensor, keys: torch.Tensor,
                  values: list[torch.Tensor] | None = None, temperature: float = 0.01,
                  retriever: Callable[..., list[torch.Tensor]] | None = None,
                  **blocks) -> list[torch.Tensor]:
    """What every pool calls: the exact (or top-k) :func:`soft_retrieve`, or the ``retriever``
    the run chose instead (``retrieval.mode: ann``, :class:`mcrx.methods.ann.AnnRetriever`),
    with the same arguments and results."""
    if retriever is not None:
        return retriever(queries, keys, values, temperature, **blocks)
    return soft_retrieve(queries, keys, values, temperature, **blocks)


def bridge_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """C-MCR's only pool and Ex-MCR's first (C-MCR §3.2, Ex-MCR §3.2 "text-centric"): each
    bridge item i (a text for CLIP–CLAP) gives b_i^P and b_i^L;
    ỹ_i = retrieve(b_i^P, Y^P) and x̃_i = retrieve(b_i^L, X^L)."""
    leaf_bridge, parent_bridge = m.leaf_bridge[rows].float(), m.parent_bridge[rows].float()
    (parent_y,) = retrieve_rows(parent_bridge, m.parent_y, None, temperature, **blocks)
    (leaf_x,) = retrieve_rows(leaf_bridge, m.leaf_x, None, temperature, **blocks)
    return {"leaf_x": leaf_x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": parent_y}


# ---------------------------------------------------------------------------------------
# Connectors: the shapes, the base class, the blocks both papers use
# ---------------------------------------------------------------------------------------
@dataclass
class ConnectorSpec:
    """The shapes a connector is built for (one leaf and its parent)."""

    leaf_dim: int
    parent_dim: int
    bridge: str
    leaf_modality: str  # the leaf's non-bridge modality (gets f_l under Ex-MCR)
    parent_modality: str  # the parent's non-bridge modality
    leaf_modalities: list[str] = field(default_factory=list)  # every modality of the leaf
    parent_modalities: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class Connector(nn.Module):
    """Base class. ``noised_roles`` are the pseudo-pair roles that enter a trainable
    projector: the aligner adds Gaussian noise to those only (semantic completion)."""

    noised_roles: tuple[str, ...] = ()
    #: "parent" when the unified space is the parent's own (Ex-MCR), "new" for C-MCR
    target: Literal["parent", "new"] = "parent"

    def __init__(self, spec: ConnectorSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def out_dim(self) -> int:
        return self.spec.parent_dim

    def project(self, side: Literal["leaf", "parent"], modality: str, x: torch.Tensor):
        """Map embeddings of ``modality`` from the leaf (or parent) space to the target
        space; rows come out L2-normalised, on the connector's device."""
        raise NotImplementedError


class MlpBlock(nn.Module):
    """``Linear(d_in→h)+BN+ReLU → Linear(h→d_out)+BN``: the block both papers use
    (their ``MLP`` with ``res_expansion=2``: 512 → 1024 → 512)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)
        )
        self.contract = nn.Sequential(nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.contract(self.expand(x))


class HalfMlpBlock(nn.Module):
    """``Linear(d_in→d_out)+BN+ReLU``: C-MCR's CLIP–ULIP projector (``MLP_Half``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(x)


def xavier_(module: nn.Module) -> None:
    """Xavier-uniform init of every weight matrix (as the released Ex-MCR heads)."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` lives: the device of its first parameter or buffer (CPU if none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def on_device_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 on the device of ``module``: a connector accepts rows from anywhere."""
    return x.to(device=module_device(module), dtype=torch.float32)


# ---------------------------------------------------------------------------------------
# Losses: InfoNCE and the intra-space attraction
# ---------------------------------------------------------------------------------------
def info_nce(x: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE(x, z): the symmetric CLIP loss over a batch of L2-normalised rows,
    ½·[CE(x·zᵀ/τ, diag) + CE(z·xᵀ/τ, diag)]; the i-th x and the i-th z are the positive
    pair, every other row of the batch a negative.

    Written with logsumexp over rows and over columns of ONE (B, B) matrix: the same value
    as two cross-entropies, but no transposed copy and fewer B×B passes, which dominate the
    cost at the papers' batch of 4096."""
    # under bf16/fp16 autocast the product runs in half precision, but the logsumexps
    # below must not: .float() (a no-op in float32) keeps them, and the diagonal, float32
    logits = ((x / temperature) @ z.T).float()  # (B, B); scaling x first saves a B×B pass
    positives = (x.float() * z.float()).sum(dim=-1) / temperature  # (B,) the diagonal
    rows = torch.logsumexp(logits, dim=1)  # x_i against every z
    columns = torch.logsumexp(logits, dim=0)  # z_j against every x
    return 0.5 * ((rows - positives).mean() + (columns - positives).mean())


def mean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean_i ‖a_i − b_i‖₂ (not squared), the papers' intra-space attraction."""
    return (a - b).norm(dim=-1).mean()


# ---------------------------------------------------------------------------------------
# The closed-form linear baseline
# ---------------------------------------------------------------------------------------
class LinearConnector(Connector):
    """x ↦ normalize(x·W), W fitted in closed form on the bridge memory alone
    (B^L·W ≈ B^P). The bar every trained connector should beat."""

    target = "parent"

    def __init__(self, spec: ConnectorSpec, params: LinearParams | None = None) -> None:
        super().__init__(spec)
        self.params = params or LinearParams()
        self.register_buffer("weight", torch.zeros(spec.leaf_dim, spec.parent_dim))

    @torch.no_grad()
    def fit(self, leaf_bridge: torch.Tensor, parent_bridge: torch.Tensor,
            block: int = 65536) -> LinearConnector:
        """Fit W on row-aligned bridge rows A = B^L (N, d_L) and B = B^P (N, d_P).

        Both solvers need only the d×d products AᵀA and AᵀB, accumulated here in float64
        ``block`` rows at a time: the largest temporary is one block, never a float64 copy
        of the memories (at paper scale, 2.31M texts × 512 would be 9.5 GB per copy)."""
        device = leaf_bridge.device
        ata = torch.zeros(leaf_bridge.shape[1], leaf_bridge.shape[1], dtype=torch.float64,
                          device=device)
        atb = torch.zeros(leaf_bridge.shape[1], parent_bridge.shape[1], dtype=torch.float64,
                          device=device)
        for start in range(0, leaf_bridge.shape[0], block):
            a = leaf_bridge[start : start + block].double()  # (b, d_L)
            ata.addmm_(a.T, a)
            atb.addmm_(a.T, parent_bridge[start : start + block].double())
        if self.params.solver == "procrustes":
            # argmin ‖A·W − B‖ over W with orthonormal rows/columns: W = U·Vᵀ, AᵀB = U Σ Vᵀ
            u, _, vh = torch.linalg.svd(atb, full_matrices=False)
            weight = u @ vh
        else:
            # least squares through the normal equations AᵀA·W = AᵀB; gelsd (SVD) gives the
            # minimum-norm solution when AᵀA is singular, as lstsq on A itself would
            weight = torch.linalg.lstsq(ata, atb, driver="gelsd").solution
        self.weight.copy_(weight.float())
        return self

    def forward(self, batch):
        return {"x_hat": self.project("leaf", self.spec.leaf_modality, batch["leaf_x"])}

    def project(self, side, modality, x):
        x = on_device_of(self, x)
        if side == "parent":
            return F.normalize(x, dim=-1)
        return F.normalize(x @ self.weight, dim=-1)
