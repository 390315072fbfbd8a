"""Face tracks: the faces of a video (or of an ordered image sequence) linked from one sampled
frame to the next by box overlap, each face given the `track` id of the person it continues.

Matching: the intersection over union (IoU) of every live track's last box with every face box of
the new frame; the pairing of largest total IoU (Hungarian, scipy) is kept where a pair overlaps
by at least `MIN_IOU`; a face left unpaired starts a new track. A track not seen for more than
`TRACK_GAP` sampled frames ends (a missed detection or a turned head in between does not end it).
Ids are 1, 2, ... in order of first appearance, unique within one `predict` call.

Smoothing (``smooth`` = a in [0, 1)): along a track the probabilities are an exponential moving
average, s_t = a * s_(t-1) + (1 - a) * p_t, starting from the track's first p; the label is the
most probable class of s. The frame's own probabilities stay in ``raw_probabilities``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference.predictions import FacePrediction, ImagePrediction

MIN_IOU = 0.3  # below this two boxes are taken for two people (a face moves less between samples)
TRACK_GAP = 3  # sampled frames a track may go unseen and still continue


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M); boxes are left,
    top, right, bottom."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(old: np.ndarray, new: np.ndarray, min_iou: float = MIN_IOU) -> list[tuple[int, int]]:
    """(old index, new index) pairs of largest total IoU, each pair overlapping by ``min_iou`` at least."""
    from scipy.optimize import linear_sum_assignment

    if len(old) == 0 or len(new) == 0:
        return []
    iou = box_iou(old, new)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


@dataclass
class _Track:
    ident: int
    box: list[float]
    last_seen: int  # the sampled-frame count when last matched
    smoothed: np.ndarray | None = None


@dataclass
class FaceTracker:
    """Gives each face of consecutive predictions its track id (and smoothed probabilities when
    ``smooth`` > 0). A prediction of another video (another path with a frame number) starts a new
    sequence; still images are one sequence only when ``sequence`` is set, otherwise untracked."""

    smooth: float = 0.0
    sequence: bool = False
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 1
    _seen: int = 0  # sampled frames of the current sequence
    _current: object = None  # what identifies the current sequence (a video's path)

    def update(self, pred: ImagePrediction) -> None:
        """Set ``track`` (and, smoothing, ``probabilities``, ``label``, ``raw_probabilities``) on
        every face of ``pred``, the next frame of its sequence."""
        key = pred.path if pred.frame is not None else ("<images>" if self.sequence else None)
        if key is None:
            self._tracks, self._current = [], None
            return
        if key != self._current:
            self._tracks, self._seen, self._current = [], 0, key
        self._seen += 1
        self._tracks = [t for t in self._tracks if self._seen - t.last_seen <= TRACK_GAP + 1]
        pairs = dict((new, old) for old, new in match_boxes(np.array([t.box for t in self._tracks]),
                                                            np.array([f.box for f in pred.faces])))
        for k, face in enumerate(pred.faces):
            track = self._tracks[pairs[k]] if k in pairs else self._new_track()
            track.box, track.last_seen = list(face.box), self._seen
            face.track = track.ident
            if self.smooth > 0:
                self._smoothed(track, face)

    def _new_track(self) -> _Track:
        track = _Track(self._next_id, [], self._seen)
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _smoothed(self, track: _Track, face: FacePrediction) -> None:
        names = list(face.probabilities)
        p = np.array([face.probabilities[c] for c in names])
        track.smoothed = p if track.smoothed is None else self.smooth * track.smoothed + (1 - self.smooth) * p
        face.raw_probabilities = dict(face.probabilities)
        face.probabilities = {c: round(float(x), 4) for c, x in zip(names, track.smoothed)}
        face.label = names[int(track.smoothed.argmax())]
