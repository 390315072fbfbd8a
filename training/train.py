"""Training: ``train(shards_dir, run_dir, cfg)``, and ``python -m training.train`` for torchrun.

It reads top to bottom: `_setup` (processes, run folder, config, data, model, optimiser), then
one loop over epochs: `train_one_epoch`, `validate`, log, checkpoint, stop? Under ``torchrun``
every process trains on its own part of each epoch (DistributedDataParallel) and rank 0 writes
the logs and checkpoints. A non-finite loss or weight stops the run with the last good
checkpoints kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from architectures import create_model
from prepro.errors import DivergedError, FaceblocksError, InputError
from prepro.outputs import atomic_write_text, output_lock
from prepro.settings import options
from prepro.shards import Manifest
from training.checkpoint import load_checkpoint, make_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.config import NO_VALIDATION, TrainConfig, differing_fields
from training.data import NORM_MEAN, NORM_STD, Batches, SplitSamples, class_weights, holdout_rows
from training.devices import amp_context, resolve_device
from training.epoch import train_one_epoch, validate, wrap_for_step
from training.errors import CheckpointError
from training.init_from import frozen_in, load_start_weights, network, start_model
from training.run_folder import RunFolder
from training.run_log import write_log
from training.run_state import TrainingRun
from training.shard_fit import check_block_sizes
from training.teachers import check_resumed_teachers, teacher_probabilities
from training.weight_average import checkpoint_fields, restore, weight_average


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: str
    epochs_done: int  # epochs completed, counting a resumed run's earlier epochs
    best_epoch: int  # 1-based epoch of best.pt (0 if none)
    best_val_macro_f1: float | None  # None: trained without validation (val_split none), best.pt = last.pt
    stop_reason: str  # "epochs", "early stopping" or "time budget"
    last: dict[str, float] = field(default_factory=dict)  # the last epoch's log row
    init: dict[str, Any] | None = None  # the model it started from (`StartModel.record`); None: from scratch


# ----------------------------------------------------------------------------------------------
# Set-up


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay on weight matrices and kernels only: decaying BatchNorm scales and biases only hurts.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _config(run_dir: Path, cfg: TrainConfig | None, resume: bool | dict, overwrite: bool
            ) -> tuple[TrainConfig, dict | None]:
    """The config to train with, and the checkpoint to resume from (None for a new run). The one
    place a run is resumed: ``resume`` may be a dict of run-control changes (e.g. more epochs)."""
    folder = RunFolder(run_dir)
    if not resume:
        if overwrite:
            folder.check_replaceable()
        else:
            folder.check_new()
        return cfg if cfg is not None else TrainConfig(), None
    if not folder.last.is_file():
        raise InputError(f"{run_dir} holds no last.pt to resume: train without --resume to start a new run")
    ckpt = load_checkpoint(folder.last, for_resume=True)
    stored = TrainConfig.from_dict(ckpt["config"], where=f"{folder.last}: config.")
    if isinstance(resume, dict) and resume:
        return stored.resumed_with(resume), ckpt
    if cfg is not None:
        changed = differing_fields(cfg, stored)
        if changed:
            raise InputError(f"cannot resume {run_dir} with changed {', '.join(changed)}: resume with the run's "
                             "own settings or start a new run folder")
        return cfg, ckpt
    return stored, ckpt


def _data(shards_dir: str, cfg: TrainConfig, regions: tuple[str, ...], device: torch.device, rank: int,
          world: int) -> tuple[Batches, Batches | None]:
    """The training and validation batches (holdout carved, low-quality training samples left out);
    no validation batches with val_split none."""
    manifest = Manifest.load(shards_dir)
    if cfg.labels is not None:
        bad = [x for x in cfg.labels if x not in manifest.label_names]
        if bad:
            raise InputError(f"unknown label(s) {', '.join(bad)}; the shards have: {', '.join(manifest.label_names)}")
    train = SplitSamples(shards_dir, cfg.train_split, class_names=cfg.labels, regions=regions,
                         soft_labels=cfg.soft_labels)
    train.require_samples(f"split {cfg.train_split!r}")
    val = None
    if cfg.val_split == "holdout":
        held = holdout_rows(train.targets, cfg.holdout_frac, cfg.holdout_seed_used)
        val = SplitSamples(shards_dir, cfg.train_split, class_names=train.class_names, regions=regions).select(held)
        train.select(np.setdiff1d(np.arange(len(train)), held))
    elif cfg.val_split != NO_VALIDATION:
        val = SplitSamples(shards_dir, cfg.val_split, class_names=train.class_names, regions=regions)
    if val is not None:
        val.require_samples(f"the {cfg.val_split} validation part")
    if cfg.min_quality > 0:
        train.select(np.flatnonzero(train.quality() >= cfg.min_quality))
        train.require_samples(f"split {cfg.train_split!r} at quality >= {cfg.min_quality}")
    counts = train.class_counts()
    if (counts == 0).any() or len(train.class_names) < 2:
        missing = [n for n, c in zip(train.class_names, counts) if c == 0]
        raise InputError(f"training needs at least 2 classes with {cfg.train_split} samples; "
                         + (f"{', '.join(missing)} have none: leave them out of labels" if missing
                            else f"the split holds only {train.class_names}"))
    data_device = device if cfg.cache else torch.device("cpu")
    return (Batches(train, train.load(data_device) if cfg.cache else None, cfg.batch_size, rank, world),
            None if val is None else
            Batches(val, val.load(data_device) if cfg.cache else None, max(256, cfg.batch_size), rank, world))


def _setup(shards_dir: str, run_dir: Path, cfg: TrainConfig | None, resume: bool, overwrite: bool,
           say: Callable[[str], None]) -> TrainingRun:
    rank, world, local_rank = _dist_env()
    cfg, ckpt = _config(run_dir, cfg, resume, overwrite)
    # a resumed run continues from its last.pt, not from init
    start = start_model(cfg, shards_dir) if ckpt is None and cfg.init is not None else None
    arch, model_kwargs = network(cfg, start, ckpt)
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = create_model(arch, 2, **model_kwargs)  # checks the name and kwargs before any data is read
    train, val = _data(shards_dir, cfg, tuple(model.regions), device, rank, world)
    class_names, regions = train.samples.class_names, tuple(model.regions)
    block_sizes = {r: list(train.samples.block_sizes[r]) for r in train.samples.block_sizes}
    if ckpt is not None:
        check_block_sizes(block_sizes, ckpt["block_sizes"], regions, shards_dir)
        if ckpt["class_names"] != class_names:
            raise InputError(f"the shards' classes {class_names} differ from the run's {ckpt['class_names']}: "
                             "resume on the shards the run was started on")
    torch.manual_seed(cfg.seed)  # the same initial weights whatever was built above
    model = create_model(arch, len(class_names), **model_kwargs)
    if start is not None:
        load_start_weights(model, start, class_names)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    steps = train.steps(len(train.epoch_order(0, cfg.balanced_sampler)), drop_last=True)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(
        cfg.epochs * steps, int(round(cfg.warmup_epochs * steps)), cfg.min_lr_ratio))
    weights = class_weights(train.samples.class_counts(), cfg.class_weighting)
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                    label_smoothing=cfg.label_smoothing)
    autocast, scaler = amp_context(device, cfg.amp)
    run = TrainingRun(cfg, run_dir, device, regions, class_names, block_sizes, train.samples.manifest.params, train, val,
               model, model, optimizer, scheduler, criterion, autocast, scaler, memory_format, rank, world, say=say,
               arch=arch, model_kwargs=model_kwargs)
    _attach_teachers(run, shards_dir, ckpt)
    if cfg.ema_decay > 0:
        run.average = weight_average(model, cfg.ema_decay)
    if ckpt is not None:
        _restore(run, ckpt)
    elif start is not None:
        run.init = start.record(class_names)
        say(f"fine-tuning from {start.path} (new classes: {', '.join(run.init['new_classes']) or 'none'})")
    wrap_for_step(run, frozen_in(run.start_epoch, cfg.freeze_epochs))
    return run


def _attach_teachers(run: TrainingRun, shards_dir: str, ckpt: dict[str, Any] | None) -> None:
    """Score the training samples with the run's teachers once, held beside them in the cache."""
    if not run.cfg.teachers:
        return
    probs, run.teachers = teacher_probabilities(run.cfg.teachers, shards_dir, run.train.samples, run.device)
    check_resumed_teachers(run.teachers, ckpt.get("teachers") if ckpt is not None else None)
    cached = run.train.cached
    cached["teacher"] = torch.from_numpy(probs).to(cached["label"].device)
    run.say(f"distilling from {', '.join(t['model'] for t in run.teachers)} (weight {run.cfg.distill_weight:g}, "
            f"temperature {run.cfg.distill_temperature:g})")


