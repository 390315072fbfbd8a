"""The settings of the cut from an image to blocks: the blocks' geometry (`BlockConfig`), the face
search (`DetectorSettings`) and the whole cut (`CutSettings`), with their choices.

They live apart from the code that uses them (`prepro.blocks`, `prepro.detection`,
`prepro.faces`, which re-export them) because the command line builds its options from them at
start-up: nothing here imports numpy, OpenCV or dlib, so `faceblocks -h` loads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prepro.settings import check, from_mapping, setting, to_dict

PAD_MODES = ("replicate", "constant")

DETECTORS = ("hog", "cnn", "hog+cnn")  # hog+cnn: the CNN only where HOG finds no face
SEARCHES = ("full", "coarse-fine")
FACE_MODES = ("auto", "detect", "aligned")
# What fits the 68 points: dlib's predictor (the yardstick), or the network distilled from it
# (prepro.landmark_net: all faces of a chunk in one batch, quality from its error head), its points
# refined on the image (net) or as it gives them (net-fast: faster, further from dlib's).
LANDMARK_MODELS = ("dlib", "net", "net-fast")
NET_LANDMARKS = ("net", "net-fast")  # the landmark models that are the network


@dataclass(frozen=True)
class BlockConfig:
    """Sizes and geometry of the three blocks cut from each face."""

    # The defaults are the shipped model's geometry (near-native for 48-px faces), so shards cut with
    # them work with `fer2013` as they are; larger sizes keep more detail of large faces.
    eyes_size: tuple[int, int] = setting((16, 48), "eyes-and-eyebrows block, HEIGHTxWIDTH", "size", low=4, high=1024)
    mouth_size: tuple[int, int] = setting((16, 32), "mouth block, HEIGHTxWIDTH", "size", low=4, high=1024)
    face_size: tuple[int, int] = setting((48, 48), "aligned whole-face block, HEIGHTxWIDTH", "size", low=4, high=1024)
    eyes_margin: float = setting(0.2, "margin around the eyes block, times the inter-ocular distance", "float",
                                 low=0, high=2)
    mouth_margin: float = setting(0.2, "margin around the mouth block, times the inter-ocular distance", "float",
                                  low=0, high=2)
    face_margin: float = setting(0.1, "margin around the face block, times the inter-ocular distance", "float",
                                 low=0, high=2)
    rotate: bool = setting(True, "rotate the face so the eyes are level", "bool", cli="--rotate/--no-rotate")
    pad: str = setting("replicate", "how a block reaching past the image border is filled", "str",
                       choices=PAD_MODES)

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (sizes as [H, W] lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BlockConfig":
        """Inverse of `to_dict`; unknown keys and bad values are an InputError."""
        return from_mapping(cls, d)


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are searched for; the defaults find faces of 40 px and larger in small photos."""

    detector: str = setting("hog", "face detector: hog (fast), cnn (dlib's MMOD CNN: turned and small faces, "
                            "about 100x slower on a CPU) or hog+cnn (the CNN only where HOG finds none)", "str",
                            choices=DETECTORS)
    min_face: int = setting(40, "smallest face to look for, in pixels of the original image", "int", low=8,
                            high=100_000)
    min_face_frac: float = setting(0.06, "... or this fraction of the photo's longer side, whichever is larger "
                                   "(large photos are not searched for tiny faces)", "float", low=0, high=1)

    search: str = setting("full", "full: the whole photo at the scale of the smallest face wanted; coarse-fine: "
                          "in a photo large enough that --min-face-frac sets that scale, a pass at half the scale, "
                          "then the fine scale only around the faces it found (the whole photo when none): faster, "
                          "but a small face far from any larger one is missed", "str", choices=SEARCHES)

    small_image_side: int = 128  # images no larger than this are face crops (padded and enlarged)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class CutSettings:
    """Everything that decides how an image becomes blocks."""

    face_mode: str = "auto"
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    blocks: BlockConfig = field(default_factory=BlockConfig)
    max_pixels: int = 40_000_000  # images whose header claims more are refused undecoded
    work_max_side: int = 1024  # large JPEGs are decoded reduced, never below this longest side
    pre_cropped: bool = False  # the dataset's images are face crops (auto falls back to the crop)
    second_look: bool = False  # fit a doubtful fit again: dlib from other starts, or the network's by dlib (prepro.landmark_net)
    landmarks: str = "dlib"  # one of LANDMARK_MODELS: dlib's predictor, or the network distilled from it
    auto_trust: float | None = None  # auto on a crop: keep its own fit, undetected, at this quality or more

