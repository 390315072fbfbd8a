"""FER+: the majority label of the reference rule, the vote file beside the CSV, the votes kept in
the shards and in exports. Every row here is crafted; the shared head of the real files (when
../shared is there) is compared with an implementation of the reference rule written here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import InputError
from prepro.pipeline import run_preprocess
from prepro.readers import list_source
from prepro.readers.ferplus import VOTE_FILE_HEADER, majority_label
from prepro.sample_values import VOTE_COLUMNS
from prepro.shards import ShardReader, verify
from prepro.specs import load_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HEAD_CSV = SHARED / "fer2013-csv" / "fer2013_head.csv"
HEAD_VOTES = SHARED / "ferplus" / "fer2013new_head.csv"
HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
FERPLUS_NAMES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt", "unknown", "not_face")


def reference_majority(ferplus_counts: list[float]) -> str:
    """The reference's "majority" mode, in FER+'s column order, as its code does it: counts of at
    most one become 0, the peak wins when it exceeds half the sum, otherwise unknown."""
    raw = [0.0 if c < 1.0 + sys.float_info.epsilon else float(c) for c in ferplus_counts]
    peak = max(raw)
    return FERPLUS_NAMES[int(np.argmax(raw))] if peak > 0.5 * sum(raw) else "unknown"


def ours(ferplus_counts: list[float]) -> str:
    """`majority_label` given the same counts in the shards' column order."""
    by_name = dict(zip(FERPLUS_NAMES, ferplus_counts))
    return majority_label([by_name[c] for c in VOTE_COLUMNS])


@pytest.mark.parametrize("counts, expected", [
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], "neutral"),
    ([0, 0, 0, 0, 0, 0, 0, 6, 4, 0], "contempt"),             # contempt, which FER2013 lacks
    ([4, 0, 0, 4, 0, 0, 0, 0, 2, 0], "unknown"),              # a tie: nobody has more than half
    ([5, 0, 0, 5, 0, 0, 0, 0, 0, 0], "unknown"),              # exactly half is no majority
    ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], "neutral"),              # single votes dropped: 4 of 4
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "unknown"),              # nothing left after dropping single votes
    ([2, 0, 0, 0, 0, 0, 0, 0, 0, 8], "not_face"),             # NF majority
    ([2, 0, 0, 0, 0, 0, 0, 0, 7, 1], "unknown"),              # unknown majority
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "unknown"),
])
def test_the_majority_rule_on_crafted_votes(counts, expected):
    assert ours(counts) == reference_majority(counts) == expected


def _pixels(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 48 * 48)))


def _write_pair(folder: Path, vote_rows: list[str], usages: list[str] | None = None) -> Path:
    """fer2013.csv (noise crops, emotion 0) with fer2013new.csv beside it, one row per vote row."""
    folder.mkdir(parents=True, exist_ok=True)
    usages = usages or [row.split(",")[0] for row in vote_rows]
    lines = ["emotion,pixels,Usage"] + [f"0,{_pixels(k)},{u}" for k, u in enumerate(usages)]
    (folder / "fer2013.csv").write_text("\n".join(lines) + "\n")
    (folder / "fer2013new.csv").write_text("\n".join([HEADER] + vote_rows) + "\n")
    return folder / "fer2013.csv"


VOTE_ROWS = [
    "Training,fer0.png,0,10,0,0,0,0,0,0,0,0",       # happy
    "Training,fer1.png,0,0,0,0,0,0,0,7,3,0",        # contempt
    "PublicTest,fer2.png,4,0,0,4,0,0,0,0,2,0",      # tie: unknown
    "PublicTest,,0,0,0,0,0,0,0,0,0,10",             # not a face
    "PrivateTest,fer4.png,1,0,6,0,1,0,0,0,2,0",     # surprise (6 of 8 after the single votes go)
    "PrivateTest,fer5.png,0,0,x,0,0,0,0,0,0,0",     # a bad count
]


