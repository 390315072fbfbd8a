"""The worker: a chunk of listed items in, one sample or one failure per item out.

Runs in joblib worker processes (or Dask workers). Each process builds its `FaceCutter` once
(the landmark model is ~100 MB) and deflates the blocks itself, so that compression runs in
parallel and the writer only stores bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prepro.cut_settings import CutSettings
from prepro.faces import BOX_METHODS, FaceCutter, ImageCut
from prepro.labels import CANONICAL_LABELS
from prepro.model_files import LandmarkModelFile
from prepro.readers import BadPixelsError, Failure, RawItem, parse_pixels
from prepro.shards import Sample, pack_block
from prepro.specs import SPLITS
from prepro.writer import ShardTask, TaskOutcome, write_task_shard

_CUTTERS: dict[tuple, FaceCutter] = {}


def _cutter(settings: CutSettings, landmark_model: str) -> FaceCutter:
    key = (settings, landmark_model)
    if key not in _CUTTERS:
        _CUTTERS[key] = FaceCutter(settings, LandmarkModelFile(Path(landmark_model)))
    return _CUTTERS[key]


def load_models(settings: CutSettings, landmark_model: str) -> None:
    """Build this process's cutter and load its models now (before forked workers inherit them)."""
    _cutter(settings, landmark_model).load_models()


def process_chunk(start: int, payload: list[tuple[RawItem, Any]], settings: CutSettings,
                  landmark_model: str) -> tuple[int, list[Sample | Failure]]:
    """``(start, results)`` for the (item, pixels) pairs of ``payload``, in order: ``pixels`` is a
    CSV row's pixel text, a `Failure` from reading it, or None for an image file. The chunk's
    images are cut together (`FaceCutter.cut_many`: the landmark work in batches)."""
    cutter = _cutter(settings, landmark_model)
    results: list[Sample | Failure | None] = [None] * len(payload)
    images, boxes, where = [], [], []
    for k, (item, pixels) in enumerate(payload):
        image = _image_of(item, pixels)
        if isinstance(image, Failure):
            results[k] = image
        else:
            images.append(image)
            boxes.append(item.box)
            where.append(k)
    try:
        cuts = cutter.cut_many(images, boxes)
    except Exception:  # a bug met by one strange file must not cost the chunk: each image alone
        cuts = [_cut_alone(cutter, image, box) for image, box in zip(images, boxes)]
    for k, cut in zip(where, cuts):
        item = payload[k][0]
        results[k] = cut if isinstance(cut, Failure) else _sample(item, cut)
    return start, results


def _image_of(item: RawItem, pixels: Any) -> Any:
    """The image to cut: the item's file, its parsed CSV pixels, or the item's `Failure`."""
    if isinstance(pixels, Failure):
        return pixels
    if pixels is None:
        return item.path
    try:
        return parse_pixels(pixels)
    except BadPixelsError as e:
        return Failure(item.source_id, str(e))


def _cut_alone(cutter: FaceCutter, image: Any, box: Any) -> ImageCut | str:
    try:
        return cutter.cut(image, box=box)
    except Exception as e:  # one strange file must never end a long run: list it (as a bug) and go on
        return f"unexpected error {type(e).__name__}: {e}"


def _sample(item: RawItem, cut: ImageCut | str) -> Sample | Failure:
    if isinstance(cut, str):
        return Failure(item.source_id, cut)
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
        quality=face.quality, image_size=cut.size, values=dict(item.annotations),
    )


def process_shard_task(out: str, task: ShardTask, payload: list[tuple[RawItem, Any]], attrs: dict,
                       writer_id: str, settings: CutSettings, landmark_model: str, chunk_size: int) -> TaskOutcome:
    """One shard task on a Dask worker: cut its images (``chunk_size`` at a time, so memory stays
    that of a chunk plus the shard's packed blocks) and write its shard into ``out``."""
    results: list[Sample | Failure] = []
    for a in range(0, len(payload), chunk_size):
        results += process_chunk(a, payload[a:a + chunk_size], settings, landmark_model)[1]
    return write_task_shard(Path(out), task, results, attrs, writer_id)
