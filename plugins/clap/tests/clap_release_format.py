"""LAION-CLAP checkpoints in the layout of the released files (``630k-fusion-best.pt``,
``630k-audioset-fusion-best.pt``, ...), built from random weights.

The release files are training states written by ``src/laion_clap/training/main.py``
(LAION-AI/CLAP, commit 1e1e659f23871dc147c7ca2f8181c37c0861bf04), once per epoch::

    checkpoint_dict = {"epoch": completed_epoch, "name": args.name,
                       "state_dict": model.state_dict()}          # DistributedDataParallel
    checkpoint_dict.update({"optimizer": optimizer.state_dict()})  # ``module.`` keys

with an AdamW of two parameter groups (gains and biases without weight decay, the rest with
``--wd``; ``clap_module/utils.py``'s ``get_optimizer``) whose learning rate is last set by
``training/scheduler.py``'s ``cosine_lr``: ``0.5 * (1 + np.cos(np.pi * e / es)) * base_lr``,
a ``numpy.float64``. The transformers of the time (< 4.31) also saved roberta's
``embeddings.position_ids`` buffer.

:func:`write_release_checkpoint` builds the real laion_clap model (HTSAT audio branch, fusion
or not, and the roberta-base text branch from its configuration), takes one real AdamW step
and saves all of it so. ``optimizer="all"`` gives a full-size file, as released (every
parameter has AdamW state, about 4x the weights); tests use ``optimizer="heads"``, the same
layout over the projection heads only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch

ROBERTA_POSITIONS = 514  # roberta-base's max_position_embeddings
#: LAION's defaults for HTSAT + roberta (``training/params.py``: lr 5e-4, betas (0.9, 0.999),
#: eps 1e-8; ``--wd`` 0.2) and an epoch the released 630k-fusion-best.pt could have
BASE_LR, BETAS, EPS, WEIGHT_DECAY = 5.0e-4, (0.9, 0.999), 1.0e-8, 0.2


def build_model(amodel: str = "HTSAT-tiny", fusion: bool = True, seed: int = 0
                ) -> torch.nn.Module:
    """laion_clap's CLAP model as ``clap/630k-fusion`` builds it, with seeded random weights."""
    from mcrx_clap._laion import clap_module
    from mcrx_clap.space import FUSION_TYPE, _text_branch_from_config

    with torch.random.fork_rng(devices=[]), _text_branch_from_config():
        torch.manual_seed(seed)
        model, _ = clap_module.create_model(
            amodel, "roberta", precision="fp32", device=torch.device("cpu"),
            enable_fusion=fusion, fusion_type=FUSION_TYPE if fusion else "None")
    return model


def _laion_excluded(name: str, param: torch.nn.Parameter) -> bool:
    """training/main.py's ``exclude``: no weight decay for these."""
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "logit_scale" in name)


def adamw_state_after_one_step(model: torch.nn.Module,
                               optimizer: Literal["all", "heads"] = "heads",
                               seed: int = 0, step: int = 1_000, total_steps: int = 10_000,
                               warmup: int = 100) -> dict:
    """A real AdamW state dict (LAION's two groups) after one step on seeded gradients, its
    learning rate then set as ``cosine_lr`` does (a ``numpy.float64``). ``heads``: only the
    parameters outside the audio and text branches are optimised (a small file, same
    layout). The step changes the model's weights, as training does."""
    named = [(n, p) for n, p in model.named_parameters()
             if optimizer == "all" or not n.startswith(("audio_branch.", "text_branch."))]
    groups = [{"params": [p for n, p in named if _laion_excluded(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not _laion_excluded(n, p)],
               "weight_decay": WEIGHT_DECAY}]
    adamw = torch.optim.AdamW(groups, lr=BASE_LR, betas=BETAS, eps=EPS)
    generator = torch.Generator().manual_seed(seed)
    for _, param in named:
        param.grad = 1e-3 * torch.randn(param.shape, generator=generator)
    adamw.step()
    for _, param in named:
        param.grad = None
    e, es = step - warmup, total_steps - warmup
    for group in adamw.param_groups:  # scheduler.py's _lr_adjuster
        group["lr"] = 0.5 * (1 + np.cos(np.pi * e / es)) * BASE_LR
    return adamw.state_dict()


def write_release_checkpoint(path: str | Path, *, amodel: str = "HTSAT-tiny",
                             fusion: bool = True, optimizer: Literal["all", "heads"] = "heads",
                             position_ids: bool = True, epoch: int = 45, seed: int = 0
                             ) -> torch.nn.Module:
    """Write a checkpoint laid out as LAION's training code wrote the released ones; returns
    the model whose weights it holds."""
    model = build_model(amodel, fusion, seed)
    optimizer_state = adamw_state_after_one_step(model, optimizer, seed)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    if position_ids:  # stale: newer transformers compute it instead of saving it
        state["module.text_branch.embeddings.position_ids"] = \
            torch.arange(ROBERTA_POSITIONS).expand((1, -1)).clone()
    name = (f"2022_12_06-00_00_00-model_{amodel}-lr_{BASE_LR}-b_96-j_6-p_fp32")
    torch.save({"epoch": epoch, "name": name, "state_dict": state,
                "optimizer": optimizer_state}, path)
    return model.eval()


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2/roberta): printable Latin-1
    bytes stand for themselves, the others map to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def write_roberta_tokenizer(folder: str | Path) -> Path:
    """A tokenizer folder in roberta-base's format (what ``tokenizer:`` names; the real files
    cannot be had offline): vocab.json + merges.txt with <s>=0 <pad>=1 </s>=2 <unk>=3, the
    byte symbols, pair merges up to 50,264 entries, <mask> last (50,265 in all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    merges = []
    for first in symbols:
        for second in symbols:
            if len(vocab) == 50264:
                break
            vocab[first + second] = len(vocab)
            merges.append(f"{first} {second}")
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder
