"""Distillation: a run that learns from trained models (`TrainConfig.teachers`) as well as from the labels.

Each teacher (a shipped model's name, a run folder or a .pt file) scores every training sample
once, at set-up, averaged with the sample's mirror image (the student's augmentation mirrors faces
too, so both views are its inputs); the teachers' probabilities are averaged. The step's loss is
then ``(1 - w) * label loss + w * T^2 * KL(teachers || student)``, both softened by the temperature
T (Hinton et al. 2015), w = ``distill_weight``, T = ``distill_temperature``. Scores computed once,
not per step, keep a teacher's cost to one pass over the data instead of one per epoch.

The teachers must know the run's classes and be cut like its shards (the check `evaluate` makes).
Every checkpoint records each teacher's file and SHA-256; a resumed run refuses teachers whose
files changed since it started, since it would no longer give the weights of an unbroken run.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from prepro.errors import InputError
from prepro.outputs import sha256_file
from prepro.shards import Manifest
from training.batch_predictions import predict_batches
from training.checkpoint import build_model_from_checkpoint, require_finite_outputs
from training.data import Batches, SplitSamples
from training.devices import amp_context
from training.model_names import resolve_checkpoint
from training.shard_fit import require_cut_like_model

BATCH = 512  # samples a teacher scores at once


def teacher_probabilities(refs: Sequence[str], shards_dir: str, samples: SplitSamples, device: torch.device
                          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(float32 (N, classes) averaged teacher probabilities for ``samples`` in order, a record of
    each teacher for the checkpoints)."""
    manifest = Manifest.load(shards_dir)
    total = np.zeros((len(samples), len(samples.class_names)), np.float64)
    records = []
    for ref in refs:
        path, ckpt = resolve_checkpoint(ref)
        require_cut_like_model(shards_dir, manifest, ckpt, path.name)
        known = list(ckpt["class_names"])
        missing = [c for c in samples.class_names if c not in known]
        if missing:
            raise InputError(f"teacher {ref} does not know the class(es) {', '.join(missing)} of this run: "
                             "distil from models trained on the same classes")
        probs = _scores(build_model_from_checkpoint(ckpt), samples.same_samples(ckpt["regions"]), device)
        require_finite_outputs(path, probs)
        probs = probs[:, [known.index(c) for c in samples.class_names]]
        total += probs / probs.sum(axis=1, keepdims=True)  # a teacher's extra classes left out
        records.append({"model": str(ref), "checkpoint": str(path), "sha256": sha256_file(path),
                        "arch": ckpt["arch"], "epoch": ckpt["epoch"]})
    return (total / len(refs)).astype(np.float32), records


def _scores(model: torch.nn.Module, samples: SplitSamples, device: torch.device) -> np.ndarray:
    """Class probabilities of every sample, averaged with its mirror image."""
    batches = Batches(samples, samples.load(torch.device("cpu")), BATCH)
    log_probs, _w, _y = predict_batches(model.to(device), batches, samples.regions, device,
                                        amp_context(device, True)[0], torch.contiguous_format, tta_flip=True)
    return np.exp(log_probs.astype(np.float64))


def check_resumed_teachers(now: list[dict[str, Any]], stored: list[dict[str, Any]] | None) -> None:
    """A resumed run must learn from the very files it started with."""
    if stored is None:
        return
    changed = [n["model"] for n, s in zip(now, stored) if n["sha256"] != s.get("sha256")]
    if changed or len(now) != len(stored):
        raise InputError(f"the teacher(s) {', '.join(changed) or 'list'} changed since this run started: resume "
                         "with the same teacher files or start a new run")


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL divergence from the teachers' probabilities to the student's, both softened by T
    (the T^2 keeps its gradients on the scale of the label loss's). The KL divergence is the
    cross-entropy less the teachers' own entropy: the same gradients, and 0 when the two agree."""
    soft = torch.softmax(torch.log(teacher.clamp_min(1e-8)) / temperature, dim=1)
    kl = (torch.xlogy(soft, soft) - soft * torch.log_softmax(logits / temperature, dim=1)).sum(1)
    return kl.mean() * temperature ** 2
