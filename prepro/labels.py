"""The one label set every dataset is mapped onto, and the spellings the datasets use for it."""

from __future__ import annotations

from collections.abc import Mapping

from prepro.errors import InputError

# The position of a label here is the label index stored in shards: never reorder, only append.
CANONICAL_LABELS: tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt",
)

# Spellings found in the datasets' folder names, file names and documentation. Keys are normalised
# with `normalize_label_name`; the two-letter codes are JAFFE's (KA.AN1.39.tiff) and CK+'s usual
# abbreviations. Numeric codes (FER2013's 0..6) are NOT here: their meaning belongs to one dataset,
# so they live in that dataset's spec (datasets/fer2013*.toml).
LABEL_ALIASES: Mapping[str, str] = {
    "anger": "angry", "angry": "angry", "an": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "ne": "neutral",
    "contempt": "contempt", "co": "contempt",
}


class UnknownLabelError(InputError):
    """A label spelling that maps onto none of `CANONICAL_LABELS`.

    A subclass of its own because the readers catch it to list the file or row as a failure.
    """

    def __init__(self, name: str, extra_aliases: Mapping[str, str] | None = None) -> None:
        """Build the message from the unknown ``name`` and the allowed spellings."""
        self.name = name
        extra = ""
        if extra_aliases:
            extra = "; dataset spellings: " + ", ".join(sorted(extra_aliases))
        aliases = ", ".join(sorted(a for a in LABEL_ALIASES if a not in CANONICAL_LABELS))
        super().__init__(
            f"unknown label {name!r}; allowed labels: {', '.join(CANONICAL_LABELS)} "
            f"(also accepted: {aliases}{extra})"
        )


def normalize_label_name(name: str) -> str:
    """Lower-case ``name`` and drop spaces, underscores and hyphens ("Sur-prised" -> "surprised")."""
    return "".join(ch for ch in name.strip().lower() if ch not in " _-")


def canonical_label(name: str, extra_aliases: Mapping[str, str] | None = None) -> str:
    """Map a dataset's spelling of a label onto one of `CANONICAL_LABELS`.

    ``extra_aliases`` (a dataset spec's ``labels`` table) is consulted first, so a dataset may
    give its own codes ("0" -> "angry"); its values must themselves be canonical labels or aliases.
    Raises `UnknownLabelError` naming the label and the allowed spellings.
    """
    if not isinstance(name, str):
        raise UnknownLabelError(repr(name), extra_aliases)
    key = normalize_label_name(name)
    if extra_aliases:
        for spelling, target in extra_aliases.items():
            if normalize_label_name(spelling) == key:
                return canonical_label(target)
    found = LABEL_ALIASES.get(key)
    if found is None or not key:
        raise UnknownLabelError(name, extra_aliases)
    return found


def label_index(name: str) -> int:
    """The shard label index of a canonical label."""
    if name not in CANONICAL_LABELS:
        raise UnknownLabelError(name)
    return CANONICAL_LABELS.index(name)
