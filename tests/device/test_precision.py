"""How far each precision lands from a float64 reference (issue 8).

Retrieval at τ1 = 0.01 multiplies every similarity by 100 before the exponential, so the
rounding of the matmul INPUTS decides the error: fp16 and TF32 inputs (10-bit mantissa) with
float32 accumulation and float32 softmax state stay within ~1e-7 of exact (1 − cosine: 9e-8
mean, 9e-7 max here; float32 1e-11), while bf16 inputs (7-bit mantissa) are 50× further off
(4e-6 mean, 4e-5 max; up to 2e-4 on a carried memory) and are refused. On the CPU the tf32 and fp16
modes are emulated (inputs rounded, float32 arithmetic): what a tensor core computes up to
the order of its sums. The aligner's bf16 / fp16 autocast is bounded on the Ex-MCR loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcrx.methods.common import ConnectorSpec
from mcrx.methods.exmcr import ExMcrConnector, ExMcrLoss
from mcrx.methods.params import ExMcrParams
from mcrx.methods.retrieval import round_to_tf32, soft_retrieve
from mcrx.train.aligner import autocast_context

TAU = 0.01


def clustered(n: int, centers: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rows near random centres, as embeddings of a real collection: a query's softmax at
    τ1 = 0.01 spreads over several rows (not a one-hot), so rounding shows."""
    index = torch.randint(0, len(centers), (n,), generator=generator)
    noise = torch.randn((n, centers.shape[1]), generator=generator) / centers.shape[1] ** 0.5
    return F.normalize(centers[index] + noise, dim=-1)


@pytest.fixture(scope="module")
def world():
    generator = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn((128, 512), generator=generator), dim=-1)
    keys = clustered(4096, centers, generator)
    other = F.normalize(torch.randn((4096, 256), generator=generator), dim=-1)
    queries = clustered(256, centers, generator)
    weights = torch.softmax(F.normalize(queries.double(), dim=-1) @ keys.double().T / TAU, 1)
    reference = [F.normalize(weights @ v.double(), dim=-1) for v in (keys, other)]
    return queries, keys, other, reference


def one_minus_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - (F.normalize(a.double(), dim=-1) * b).sum(dim=1)


@pytest.mark.parametrize(("precision", "mean_bound", "max_bound"), [
    ("fp32", 1e-10, 1e-9),
    ("tf32", 2e-6, 2e-5),
    ("fp16", 2e-6, 2e-5),
])
def test_retrieval_precision_against_float64(world, precision, mean_bound, max_bound):
    queries, keys, other, reference = world
    outs = soft_retrieve(queries, keys, [keys, other], TAU, query_block=100, memory_block=1000,
                         precision=precision)
    for out, exact in zip(outs, reference, strict=True):
        assert out.dtype == torch.float32
        deviation = one_minus_cosine(out, exact)
        assert float(deviation.mean()) < mean_bound, (precision, float(deviation.mean()))
        assert float(deviation.max()) < max_bound, (precision, float(deviation.max()))


def test_bf16_logits_are_refused_and_why(world):
    queries, keys, other, reference = world
    with pytest.raises(ValueError, match="bf16"):
        soft_retrieve(queries, keys, None, TAU, precision="bf16")
    # what bf16 inputs would give (float32 accumulation and softmax): far worse than fp16
    scaled = (F.normalize(queries, dim=-1) / TAU).bfloat16().float()
    weights = torch.softmax(scaled @ keys.bfloat16().float().T, dim=1)
    bf16 = one_minus_cosine(weights @ keys, reference[0])
    (fp16,) = soft_retrieve(queries, keys, None, TAU, precision="fp16")
    # measured here: bf16 4e-6 mean (4e-5 max), fp16 9e-8 (9e-7): 50× worse
    assert float(bf16.mean()) > 2e-6
    assert float(bf16.mean()) > 20 * float(one_minus_cosine(fp16, reference[0]).mean())


def test_tf32_rounding_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0 + 2**-10, 1.0 + 2**-11, 1.0 + 3 * 2**-11, -3.0 - 2**-12])
    assert round_to_tf32(x).tolist() == [1.0 + 2**-10, 1.0, 1.0 + 2**-9, -3.0]


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 1e-5), ("bf16", 3e-2),
                                                  ("fp16", 5e-3)])
def test_training_loss_precision_against_float64(precision, bound):
    torch.manual_seed(0)
    spec = ConnectorSpec(leaf_dim=64, parent_dim=64, bridge="text", leaf_modality="audio",
                         parent_modality="image")
    connector = ExMcrConnector(spec, ExMcrParams(hidden_dim=128)).train()
    generator = torch.Generator().manual_seed(1)
    batch = {role: F.normalize(torch.randn((512, 64), generator=generator), dim=-1)
             for role in ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")}
    loss_fn = ExMcrLoss()
    exact, _ = loss_fn(connector.double()({r: v.double() for r, v in batch.items()}),
                       {r: v.double() for r, v in batch.items()})
    connector.float()
    with autocast_context(precision, torch.device("cpu")):
        loss, _ = loss_fn(connector(batch), batch)
    assert loss.dtype == torch.float32  # the logsumexps ran in float32
    loss, exact = float(loss.detach()), float(exact.detach())
    assert abs(loss - exact) / exact < bound, (precision, loss, exact)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_training_resumes_to_the_uninterrupted_result(tmp_path, precision):
    """bf16 / fp16 autocast through the whole aligner on the CPU; fp16's loss scaler is
    checkpointed with the rest, so a run stopped and resumed ends where an uninterrupted
    one does."""
    from mcrx.recipe.schema import Training
    from mcrx.train.aligner import align

    generator = torch.Generator().manual_seed(2)
    pairs = {role: F.normalize(torch.randn((512, 32), generator=generator), dim=-1)
             for role in ("leaf_x", "leaf_bridge", "parent_bridge", "parent_y")}
    spec = ConnectorSpec(leaf_dim=32, parent_dim=32, bridge="text", leaf_modality="audio",
                         parent_modality="image")
    training = Training(batch_size=128, epochs=3, checkpoint_every=4, precision=precision,
                        loss_every=3)

    def fresh() -> ExMcrConnector:
        torch.manual_seed(0)
        return ExMcrConnector(spec, ExMcrParams(hidden_dim=64))

    whole = fresh()
    align(whole, ExMcrLoss(), pairs, training, tmp_path / "whole", "f", show_progress=False)
    resumed = fresh()
    align(resumed, ExMcrLoss(), pairs, training, tmp_path / "cut", "f", show_progress=False,
          stop_after_steps=6)
    resumed = fresh()
    result = align(resumed, ExMcrLoss(), pairs, training, tmp_path / "cut", "f",
                   show_progress=False)
    assert result.resumed_from == 4
    # every loss_every steps; step 3 was read before the checkpoint at step 4 and travels with it
    assert [step for step, _ in result.losses] == [3, 6, 9, 12]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
