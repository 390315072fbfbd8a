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


def label_key(spelling: str) -> str:
    """The form two label spellings are compared in: a spelling holding a digit is a code and is
    compared exactly as written (outer spaces aside), since dropping a sign, space or hyphen changes
    a number's meaning ("-1" is no "1", "6-" no "6"); any other spelling is `normalize_label_name`d.
    This is the one label-code parser: every reader that takes integer codes compares through it."""
    text = spelling.strip()
    return text if any(ch.isdigit() for ch in text) else normalize_label_name(text)


def canonical_label(name: str, extra_aliases: Mapping[str, str] | None = None) -> str:
    """Map a dataset's spelling of a label onto one of `CANONICAL_LABELS`.

    ``extra_aliases`` (a dataset spec's ``labels`` table) is consulted first, so a dataset may
    give its own codes ("0" -> "angry"); its values must themselves be canonical labels or aliases.
    Spellings are compared by `label_key`: a code matches only as written ("-1", "01" or "6-" is
    no "1" or "6").
    Raises `UnknownLabelError` naming the label and the allowed spellings.
    """
    if not isinstance(name, str):
        raise UnknownLabelError(repr(name), extra_aliases)
    key = label_key(name)
    if extra_aliases:
        for spelling, target in extra_aliases.items():
            if label_key(spelling) == key:
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
