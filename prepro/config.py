"""The preprocessing settings: what changes the shards (`PreprocessConfig`) and how a run goes
(`PreprocessRun`). `faceblocks preprocess`, `preview`, the `[data]` table of `faceblocks run`
and its template are all generated from these fields (see `prepro.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prepro.cut_settings import FACE_MODES, LANDMARK_MODELS, BlockConfig, CutSettings, DetectorSettings
from prepro.distributor import check_jobs
from prepro.settings import check, from_dict, nested, setting, to_dict
from prepro.specs import FORMATS


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that changes what `preprocess` writes; stored in every manifest and checkpoint."""

    format: str = setting("auto", "layout of SOURCE; auto detects it", "str", choices=FORMATS)
    dataset: str | None = setting(None, "dataset description: a name from datasets/ (fer2013, fer2013-csv, ferg, "
                                  "ckplus, jaffe, rafdb, affectnet, ...) or a .toml file", "str", optional=True)
    face: str = setting("auto", "aligned: the image is the face crop, no detector (FER2013, CK+48); detect: the "
                        "detector, largest face; auto: detect, else the crop for small or pre-cropped images",
                        "str", choices=FACE_MODES)
    detection: DetectorSettings = nested(DetectorSettings)
    # Off by default: on held-out FER2013 test faces it left the landmark error unchanged (issue 17),
    # on PublicTest it lowered the share above 0.10 from 5.3% to 4.9%, and it costs 28% more time.
    # With the network it is the other way: its doubtful fits are refitted by dlib (BENCHMARKS.md).
    second_look: bool = setting(False, "fit the landmarks of a doubtful face crop again from two other starts and "
                                "keep the best-scoring fit (slower; it did not lower the error on FER2013, see "
                                "BENCHMARKS.md); with --landmarks net or net-fast, fit the faces whose estimated "
                                "error is above 0.06 inter-ocular distances again with dlib's predictor (about a "
                                "fifth of them with net: closer to dlib's landmarks, slower)", "bool")
    # Off by default: the detector decides first, so auto's landmarks are the detector box's
    # wherever it finds the face; trusting the crop's own fit skips it on most crops (BENCHMARKS.md).
    auto_trust: float | None = setting(None, "auto on face crops (pre-cropped datasets, small images): keep the "
                                       "crop's own landmark fit, without the detector, when its quality is at "
                                       "least this; the detector runs only for the doubtful rest (faster; the "
                                       "landmarks of the trusted crops are then the aligned path's)", "float",
                                       low=0, high=1, optional=True)
    landmarks: str = setting("dlib", "what fits the 68 landmarks: dlib (dlib's predictor, the reference), net "
                             "(the network distilled from it, its points refined on the image: batched, faster, "
                             "its own quality) or net-fast (the network's points as they are: faster still, "
                             "further from dlib's); see BENCHMARKS.md",
                             "str", choices=LANDMARK_MODELS)
    blocks: BlockConfig = nested(BlockConfig)
    shard_size: int = setting(1024, "inputs per HDF5 shard: a shard holds the samples of up to this many inputs of "
                                "one split", "int", low=1, high=1_000_000)
    max_megapixels: float = setting(40.0, "images whose header claims more pixels are refused without decoding",
                                    "float", low=0.01, high=10_000)
    work_max_side: int = setting(1024, "large JPEGs are decoded reduced, but never below this longest side",
                                 "int", low=64, high=100_000)
    val_frac: float = setting(0.1, "for sources without splits: fraction of items in val", "float", low=0, high=0.9)
    test_frac: float = setting(0.1, "for sources without splits: fraction of items in test", "float", low=0,
                               high=0.9)
    split_seed: int = setting(0, "seed of that split", "int", low=0, high=2**32 - 1)
    split_by_subject: bool = setting(False, "keep every subject in a single split (CK+, JAFFE, FERG)", "bool")
    limit: int | None = setting(None, "process only the first N items", "int", low=1, optional=True)

    def __post_init__(self) -> None:
        check(self)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    def cut_settings(self, pre_cropped: bool = False) -> CutSettings:
        """The part that decides how one image becomes blocks."""
        return CutSettings(face_mode=self.face, detector=self.detection, blocks=self.blocks,
                           max_pixels=self.max_pixels, work_max_side=self.work_max_side, pre_cropped=pre_cropped,
                           second_look=self.second_look, landmarks=self.landmarks, auto_trust=self.auto_trust)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        return from_dict(cls, d)


@dataclass(frozen=True)
class PreprocessRun:
    """How a preprocessing run goes; none of it changes the shards."""

    jobs: int = setting(-1, "worker processes; -1 = all cores", "int", low=-1, high=4096, cli=("-j", "--jobs"))
    backend: str | None = setting(None, "how workers run: multiprocessing (forked after the models are loaded, "
                                  "so they share them; the default on Linux), loky (fresh processes; "
                                  "the default elsewhere), threading, or dask (with --scheduler)", "str", optional=True,
                                  choices=("loky", "multiprocessing", "threading", "dask"))
    scheduler: str | None = setting(None, "Dask scheduler address (tcp://host:8786) for --backend dask", "str",
                                    optional=True)
    chunk_size: int = setting(64, "images sent to a worker at a time", "int", low=1, high=100_000)
    landmark_model: str | None = setting(None, "dlib 68-point landmark model .dat (default: the one shipped in "
                                         "face_recognition_models)", "str", optional=True)
    # Where the images are, like SOURCE itself: not in the manifest's parameters, so a folder that
    # moved can be named again without redoing the run.
    image_root: str | None = setting(None, "label files: the folder their image paths are relative to, absolute "
                                     "ones inside it allowed (default: the label file's folder)", "str",
                                     optional=True)
    # Like image_root, a path that may move: not in the manifest's parameters (the labels and votes
    # it gives are in the listing's fingerprint).
    votes_file: str | None = setting(None, "FER+ (--dataset ferplus): its vote file (default: fer2013new.csv beside "
                                     "the CSV)", "str", optional=True)

    def __post_init__(self) -> None:
        check(self)
        check_jobs(self.jobs)