def test_listing_labels_splits_votes_and_failures(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    listing = list_source(str(csv), spec=load_spec("ferplus"))
    got = {it.source_id: (it.label, it.split, dict(it.annotations)["votes"]) for it in listing.items}
    assert {k: v[:2] for k, v in got.items()} == {"fer2013.csv:row=0": ("happy", "train"),
                                                 "fer2013.csv:row=1": ("contempt", "train"),
                                                 "fer2013.csv:row=4": ("surprise", "test")}
    assert got["fer2013.csv:row=1"][2][VOTE_COLUMNS.index("contempt")] == 7
    assert got["fer2013.csv:row=1"][2][VOTE_COLUMNS.index("unknown")] == 3
    reasons = {f.source: f.reason for f in listing.failures}
    assert reasons["fer2013.csv:row=2"].startswith("FER+ label unknown")
    assert reasons["fer2013.csv:row=3"].startswith("not a face")
    assert "'x' is not a whole number" in reasons["fer2013.csv:row=5"]


def test_usage_that_differs_between_the_files_is_a_failure(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS[:2], usages=["Training", "PublicTest"])
    listing = list_source(str(csv), spec=load_spec("ferplus"))
    assert [it.source_id for it in listing.items] == ["fer2013.csv:row=0"]
    assert "row for row" in listing.failures[0].reason


def test_vote_file_problems_are_clear_errors(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    (tmp_path / "src" / "fer2013new.csv").write_text("\n".join([HEADER] + VOTE_ROWS[:3]) + "\n")
    with pytest.raises(InputError, match="6 rows.*row for row|3 rows and .* 6"):
        list_source(str(csv), spec=load_spec("ferplus"))
    (tmp_path / "src" / "fer2013new.csv").write_text("Usage,Image name,neutral\n")
    with pytest.raises(InputError, match="is not FER\\+'s"):
        list_source(str(csv), spec=load_spec("ferplus"))
    (tmp_path / "src" / "fer2013new.csv").unlink()
    with pytest.raises(InputError, match="fer2013new.csv beside"):
        list_source(str(csv), spec=load_spec("ferplus"))
    with pytest.raises(InputError, match="only applies to FER"):
        list_source(str(csv), votes_file=str(csv))


def test_a_named_vote_file_is_read(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    (tmp_path / "src" / "fer2013new.csv").rename(tmp_path / "votes.csv")
    listing = list_source(str(csv), spec=load_spec("ferplus"), votes_file=str(tmp_path / "votes.csv"))
    assert len(listing.items) == 3


@pytest.mark.skipif(not (HEAD_CSV.is_file() and HEAD_VOTES.is_file()), reason="needs ../shared/data (FER+ head)")
def test_the_shared_head_matches_the_reference_rule_on_every_row():
    listing = list_source(str(HEAD_CSV), spec=load_spec("ferplus"), votes_file=str(HEAD_VOTES))
    rows = HEAD_VOTES.read_text().splitlines()
    assert tuple(c.lower() for c in rows[0].split(",")) == VOTE_FILE_HEADER and len(rows) == 1168
    labels = {int(it.source_id.rsplit("=", 1)[1]): it.label for it in listing.items}
    failed = {int(f.source.rsplit("=", 1)[1]): f.reason for f in listing.failures}
    assert len(labels) + len(failed) == 1167
    for n, row in enumerate(rows[1:]):
        expected = reference_majority([float(x) for x in row.split(",")[2:]])
        if expected in ("unknown", "not_face"):
            assert failed[n].startswith("FER+ label unknown" if expected == "unknown" else "not a face"), n
        else:
            assert labels[n] == expected, n


def test_votes_are_kept_in_the_shards(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    out = tmp_path / "out"
    summary = run_preprocess(str(csv), str(out), PreprocessConfig(dataset="ferplus", face="aligned"),
                             PreprocessRun(jobs=1), progress=False)
    assert summary.samples == 3 and summary.failure_reasons["not a face"] == 1
    reader = ShardReader(out)
    assert reader.label_names[-1] == "contempt" and reader.optional_fields == ("votes",)
    data = reader.load_all(("votes", "label", "source"))
    votes = dict(zip(data["source"].astype(str), data["votes"]))
    assert data["votes"].dtype == np.float32 and data["votes"].shape == (3, 10)
    assert votes["fer2013.csv:row=4"][VOTE_COLUMNS.index("surprise")] == 6
    assert verify(out).whole


def test_shards_without_votes_say_so(tmp_path):
    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    out = tmp_path / "out"
    run_preprocess(str(csv), str(out), PreprocessConfig(face="aligned", limit=2), PreprocessRun(jobs=1),
                   progress=False)
    reader = ShardReader(out)
    assert reader.optional_fields == ()
    assert "votes" not in reader.load_all(("label",))
    with pytest.raises(InputError, match="hold no votes"):
        reader.load_all(("votes",))


@pytest.mark.parametrize("fmt, name", [("npz", "train.npz"), ("hdf5", "blocks.h5")])
def test_votes_go_into_exports(tmp_path, fmt, name):
    from prepro.export import export_blocks

    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    run_preprocess(str(csv), str(tmp_path / "out"), PreprocessConfig(dataset="ferplus", face="aligned"),
                   PreprocessRun(jobs=1), progress=False)
    export_blocks(tmp_path / "out", tmp_path / "exp", fmt=fmt, splits="train", progress=False)
    if fmt == "npz":
        votes = np.load(tmp_path / "exp" / name, allow_pickle=False)["votes"]
    else:
        import h5py

        with h5py.File(tmp_path / "exp" / name, "r") as f:
            votes = f["votes"][()]
    assert votes.shape == (2, 10) and sorted(votes[:, VOTE_COLUMNS.index("happy")]) == [0, 10]


def test_a_shard_with_a_bad_vote_count_is_damaged(tmp_path):
    from shardfakes import edit_shards

    csv = _write_pair(tmp_path / "src", VOTE_ROWS)
    out = tmp_path / "out"
    run_preprocess(str(csv), str(out), PreprocessConfig(dataset="ferplus", face="aligned"), PreprocessRun(jobs=1),
                   progress=False)

    def negative(f, start):
        votes = f["votes"][()]
        votes[0, 0] = -1
        f["votes"][...] = votes

    edit_shards(out, negative)
    assert any("its votes of sample 0" in p and "at least 0" in p for p in verify(out).problems)
