"""The worker: a chunk of listed items in, one sample or one failure per item out.

Runs in joblib worker processes (or Dask workers). Each process builds its `FaceCutter` once
(the landmark model is ~100 MB) and deflates the blocks itself, so that compression runs in
parallel and the writer only stores bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prepro.faces import BOX_METHODS, CutSettings, FaceCutter
from prepro.labels import CANONICAL_LABELS
from prepro.landmarks import LandmarkModelFile
from prepro.readers import Failure, RawItem
from prepro.shards import Sample, pack_block
from prepro.specs import SPLITS

_CUTTERS: dict[tuple, FaceCutter] = {}


def _cutter(settings: CutSettings, landmark_model: str) -> FaceCutter:
    key = (settings, landmark_model)
    if key not in _CUTTERS:
        _CUTTERS[key] = FaceCutter(settings, LandmarkModelFile(Path(landmark_model)))
    return _CUTTERS[key]


def process_item(item: RawItem, pixels: Any, cutter: FaceCutter) -> Sample | Failure:
    """One item: ``pixels`` is a CSV row's pixel text, a `Failure` from reading it, or None for an
    image file."""
    from prepro.readers import BadPixelsError, parse_pixels

    if isinstance(pixels, Failure):
        return pixels
    try:
        cut = cutter.cut(item.path if pixels is None else parse_pixels(pixels), box=item.box)
    except BadPixelsError as e:
        return Failure(item.source_id, str(e))
    except Exception as e:  # one strange file must never end a long run: list it (as a bug) and go on
        return Failure(item.source_id, f"unexpected error {type(e).__name__}: {e}")
    if cut.failure is not None:
        return Failure(item.source_id, cut.failure)
    face, blk = cut.faces[0].face, cut.faces[0].blocks
    return Sample(
        eyes=pack_block(blk.eyes), mouth=pack_block(blk.mouth), face=pack_block(blk.face),
        landmarks=face.landmarks, box=face.box,
        eyes_affine=blk.eyes_affine, mouth_affine=blk.mouth_affine, face_affine=blk.face_affine,
        label=CANONICAL_LABELS.index(item.label) if item.label is not None else -1,
        split=SPLITS.index(item.split), source=item.source_id, subject=item.subject or "",
        box_method=BOX_METHODS.index(face.method), det_score=face.det_score,
        quality=face.quality, image_size=cut.size,
    )


def process_chunk(start: int, payload: list[tuple[RawItem, Any]], settings: CutSettings,
                  landmark_model: str) -> tuple[int, list[Sample | Failure]]:
    """``(start, results)`` for the (item, pixels) pairs of ``payload``, in order."""
    cutter = _cutter(settings, landmark_model)
    return start, [process_item(item, pixels, cutter) for item, pixels in payload]
