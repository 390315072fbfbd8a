"""Test-time augmentation (`training.tta`): the views, their averaging, and where they are chosen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from cli import main as cli
from training.tta import SHIFTS, averaged_outputs, model_tta, tta_name, views

REGIONS = ("eyes", "mouth")


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"eyes": torch.rand(3, 1, 4, 6, generator=g), "mouth": torch.rand(3, 1, 4, 5, generator=g)}


def test_views_are_the_batch_its_mirror_and_one_pixel_shifts():
    x = _batch()
    assert [len(list(views(x, REGIONS, f, s))) for f, s in ((0, 0), (1, 0), (0, 1), (1, 1))] == [1, 2, 9, 18]
    first = next(views(x, REGIONS, True, True))
    assert all(torch.equal(first[r], x[r]) for r in REGIONS)  # the batch itself comes first
    shifted = list(views(x, REGIONS, False, True))
    right = shifted[SHIFTS.index((1, 0))]["eyes"]  # content moves left: pixel j shows pixel j + 1
    assert torch.equal(right[..., :, :-1], x["eyes"][..., :, 1:])
    assert torch.equal(right[..., :, -1], x["eyes"][..., :, -1])  # the border pixel repeated
    assert all(v[r].shape == x[r].shape for v in shifted for r in REGIONS)
    mirrored = list(views(x, REGIONS, True, False))[1]
    assert torch.equal(mirrored["mouth"], x["mouth"].flip(-1))


class _Sum(torch.nn.Module):
    """A stand-in network whose logits and region weights depend on the pixels."""

    def forward(self, x):
        a, b = x["eyes"].mean((1, 2, 3)), x["mouth"][..., 0].mean((1, 2))
        logits = torch.stack([a, b, a * b], 1)
        return SimpleNamespace(logits=logits, region_weights=torch.stack([a, 1 - a], 1))


def test_averaged_outputs_mean_the_views_probabilities():
    x, model = _batch(), _Sum()
    probs, weights = averaged_outputs(model, x, REGIONS, True, False)
    one, two = model(x), model({r: x[r].flip(-1) for r in REGIONS})
    assert torch.allclose(probs, (one.logits.softmax(1) + two.logits.softmax(1)) / 2)
    assert torch.allclose(weights, (one.region_weights + two.region_weights) / 2)
    probs, _ = averaged_outputs(model, x, REGIONS, True, True)
    expected = torch.stack([model(v).logits.softmax(1) for v in views(x, REGIONS, True, True)]).mean(0)
    assert torch.allclose(probs, expected) and torch.allclose(probs.sum(1), torch.ones(3))


def test_the_card_decides_and_names_are_plain():
    assert model_tta({}) == (False, False) and model_tta({"card": {"tta_flip": True}}) == (True, False)
    assert model_tta({"card": {"tta_flip": True, "tta_shift": True}}) == (True, True)
    assert [tta_name(f, s) for f, s in ((0, 0), (1, 0), (0, 1), (1, 1))] == ["none", "flip", "shift", "flip+shift"]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_commands_offer_the_shift(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0 and "--tta-shift / --no-tta-shift" in r.output and "--tta-flip / --no-tta-flip" in r.output
