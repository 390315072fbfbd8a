"""The writer: which shard each stretch of items becomes, writing it, and recording it.

The pending items are cut into **shard tasks** (`plan_shards`): up to ``shard_size`` consecutive
items of one split, each with its shard name decided before any work. A task's samples become one
shard (`write_task_shard`) and its failures are recorded with it: written by the worker that cut
them (the Dask path: a task's worker writes its own shard and returns only its record) or by the
driver from the results of several workers (the joblib path); the same function and names either
way, so both write the same bytes. The driver records the outcomes in task order (`ShardRecorder`)
and saves the manifest after each, so a run killed at any moment resumes after the last recorded
task with nothing lost or doubled (a shard written but not yet recorded is removed and redone).

A shard name that already exists is overwritten only when the file is provably this folder's (an
unlisted shard of a killed run, carrying its ``writer_id``); a name taken by any other file (one
an --overwrite left alone because it changed since, or the user's) is skipped, the file untouched.
A task whose every item failed writes no shard; its index stays reserved (its failures carry it),
so the next names are the same whether or not the run was interrupted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prepro.readers import Failure, RawItem
from prepro.shards import SHARD_DIR, Manifest, Sample, ShardRecord, shard_attrs, shard_writer_id, write_shard

_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5,})\.h5$")


def next_shard_index(manifest: Manifest, split: str) -> int:
    """One past the highest index of the split's listed shards and reserved indices (names stay
    dense and unique)."""
    indices = [int(m.group("index")) for r in manifest.shards_of(split)
               if (m := _SHARD_NAME.match(Path(r.file).name))]
    indices += [f["shard"] for f in manifest.failures
                if f.get("split") == split and isinstance(f.get("shard"), int)]
    return max(indices, default=-1) + 1


@dataclass
class ShardTask:
    """Up to ``shard_size`` consecutive pending items of one split: at most one shard."""

    start: int  # position of the first item in the pending list
    items: list[RawItem]
    split: str
    index: int
    file: str  # the shard's path relative to the output folder


@dataclass
class TaskOutcome:
    """What a shard task left: its shard's record (None when every item failed) and failures."""

    start: int
    n_items: int
    record: ShardRecord | None
    failures: list[dict] = field(default_factory=list)


def plan_shards(out: Path, manifest: Manifest, pending: list[RawItem], shard_size: int) -> list[ShardTask]:
    """The shard tasks of ``pending``, in order, each with a free name (see the module doc)."""
    tasks: list[ShardTask] = []
    next_index: dict[str, int] = {}
    a = 0
    while a < len(pending):
        split = pending[a].split
        b = a + 1
        while b < len(pending) and b - a < shard_size and pending[b].split == split:
            b += 1
        index = _free_index(out, manifest, split, next_index.get(split, next_shard_index(manifest, split)))
        next_index[split] = index + 1
        tasks.append(ShardTask(a, pending[a:b], split, index, _shard_file(split, index)))
        a = b
    return tasks


def write_task_shard(out: Path, task: ShardTask, results: list[Sample | Failure], attrs: dict[str, Any],
                     writer_id: str) -> TaskOutcome:
    """Write the task's samples as its shard; its failures are returned with the record."""
    samples = [r for r in results if not isinstance(r, Failure)]
    failures = [{"source": r.source, "reason": r.reason, "split": task.split, "shard": task.index}
                for r in results if isinstance(r, Failure)]
    record = None
    if samples:
        digest = write_shard(out / task.file, samples, attrs, writer_id)
        record = ShardRecord(task.file, task.split, len(samples), digest)
    return TaskOutcome(task.start, len(task.items), record, failures)


def task_attrs(manifest: Manifest, task: ShardTask) -> dict[str, Any]:
    return shard_attrs(manifest, task.split, task.index)


class ShardRecorder:
    """Records task outcomes, in task order, in the manifest, saving it after each."""

    def __init__(self, out: Path, manifest: Manifest) -> None:
        self.out, self.manifest = out, manifest
        self.written = 0  # samples recorded by this run

    def record(self, outcome: TaskOutcome) -> None:
        if outcome.record is not None:
            self.manifest.shards.append(outcome.record)
            self.written += outcome.record.n_samples
        self.manifest.failures.extend(outcome.failures)
        self.manifest.save(self.out)

    def finish(self, complete: bool) -> None:
        self.manifest.complete = complete
        self.manifest.save(self.out)


def _shard_file(split: str, index: int) -> str:
    return f"{SHARD_DIR}/{split}-{index:05d}.h5"


def _free_index(out: Path, manifest: Manifest, split: str, index: int) -> int:
    """``index`` or the next one whose shard name is free or provably this folder's; names taken by
    files this folder's runs did not write are skipped, never replaced."""
    while True:
        path = out / _shard_file(split, index)
        if not (path.exists() or path.is_symlink()):
            return index
        if path.is_file() and not path.is_symlink() and shard_writer_id(path) == manifest.writer_id:
            return index  # an unlisted shard a killed run of this folder left: it is redone now
        index += 1