def _restore(run: TrainingRun, ckpt: dict[str, Any]) -> None:
    """Continue from a checkpoint; weights or optimiser state that do not fit are a clear error."""
    try:
        if run.average is not None:
            restore(run.average, run.model, ckpt)
        else:
            run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{run.run_dir / 'last.pt'} does not fit this run ({' '.join(str(e).split())[:200]}): "
                              "it is damaged or from another version; start a new run") from None
    run.start_epoch, run.step = ckpt["epoch"], ckpt["step"]
    run.best_metric, run.best_epoch, run.bad_epochs = ckpt["best_metric"], ckpt["best_epoch"], ckpt["bad_epochs"]
    run.history = list(ckpt["history"])
    run.init = ckpt.get("init")
    run.say(f"resuming {run.run_dir} after epoch {run.start_epoch}" + (
        "" if run.val is None else f" (best val macro-F1 {run.best_metric:.4f} at epoch {run.best_epoch})"))


# ----------------------------------------------------------------------------------------------
# The loop


def train(shards_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: TrainConfig | None = None,
          resume: bool | dict = False, overwrite: bool = False,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train ``cfg.model`` (or fine-tune ``cfg.init``: `training.init_from`) on the shards'
    ``cfg.train_split``, selecting the best epoch on ``cfg.val_split`` by macro-F1 (val_split none:
    no validation, the last epoch is kept). Writes ``log.csv``, ``curves.png``, ``best.pt`` and
    ``last.pt`` to ``run_dir``. ``resume=True`` continues from ``last.pt`` with its stored config (``cfg``, if
    given, may differ only in run-control fields) and gives the same weights as an uninterrupted
    run; ``resume`` may also be a dict of run-control changes to the stored config (``{"epochs": 60}``).
    ``log`` receives one line per epoch (rank 0 only; None for silence)."""
    rank, world, _ = _dist_env()
    started_pg = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() and
                                (cfg is None or cfg.device != "cpu") else "gloo")
        started_pg = True
    say = log if (log is not None and rank == 0) else (lambda _msg: None)
    run_dir = Path(run_dir)
    try:
        with output_lock(run_dir) if rank == 0 else contextlib.nullcontext():
            return _loop(_setup(str(shards_dir), run_dir, cfg, resume, overwrite, say), time.monotonic())
    finally:
        if started_pg:
            dist.destroy_process_group()


def _loop(run: TrainingRun, t_start: float) -> TrainResult:
    cfg, is_main = run.cfg, run.rank == 0
    if is_main:
        RunFolder(run.run_dir).result.unlink(missing_ok=True)  # present only once the run has ended
    validating = ("no validation: the last epoch is kept" if run.val is None
                  else f"validating on {len(run.val)} {cfg.val_split} samples")
    run.say(f"training {run.arch} on {len(run.train)} {cfg.train_split} samples ({len(run.class_names)} classes: "
            f"{', '.join(run.class_names)}), {validating}; device {run.device}"
            + (f", {run.world} processes" if run.world > 1 else ""))
    deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes else None
    stop_reason, row = "epochs", {}
    for epoch in range(run.start_epoch, cfg.epochs):
        t_epoch = time.monotonic()
        row = {"epoch": epoch + 1, **train_one_epoch(run, epoch, deadline)}
        row.update(validate(run) if run.val is not None else {}, lr=run.scheduler.get_last_lr()[0],
                   seconds=round(time.monotonic() - t_epoch, 2))
        _check_finite(run, epoch, row)
        # without validation every epoch is the one kept (best.pt = last.pt); best_metric stays unset
        improved = run.val is None or row["val_macro_f1"] > run.best_metric
        if improved:
            run.best_metric, run.best_epoch, run.bad_epochs = row.get("val_macro_f1", run.best_metric), epoch + 1, 0
        else:
            run.bad_epochs += 1
        run.history.append(row)
        if is_main:
            _save(run, epoch + 1, row, improved)
        run.say(_epoch_line(run, row, improved))
        if run.world > 1:
            dist.barrier()
        if row["partial"] or (deadline is not None and time.monotonic() > deadline):
            stop_reason = "time budget"
            break
        if cfg.patience and run.bad_epochs >= cfg.patience:
            stop_reason = "early stopping"
            run.say(f"early stopping: no better val macro-F1 for {cfg.patience} epochs")
            break
    result = TrainResult(run_dir=str(run.run_dir), epochs_done=len(run.history), best_epoch=run.best_epoch,
                         best_val_macro_f1=None if run.val is None else run.best_metric, stop_reason=stop_reason,
                         last=row, init=run.init)
    if is_main:
        atomic_write_text(RunFolder(run.run_dir).result, json.dumps(result.__dict__, indent=1))
    return result


DIVERGED_LOSS = 50.0  # times log(classes), the loss of a uniform guess: no learning run gets near it


def _check_finite(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """A weight that is no longer finite, or a loss far above guessing, ends the run before it is saved."""
    limit = DIVERGED_LOSS * math.log(len(run.class_names))
    for key in ("train_loss", "val_loss") if "val_loss" in row else ("train_loss",):
        if not math.isfinite(row[key]) or row[key] > limit:
            raise DivergedError(f"training diverged in epoch {epoch + 1} ({key} {row[key]:.3g}): lower lr (now "
                                f"{run.cfg.lr:g}); the checkpoints of the last good epoch are kept")
    states = [run.model.state_dict()] + ([run.average.module.state_dict()] if run.average is not None else [])
    for name, p in ((k, v) for state in states for k, v in state.items()):
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise DivergedError(f"weight {name} became non-finite in epoch {epoch + 1}: lower lr (now "
                                f"{run.cfg.lr:g}); the checkpoints of the last good epoch are kept")


def _save(run: TrainingRun, epoch: int, row: dict[str, Any], improved: bool) -> None:
    ck = make_checkpoint(
        arch=run.arch, model_kwargs=run.model_kwargs, class_names=run.class_names, regions=list(run.regions),
        block_sizes=run.block_sizes, preprocessing=run.preprocessing,
        normalization={"mean": NORM_MEAN, "std": NORM_STD}, config=run.cfg.to_dict(),
        model_state=run.scored_model.state_dict(), epoch=epoch, optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(), step=run.step, best_metric=run.best_metric, best_epoch=run.best_epoch,
        bad_epochs=run.bad_epochs, rng=rng_state(), history=run.history, metrics=row, init=run.init,
        teachers=run.teachers, **({} if run.average is None else checkpoint_fields(run.average, run.model)))
    folder = RunFolder(run.run_dir)
    if improved:
        save_checkpoint(ck, folder.best)
    save_checkpoint(ck, folder.last)
    write_log(run.run_dir, run.history)


def _epoch_line(run: TrainingRun, row: dict[str, Any], improved: bool) -> str:
    val = ("" if "val_loss" not in row else f"  |  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} F1 "
           f"{row['val_macro_f1']:.4f}{'  *' if improved else ''}")
    return (f"epoch {row['epoch']:3d}/{run.cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} "
            f"F1 {row['train_macro_f1']:.4f}{val}  ({row['seconds']:.0f}s"
            f"{', partial: time budget' if row['partial'] else ''})")


# ----------------------------------------------------------------------------------------------
# Command line (what torchrun runs): python -m training.train SHARDS RUN [--epochs N ...]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train a faceblocks model (works under torchrun for several processes).")
    p.add_argument("shards_dir")
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    for o in options(TrainConfig):
        flag = "--" + o.name.replace("_", "-")
        kind = o.spec.kind
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=o.spec.help)
        elif kind == "str_list":
            p.add_argument(flag, nargs="+", default=None, help=o.spec.help)
        else:
            conv = {"int": int, "float": float, "str": str, "dict": json.loads}[kind]
            p.add_argument(flag, type=conv, default=None, help=o.spec.help)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("shards_dir", "run_dir", "resume",
                                                                                  "overwrite")}
    try:
        cfg = None if args.resume else TrainConfig.from_dict(given)
        resume = (given or True) if args.resume else False
        result = train(args.shards_dir, args.run_dir, cfg, resume=resume, overwrite=args.overwrite)
    except FaceblocksError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if _dist_env()[0] == 0:
        print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
