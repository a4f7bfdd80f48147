"""Ex-MCR — *Extending Multi-modal Contrastive Representations* (NeurIPS 2024), top to bottom.

One space is the frozen BASE (CLIP); each LEAF space (CLAP via text, ULIP via image) is
projected INTO its parent, so the parent's own alignment is kept intact and every leaf
modality lands in one space. Notation for CLAP → CLIP (leaf L = CLAP, parent P = CLIP,
bridge b = text, leaf modality x = audio, parent modality y = image); roles are defined in
:mod:`mcrx.methods.common`.

1. Pseudo pairs (§3.2, "every modality is a query"), three pools concatenated:
   - text-centric   (:func:`~mcrx.methods.common.bridge_centric`): t^A, t^I of one text;
     ã = retrieve(t^A, A^A), ṽ = retrieve(t^I, V^I);
   - audio-centric  (:func:`leaf_centric`): ã = a; w = softmax(a·T^A/τ1);
     t̃^A = w·T^A, t̃^I = w·T^I (the same weights); ṽ = retrieve(t̃^I, V^I);
   - image-centric  (:func:`parent_centric`): symmetric.
2. Connector (§3.3): ``f_l`` one identity-initialised Linear(d_L→d_L) on the leaf modality
   only, ``f_m`` an MLP shared by every leaf modality; â = f_m(f_l(ã)), t̂ = f_m(t̃^A).
   Parent embeddings are frozen targets and pass through untouched.
3. Loss (§3.3, Eq. 4–6): L = λ·L_intra + ¼·[InfoNCE(â,ṽ) + InfoNCE(â,t̃^I) + InfoNCE(t̂,ṽ)
   + InfoNCE(t̂,t̃^I)], L_intra = ½·mean ‖f_l(ã) − t̃^A‖; τ2 = 0.05, λ = 0.1.

Registered (torch-free) in :mod:`mcrx.plugin.builtin` as method, connector and loss
``mcrx/ex-mcr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcrx.methods.common import (
    Connector,
    ConnectorSpec,
    LeafMemories,
    Method,
    MlpBlock,
    bridge_centric,
    info_nce,
    mean_distance,
    on_device_of,
    retrieve_rows,
    xavier_,
)
from mcrx.methods.params import ExMcrParams


# ---------------------------------------------------------------------------------------
# 1. Pseudo pairs
# ---------------------------------------------------------------------------------------
def leaf_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """x-centric (audio-centric for CLAP): x̃ = x; w = softmax(x·B^L/τ1) over the bridge
    memory; b̃^L = w·B^L and b̃^P = w·B^P (same weights, same items: the text weights are
    carried across spaces); ỹ = retrieve(b̃^P, Y^P)."""
    x = m.leaf_x[rows].float()
    leaf_bridge, parent_bridge = retrieve_rows(
        x, m.leaf_bridge, [m.leaf_bridge, m.parent_bridge], temperature, **blocks
    )
    (parent_y,) = retrieve_rows(parent_bridge, m.parent_y, None, temperature, **blocks)
    return {"leaf_x": x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": parent_y}


def parent_centric(m: LeafMemories, rows: slice, temperature: float, **blocks: int):
    """y-centric (image-centric for CLAP → CLIP): symmetric to :func:`leaf_centric`;
    y queries B^P, the weights are carried to B^L, then x̃ = retrieve(b̃^L, X^L)."""
    y = m.parent_y[rows].float()
    parent_bridge, leaf_bridge = retrieve_rows(
        y, m.parent_bridge, [m.parent_bridge, m.leaf_bridge], temperature, **blocks
    )
    (leaf_x,) = retrieve_rows(leaf_bridge, m.leaf_x, None, temperature, **blocks)
    return {"leaf_x": leaf_x, "leaf_bridge": leaf_bridge, "parent_bridge": parent_bridge,
            "parent_y": y}


METHOD = Method("ex-mcr", pools=((bridge_centric, "leaf_bridge"), (leaf_centric, "leaf_x"),
                                 (parent_centric, "parent_y")))


# ---------------------------------------------------------------------------------------
# 2. Connector
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
        xavier_(self.f_m)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_mid = self.f_l[self.spec.leaf_modality](batch["leaf_x"])  # f_l(ã)   (B, d_L)
        return {
            "x_mid": x_mid,
            "x_hat": F.normalize(self.f_m(x_mid), dim=-1),  # â   (B, d_P)
            "bridge_hat": F.normalize(self.f_m(batch["leaf_bridge"]), dim=-1),  # t̂ (B, d_P)
        }

    def project(self, side, modality, x):
        x = on_device_of(self, x)
        if side == "parent":  # the base space is frozen: its embeddings pass through
            return F.normalize(x, dim=-1)
        if modality in self.f_l:
            x = self.f_l[modality](x)
        return F.normalize(self.f_m(x), dim=-1)


# ---------------------------------------------------------------------------------------
# 3. Loss
# ---------------------------------------------------------------------------------------
class ExMcrLoss:
    """L = λ·L_intra + ¼·[InfoNCE(â,ṽ) + InfoNCE(â,t̃^I) + InfoNCE(t̂,ṽ) + InfoNCE(t̂,t̃^I)],
    L_intra = ½·mean ‖f_l(ã) − t̃^A‖ (Ex-MCR Eq. 4–6), with â, t̂ the projected leaf rows
    and ṽ, t̃^I the frozen base targets."""

    def __init__(self, temperature: float = 0.05, intra_weight: float = 0.1) -> None:
        self.temperature = temperature
        self.intra_weight = intra_weight

    def __call__(self, outputs, batch):
        tau = self.temperature
        x_hat, bridge_hat = outputs["x_hat"], outputs["bridge_hat"]  # â, t̂
        parent_y, parent_bridge = batch["parent_y"], batch["parent_bridge"]  # ṽ, t̃^I
        inter = 0.25 * (
            info_nce(x_hat, parent_y, tau)
            + info_nce(x_hat, parent_bridge, tau)
            + info_nce(bridge_hat, parent_y, tau)
            + info_nce(bridge_hat, parent_bridge, tau)
        )
        intra = 0.5 * mean_distance(outputs["x_mid"], batch["leaf_bridge"])
        loss = self.intra_weight * intra + inter
        return loss, {"inter": inter.detach(), "intra": intra.detach()}
