"""The training loss: binary cross-entropy plus soft Dice on the nucleus and boundary maps,
over the pixels that may train."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contact_pixels(targets: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in {0, 1}: the boundary pixels of ``targets`` (nucleus, boundary) with no
    background among their 8 neighbours, where two nuclei touch. A lone nucleus's inner rim always
    borders the background, so only the lines that separate touching nuclei count."""
    background = 1.0 - targets[:, :1]
    near_background = F.max_pool2d(background, 3, stride=1, padding=1)
    return targets[:, 1:2] * (1.0 - near_background)


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, trained: torch.Tensor | None = None,
                      contact_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, on both channels (nucleus, boundary).

    ``trained``, ``(B, 1, H, W)`` in {0, 1}, leaves the pixels where it is 0 out of both terms:
    their logits get no gradient at all (pixels a user did not check are unknown, not background).

    ``contact_weight`` > 1 weighs the cross-entropy of the pixels where two nuclei touch
    (:func:`contact_pixels`) that many times, as the U-Net paper's weight map does for the borders
    between touching cells: the lines a watershed splits them along.
    """
    probabilities = torch.sigmoid(logits)
    dims = (0, 2, 3)
    weights = 1.0 + (contact_weight - 1.0) * contact_pixels(targets) if contact_weight != 1.0 else None
    if trained is not None:
        weights = trained if weights is None else weights * trained
    if weights is None:
        bce = F.binary_cross_entropy_with_logits(logits, targets)
    else:  # summed over the pixels that may train, each weighed, divided by their number
        pixels = logits.numel() if trained is None else trained.expand_as(logits).sum().clamp(min=1.0)
        bce = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).sum() / pixels
    if trained is not None:
        probabilities, targets = probabilities * trained, targets * trained
    intersection = (probabilities * targets).sum(dims)
    dice = (2 * intersection + 1) / (probabilities.sum(dims) + targets.sum(dims) + 1)
    return bce + (1 - dice).mean()


def model_loss(network: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
               distill_weight: float = 0.5, head_weights: tuple[float, ...] | None = None,
               trained: torch.Tensor | None = None, contact_weight: float = 1.0) -> torch.Tensor:
    """The loss, averaged over UNet++'s deep-supervision heads where the model has them.

    ``head_weights`` (one per head, shallowest first) weight that average; by default
    every head counts the same.

    ``targets`` with four channels hold a teacher's probabilities after the true
    targets: the loss is then ``(1 - distill_weight)`` times the loss towards the truth
    plus ``distill_weight`` times the same loss towards the teacher (knowledge distillation).

    ``trained``: the pixels that may train (:func:`segmentation_loss`); None: all.
    ``contact_weight``: of the pixels where nuclei touch, towards the truth (:func:`segmentation_loss`).
    """
    outputs = network.forward_all(images) if hasattr(network, "forward_all") else [network(images)]
    if targets.shape[1] == 4:
        truth, teacher = targets[:, :2], targets[:, 2:]
        losses = [(1 - distill_weight) * segmentation_loss(o, truth, trained, contact_weight)
                  + distill_weight * segmentation_loss(o, teacher, trained) for o in outputs]
    else:
        losses = [segmentation_loss(o, targets, trained, contact_weight) for o in outputs]
    weights = head_weights if head_weights is not None and len(outputs) > 1 else (1.0,) * len(outputs)
    if len(weights) != len(outputs):
        raise ValueError(f"{len(weights)} head weights for a model with {len(outputs)} heads")
    return sum(w * loss for w, loss in zip(weights, losses)) / sum(weights)
