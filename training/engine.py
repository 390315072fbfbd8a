"""Training and evaluation engine: ``train`` and ``evaluate`` (and ``python -m training.engine``).

``train`` reads top to bottom: set-up (processes, run folder, config, data, model, optimiser),
then one loop over epochs (train, validate, log, checkpoint, stop?). Under ``torchrun`` every
process trains on its own part of each epoch (DistributedDataParallel) and rank 0 writes the
logs and checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from prepro.shards import Manifest, ShardError, atomic_write_text, sha256_file
from training.checkpoint import (build_model_from_checkpoint, load_checkpoint, make_checkpoint, rng_state,
                                 save_checkpoint, set_rng_state)
from training.config import TrainConfig, differing_fields
from training.data import (NORM_MEAN, NORM_STD, BalancedDistributedSampler, BlockDataset, augment,
                           class_weights, flip_batch, normalize, passthrough_collate, to_float)
from training.errors import (BlockSizeMismatchError, CheckpointError, ConfigError, LabelMismatchError,
                             PreprocessingMismatchError, RunExistsError, TrainingDivergedError)

RESULT_FILE = "result.json"  # written when a run ends (epochs, early stopping, time budget); absent mid-run
LOG_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc", "val_macro_f1",
              "seconds", "partial")


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: str
    epochs_done: int  # epochs completed, counting a resumed run's earlier epochs
    best_epoch: int  # 1-based epoch of best.pt (0 if none)
    best_val_macro_f1: float
    stop_reason: str  # "epochs", "early stopping" or "time budget"
    last: dict[str, float] = field(default_factory=dict)  # the last epoch's log row


# ----------------------------------------------------------------------------------------------
# Set-up helpers


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's CUDA device if there is one, else CPU."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available: use --device cpu or auto")
    return dev


def _check_block_sizes(shard_sizes: dict[str, Sequence[int]], ckpt_sizes: dict[str, Sequence[int]],
                       regions: Sequence[str], shards_dir: str | os.PathLike) -> None:
    for r in regions:
        have, want = list(shard_sizes.get(r, [])), list(ckpt_sizes.get(r, []))
        if have != want:
            h = "x".join(map(str, have)) or "no"
            w = "x".join(map(str, want))
            raise BlockSizeMismatchError(f"{shards_dir} has {r} blocks of {h} pixels but the model was trained on "
                                         f"{w}: preprocess with --{r}-size {w} (or train a new model on these shards)")


# Block geometry that changes what a block shows (sizes are checked separately, by region).
_GEOMETRY_FLAGS = {"eyes_margin": "--eyes-margin", "mouth_margin": "--mouth-margin", "face_margin": "--face-margin",
                   "rotate": "--rotate/--no-rotate", "pad": "--pad"}


def preprocessing_differences(shard_params: dict[str, Any], ckpt_params: dict[str, Any],
                              regions: Sequence[str]) -> list[str]:
    """How the shards' block geometry differs from the one a checkpoint was trained on, one line each.

    The face mode may differ (evaluating on another dataset); margins, rotation and padding of the
    blocks the model reads may not, since they change what the model sees.
    """
    have, want = shard_params.get("blocks") or {}, ckpt_params.get("blocks") or {}
    if not want:
        return []  # a checkpoint trained on shards that do not record it: nothing to compare
    keys = ["rotate", "pad"] + [f"{r}_margin" for r in regions]
    return [f"{_GEOMETRY_FLAGS[k]} {want.get(k)!r} in training, {have.get(k)!r} here" for k in keys
            if have.get(k) != want.get(k)]


def _regions_of(cfg: TrainConfig) -> tuple[str, ...]:
    """The regions the configured model reads (builds a throw-away instance: cheap, and checks the name)."""
    from architectures import UnknownModelError, create_model

    try:
        return tuple(create_model(cfg.model, 2, **cfg.model_kwargs).regions)
    except UnknownModelError as e:
        raise ConfigError(str(e)) from None
    except TypeError as e:
        raise ConfigError(f"bad model_kwargs for {cfg.model!r}: {e}") from None


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


def _amp_context(device: torch.device, enabled: bool) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    """Autocast factory and grad scaler: bf16 where supported, fp16 + scaler otherwise; off on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16), None
    return lambda: torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def _gather(arrays: list[np.ndarray], world: int) -> list[np.ndarray]:
    """Concatenate each array over all processes (rank order)."""
    if world == 1:
        return arrays
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, arrays)
    return [np.concatenate([p[i] for p in parts]) for i in range(len(arrays))]


