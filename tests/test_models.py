"""The model contract: (B, 3, H, W) in, (B, 2, H, W) logits out, for any H and W."""

from __future__ import annotations

import pytest
import torch

from napari_nucleiseg.models import ARCHITECTURES, build_model
from napari_nucleiseg.models.unetpp import UNetPlusPlus

from conftest import TINY_KWARGS, build_tiny

NAMES = sorted(ARCHITECTURES)


def test_registry_holds_the_three_architectures():
    assert set(ARCHITECTURES) == {"unet", "unetpp", "hrnet"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_odd_size_keeps_height_and_width(name, train):
    """The shipped configuration (default arguments) on an odd-sized image."""
    torch.manual_seed(0)
    network = build_model(name).train(train)
    x = torch.rand(1, 3, 97, 131)
    out = network(x)
    assert out.shape == (1, 2, 97, 131)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    if train:  # every parameter takes part in the output
        out.mean().backward()
        unused = [n for n, p in network.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert unused == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (2, 300), (16, 16), (33, 8)])
def test_tiny_and_thin_inputs_in_eval_mode(name, size):
    network = build_tiny(name)
    out = network(torch.rand(2, 3, *size))
    assert out.shape == (2, 2, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_tiny_input_in_train_mode(name):
    # Batch norm needs more than one value per channel in training; two 5 x 7 images give that
    # even at the coarsest level.
    network = build_model(name, **TINY_KWARGS[name]).train()
    out = network(torch.rand(2, 3, 5, 7))
    assert out.shape == (2, 2, 5, 7)


@pytest.mark.parametrize("name", NAMES)
def test_batch_items_are_independent_in_eval_mode(name):
    network = build_tiny(name)
    x = torch.rand(3, 3, 40, 24)
    with torch.no_grad():
        together = network(x)
        alone = network(x[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_configuration_is_small_enough_to_train_on_a_cpu(name):
    # The design asks for roughly 0.3-2 M parameters.
    parameters = sum(p.numel() for p in build_model(name).parameters())
    assert 300_000 <= parameters <= 2_000_000


def test_unetpp_deep_supervision_heads_average_to_the_output():
    network = build_tiny("unetpp")
    x = torch.rand(1, 3, 21, 19)
    with torch.no_grad():
        heads = network.forward_all(x)
        out = network(x)
    assert isinstance(network, UNetPlusPlus)
    assert len(heads) == TINY_KWARGS["unetpp"]["depth"]
    assert all(h.shape == (1, 2, 21, 19) for h in heads)
    torch.testing.assert_close(torch.stack(heads).mean(0), out)


def test_unknown_architecture_lists_the_valid_names():
    with pytest.raises(ValueError, match="resnet") as info:
        build_model("resnet")
    for name in NAMES:
        assert name in str(info.value)


def test_wrong_keyword_arguments_are_a_clear_error():
    with pytest.raises(ValueError, match="unet"):
        build_model("unet", widths=[1, 2])
