"""Every registered network: shapes, finiteness, budget, region weights, backward, unknown names."""

from __future__ import annotations

import pytest
import torch

from architectures import Output, UnknownModelError, count_params, create_model, list_models
from prepro.errors import FaceblocksError, InputError

SIZES = {"eyes": (32, 96), "mouth": (32, 64), "face": (64, 64)}


def _batch(b: int = 3, sizes: dict[str, tuple[int, int]] = SIZES) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {r: torch.randn(b, 1, *hw, generator=g) for r, hw in sizes.items()}


def test_registry_lists_the_networks():
    assert {"two-branch", "two-branch-face", "two-branch-concat", "face-cnn"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_weights_budget(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    out = model(_batch())
    assert isinstance(out, Output)
    assert out.logits.shape == (3, 7)
    assert out.region_weights.shape == (3, len(model.regions))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.region_weights).all()
    assert torch.allclose(out.region_weights.sum(1), torch.ones(3), atol=1e-5)
    assert (out.region_weights >= 0).all()
    for network in getattr(model, "members", [model]):  # the budget is per network; an ensemble's is its members'
        assert count_params(network) <= 2_000_000
    assert set(model.regions) <= set(SIZES)


@pytest.mark.parametrize("name", list_models())
def test_other_block_sizes_and_backward(name):
    # Block sizes come from the shards: adaptive pooling must take any reasonable size.
    model = create_model(name, num_classes=3, widths=(8, 16), feat_dim=16).train()
    out = model(_batch(4, {"eyes": (20, 60), "mouth": (24, 40), "face": (48, 48)}))
    loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_attention_weights_vary_per_sample():
    model = create_model("two-branch", num_classes=3).eval()
    w = model(_batch(5)).region_weights
    assert not torch.allclose(w, w[:1].expand_as(w))


def test_concat_reports_uniform_weights():
    w = create_model("two-branch-concat", num_classes=3).eval()(_batch()).region_weights
    assert torch.allclose(w, torch.full_like(w, 0.5))


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownModelError) as e:
        create_model("resnet-9000", num_classes=7)
    assert isinstance(e.value, FaceblocksError)  # the command line shows it as a message
    for name in list_models():
        assert name in str(e.value)


def test_bad_arguments_are_refused():
    # A user's mistake (a config's model_kwargs, say): an InputError that names the argument.
    with pytest.raises(InputError, match="num_classes"):
        create_model("two-branch", num_classes=1)
    with pytest.raises(InputError, match="no_such_option"):
        create_model("two-branch", num_classes=3, no_such_option=1)
    with pytest.raises(InputError, match="eyes_size"):
        create_model("face-cnn", num_classes=3, eyes_size=(32, 96))  # block sizes are no constructor argument
