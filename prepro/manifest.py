"""The output folder's table of contents: the manifest (`manifest.json`), its shard records and
its failure lists (JSON-lines files beside it, appended to as shards are recorded).

What `Manifest.load` returns has been checked: its keys and types, shard names inside the shard
folder and listed once, the writer id's form, the failure files' own prefix. The shard files
themselves are checked by `prepro.shards`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from prepro import __version__
from prepro.errors import DataError
from prepro.outputs import append_lines, atomic_write, atomic_write_text, is_writer_id, read_own_prefix

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# The JSON-lines files the manifest's failure lists are kept in (one failure per line), so that a
# folder with a million failures does not rewrite them all with every shard.
FAILURE_FILES = {"failures": "failures.jsonl", "listing_failures": "listing-failures.jsonl"}
SHARD_DIR = "shards"
BLOCK_FIELDS = ("eyes", "mouth", "face")


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard, as the manifest lists it."""

    file: str  # path relative to the output folder, e.g. "shards/train-00000.h5"
    split: str  # the split of every sample in it
    n_samples: int
    sha256: str  # checksum of the file as written


# Every key of a manifest and the JSON type it must have: a file that differs is not one faceblocks wrote.
_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "faceblocks_version": str, "params": dict, "source": dict, "label_names": list,
    "split_names": list, "box_methods": list, "block_sizes": dict, "landmark_model": dict, "writer_id": str,
    "shards": list, "failures": (list, dict), "listing_failures": (list, dict), "missing": list, "complete": bool,
}


