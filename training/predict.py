"""Predictions on new photos with the face and block preprocessing a checkpoint was trained with.

Every face in an image is found (the largest first), cut into blocks exactly as the training
shards were, and classified; each result carries the class probabilities and the per-region
attention weights. An image that cannot be read or holds no face is reported, not fatal.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from prepro.readers import expand_image_inputs
from training.errors import CheckpointError


@dataclass
class FacePrediction:
    box: list[float]  # left, top, right, bottom in original-image pixels
    box_method: str  # how the box was found (detector, whole_image, whole_image_fallback)
    quality: float  # landmark plausibility in [0, 1]
    label: str  # the most probable class
    probabilities: dict[str, float]  # class -> probability
    region_weights: dict[str, float]  # region -> attention weight


@dataclass
class ImagePrediction:
    path: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None  # why the image gave no prediction (unreadable, no face)
    annotated: str | None = None  # the annotated copy, when asked for

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error, "annotated": self.annotated,
                "faces": [f.__dict__ for f in self.faces]}


class Predictor:
    """A checkpoint ready to classify faces; the model and dlib are loaded once."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", face_mode: str | None = None,
                 predictor_path: str | None = None):
        from prepro.blocks import BlockConfig
        from prepro.landmarks import FaceModel, find_predictor
        from training.checkpoint import build_model_from_checkpoint, load_checkpoint
        from training.engine import _resolve_checkpoint, resolve_device

        self.ckpt = load_checkpoint(_resolve_checkpoint(checkpoint))
        pre = self.ckpt.get("preprocessing") or {}
        if "blocks" not in pre:
            raise CheckpointError(f"{checkpoint} does not record the block preprocessing it was trained "
                                  "with (trained on shards not made by `faceblocks preprocess`?)")
        self.blocks = BlockConfig.from_dict(pre["blocks"])
        for region, size in self.ckpt["block_sizes"].items():
            if list(getattr(self.blocks, f"{region}_size")) != list(size):
                raise CheckpointError(f"{checkpoint}: block sizes in its preprocessing and its model differ")
        self.max_pixels = int(pre.get("max_pixels", 40_000_000))
        self.work_max_side = int(pre.get("work_max_side", 1024))
        # Photos may hold several faces: detect unless the model was trained on pre-cropped faces
        # with the whole image as the box, and the caller did not say otherwise.
        self.face_mode = face_mode or pre.get("face_mode", "auto")
        self.faces = FaceModel(find_predictor(predictor_path), face_mode=self.face_mode,
                               detect_max_side=int(pre.get("detect_max_side", 640)))
        self.device = resolve_device(device)
        self.model = build_model_from_checkpoint(self.ckpt).to(self.device)
        self.class_names = list(self.ckpt["class_names"])
        self.regions = list(self.ckpt["regions"])

    def _faces(self, gray: np.ndarray, scale: float):
        from prepro.landmarks import NoFaceError

        if self.face_mode == "aligned":
            return [self.faces.find(gray, scale)]
        found = self.faces.find_all(gray, scale)
        if found:
            return found
        try:
            return [self.faces.find(gray, scale)]  # auto: whole-image fallback for small images
        except NoFaceError:
            return []

    def predict_image(self, path: str) -> tuple[ImagePrediction, Any]:
        """Predictions for every face in ``path``, plus what `annotate` needs (or None)."""
        import torch

        from prepro.blocks import BlockError, cut_blocks
        from prepro.image_io import ImageDecodeError, decode_gray
        from training.data import normalize

        result = ImagePrediction(path=path)
        try:
            gray, scale, _size = decode_gray(path, max_pixels=self.max_pixels, work_max_side=self.work_max_side)
        except (ImageDecodeError, OSError) as e:
            result.error = str(e)
            return result, None
        faces, blocks = [], []
        for face in self._faces(gray, scale):
            try:
                blocks.append(cut_blocks(gray, face.landmarks, self.blocks, scale))
                faces.append(face)
            except BlockError:
                continue
        if not faces:
            result.error = "no face found"
            return result, None
        batch = {r: torch.from_numpy(np.stack([getattr(b, r) for b in blocks])).unsqueeze(1)
                 .to(self.device).float().div_(255.0) for r in self.regions}
        with torch.no_grad():
            out = self.model(normalize(batch, self.regions))
        probs = out.logits.softmax(dim=1).cpu().numpy()
        weights = out.region_weights.cpu().numpy()
        for face, p, w in zip(faces, probs, weights):
            result.faces.append(FacePrediction(
                box=[round(float(v), 1) for v in face.box], box_method=face.method,
                quality=round(float(face.quality), 4), label=self.class_names[int(p.argmax())],
                probabilities={c: round(float(x), 4) for c, x in zip(self.class_names, p)},
                region_weights={r: round(float(x), 4) for r, x in zip(self.regions, w)}))
        return result, (faces, blocks)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def annotated_name(path: str, index: int) -> str:
    """A file name for the annotated copy that cannot leave its folder."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._") or "image"
    return f"{index:05d}_{stem[:80]}.png"


def annotate(path: str, pred: ImagePrediction, faces, blocks, out_png: Path) -> None:
    """Draw the face box, landmarks, both block outlines and the label on a copy of ``path``."""
    import cv2

    from prepro.image_io import decode_gray

    gray, scale, _ = decode_gray(path, work_max_side=1024)
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(img.shape[:2]) / 400))
    for face, blk, fp in zip(faces, blocks, pred.faces):
        l, t, r, b = (v * scale for v in face.box)
        cv2.rectangle(img, (int(l), int(t)), (int(r), int(b)), (0, 255, 255), thick)
        for x, y in face.landmarks * scale:
            cv2.circle(img, (int(x), int(y)), thick, (0, 255, 0), -1)
        for name, colour in (("eyes", (255, 128, 0)), ("mouth", (0, 0, 255))):
            m = np.vstack([getattr(blk, f"{name}_affine"), [0, 0, 1]])
            h, w = getattr(blk, name).shape
            corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64).T
            pts = (np.linalg.inv(m) @ corners)[:2].T * scale
            cv2.polylines(img, [pts.astype(np.int32)], True, colour, thick)
        text = f"{fp.label} {fp.probabilities[fp.label]:.2f}"
        cv2.putText(img, text, (int(l), max(int(t) - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    cv2.imwrite(str(out_png), img)


def predict(checkpoint: str | os.PathLike, inputs: Iterable[str], annotate_dir: str | os.PathLike | None = None,
            device: str = "auto", face_mode: str | None = None, predictor_path: str | None = None,
            progress: bool = False) -> list[ImagePrediction]:
    """Classify every face of every input image; optionally write annotated copies."""
    from tqdm import tqdm

    paths = expand_image_inputs(inputs)
    if not paths:
        raise FileNotFoundError("no image files among the inputs")
    p = Predictor(checkpoint, device=device, face_mode=face_mode, predictor_path=predictor_path)
    out_dir = Path(annotate_dir) if annotate_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, path in enumerate(tqdm(paths, unit="img", disable=not progress)):
        pred, extra = p.predict_image(path)
        if out_dir is not None and extra is not None:
            target = out_dir / annotated_name(path, i)
            annotate(path, pred, *extra, target)
            pred.annotated = str(target)
        results.append(pred)
    return results
