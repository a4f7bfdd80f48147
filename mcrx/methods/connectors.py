"""Connectors: the trainable projections between spaces.

- :class:`ExMcrConnector` (Ex-MCR, leaf → frozen parent): ``f_l`` (identity-initialised
  Linear on the leaf's non-bridge modality) then ``f_m`` (MLP shared by all leaf
  modalities), output L2-normalised. Parent embeddings pass through untouched.
- :class:`CMcrConnector` (C-MCR, both spaces → a NEW space): one projector per space.
- :class:`LinearConnector`: the closed-form baseline, one matrix fitted on the bridge.

Every connector maps a batch of pseudo pairs (dict of roles, see
:mod:`mcrx.methods.pseudo_pairs`) to projected tensors for its loss, and one modality's embeddings
to the target space with :meth:`Connector.project` at inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcrx.methods.params import CMcrParams, ExMcrParams, LinearParams


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
        space; rows come out L2-normalised."""
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


def _xavier_(module: nn.Module) -> None:
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


# ---------------------------------------------------------------------------------------
# Ex-MCR
# ---------------------------------------------------------------------------------------
class ExMcrConnector(Connector):
    """Leaf → parent (frozen). â = f_m(f_l(x̃)),  b̂ = f_m(b̃^L)."""

    noised_roles = ("leaf_x", "leaf_bridge")
    target = "parent"

    def __init__(self, spec: ConnectorSpec, params: ExMcrParams | None = None) -> None:
        super().__init__(spec)
        params = params or ExMcrParams()
        d_leaf, d_parent = spec.leaf_dim, spec.parent_dim
        # f_l: one identity-initialised Linear per non-bridge leaf modality.
        self.f_l = nn.ModuleDict({spec.leaf_modality: nn.Linear(d_leaf, d_leaf)})
        for linear in self.f_l.values():
            nn.init.eye_(linear.weight)
            nn.init.zeros_(linear.bias)
        # f_m: shared MLP, d_leaf → d_parent, xavier init (as the released Ex-MCR heads).
        dims = [d_leaf] + [d_parent] * params.blocks
        self.f_m = nn.Sequential(
            *[MlpBlock(dims[i], params.hidden_dim, dims[i + 1]) for i in range(params.blocks)]
        )
        _xavier_(self.f_m)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_mid = self.f_l[self.spec.leaf_modality](batch["leaf_x"])  # f_l(ã)   (B, d_L)
        return {
            "x_mid": x_mid,
            "x_hat": F.normalize(self.f_m(x_mid), dim=-1),  # â   (B, d_P)
            "bridge_hat": F.normalize(self.f_m(batch["leaf_bridge"]), dim=-1),  # t̂ (B, d_P)
        }

    def project(self, side, modality, x):
        if side == "parent":  # the base space is frozen: its embeddings pass through
            return F.normalize(x.float(), dim=-1)
        if modality in self.f_l:
            x = self.f_l[modality](x)
        return F.normalize(self.f_m(x), dim=-1)


# ---------------------------------------------------------------------------------------
# C-MCR
# ---------------------------------------------------------------------------------------
class CMcrConnector(Connector):
    """Both spaces → a new space: ``parent_projector`` and ``leaf_projector``."""

    noised_roles = ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")
    target = "new"

    def __init__(self, spec: ConnectorSpec, params: CMcrParams | None = None) -> None:
        super().__init__(spec)
        params = params or CMcrParams()
        self._out_dim = params.out_dim or spec.parent_dim

        def projector(in_dim: int) -> nn.Module:
            if params.layout == "half":
                return HalfMlpBlock(in_dim, self._out_dim)
            return MlpBlock(in_dim, params.hidden_dim, self._out_dim)

        self.parent_projector = projector(spec.parent_dim)
        self.leaf_projector = projector(spec.leaf_dim)

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        def parent(role: str) -> torch.Tensor:
            return F.normalize(self.parent_projector(batch[role]), dim=-1)

        def leaf(role: str) -> torch.Tensor:
            return F.normalize(self.leaf_projector(batch[role]), dim=-1)

        return {
            "parent_bridge_hat": parent("parent_bridge"),  # t̂^I
            "parent_y_hat": parent("parent_y"),  # v̂^I
            "leaf_bridge_hat": leaf("leaf_bridge"),  # t̂^A
            "leaf_x_hat": leaf("leaf_x"),  # â^A
        }

    def project(self, side, modality, x):
        projector = self.parent_projector if side == "parent" else self.leaf_projector
        return F.normalize(projector(x.float()), dim=-1)


# ---------------------------------------------------------------------------------------
# Closed-form linear baseline
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
    def fit(self, leaf_bridge: torch.Tensor, parent_bridge: torch.Tensor) -> LinearConnector:
        a, b = leaf_bridge.double(), parent_bridge.double()  # (N, d_L), (N, d_P)
        if self.params.solver == "procrustes":
            # argmin ‖A·W − B‖ over W with orthonormal rows/columns: W = U·Vᵀ, A ᵀB = U Σ Vᵀ
            u, _, vh = torch.linalg.svd(a.T @ b, full_matrices=False)
            weight = u @ vh
        else:
            weight = torch.linalg.lstsq(a, b).solution
        self.weight.copy_(weight.float())
        return self

    def forward(self, batch):
        return {"x_hat": self.project("leaf", self.spec.leaf_modality, batch["leaf_x"])}

    def project(self, side, modality, x):
        if side == "parent":
            return F.normalize(x.float(), dim=-1)
        return F.normalize(x.float() @ self.weight, dim=-1)
