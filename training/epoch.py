"""One epoch of a run: the training pass (augmentation, mixup, distillation, the optimiser step,
several processes kept in step) and the validation pass; `training.train`'s loop calls them."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from prepro.errors import DivergedError
from training.batch_predictions import predict_batches
from training.data import augment, erase, normalize, to_float
from training.init_from import frozen_in, set_branches_frozen
from training.run_state import TrainingRun
from training.scores import scores
from training.teachers import distillation_loss


def wrap_for_step(run: TrainingRun, frozen: bool) -> None:
    """The module the step calls: the model, in DDP across processes, compiled on CUDA when asked.
    Frozen branches produce no gradients, which DDP must be told to expect (and only then: the
    search for them costs a graph traversal a step), so DDP is rebuilt when they are freed."""
    step_model: nn.Module = run.model
    if run.world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=frozen)
    if run.cfg.compile and run.device.type == "cuda":
        step_model = torch.compile(step_model)
    run.train_model, run.wrapped_frozen = step_model, frozen




def _mixup(x: dict[str, torch.Tensor], y: torch.Tensor, alpha: float, g: torch.Generator,
           teacher: torch.Tensor | None):
    """Mix each sample with another (same partner for every region, and for the teachers' scores);
    returns x, y, partner y, lam, mixed teachers' scores."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    perm = torch.randperm(y.shape[0], generator=g, device=g.device).to(y.device)
    mixed_teacher = None if teacher is None else lam * teacher + (1 - lam) * teacher[perm]
    return {r: lam * v + (1 - lam) * v[perm] for r, v in x.items()}, y, y[perm], lam, mixed_teacher


def train_one_epoch(run: TrainingRun, epoch: int, deadline: float | None) -> dict[str, Any]:
    """One pass over this process's part of the training split; returns its log fields."""
    from tqdm.auto import tqdm

    cfg = run.cfg
    # Every epoch reseeds its own randomness, so where a run was stopped cannot change the result.
    order = run.train.epoch_order(cfg.seed * 7919 + epoch, cfg.balanced_sampler)
    data_device = run.train.cached["label"].device if run.train.cached is not None else torch.device("cpu")
    g = torch.Generator(device=data_device).manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + run.rank)
    torch.manual_seed(cfg.seed * 1_000_033 + epoch * 104_729 + run.rank)  # dropout, mixup's Beta
    frozen = frozen_in(epoch, cfg.freeze_epochs)
    if run.world > 1 and frozen != run.wrapped_frozen:
        wrap_for_step(run, frozen)
    run.train_model.train()
    if cfg.freeze_epochs:
        set_branches_frozen(run.model, frozen)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    n_seen, preds, labels, out_of_time = 0, [], [], False
    bar = tqdm(run.train.iterate(order, drop_last=True), total=run.train.steps(len(order), True),
               desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not (cfg.progress and run.rank == 0))
    for batch in bar:
        y = batch["label"].to(run.device, non_blocking=True)
        # the target: the vote distribution with --soft-labels, else the label (accuracy is the label's)
        target = batch["soft"].to(run.device, non_blocking=True) if "soft" in batch else y
        teacher = batch["teacher"].to(run.device, non_blocking=True) if "teacher" in batch else None
        x = to_float(batch, run.regions, run.device, run.memory_format)
        if cfg.augment:
            x = augment(x, run.regions, g)
        if cfg.erase > 0:
            x = erase(x, run.regions, cfg.erase, g)
        x = normalize(x, run.regions)
        target2, lam = target, 1.0
        if cfg.mixup > 0:
            x, target, target2, lam, teacher = _mixup(x, target, cfg.mixup, g, teacher)
        with run.autocast():
            out = run.train_model(x)
            logits = out.logits.float()
            loss = lam * run.criterion(logits, target) + (1 - lam) * run.criterion(logits, target2) if lam < 1 \
                else run.criterion(logits, target)
            if teacher is not None:
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * distillation_loss(
                    logits, teacher, cfg.distill_temperature)
        if not torch.isfinite(loss):
            raise DivergedError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {run.step + 1}: lower "
                                f"lr (now {cfg.lr:g}) or keep grad_clip on; the last good checkpoints are kept")
        _step(run, loss)
        loss_sum += loss.detach().double() * len(y)
        n_seen += len(y)
        preds.append(logits.argmax(1))
        labels.append(y)
        if deadline is not None and _out_of_time(run, deadline):
            out_of_time = True
            break
    return _epoch_scores(run, loss_sum, n_seen, preds, labels) | {"partial": int(out_of_time)}


def _step(run: TrainingRun, loss: torch.Tensor) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if run.cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    if run.average is not None:
        run.average.update_parameters(run.model)
    run.step += 1


def _out_of_time(run: TrainingRun, deadline: float) -> bool:
    late = time.monotonic() > deadline
    if run.world > 1:  # every process must stop at the same step, or the next all-reduce hangs
        flag = torch.tensor([float(late)], device=run.device if run.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        late = bool(flag.item())
    return late


def _epoch_scores(run: TrainingRun, loss_sum: torch.Tensor, n_seen: int, preds: list, labels: list) -> dict[str, Any]:
    totals = torch.stack([loss_sum.cpu(), torch.tensor(float(n_seen), dtype=torch.float64)])
    if run.world > 1:
        dist.all_reduce(totals)
    cat = lambda xs: torch.cat(xs).cpu().numpy() if xs else np.zeros(0, np.int64)  # noqa: E731
    y, p = _gather([cat(labels), cat(preds)], run.world)
    acc, f1 = scores(y, p)
    return {"train_loss": float(totals[0] / max(float(totals[1]), 1.0)), "train_acc": acc, "train_macro_f1": f1}


def _gather(arrays: list[np.ndarray], world: int) -> list[np.ndarray]:
    """Concatenate each array over all processes (rank order)."""
    if world == 1:
        return arrays
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, arrays)
    return [np.concatenate([p[i] for p in parts]) for i in range(len(arrays))]


@torch.no_grad()
def validate(run: TrainingRun) -> dict[str, Any]:
    """Loss, accuracy and macro-F1 on the validation part (all processes together)."""
    logits, _w, y = predict_batches(run.scored_model, run.val, run.regions, run.device, run.autocast, run.memory_format)
    logits, y = _gather([logits, y], run.world)
    loss = float(run.criterion(torch.from_numpy(logits).to(run.device), torch.from_numpy(y).to(run.device)).item())
    acc, f1 = scores(y, logits.argmax(1))
    return {"val_loss": loss, "val_acc": acc, "val_macro_f1": f1}
