"""The batched landmark features equal the per-image definitions they replace."""

from __future__ import annotations

import cv2
import numpy as np

from prepro import landmark_models as M


def _histograms_one_at_a_time(img: np.ndarray, cell: int) -> np.ndarray:
    """The per-image definition: OpenCV's Sobel (ksize 1) and cartToPolar, then cell histograms."""
    side = img.shape[0]
    f = img.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=1)
    mag, ang = cv2.cartToPolar(gx, gy)
    b = np.minimum((np.mod(ang, np.pi) * (M.ORIENTATIONS / np.pi)).astype(np.intp), M.ORIENTATIONS - 1)
    n = side // cell
    c = np.arange(side) // cell
    index = (c[:, None] * n + c[None, :]) * M.ORIENTATIONS + b
    h = np.bincount(index.ravel(), weights=mag.ravel(), minlength=n * n * M.ORIENTATIONS).reshape(n, n, -1)
    blocks = np.concatenate([h[:-1, :-1], h[1:, :-1], h[:-1, 1:], h[1:, 1:]], axis=2)
    blocks /= np.sqrt((blocks * blocks).sum(axis=2, keepdims=True)) + 1e-3
    return blocks.ravel().astype(np.float32)


def test_gradient_histograms_of_a_stack_equal_each_images() -> None:
    rng = np.random.default_rng(0)
    for side, cell in ((48, 8), (24, 6)):
        imgs = rng.integers(0, 256, (7, side, side), dtype=np.uint8)
        imgs[0] = 128  # flat: every gradient zero
        batched = M.gradient_histograms_many(imgs, cell)
        for img, row in zip(imgs, batched):
            np.testing.assert_array_equal(row, _histograms_one_at_a_time(img, cell))


def test_batched_signs_equal_single_calls() -> None:
    """Each face's quality signs do not depend on the other faces computed with it."""
    rng = np.random.default_rng(1)
    models = M.load_landmark_models()
    shape = M.load_mean_shape() * 12 + 24
    grays = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(5)]
    marks = np.stack([shape + rng.normal(0, 1.5, shape.shape) for _ in range(5)])
    marks[3] = 0.0  # degenerate landmarks among good ones
    boxes = np.array([[4.0, 4.0, 44.0, 44.0]] * 5)
    batched = M.quality_signs_many(grays, marks, boxes, models)
    for i in range(5):
        np.testing.assert_allclose(batched[i], M.quality_signs_many([grays[i]], marks[i:i + 1], boxes[i:i + 1],
                                                                    models)[0], rtol=1e-12, atol=1e-12)
    assert batched[3, 0] == -20.0 and list(batched[3, 1:]) == [10.0, 0.0, 10.0]
