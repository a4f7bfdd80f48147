"""Training objectives of both papers, each in one place.

InfoNCE(x, z) is the symmetric CLIP loss over a batch of L2-normalised rows, temperature τ2:
the i-th x and the i-th z are the positive pair, every other row of the batch a negative.
"""

from __future__ import annotations

import torch


def info_nce(x: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """½·[CE(x·zᵀ/τ, diag) + CE(z·xᵀ/τ, diag)] for normalised x, z of shape (B, d).

    Written with logsumexp over rows and over columns of ONE (B, B) matrix: the same value
    as two cross-entropies, but no transposed copy and fewer B×B passes, which dominate the
    cost at the papers' batch of 4096."""
    logits = (x / temperature) @ z.T  # (B, B); scaling x first saves a B×B pass
    positives = (x * z).sum(dim=-1) / temperature  # (B,) the diagonal
    rows = torch.logsumexp(logits, dim=1)  # x_i against every z
    columns = torch.logsumexp(logits, dim=0)  # z_j against every x
    return 0.5 * ((rows - positives).mean() + (columns - positives).mean())


def mean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean_i ‖a_i − b_i‖₂ (not squared), the papers' intra-space attraction."""
    return (a - b).norm(dim=-1).mean()


class ExMcrLoss:
    """Ex-MCR, leaf → base (DESIGN "Ex-MCR connector"):

        L = λ·L_intra + ¼·[InfoNCE(â,ṽ) + InfoNCE(â,t̃^I) + InfoNCE(t̂,ṽ) + InfoNCE(t̂,t̃^I)]
        L_intra = ½·mean ‖f_l(ã) − t̃^A‖

    with â, t̂ the projected leaf rows and ṽ, t̃^I the frozen base targets."""

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


class CMcrLoss:
    """C-MCR, two spaces → a new one (DESIGN "C-MCR connector"):

        L = InfoNCE(t̂^I, t̂^A) + InfoNCE(v̂^I, â^A) + λ·L_intra
        L_intra = mean ‖t̂^I − v̂^I‖ + mean ‖t̂^A − â^A‖

    The papers do not state C-MCR's InfoNCE temperature: τ2 by default, exposed in the
    recipe as ``training.cmcr_temperature``."""

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
