"""`mcrx import-official` against a reference computation of the authors' head layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app
from mcrx.errors import McrxError
from mcrx.infer.official import import_official

SHARED_ULIP_CLIP = Path(__file__).parents[1] / "fixtures" / "cmcr" / "ulip_clip.pt"  # CC BY 4.0


# -- the authors' layouts, as the papers' releases define them ---------------------------
class ReferenceMlp(nn.Module):  # their ``MLP(channel=512, res_expansion=2)``
    def __init__(self) -> None:
        super().__init__()
        self.net1 = nn.Sequential(nn.Linear(512, 1024), nn.BatchNorm1d(1024), nn.ReLU())
        self.net2 = nn.Sequential(nn.Linear(1024, 512), nn.BatchNorm1d(512))

    def forward(self, x):
        return self.net2(self.net1(x))


class ReferenceHalf(nn.Module):  # their ``MLP_Half``
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class ReferenceCMcr(nn.Module):
    def __init__(self, half: bool) -> None:
        super().__init__()
        self.Head_A = ReferenceHalf() if half else ReferenceMlp()
        self.Head_B = ReferenceHalf() if half else ReferenceMlp()


class ReferenceProjector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp1, self.mlp2 = ReferenceMlp(), ReferenceMlp()

    def forward(self, x):
        return F.normalize(self.mlp2(self.mlp1(x)), dim=-1)


class ReferenceExMcr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.Head1 = nn.Linear(512, 512)
        self.Head2 = ReferenceProjector()


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random weights AND random BatchNorm running statistics, so eval mode is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return module.eval()


def embeddings(n: int = 16, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)), dim=-1)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not SHARED_ULIP_CLIP.is_file(), reason="../shared/checkpoints missing")
def test_the_real_cmcr_ulip_clip_release(tmp_path):
    reference = ReferenceCMcr(half=True)
    reference.load_state_dict(torch.load(SHARED_ULIP_CLIP, map_location="cpu", weights_only=True))
    reference.eval()
    model = import_official(tmp_path / "m", ulip_clip=SHARED_ULIP_CLIP)
    model = mcrx.load(tmp_path / "m")  # through the files, as a user would
    clip, ulip = embeddings(seed=2), embeddings(seed=3)
    with torch.no_grad():
        close(model.project("clip/ViT-B-32", "image", clip), F.normalize(reference.Head_A(clip)))
        close(model.project("ulip/pointbert", "pointcloud", ulip),
              F.normalize(reference.Head_B(ulip)))


def test_cmcr_clap_clip_layout(tmp_path):
    reference = randomised(ReferenceCMcr(half=False), seed=4)
    torch.save(reference.state_dict(), tmp_path / "clap_clip.pt")
    model = import_official(tmp_path / "m", clap_clip=tmp_path / "clap_clip.pt")
    clip, clap = embeddings(seed=5), embeddings(seed=6)
    with torch.no_grad():  # Head_A is CLAP's side, Head_B CLIP's
        close(model.project("clip/ViT-B-32", "text", clip), F.normalize(reference.Head_B(clip)))
        close(model.project("clap/630k-fusion", "audio", clap),
              F.normalize(reference.Head_A(clap)))


def test_exmcr_heads_layout(tmp_path):
    clap_head, ulip_head = randomised(ReferenceExMcr(), 7), randomised(ReferenceExMcr(), 8)
    torch.save(clap_head.state_dict(), tmp_path / "ex_clap.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in ulip_head.state_dict().items()}},
               tmp_path / "ex_ulip.pt")
    runner = CliRunner()
    result = runner.invoke(app, ["import-official", "--ex-clap", str(tmp_path / "ex_clap.pt"),
                                 "--ex-ulip", str(tmp_path / "ex_ulip.pt"),
                                 "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    model = mcrx.load(tmp_path / "m")
    audio, cloud, clap_text, base = (embeddings(seed=s) for s in (9, 10, 11, 12))
    with torch.no_grad():
        # leaf modality: Head1 then Head2; the leaf's bridge: Head2 only; the base: untouched
        close(model.project("clap/630k-fusion", "audio", audio),
              clap_head.Head2(clap_head.Head1(audio)))
        close(model.project("clap/630k-fusion", "text", clap_text),
              clap_head.Head2(clap_text))
        close(model.project("ulip/pointbert", "pointcloud", cloud),
              ulip_head.Head2(ulip_head.Head1(cloud)))
        close(model.project("clip/ViT-B-32", "image", base), base)


def test_wrong_files_are_refused(tmp_path):
    torch.save({"something.weight": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(McrxError, match="unexpected keys"):
        import_official(tmp_path / "m", ex_clap=tmp_path / "x.pt")
    with pytest.raises(McrxError, match="not found"):
        import_official(tmp_path / "m", ex_clap=tmp_path / "missing.pt")
    with pytest.raises(McrxError, match="give one"):
        import_official(tmp_path / "m")
