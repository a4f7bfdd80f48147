"""C-MCR — *Connecting Multi-modal Contrastive Representations* (NeurIPS 2023), top to bottom.

Two spaces that share one modality (CLIP and CLAP share text) are BOTH projected into a new
space and aligned there through the shared modality; the alignment transfers to the
non-shared pair (image–audio). Notation for CLIP–CLAP (parent P = CLIP, leaf L = CLAP,
bridge b = text, x = audio, y = image); roles are defined in :mod:`mcrx.methods.common`.

1. Pseudo pairs (§3.2, "semantic consistency"), bridge-centric only
   (:func:`~mcrx.methods.common.bridge_centric`): each text gives t^I and t^A;
   v^I = retrieve(t^I, V^I), a^A = retrieve(t^A, A^A).
2. Connector (§3.3): one projector per space into the new space (CLIP–CLAP: each
   ``Linear(512→1024)+BN+ReLU → Linear(1024→512)+BN``; CLIP–ULIP: one ``Linear+BN+ReLU``),
   outputs L2-normalised. Every role enters a projector, so every role is noised (§3.2,
   "semantic completion").
3. Loss (§3.3–3.4): L = InfoNCE(t̂^I, t̂^A) + InfoNCE(v̂^I, â^A) + λ·L_intra,
   L_intra = mean ‖t̂^I − v̂^I‖ + mean ‖t̂^A − â^A‖ (attraction only: it closes the modality
   gap inside each space), λ = 0.1. The paper does not state its InfoNCE temperature:
   τ2 by default, ``training.cmcr_temperature`` in a recipe.

Recipe rules: C-MCR connects exactly two spaces (one leaf, attached to the base). Registered
(torch-free) in :mod:`mcrx.plugin.builtin` as method, connector and loss ``mcrx/c-mcr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcrx.methods.common import (
    Connector,
    ConnectorSpec,
    HalfMlpBlock,
    Method,
    MlpBlock,
    bridge_centric,
    info_nce,
    mean_distance,
    on_device_of,
)
from mcrx.methods.params import CMcrParams

# ---------------------------------------------------------------------------------------
# 1. Pseudo pairs
# ---------------------------------------------------------------------------------------
METHOD = Method("c-mcr", pools=((bridge_centric, "leaf_bridge"),))


# ---------------------------------------------------------------------------------------
# 2. Connector
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
        return F.normalize(projector(on_device_of(self, x)), dim=-1)


# ---------------------------------------------------------------------------------------
# 3. Loss
# ---------------------------------------------------------------------------------------
class CMcrLoss:
    """L = InfoNCE(t̂^I, t̂^A) + InfoNCE(v̂^I, â^A) + λ·L_intra,
    L_intra = mean ‖t̂^I − v̂^I‖ + mean ‖t̂^A − â^A‖ (C-MCR §3.3–3.4)."""

    def __init__(self, temperature: float = 0.05, intra_weight: float = 0.1) -> None:
        self.temperature = temperature
        self.intra_weight = intra_weight

    def __call__(self, outputs, batch):
        tau = self.temperature
        inter = info_nce(outputs["parent_bridge_hat"], outputs["leaf_bridge_hat"], tau) + info_nce(
            outputs["parent_y_hat"], outputs["leaf_x_hat"], tau
        )
        intra = mean_distance(outputs["parent_bridge_hat"], outputs["parent_y_hat"]) + (
            mean_distance(outputs["leaf_bridge_hat"], outputs["leaf_x_hat"])
        )
        loss = inter + self.intra_weight * intra
        return loss, {"inter": inter.detach(), "intra": intra.detach()}
