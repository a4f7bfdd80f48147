"""The aligner: fits one connector on stored pseudo pairs with Accelerate.

Read top to bottom: Accelerator → data → optimizer → scheduler → one ``prepare`` → resume →
loop (noise, forward, loss, ``backward``, step, checkpoint) → final checkpoint.

Determinism (CPU): the shuffle of epoch e is drawn from ``seed + e`` and the noise of step s
from ``seed + s``, and ``save_state`` keeps model, optimizer and scheduler, so a run killed at
any point and resumed from its last checkpoint ends with the same weights as a run that was
never interrupted.

On a GPU (issue 8) the aligner is fed at the GPU's pace: the pseudo pairs are copied to the
device once when they fit (float32, else float16: the rounding, ~1e-3 relative, is far below
the σ² = 0.004 noise), otherwise DataLoader workers gather batches from the memory-mapped
files into pinned host memory ahead of the step and the copies are non-blocking; the noise
is drawn on the device by a CUDA generator seeded per step (reproducible and resumable, but
not the CPU's numbers); the loss is read back every ``training.loss_every`` steps only (a
read is a device sync); ``training.precision`` selects fp32, TF32 matmuls, or bf16 / fp16
autocast (fp16 with a gradient scaler, saved in checkpoints). The InfoNCE logsumexps stay
float32 in every precision (:func:`mcrx.methods.common.info_nce`).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from mcrx.device import fits_on_device, matmul_precision
from mcrx.errors import McrxError
from mcrx.recipe.schema import Training
from mcrx.store.checkpoints import latest_checkpoint, save_checkpoint
from mcrx.store.validate_rows import refuse_nonfinite_loss
from mcrx.train.distributed import (
    batchnorm_across_processes,
    gather_rows,
    local_rows,
    process_state,
    world_size,
)
from mcrx.ui.console import console, progress, rate_text


class PseudoPairDataset:
    """Rows of pseudo pairs (tensors, or numpy arrays memory-mapped from disk).
    ``__getitems__`` lets the DataLoader fetch a whole batch with one sorted fancy-index per
    role instead of collating thousands of single rows."""

    def __init__(self, pairs: dict[str, Any]) -> None:
        self.pairs = pairs
        self.length = len(next(iter(pairs.values())))

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices)
        order = np.argsort(index, kind="stable")  # sequential reads from the mapped files
        sorted_index, restore = index[order], np.argsort(order, kind="stable")
        batch = {}
        for role, rows in self.pairs.items():
            if isinstance(rows, torch.Tensor):  # resident (on the CPU or the GPU)
                batch[role] = rows[torch.from_numpy(index).to(rows.device)].float()
            else:
                picked = np.asarray(rows[sorted_index], dtype=np.float32)[restore]
                batch[role] = torch.from_numpy(picked)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])


def _keep_batch(batch):
    return batch


def pairs_on_device(pairs: dict[str, Any], device: torch.device,
                    fraction: float = 0.4) -> dict[str, Any] | None:
    """The pseudo pairs copied to ``device`` once (float32 when they fit in ``fraction`` of
    its free memory, else float16), or ``None`` when even float16 does not fit (or on the
    CPU, where the memory-mapped arrays are read as they are). Copied in chunks: the host
    never holds more than one chunk beyond the mapped files."""
    if device.type == "cpu":
        return None
    numbers = sum(len(r) * (r.shape[1] if len(r.shape) > 1 else 1) for r in pairs.values())
    fitting = [dtype for dtype in (torch.float32, torch.float16)
               if fits_on_device(numbers * dtype.itemsize, device, fraction)]
    if not fitting:
        return None
    dtype = fitting[0]
    resident = {}
    for role, array in pairs.items():
        target = torch.empty(tuple(array.shape), dtype=dtype, device=device)
        for start in range(0, len(array), 65536):
            part = np.asarray(array[start : start + 65536], dtype=np.float32)
            target[start : start + len(part)].copy_(torch.from_numpy(part), non_blocking=False)
        resident[role] = target
    return resident


def noise_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s noise: on the CPU for a CPU run (the numbers of every
    earlier mcrx run), on the GPU for a CUDA run (no host-side draw, no copy)."""
    where = device if device.type == "cuda" else torch.device("cpu")
    return torch.Generator(device=where).manual_seed(seed * 1_000_003 + step)


