"""The writer: results in item order in, shards and an up-to-date manifest out.

A shard is written as soon as it holds ``shard_size`` samples or the split changes; the failures
of the same stretch of items are recorded with it, and the manifest is saved right after, so a run
killed at any moment resumes from the last finished shard with nothing lost or doubled. A shard
file name that already exists is overwritten only when the file is provably this folder's (an
unlisted shard of a killed run, carrying its ``writer_id``); a name taken by any other file (one
an --overwrite left alone because it changed since, or the user's) is skipped, the file untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

from prepro.readers import Failure, RawItem
from prepro.shards import SHARD_DIR, Manifest, Sample, ShardRecord, shard_attrs, shard_writer_id, write_shard

_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})\.h5$")


def next_shard_index(manifest: Manifest, split: str) -> int:
    """One past the highest index of the split's listed shards (names stay dense and unique)."""
    indices = [int(m.group("index")) for r in manifest.shards_of(split)
               if (m := _SHARD_NAME.match(Path(r.file).name))]
    return max(indices, default=-1) + 1


class ShardWriter:
    """Turns an ordered stream of (item, result) into shards of ``shard_size`` samples."""

    def __init__(self, out: Path, manifest: Manifest, shard_size: int) -> None:
        self.out, self.manifest, self.shard_size = out, manifest, shard_size
        self.samples: list[Sample] = []
        self.failures: list[dict] = []
        self.split: str | None = None
        self.written = 0  # samples written by this writer

    def add(self, item: RawItem, result: Sample | Failure) -> None:
        if item.split != self.split:
            self.flush()
            self.split = item.split
        if isinstance(result, Failure):
            self.failures.append({"source": result.source, "reason": result.reason, "split": item.split})
        else:
            self.samples.append(result)
        if len(self.samples) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one shard, record the buffered failures, save the manifest."""
        if not self.samples and not self.failures:
            return
        if self.samples:
            rel, index = self._free_name(self.split)
            digest = write_shard(self.out / rel, self.samples, shard_attrs(self.manifest, self.split, index),
                                 self.manifest.writer_id)
            self.manifest.shards.append(ShardRecord(rel, self.split, len(self.samples), digest))
            self.written += len(self.samples)
        self.manifest.failures.extend(self.failures)
        self.manifest.save(self.out)
        self.samples, self.failures = [], []

    def finish(self, complete: bool) -> None:
        self.flush()
        self.manifest.complete = complete
        self.manifest.save(self.out)

    def _free_name(self, split: str) -> tuple[str, int]:
        """The next shard name of ``split`` (relative path, index) that is free or provably this
        folder's; names taken by files this folder's runs did not write are skipped, never replaced."""
        index = next_shard_index(self.manifest, split)
        while True:
            rel = f"{SHARD_DIR}/{split}-{index:05d}.h5"
            path = self.out / rel
            if not (path.exists() or path.is_symlink()):
                return rel, index
            if path.is_file() and not path.is_symlink() and shard_writer_id(path) == self.manifest.writer_id:
                return rel, index  # an unlisted shard a killed run of this folder left: it is redone now
            index += 1
