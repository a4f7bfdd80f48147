"""ULIP-2 checkpoints in the layout of the released ``pointbert_ULIP-2.pt``, built from
random weights.

The release is a training state written by salesforce/ULIP's ``main.py`` (commit
a559aa8a5a5866616e3b38e1196b34488e3e8d5f) through ``utils/utils.py``'s ``save_on_master``::

    {"epoch": epoch + 1, "state_dict": model.state_dict(),   # DistributedDataParallel:
     "optimizer": optimizer.state_dict(),                   # ``module.`` keys
     "scaler": scaler.state_dict(), "best_acc1": best_acc1, "args": args}

``optimizer`` is an AdamW of two groups (weights with ``--wd``, and 1-d / bias / ln / bn
parameters without), whose learning rate ``train`` sets each step from
``utils.cosine_scheduler``, a numpy array: a ``numpy.float64``. ``scaler`` is the AMP
``GradScaler``'s state, ``best_acc1`` a float, ``args`` the ``argparse.Namespace`` of the
command line.

:func:`write_release_checkpoint` takes the architecture (:class:`Ulip2Config`; the default is
the released size) so a script can build full-size files; tests pass a small one.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcrx_ulip.model import PREFIX, TOWERS, Ulip2, Ulip2Config, random_model

#: ULIP's get_args_parser defaults as the ULIP-2 PointBERT pre-training ran them
#: (scripts/pretrain_pointbert.sh: --model ULIP_PointBERT --npoints 8192 --lr 3e-3)
BASE_LR, LR_END, LR_START, WEIGHT_DECAY, BETAS, EPS = 3e-3, 1e-5, 1e-6, 0.1, (0.9, 0.98), 1e-8


def training_args(**changes: Any) -> argparse.Namespace:
    """The ``args`` a ULIP-2 PointBERT pre-training run pickles (plain values only)."""
    args = dict(
        output_dir="./outputs/reproduce_ulip2_pointbert", pretrain_dataset_name="shapenet",
        pretrain_dataset_prompt="shapenet_64", validate_dataset_name="modelnet40",
        validate_dataset_prompt="modelnet40_64", model="ULIP_PointBERT", npoints=8192,
        epochs=250, warmup_epochs=1, start_epoch=0, batch_size=64, lr=BASE_LR,
        lr_start=LR_START, lr_end=LR_END, update_freq=1, wd=WEIGHT_DECAY, betas=list(BETAS),
        eps=EPS, eval_freq=1, disable_amp=False, validate_hard=False, resume="",
        print_freq=10, workers=10, evaluate_3d=False, world_size=8, rank=0, local_rank=0,
        dist_url="env://", dist_backend="nccl", seed=0, gpu=0, wandb=False,
        test_ckpt_addr="", distributed=True,
    )
    return argparse.Namespace(**{**args, **changes})


def adamw_state_after_one_step(model: Ulip2, seed: int = 0, iteration: int = 5_000,
                               iterations: int = 250 * 1_000) -> dict:
    """A real AdamW state dict grouped as ULIP's ``main`` groups it, after one step on seeded
    gradients, its learning rate then set from ``cosine_scheduler`` (a ``numpy.float64``)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        param.requires_grad_(True)
        is_gain = param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name
        (no_decay if is_gain else decay).append(param)
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                               {"params": no_decay, "weight_decay": 0}],
                              lr=BASE_LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(seed)
    for param in [*decay, *no_decay]:
        param.grad = 1e-3 * torch.randn(param.shape, generator=generator)
    adamw.step()
    for param in [*decay, *no_decay]:
        param.grad = None
        param.requires_grad_(False)
    steps = np.arange(iterations)  # utils.cosine_scheduler, warm-up left out
    schedule = LR_END + 0.5 * (BASE_LR - LR_END) * (1 + np.cos(np.pi * steps / len(steps)))
    for group in adamw.param_groups:
        group["lr"] = schedule[iteration]
    return adamw.state_dict()


def write_release_checkpoint(path: str | Path, config: Ulip2Config = Ulip2Config(), *,
                             towers: Iterable[str] = TOWERS, seed: int = 0, epoch: int = 50,
                             best_acc1: float = 60.4, **extra: Any) -> Ulip2:
    """Write a checkpoint laid out as ULIP's ``main.py`` wrote the release (``extra``: more
    entries, e.g. an object a test wants refused); returns the model whose weights it
    holds."""
    model = random_model(config, seed, towers)
    optimizer = adamw_state_after_one_step(model, seed)
    scaler = torch.amp.GradScaler("cpu")  # the state layout of ULIP's cuda.amp.GradScaler
    state = {PREFIX + key: value for key, value in model.state_dict().items()}
    torch.save({"epoch": epoch, "state_dict": state, "optimizer": optimizer,
                "scaler": scaler.state_dict(), "best_acc1": best_acc1,
                "args": training_args(), **extra}, path)
    return model