def _scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 over the classes present in ``y`` or ``p`` (scikit-learn)."""
    from sklearn.metrics import f1_score

    if len(y) == 0:
        return float("nan"), float("nan")
    return float((y == p).mean()), float(f1_score(y, p, average="macro", zero_division=0))


def _one_line(e: BaseException) -> str:
    """The original message of an exception re-raised by a DataLoader worker (its last line)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    prefix = f"{type(e).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


@torch.no_grad()
def _predict(model: nn.Module, loader: DataLoader, regions: Sequence[str], device: torch.device,
             autocast: Callable[[], Any], memory_format: torch.memory_format, tta_flip: bool = False,
             progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(logits, region weights, labels, dataset indices) over ``loader``; TTA averages with mirrored blocks."""
    from tqdm.auto import tqdm

    model.eval()
    logits, weights, labels, indices = [], [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x = normalize(to_float(batch, regions, device, memory_format), regions)
        with autocast():
            out = model(x)
            lg, w = out.logits.float(), out.region_weights.float()
            if tta_flip:
                out2 = model(flip_batch(x, regions))
                # Average probabilities, kept as log-probabilities so callers can treat them as logits.
                lg = torch.log((lg.softmax(1) + out2.logits.float().softmax(1)) / 2)
                w = (w + out2.region_weights.float()) / 2
        logits.append(lg.cpu().numpy())
        weights.append(w.cpu().numpy())
        labels.append(batch["label"].numpy())
        indices.append(batch["index"].numpy())
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape, np.float32)  # noqa: E731
    return cat(logits, (0, 0)), cat(weights, (0, 0)), cat(labels, (0,)).astype(np.int64), cat(indices, (0,))


def _write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite log.csv and curves.png from the whole history (so a resumed run keeps one log)."""
    from io import StringIO

    buf = StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k) for k in LOG_FIELDS})
    atomic_write_text(run_dir / "log.csv", buf.getvalue())

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    ep = [r["epoch"] for r in history]
    for ax, key, title in zip(fig.subplots(1, 3), ("loss", "acc", "macro_f1"), ("loss", "accuracy", "macro-F1")):
        for split in ("train", "val"):
            ax.plot(ep, [r[f"{split}_{key}"] for r in history], marker="o", ms=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = run_dir / "curves.png.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, run_dir / "curves.png")


# ----------------------------------------------------------------------------------------------
# Training


def train(shards_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: TrainConfig | None = None,
          resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train ``cfg.model`` on the shards' ``cfg.train_split``, selecting on ``cfg.val_split`` by macro-F1.

    Writes ``log.csv``, ``curves.png``, ``best.pt`` and ``last.pt`` to ``run_dir``. ``resume=True``
    continues from ``last.pt`` with its stored config (``cfg``, if given, may only change
    epochs, max_minutes, patience, device, num_workers and progress) and gives the same weights as
    an uninterrupted run. ``log`` receives one line per epoch (rank 0 only; None for silence).
    """
    # -- processes: torchrun sets RANK/WORLD_SIZE; one process otherwise
    rank, world, local_rank = _dist_env()
    started_pg = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and (cfg is None or cfg.device != "cpu") else "gloo"
        dist.init_process_group(backend=backend)
        started_pg = True
    is_main = rank == 0
    say = log if (log is not None and is_main) else (lambda _msg: None)
    try:
        return _train(shards_dir, Path(run_dir), cfg, resume, overwrite, rank, world, local_rank, is_main, say)
    finally:
        if started_pg:
            dist.destroy_process_group()


def _train(shards_dir, run_dir: Path, cfg, resume, overwrite, rank, world, local_rank, is_main, say) -> TrainResult:
    t_start = time.monotonic()

    # -- run folder and config
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    ckpt = None
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{run_dir} holds no last.pt to resume: train without resume to start a new run")
        ckpt = load_checkpoint(last_path, for_resume=True)
        stored = TrainConfig.from_dict(ckpt["config"])
        if cfg is not None:
            changed = differing_fields(cfg, stored)
            if changed:
                raise ConfigError(f"cannot resume {run_dir} with changed {', '.join(changed)}: resume with the "
                                  "run's own settings or start a new run folder")
        else:
            cfg = stored
    else:
        cfg = cfg if cfg is not None else TrainConfig()
        if (last_path.exists() or (run_dir / "log.csv").exists()) and not overwrite:
            raise RunExistsError(f"{run_dir} already holds a run: resume it, overwrite it, or pick another folder")
    cfg.validate()
    device = resolve_device(cfg.device, local_rank)
    regions = _regions_of(cfg)

    # -- data
    manifest = Manifest.load(shards_dir)
    if cfg.labels is not None:
        bad = [x for x in cfg.labels if x not in manifest.label_names]
        if bad:
            raise ConfigError(f"unknown label(s) {', '.join(bad)}; the shards have: {', '.join(manifest.label_names)}")
    train_ds = BlockDataset(shards_dir, cfg.train_split, class_names=cfg.labels, regions=regions, cache=cfg.cache)
    class_names = train_ds.class_names
    counts = train_ds.class_counts()
    if (counts == 0).any():
        missing = [n for n, c in zip(class_names, counts) if c == 0]
        raise ConfigError(f"label(s) {', '.join(missing)} have no {cfg.train_split} samples: leave them out of labels")
    if len(class_names) < 2:
        raise ConfigError(f"the {cfg.train_split} split holds only {class_names}: training needs at least 2 classes")
    val_ds = BlockDataset(shards_dir, cfg.val_split, class_names=class_names, regions=regions, cache=cfg.cache)
    block_sizes = {r: list(train_ds.block_sizes[r]) for r in train_ds.block_sizes}
    if ckpt is not None:
        _check_block_sizes(block_sizes, ckpt["block_sizes"], regions, shards_dir)
        if ckpt["class_names"] != class_names:
            raise ConfigError(f"the shards' classes {class_names} differ from the run's {ckpt['class_names']}: "
                              "resume on the shards the run was started on")

    if cfg.balanced_sampler:
        sampler = BalancedDistributedSampler(train_ds.targets, num_replicas=world, rank=rank, seed=cfg.seed)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    per_rank = len(sampler)
    # Dropping the last short batch keeps BatchNorm away from tiny batches, unless it is the only one.
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                              collate_fn=passthrough_collate, drop_last=per_rank > cfg.batch_size,
                              persistent_workers=cfg.num_workers > 0, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=max(256, cfg.batch_size), sampler=list(range(rank, len(val_ds), world)),
                            num_workers=cfg.num_workers, collate_fn=passthrough_collate,
                            persistent_workers=cfg.num_workers > 0, pin_memory=device.type == "cuda")
    steps_per_epoch = len(train_loader)

    # -- model, optimiser, schedule, loss (seeded: same seed -> same initial weights)
    from architectures import create_model

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = create_model(cfg.model, len(class_names), **cfg.model_kwargs)
    memory_format = torch.channels_last if (device.type == "cuda" and cfg.channels_last) else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps, cfg.min_lr_ratio))
    weights = class_weights(counts, cfg.class_weighting)
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                    label_smoothing=cfg.label_smoothing)
    autocast, scaler = _amp_context(device, cfg.amp)

    start_epoch, step, best_metric, best_epoch, bad_epochs, history = 0, 0, -1.0, 0, 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        best_metric, best_epoch, bad_epochs = ckpt["best_metric"], ckpt["best_epoch"], ckpt["bad_epochs"]
        history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        say(f"resuming {run_dir} after epoch {start_epoch} (best val macro-F1 {best_metric:.4f} at epoch {best_epoch})")
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Present only while the run's checkpoints are those of a run that ended normally.
        (run_dir / RESULT_FILE).unlink(missing_ok=True)
    aug_gen = torch.Generator()

    def checkpoint(epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        return make_checkpoint(
            arch=cfg.model, model_kwargs=cfg.model_kwargs, class_names=class_names, regions=list(regions),
            block_sizes=block_sizes, preprocessing=manifest.params,
            normalization={"mean": NORM_MEAN, "std": NORM_STD}, config=cfg.to_dict(), model_state=model.state_dict(),
            epoch=epoch, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), step=step,
            best_metric=best_metric, best_epoch=best_epoch, bad_epochs=bad_epochs, rng=rng_state(),
            history=history, metrics=row)

    say(f"training {cfg.model} on {len(train_ds)} {cfg.train_split} samples ({len(class_names)} classes: "
        f"{', '.join(class_names)}), validating on {len(val_ds)} {cfg.val_split} samples; device {device}"
        + (f", {world} processes" if world > 1 else ""))
    from tqdm.auto import tqdm

    stop_reason, row = "epochs", {}
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.monotonic()
        # Every epoch reseeds its own randomness, so where a run was stopped cannot change the result.
        sampler.set_epoch(epoch)
        aug_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + rank)
        torch.manual_seed(cfg.seed * 1_000_033 + epoch * 104_729 + rank)  # dropout

        # -- train one epoch
        train_model.train()
        loss_sum, n_seen, preds, labels = 0.0, 0, [], []
        out_of_time = False
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and is_main))
        try:
            for batch in bar:
                y = batch["label"].to(device, non_blocking=True)
                x = to_float(batch, regions, device, memory_format)
                if cfg.augment:
                    x = augment(x, regions, aug_gen)
                x = normalize(x, regions)
                with autocast():
                    out = train_model(x)
                    loss = criterion(out.logits.float(), y)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower lr "
                        f"(now {cfg.lr:g}), keep grad_clip on, or check the shards with `faceblocks verify`")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.item() * len(y)
                n_seen += len(y)
                preds.append(out.logits.argmax(1).cpu().numpy())
                labels.append(batch["label"].numpy())
                bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}", refresh=False)
                if cfg.max_minutes:
                    out_of_time = time.monotonic() - t_start > cfg.max_minutes * 60
                    if world > 1:
                        # All processes must stop at the same step, or the next gradient all-reduce hangs.
                        flag = torch.tensor([float(out_of_time)], device=device if device.type == "cuda" else "cpu")
                        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                        out_of_time = bool(flag.item())
                    if out_of_time:
                        break
        except ShardError:
            raise
        except RuntimeError as e:
            # A worker's ShardError comes back wrapped; give the user its one-line message.
            if "ShardError" in str(e):
                raise ShardError(_one_line(e)) from None
            raise
        loss_t = torch.tensor([loss_sum, float(n_seen)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(loss_t)
        train_loss = float(loss_t[0] / max(loss_t[1], 1))
        y_tr, p_tr = _gather([np.concatenate(labels) if labels else np.zeros(0, np.int64),
                              np.concatenate(preds) if preds else np.zeros(0, np.int64)], world)
        train_acc, train_f1 = _scores(y_tr, p_tr)

        # -- validate
        lg, _w, y_va, _idx = _predict(model, val_loader, regions, device, autocast, memory_format)
        lg, y_va = _gather([lg, y_va], world)
        with torch.no_grad():
            val_loss = float(criterion(torch.from_numpy(lg).to(device), torch.from_numpy(y_va).to(device)).item())
        val_acc, val_f1 = _scores(y_va, lg.argmax(1))

        # -- log, checkpoint, decide whether to stop
        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "train_loss": train_loss, "train_acc": train_acc,
               "train_macro_f1": train_f1, "val_loss": val_loss, "val_acc": val_acc, "val_macro_f1": val_f1,
               "seconds": round(time.monotonic() - t_epoch, 2), "partial": int(out_of_time)}
        history.append(row)
        improved = val_f1 > best_metric
        if improved:
            best_metric, best_epoch, bad_epochs = val_f1, epoch + 1, 0
        else:
            bad_epochs += 1
        if is_main:
            ck = checkpoint(epoch + 1, row)
            if improved:
                save_checkpoint(ck, best_path)
            save_checkpoint(ck, last_path)
            _write_log(run_dir, history)
        say(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f} F1 {train_f1:.4f}"
            f"  |  val loss {val_loss:.4f} acc {val_acc:.4f} F1 {val_f1:.4f}{'  *' if improved else ''}"
            f"  ({row['seconds']:.0f}s{', partial: time budget' if out_of_time else ''})")
        if world > 1:
            dist.barrier()
        if out_of_time or (cfg.max_minutes and world == 1 and time.monotonic() - t_start > cfg.max_minutes * 60):
            stop_reason = "time budget"
            break
        if cfg.patience and bad_epochs >= cfg.patience:
            stop_reason = "early stopping"
            say(f"early stopping: no better val macro-F1 for {cfg.patience} epochs")
            break

    result = TrainResult(run_dir=str(run_dir), epochs_done=len(history), best_epoch=best_epoch,
                         best_val_macro_f1=best_metric, stop_reason=stop_reason, last=row)
    if is_main:
        atomic_write_text(run_dir / RESULT_FILE, json.dumps(result.__dict__, indent=1))
    return result


# ----------------------------------------------------------------------------------------------
# Evaluation


def _resolve_checkpoint(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        if not (p / "best.pt").is_file():
            raise CheckpointError(f"{p} holds no best.pt: pass a run folder written by `faceblocks train` or a .pt file")
        return p / "best.pt"
    return p


def evaluate(checkpoint_or_run_dir: str | os.PathLike, shards_dir: str | os.PathLike, split: str = "test",
             tta_flip: bool = False, out_dir: str | os.PathLike | None = None, batch_size: int = 256,
             device: str = "auto", num_workers: int = 0, progress: bool = False,
             allow_preprocessing_mismatch: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a shard folder; writes metrics.json and the confusion matrix.

    Shards whose blocks were cut with other margins, rotation or padding than the checkpoint's
    training shards are refused (PreprocessingMismatchError) unless ``allow_preprocessing_mismatch``;
    the differences are then recorded in the metrics.

    Labels are matched by name: samples whose label the model does not know are excluded and
    counted (``n_excluded``, ``excluded_by_label``). Macro-F1 averages over the classes present in
    the evaluated samples; a prediction of a class absent from them counts as an error.
    Writes ``metrics.json``, ``confusion.json`` and ``confusion.png`` to ``out_dir`` (default:
    the checkpoint's folder) and returns the metrics dict.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ckpt_path = _resolve_checkpoint(checkpoint_or_run_dir)
    ckpt = load_checkpoint(ckpt_path)
    model = build_model_from_checkpoint(ckpt)
    class_names: list[str] = ckpt["class_names"]
    regions: list[str] = ckpt["regions"]
    manifest = Manifest.load(shards_dir)
    _check_block_sizes({k: list(v) for k, v in manifest.block_sizes.items()}, ckpt["block_sizes"], regions, shards_dir)
    differences = preprocessing_differences(manifest.params, ckpt.get("preprocessing") or {}, regions)
    if differences and not allow_preprocessing_mismatch:
        raise PreprocessingMismatchError(
            f"{shards_dir} was cut differently from the shards {ckpt_path.name} was trained on "
            f"({'; '.join(differences)}): preprocess again with the training values, or pass "
            "--allow-mismatch to evaluate anyway")
    shared = [n for n in class_names if n in manifest.label_names]
    if not shared:
        raise LabelMismatchError(f"{shards_dir} has labels {', '.join(manifest.label_names)}, none of which the model "
                                 f"knows ({', '.join(class_names)}): evaluate on shards with these labels")
    ds = BlockDataset(shards_dir, split, class_names=class_names, regions=regions, cache=False)
    dev = resolve_device(device)
    model = model.to(dev)
    autocast, _ = _amp_context(dev, True)
    loader = DataLoader(ds, batch_size=batch_size, sampler=list(range(len(ds))), num_workers=num_workers,
                        collate_fn=passthrough_collate)
    logits, region_w, y, _ = _predict(model, loader, regions, dev, autocast, torch.contiguous_format,
                                      tta_flip=tta_flip, progress=progress, desc=f"evaluate {split}")
    pred = logits.argmax(1)
    present = sorted(set(int(v) for v in np.unique(y)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=present, zero_division=0)
    cm = confusion_matrix(y, pred, labels=list(range(len(class_names))))[present]
    per_class_w = {class_names[c]: dict(zip(regions, region_w[y == c].mean(0).round(6).tolist())) for c in present}
    metrics: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": sha256_file(ckpt_path),
        "arch": ckpt["arch"],
        "epoch": ckpt["epoch"],
        "shards_dir": str(shards_dir),
        "split": split,
        "tta_flip": tta_flip,
        "n_samples": int(len(y)),
        "n_excluded": ds.n_excluded,
        "excluded_by_label": ds.excluded_by_label,
        "n_unlabelled": ds.n_unlabelled,
        "model_classes": class_names,
        "evaluated_classes": [class_names[c] for c in present],
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(np.mean(f1)),
        "per_class": {class_names[c]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(present, prec, rec, f1, support)},
        "preprocessing_differences": differences,
        "regions": regions,
        "region_weights_mean": dict(zip(regions, region_w.mean(0).round(6).tolist())),
        "region_weights_per_class": per_class_w,
    }
    out = Path(out_dir) if out_dir is not None else ckpt_path.parent
    out.mkdir(parents=True, exist_ok=True)
    confusion = {"true_labels": metrics["evaluated_classes"], "pred_labels": class_names, "matrix": cm.tolist()}
    atomic_write_text(out / "confusion.json", json.dumps(confusion, indent=1))
    _plot_confusion(cm, metrics["evaluated_classes"], class_names, out / "confusion.png",
                    title=f"{ckpt['arch']} on {Path(shards_dir).name}/{split}")
    metrics["files"] = {k: str(out / k) for k in ("metrics.json", "confusion.json", "confusion.png")}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def _plot_confusion(cm: np.ndarray, true_names: list[str], pred_names: list[str], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)  # row-normalised: recall on the diagonal
    fig = Figure(figsize=(1.0 + 0.8 * len(pred_names), 1.0 + 0.7 * len(true_names)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_names)), pred_names, rotation=45, ha="right")
    ax.set_yticks(range(len(true_names)), true_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A plain-text summary of ``evaluate``'s metrics for the terminal."""
    lines = [f"{metrics['arch']} (epoch {metrics['epoch']}) on {metrics['shards_dir']} [{metrics['split']}]"
             f"{' with flip TTA' if metrics['tta_flip'] else ''}: {metrics['n_samples']} samples"]
    if metrics["n_excluded"]:
        per = ", ".join(f"{k} {v}" for k, v in metrics["excluded_by_label"].items())
        lines.append(f"excluded {metrics['n_excluded']} samples with labels the model does not know ({per})")
    if metrics["n_unlabelled"]:
        lines.append(f"skipped {metrics['n_unlabelled']} unlabelled samples")
    if metrics.get("preprocessing_differences"):
        lines.append("warning: blocks cut differently from training: " + "; ".join(metrics["preprocessing_differences"]))
    regions = metrics["regions"]
    head = f"{'class':<12}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}  " + " ".join(f"{r:>6}" for r in regions)
    lines += ["", head, "-" * len(head)]
    for name, m in metrics["per_class"].items():
        w = metrics["region_weights_per_class"].get(name, {})
        lines.append(f"{name:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9d}  "
                     + " ".join(f"{w.get(r, float('nan')):>6.3f}" for r in regions))
    lines.append("-" * len(head))
    lines.append(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   mean region weights "
                 + ", ".join(f"{r} {v:.3f}" for r, v in metrics["region_weights_mean"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line (what torchrun runs): python -m training.engine SHARDS RUN [--epochs N ...]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.engine",
                                description="Train a faceblocks model (works under torchrun for several processes).")
    p.add_argument("shards_dir")
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not f.default_factory else None  # type: ignore[comparison-overlap]
        if f.name == "model_kwargs":
            p.add_argument(flag, type=json.loads, default=None, help='JSON object, e.g. \'{"widths": [8, 16]}\'')
        elif f.name == "labels":
            p.add_argument(flag, nargs="+", default=None, help="class names to keep")
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type=type(default), default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    from training.errors import TrainingError

    try:
        if args.resume:
            cfg = None
            if given:  # only run-control options may change on resume: apply them to the stored config
                stored = TrainConfig.from_dict(load_checkpoint(Path(args.run_dir) / "last.pt", for_resume=True)["config"])
                cfg = TrainConfig.from_dict({**stored.to_dict(), **given})
        else:
            cfg = TrainConfig(**given)
        result = train(args.shards_dir, args.run_dir, cfg, resume=args.resume, overwrite=args.overwrite)
    except (TrainingError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if _dist_env()[0] == 0:
        print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
