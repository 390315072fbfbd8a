"""The errors faceblocks raises for problems a user can fix; every one says what to do.

All of them derive from `FaceblocksError`: the command line turns exactly these into a one-line
message and a non-zero exit, so any other exception is a bug and keeps its traceback. The
subclasses say what kind of thing was wrong, for callers that want to react differently. A
termination signal (`stop_on_termination`) stops a run as an interrupt does (`Stopped`).
"""

from __future__ import annotations

import signal
import sys
from typing import Any


class FaceblocksError(Exception):
    """A problem the user can fix; the message says how."""


class InputError(FaceblocksError):
    """Something the user gave: a path, a source layout, an option or config value, a label."""


class OutputError(FaceblocksError):
    """An output folder that cannot be written as asked (holds other data, another run, is locked)."""


class DataError(FaceblocksError):
    """A file faceblocks reads back (manifest, shard, checkpoint, model) that is damaged or of
    another format or version."""


class MismatchError(FaceblocksError):
    """Two things that must fit together do not: shards and a checkpoint (block sizes, block
    geometry, labels)."""


class EmptySplitError(FaceblocksError):
    """A split (after label filtering) holds no samples."""


class DivergedError(FaceblocksError):
    """Training produced a non-finite loss or weight; the last good checkpoint is kept."""


class SampleError(FaceblocksError):
    """One input image or row that cannot become a sample (unreadable, no face, degenerate
    landmarks). In a batch run it is listed as that input's failure and the run goes on."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (what `timeout`, `docker stop` and a closed ssh session send): handled as
    an interrupt, so worker processes are ended and what was finished is kept, as for Ctrl-C."""


# The termination signal received, if any (set by `stop_on_termination`'s handler). Raising from a
# signal handler can be swallowed when the signal lands inside a callback Python ignores exceptions
# of (a weakref's, say); long loops also check this at their safe points (`raise_if_stopped`).
STOP_REQUESTED: list[str] = []


def raise_if_stopped() -> None:
    if STOP_REQUESTED:
        raise Stopped(STOP_REQUESTED[0])


def stop_on_termination() -> None:
    """Make SIGTERM and SIGHUP stop a run as Ctrl-C does (the command line installs this)."""
    def stop(signum: int, _frame: Any) -> None:
        STOP_REQUESTED.append(signal.Signals(signum).name)
        raise Stopped(signal.Signals(signum).name)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    default_hook = sys.unraisablehook

    def quiet_stop(unraisable: Any) -> None:
        # A stop raised inside a callback Python ignores: the run stops at its next check instead.
        if not isinstance(unraisable.exc_value, Stopped):
            default_hook(unraisable)

    sys.unraisablehook = quiet_stop