@dataclass
class Manifest:
    """The output folder's table of contents; the single source of truth for resume and verify."""

    params: dict[str, Any]  # every parameter that changes the output (PreprocessConfig.to_dict())
    source: dict[str, Any]  # path, format, dataset, n_items and fingerprint of the source's listing
    label_names: list[str]
    split_names: list[str]
    box_methods: list[str]
    block_sizes: dict[str, list[int]]
    landmark_model: dict[str, Any]  # file name, SHA-256 and terms of the 68-point model used
    writer_id: str  # random id of this folder's runs, also written into its shards and temp files
    shards: list[ShardRecord] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # {"source", "reason", "split", "shard"} per input
    listing_failures: list[dict[str, Any]] = field(default_factory=list)  # {"source", "reason"}: not even listed
    missing: list[str] = field(default_factory=list)  # inputs of earlier runs no longer in the source
    complete: bool = False  # every input of the current listing is a sample or a failure
    format_version: int = FORMAT_VERSION
    faceblocks_version: str = __version__
    # failure list -> (id of the list as last saved, its entries then, bytes of its file then)
    _stored: dict[str, tuple[int, int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_samples(self) -> int:
        return sum(s.n_samples for s in self.shards)

    @property
    def all_failures(self) -> list[dict[str, Any]]:
        """Every input that is not a sample: found but unusable at listing, then in processing."""
        return self.listing_failures + self.failures

    def shards_of(self, split: str | None = None) -> list[ShardRecord]:
        return [s for s in self.shards if split is None or s.split == split]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_stored")
        d["n_samples"] = self.n_samples
        return d

    def save(self, out_dir: Path) -> None:
        """Write the manifest atomically. The failure lists go to their JSON-lines files (see
        `FAILURE_FILES`) and the manifest keeps a record of each (file, bytes, count): a list that
        only grew since the last save gets just its new entries appended, so a save costs the
        shards list plus the new failures, not every failure again."""
        out = Path(out_dir)
        d = {f.name: getattr(self, f.name) for f in dataclass_fields(self) if f.init}
        d["shards"] = [asdict(r) for r in self.shards]
        for key in FAILURE_FILES:
            d[key] = self._store_failures(out, key)
        d["n_samples"] = self.n_samples
        atomic_write_text(out / MANIFEST, json.dumps(d, indent=1, ensure_ascii=False), self.writer_id)

    def _store_failures(self, out: Path, key: str) -> dict[str, Any]:
        """Bring the file of failure list ``key`` up to date; its record for the manifest."""
        entries = getattr(self, key)
        path = out / FAILURE_FILES[key]
        saved = self._stored.get(key)  # (id of the list saved, entries saved, bytes saved)
        if saved and saved[0] == id(entries) and saved[1] == len(entries):
            size = saved[2]  # nothing new: the file is not touched
        elif saved and saved[0] == id(entries) and saved[1] < len(entries):
            size = append_lines(path, saved[2], [_failure_line(e) for e in entries[saved[1]:]])
        else:  # a new or replaced list (a retry, an old manifest's inline list): written whole
            data = b"".join(_failure_line(e) for e in entries)
            atomic_write(path, lambda fh: fh.write(data), writer_id=self.writer_id)
            size = len(data)
        self._stored[key] = (id(entries), len(entries), size)
        return {"file": path.name, "bytes": size, "count": len(entries)}

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Manifest":
        """The folder's manifest; DataError when it is missing, damaged or not one faceblocks wrote."""
        path = Path(out_dir) / MANIFEST
        if not path.is_file():
            raise DataError(f"{out_dir} holds no {MANIFEST}: not a faceblocks output folder "
                            "(make one with `faceblocks preprocess SOURCE OUT_DIR`)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{path} is damaged ({str(e)[:120]}): preprocess again into a new folder") from None
        if not isinstance(d, dict) or d.get("format_version") != FORMAT_VERSION:
            version = d.get("format_version") if isinstance(d, dict) else None
            raise DataError(f"{path} has shard format version {version!r}; this faceblocks ({__version__}) "
                            f"reads version {FORMAT_VERSION}: preprocess again into a new folder")
        d.pop("n_samples", None)
        problem = _manifest_problem(d)
        if problem:
            raise DataError(f"{path} is damaged or was not written by faceblocks ({problem}): preprocess again "
                            "into a new folder")
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        records = {key: d[key] for key in FAILURE_FILES if isinstance(d[key], dict)}
        for key, record in records.items():  # older versions kept the lists themselves in the manifest
            d[key] = _read_failures(path.parent, key, record)
        m = cls(**d)
        for key, record in records.items():
            m._stored[key] = (id(getattr(m, key)), record["count"], record["bytes"])
        return m


def _failure_line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")


def _read_failures(out: Path, key: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The failures a manifest's record accounts for: the first ``bytes`` of the folder's own
    file, which must hold ``count`` entries. A longer file holds the tail a killed run appended
    after its last manifest save: ignored here, cut off by the next save."""
    path = out / FAILURE_FILES[key]
    try:
        data = read_own_prefix(path, record["bytes"])
        entries = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    except (OSError, ValueError) as e:
        raise DataError(f"{path} (the {key} of {out / MANIFEST}) is damaged ({str(e)[:100]}): preprocess again "
                        "into a new folder") from None
    bad = next((f for f in entries if not _is_failure(f)), None) if len(entries) == record["count"] else "count"
    if bad is not None:
        raise DataError(f"{path} (the {key} of {out / MANIFEST}) is damaged "
                        f"({'not the count the manifest says' if bad == 'count' else 'a bad entry ' + str(bad)[:80]}): "
                        "preprocess again into a new folder")
    return entries


def _is_failure(f: Any) -> bool:
    return isinstance(f, dict) and isinstance(f.get("source"), str) and isinstance(f.get("reason"), str)


def _manifest_problem(d: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's keys and types (None when nothing)."""
    missing = [k for k in _MANIFEST_TYPES if k not in d]
    extra = [k for k in d if k not in _MANIFEST_TYPES]
    if missing or extra:
        return "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                       extra and f"unexpected {', '.join(extra)}"]))
    for key, kind in _MANIFEST_TYPES.items():
        if not isinstance(d[key], kind) or (kind is int and isinstance(d[key], bool)):
            return f"{key} is a {type(d[key]).__name__}"
    for s in d["shards"]:
        if not (isinstance(s, dict) and set(s) == {"file", "split", "n_samples", "sha256"}
                and isinstance(s["file"], str) and isinstance(s["sha256"], str) and s["split"] in d["split_names"]
                and _is_count(s["n_samples"])
                and s["file"].startswith(SHARD_DIR + "/") and "/" not in s["file"][len(SHARD_DIR) + 1:]
                and s["file"] not in ("", f"{SHARD_DIR}/..", f"{SHARD_DIR}/.")):
            return f"a bad shard entry {str(s)[:80]}"
    files = [s["file"] for s in d["shards"]]
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        return f"it lists {twice} twice"
    if not is_writer_id(d["writer_id"]):
        return f"writer_id {str(d['writer_id'])[:40]!r} is not one faceblocks makes (16 hex digits)"
    for key, name in FAILURE_FILES.items():
        v = d[key]
        if isinstance(v, dict):
            if not (set(v) == {"file", "bytes", "count"} and v["file"] == name and _is_size(v["bytes"])
                    and _is_size(v["count"])):
                return f"a bad {key} record {str(v)[:80]}"
        elif not all(_is_failure(f) for f in v):
            return f"a bad failure entry {str(next(f for f in v if not _is_failure(f)))[:80]}"
    if not all(isinstance(x, str) for x in d["label_names"] + d["split_names"] + d["box_methods"] + d["missing"]):
        return "a name list holds something other than strings"
    sizes = d["block_sizes"]
    if not all(isinstance(v, list) and len(v) == 2 and all(_is_count(x) for x in v)
               for v in sizes.values()) or not set(BLOCK_FIELDS) <= set(sizes):
        return "bad block sizes"
    return None


def _is_size(v: Any) -> bool:
    """A JSON integer >= 0 (not true or false)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_count(v: Any) -> bool:
    """A positive JSON integer (JSON's true is no count, though Python's bool is an int)."""
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
