"""prepro.blocks: block sizes, rotation, aspect ratio, borders, reduced decodes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prepro.blocks import BlockConfig, BlockError, Blocks, cut_blocks, cut_blocks_many
from prepro.errors import FaceblocksError, InputError, SampleError
from prepro.landmark_models import load_mean_shape
from prepro.landmarks import EYES_BLOCK_IDX, MOUTH_BLOCK_IDX


def _face(iod: float = 20.0, centre=(50.0, 45.0), angle_deg: float = 0.0) -> np.ndarray:
    """The mean face with the given inter-ocular distance, eye-midpoint-ish centre and rotation."""
    m = load_mean_shape()
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (m @ rot.T * iod + centre).astype(np.float32)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T.astype(np.float64) + m[:, 2]


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (127 + 60 * np.sin(x / 7.0) + 60 * np.cos(y / 9.0)).astype(np.uint8)


@pytest.mark.parametrize("cfg", [
    BlockConfig(),
    BlockConfig(eyes_size=(48, 144), mouth_size=(40, 40), face_size=(96, 80), rotate=False),
    BlockConfig(eyes_size=(8, 8), mouth_size=(4, 6), face_size=(4, 4), eyes_margin=0, pad="constant"),
])
def test_shapes_and_dtypes(cfg: BlockConfig) -> None:
    b = cut_blocks(_smooth(100, 100), _face(), cfg)
    assert isinstance(b, Blocks)
    for name in ("eyes", "mouth", "face"):
        arr, aff = getattr(b, name), getattr(b, f"{name}_affine")
        assert arr.dtype == np.uint8 and arr.shape == getattr(cfg, f"{name}_size")
        assert aff.dtype == np.float32 and aff.shape == (2, 3)


@pytest.mark.parametrize("angle", [-30.0, 12.5, 40.0])
def test_rotation_levels_the_eyes(angle: float) -> None:
    lm = _face(angle_deg=angle)
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    b = cut_blocks(_smooth(100, 100), lm, BlockConfig())
    for aff in (b.eyes_affine, b.mouth_affine, b.face_affine):
        (ur, vr), (ul, vl) = _apply(aff, eyes)
        assert abs(vr - vl) < 1e-3 and ul > ur  # level, right eye (image left) first
    unrotated = cut_blocks(_smooth(100, 100), lm, BlockConfig(rotate=False))
    assert abs(unrotated.eyes_affine[0, 1]) < 1e-6  # no rotation asked: axis-aligned map


def test_affine_maps_landmarks_inside_blocks() -> None:
    cfg = BlockConfig()
    lm = _face(angle_deg=8)
    b = cut_blocks(_smooth(100, 100), lm, cfg)
    for aff, idx, (h, w) in ((b.eyes_affine, EYES_BLOCK_IDX, cfg.eyes_size),
                             (b.mouth_affine, MOUTH_BLOCK_IDX, cfg.mouth_size),
                             (b.face_affine, np.arange(68), cfg.face_size)):
        uv = _apply(aff, lm[idx].astype(np.float64))
        assert (uv[:, 0] > -0.5).all() and (uv[:, 0] < w - 0.5).all()
        assert (uv[:, 1] > -0.5).all() and (uv[:, 1] < h - 0.5).all()


@pytest.mark.parametrize("size", [(32, 96), (64, 32), (40, 40)])
def test_aspect_ratio_kept(size: tuple[int, int]) -> None:
    cfg = BlockConfig(eyes_size=size, eyes_margin=0.25)
    lm = _face(iod=30, angle_deg=-15)
    aff = cut_blocks(_smooth(120, 120), lm, cfg).eyes_affine.astype(np.float64)
    # Uniform scale + rotation only: no stretching.
    assert aff[0, 0] == pytest.approx(aff[1, 1], rel=1e-5)
    assert aff[0, 1] == pytest.approx(-aff[1, 0], rel=1e-5)
    k = math.hypot(aff[0, 0], aff[0, 1])  # block pixels per original pixel
    uv = _apply(aff, lm[EYES_BLOCK_IDX].astype(np.float64))
    ext_w = (uv[:, 0].max() - uv[:, 0].min()) / k + 2 * 0.25 * 30
    ext_h = (uv[:, 1].max() - uv[:, 1].min()) / k + 2 * 0.25 * 30
    h, w = size
    # The block box (landmark box + margins, grown along one axis only) has the output's aspect:
    # one axis is tight, the other has room.
    tight_w, tight_h = math.isclose(ext_w * k, w, rel_tol=1e-4), math.isclose(ext_h * k, h, rel_tol=1e-4)
    assert tight_w or tight_h
    assert ext_w * k <= w + 1e-3 and ext_h * k <= h + 1e-3


def test_border_padding_not_wrapped_not_empty() -> None:
    img = np.full((80, 80), 200, np.uint8)
    img[:, -3:] = 7  # a distinctive right edge: wrapping would pull it into a left-edge block
    lm = _face(iod=24, centre=(6.0, 40.0))  # face half outside the left border
    rep = cut_blocks(img, lm, BlockConfig(pad="replicate"))
    for arr in (rep.eyes, rep.mouth, rep.face):
        assert (arr == 200).all()  # replicated edge, no wrap
    con = cut_blocks(img, lm, BlockConfig(pad="constant"))
    assert (con.face[:, :5] == 0).all() and (con.face == 200).any() and not (con.face == 7).any()


def test_degenerate_landmarks() -> None:
    img = _smooth(60, 60)
    with pytest.raises(BlockError, match="NaN"):
        cut_blocks(img, np.full((68, 2), np.nan, np.float32), BlockConfig())
    with pytest.raises(BlockError, match="inter-ocular"):
        cut_blocks(img, np.full((68, 2), 30.0, np.float32), BlockConfig())
    with pytest.raises(BlockError, match="68x2"):
        cut_blocks(img, np.zeros((5, 2)), BlockConfig())
    # One image's problem: the pipeline lists it as that input's failure and goes on.
    assert issubclass(BlockError, SampleError) and issubclass(BlockError, FaceblocksError)


@pytest.mark.parametrize("cfg", [BlockConfig(), BlockConfig(rotate=False, pad="constant")])
def test_a_batch_cuts_each_face_as_alone(cfg: BlockConfig) -> None:
    """The batched geometry gives every face exactly the blocks and maps it gets alone, whatever
    else is in the batch (so chunk sizes and job counts write the same shards); a bad face gets its
    error in its place and costs the others nothing."""
    import cv2

    big = _smooth(400, 400)
    half = cv2.resize(big, (0, 0), fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    cases = [(_smooth(100, 100), _face(), 1.0), (_smooth(100, 100), np.full((68, 2), np.nan), 1.0),
             (half, _face(iod=120, centre=(200.0, 180.0), angle_deg=10), 0.5),
             (_smooth(60, 60), np.full((68, 2), 30.0), 1.0), (big, _face(iod=300, centre=(200.0, 190.0)), 1.0),
             (_smooth(100, 100), _face(angle_deg=-25), 1.0)]
    batch = cut_blocks_many([g for g, _, _ in cases], np.array([m for _, m, _ in cases]), cfg,
                            [s for _, _, s in cases])
    assert [type(b) for b in batch] == [Blocks, BlockError, Blocks, BlockError, Blocks, Blocks]
    assert "NaN" in str(batch[1]) and "inter-ocular" in str(batch[3])
    for (gray, marks, scale), got in zip(cases, batch):
        if isinstance(got, Blocks):
            alone = cut_blocks(gray, marks, cfg, scale)
            for name in ("eyes", "mouth", "face", "eyes_affine", "mouth_affine", "face_affine"):
                assert np.array_equal(getattr(got, name), getattr(alone, name)), name
    assert cut_blocks_many([], np.zeros((0, 68, 2)), cfg, []) == []


def test_reduced_decode_scale() -> None:
    import cv2

    full = _smooth(400, 400)
    half = cv2.resize(full, (0, 0), fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    lm = _face(iod=120, centre=(200.0, 180.0), angle_deg=10)
    cfg = BlockConfig()
    a = cut_blocks(full, lm, cfg)
    b = cut_blocks(half, lm, cfg, scale=0.5)
    for name in ("eyes", "mouth", "face"):
        assert np.allclose(getattr(a, f"{name}_affine"), getattr(b, f"{name}_affine"))
        diff = np.abs(getattr(a, name).astype(int) - getattr(b, name).astype(int))
        assert diff.mean() < 3, name


def test_heavy_downscale_is_area_filtered() -> None:
    # Fine stripes (period 2 px) must average to mid grey, not alias into bands.
    img = np.zeros((1200, 1200), np.uint8)
    img[:, ::2] = 255
    b = cut_blocks(img, _face(iod=400, centre=(600.0, 500.0)), BlockConfig())
    assert abs(float(b.eyes.mean()) - 127.5) < 10 and b.eyes.std() < 20


def test_config_validation_and_dict() -> None:
    with pytest.raises(InputError, match="pad must be one of 'replicate', 'constant'"):
        BlockConfig(pad="wrap")
    with pytest.raises(InputError, match="eyes_size .*each side 4 to 1024"):
        BlockConfig(eyes_size=(0, 96))
    with pytest.raises(InputError, match="mouth_size"):
        BlockConfig(mouth_size=(1, 3))
    with pytest.raises(InputError, match="mouth_margin"):
        BlockConfig(mouth_margin=-0.1)
    with pytest.raises(InputError, match="rotate must be true or false"):
        BlockConfig(rotate="yes")  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), -float("inf")):  # non-finite numbers are always refused
        with pytest.raises(InputError, match="face_margin"):
            BlockConfig(face_margin=bad)
    with pytest.raises(InputError, match="eyes_margin"):
        BlockConfig(eyes_margin=True)  # type: ignore[arg-type]  # a boolean is no number
    with pytest.raises(InputError, match="unknown key eye_size; allowed: .*eyes_size"):
        BlockConfig.from_dict({"eye_size": [32, 96]})
    assert BlockConfig(eyes_size="48x144").eyes_size == (48, 144)  # type: ignore[arg-type]
    cfg = BlockConfig(eyes_size=[40, 120])  # type: ignore[arg-type]
    assert cfg.eyes_size == (40, 120)
    d = cfg.to_dict()
    assert d["eyes_size"] == [40, 120] and d["pad"] == "replicate"
    assert BlockConfig.from_dict(d) == cfg