def autocast_context(precision: str, device: torch.device):
    """bf16 / fp16 autocast on ``device`` for the forward pass and the loss; nothing for
    fp32 and tf32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class EpochShuffleSampler(Sampler[int]):
    """A permutation per epoch drawn from ``seed + epoch``: reproducible after a resume.

    The aligner chooses the epoch with :meth:`use_epoch`; ``set_epoch`` (called by
    Accelerate's data loaders with their own pass counter, which restarts at 0 after a
    resume) is deliberately ignored."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:  # noqa: ARG002 - see the class docstring
        return

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def add_noise(x: torch.Tensor, variance: float, generator: torch.Generator) -> torch.Tensor:
    """Semantic completion: ``normalize(x + ε)``, ε ~ N(0, σ²·I), drawn afresh every step.

    Under several processes the noise is drawn for the whole batch and each process keeps
    its own rows, so N processes add exactly the noise one process would."""
    if variance <= 0:
        return F.normalize(x, dim=-1)
    shape = (x.shape[0] * world_size(), *x.shape[1:])
    noise = local_rows(torch.randn(shape, generator=generator, dtype=x.dtype,
                                   device=generator.device), x.shape[0])
    return F.normalize(x + noise.to(x.device) * math.sqrt(variance), dim=-1)


@dataclass
class AlignResult:
    steps: int
    seconds: float
    resumed_from: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) samples

    @property
    def final_loss(self) -> float | None:
        """The last loss read; None when none was (a run resumed from a checkpoint of an
        mcrx that did not keep the curve, with no step left): never a NaN in the metrics."""
        return self.losses[-1][1] if self.losses else None


#: how to install a tracker's library (each tracker's module bears its name)
TRACKER_INSTALL = {"tensorboard": "pip install 'mcrx[tensorboard]'"}


def check_trackers(trackers) -> None:
    """A tracker named in ``training.log_with`` whose library is missing stops the run with
    how to install it (Accelerate would only warn and log nothing)."""
    import importlib.util

    for tracker in trackers:
        if importlib.util.find_spec(tracker) is None:
            install = TRACKER_INSTALL.get(tracker, f"pip install {tracker}")
            raise McrxError(f"training.log_with: {tracker!r} is not installed ({install})")


def finish_trackers(accelerator) -> None:
    """Flush and close the trackers; not ``accelerator.end_training()``, which also destroys
    the process group the later stages of a distributed run still use."""
    for tracker in accelerator.trackers:
        tracker.finish()


