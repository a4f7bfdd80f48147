"""The closed-form baseline from normal equations accumulated by block gives the solutions
of the direct closed forms (lstsq on the whole float64 memories; procrustes on AᵀB)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcrx.methods.common import ConnectorSpec, LinearConnector
from mcrx.methods.params import LinearParams


def bridge(n=5000, dl=24, dp=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, dl, generator=generator), dim=-1)
    mix = torch.randn(dl, dp, generator=generator)
    b = F.normalize(a @ mix + 0.3 * torch.randn(n, dp, generator=generator), dim=-1)
    return a, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_block_normal_equations_give_the_direct_lstsq_solution(dtype):
    a, b = bridge()
    spec = ConnectorSpec(24, 32, "text", "audio", "image")
    fitted = LinearConnector(spec, LinearParams(solver="lstsq")).fit(a.to(dtype), b.to(dtype),
                                                                     block=700)
    direct = torch.linalg.lstsq(a.to(dtype).double(), b.to(dtype).double()).solution.float()
    torch.testing.assert_close(fitted.weight, direct, atol=1e-5, rtol=1e-4)


def test_block_procrustes_gives_the_direct_solution():
    a, b = bridge(dl=32)
    spec = ConnectorSpec(32, 32, "text", "audio", "image")
    fitted = LinearConnector(spec, LinearParams(solver="procrustes")).fit(a, b, block=999)
    u, _, vh = torch.linalg.svd(a.double().T @ b.double(), full_matrices=False)
    torch.testing.assert_close(fitted.weight, (u @ vh).float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fitted.weight.T @ fitted.weight, torch.eye(32), atol=1e-5,
                               rtol=0)


def test_rank_deficient_bridge_gets_the_minimum_norm_solution():
    """Fewer distinct bridge rows than dimensions: AᵀA is singular; the normal equations
    solved by SVD give lstsq's minimum-norm W, not an overflow."""
    a, b = bridge(n=10, dl=24)
    a = torch.cat([a, a])  # 20 rows of rank 10
    b = torch.cat([b, b])
    spec = ConnectorSpec(24, 32, "text", "audio", "image")
    fitted = LinearConnector(spec, LinearParams(solver="lstsq")).fit(a, b, block=7)
    minimum_norm = (torch.linalg.pinv(a.double()) @ b.double()).float()
    torch.testing.assert_close(fitted.weight, minimum_norm, atol=1e-4, rtol=1e-3)
