"""The one error class specific to training; every other one is in `prepro.errors`."""

from __future__ import annotations

from prepro.errors import DataError


class CheckpointError(DataError):
    """A checkpoint that is missing, damaged, unsafe, or for another architecture."""