def align(
    connector: torch.nn.Module,
    loss_fn: Callable,
    pairs: dict[str, Any],
    training: Training,
    checkpoint_dir: Path,
    fingerprint: str,
    seed: int = 0,
    description: str = "align",
    show_progress: bool = True,
    stop_after_steps: int | None = None,
    device: torch.device | None = None,
    log_dir: Path | None = None,
) -> AlignResult:
    """Train ``connector`` in place on ``pairs`` (roles → (N, d) tensors).

    ``fingerprint`` names the inputs (pairs, connector, hyper-parameters): checkpoints of
    other inputs are never resumed. ``stop_after_steps`` ends early (tests of resumption).
    ``device``: the run's device (``Run.device``); default this process's GPU, else the
    CPU. ``training.log_with`` trackers write under ``log_dir`` (default: beside the
    checkpoints)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from mcrx.tuning import retain_freed_memory

    retain_freed_memory()
    check_trackers(training.log_with)  # before any work
    # the process group, with mcrx's timeout, before Accelerate makes one
    process_state(cpu=device.type == "cpu" if device is not None else None)

    # split_batches: every process takes its share of each batch, so the effective batch
    # (and the schedule) is the recipe's, whatever the number of processes.
    accelerator = Accelerator(
        cpu=device.type == "cpu" if device is not None else not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=True),
        log_with=list(training.log_with) or None,
        project_dir=str(log_dir or checkpoint_dir.parent / "logs") if training.log_with else None,
    )
    device, precision = accelerator.device, training.precision
    noised_roles = tuple(getattr(connector, "noised_roles", ()))
    if accelerator.num_processes > 1:
        if training.batch_size % accelerator.num_processes:
            raise McrxError(f"training.batch_size ({training.batch_size}) must be a multiple "
                            f"of the number of processes ({accelerator.num_processes})")
        batchnorm_across_processes(connector)  # statistics over the whole batch

    # -- data: a fixed permutation per epoch, dropping a ragged last batch (BatchNorm) ----
    # On a GPU: resident pairs when they fit, else workers + pinned memory + prefetch.
    resident = pairs_on_device(pairs, device)
    dataset = PseudoPairDataset(resident if resident is not None else pairs)
    batch_size = min(training.batch_size, len(dataset))
    sampler = EpochShuffleSampler(len(dataset), seed)
    feeding = {} if resident is not None or device.type == "cpu" else {
        "num_workers": 2, "pin_memory": True, "prefetch_factor": 4, "persistent_workers": True}
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
        collate_fn=_keep_batch, **feeding,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * training.epochs

    # -- optimisation: AdamW + cosine decay over every step (papers' setting) -------------
    optimizer = torch.optim.AdamW(
        connector.parameters(), lr=training.lr, weight_decay=training.weight_decay
    )
    if training.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    connector, optimizer, loader, scheduler = accelerator.prepare(
        connector, optimizer, loader, scheduler
    )
    # fp16 needs loss scaling (bf16 does not); the scaler's state is checkpointed with the rest
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if scaler is not None:
        accelerator.register_for_checkpointing(scaler)

    # -- resume from the last complete checkpoint of the same inputs ----------------------
    step = 0
    found = latest_checkpoint(checkpoint_dir, fingerprint)
    if found is not None:
        accelerator.load_state(str(found[0]))
        step = int(found[1]["step"])
        if accelerator.is_main_process:
            console.print(f"[green]{description}: resumed from step {step} ({found[0].name})")
    resumed_from = step

    result = AlignResult(steps=total_steps, seconds=0.0, resumed_from=resumed_from)
    if found is not None:  # the curve so far (absent from checkpoints of mcrx ≤ 0.1)
        result.losses = [(int(s), float(v)) for s, v in found[1].get("losses", [])]
    if training.log_with:  # one run per leaf, named after it (a TensorBoard sub-folder)
        accelerator.init_trackers(re.sub(r"[^A-Za-z0-9_.-]+", "_", description).strip("_"))
    began = time.perf_counter()
    connector.train()
    with progress(disable=not (show_progress and accelerator.is_main_process)) as bar:
        # unit and loss: what plain progress lines (stderr not a terminal) print
        task = bar.add_task(description, total=total_steps, completed=step, rate="",
                            unit="step", loss=None)
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            sampler.use_epoch(epoch)
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in epoch_loader:
                # Noise on every embedding that enters a projector (semantic completion).
                generator = noise_generator(seed, step, device)
                batch = {
                    role: add_noise(rows, training.noise_variance, generator)
                    if role in noised_roles else rows
                    for role, rows in batch.items()
                }
                with matmul_precision(precision, device):
                    with autocast_context(precision, device):  # forward and loss only
                        outputs = connector(batch)
                        # every process computes the loss of the WHOLE batch (all negatives)
                        outputs = {name: gather_rows(rows) for name, rows in outputs.items()}
                        loss, parts = loss_fn(outputs,
                                              {r: gather_rows(v) for r, v in batch.items()})
                    if scaler is None:
                        accelerator.backward(loss)
                        optimizer.step()
                    else:
                        accelerator.backward(scaler.scale(loss))
                        scaler.step(optimizer)
                        scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                # reading the loss waits for the device: every loss_every steps only
                if step % training.loss_every == 0 or step == total_steps:
                    value = float(loss.detach())
                    refuse_nonfinite_loss(value, step, description)  # not on to chance
                    result.losses.append((step, value))
                    if training.log_with:
                        accelerator.log({"loss": value, "lr": scheduler.get_last_lr()[0]},
                                        step=step)
                    bar.update(task, advance=1, loss=value, rate=f"loss {value:.4f}  " + rate_text(
                        step - resumed_from, time.perf_counter() - began, "steps"))
                else:
                    bar.update(task, advance=1)
                if step % training.checkpoint_every == 0 and step < total_steps:
                    save_checkpoint(accelerator, checkpoint_dir, step, fingerprint,
                                    losses=result.losses)
                if stop_after_steps is not None and step >= stop_after_steps:
                    result.seconds = time.perf_counter() - began
                    finish_trackers(accelerator)
                    return result
    save_checkpoint(accelerator, checkpoint_dir, step, fingerprint, losses=result.losses)
    connector = accelerator.unwrap_model(connector).eval()
    finish_trackers(accelerator)
    result.seconds = time.perf_counter() - began
    return result
