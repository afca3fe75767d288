"""The training loss: binary cross-entropy plus soft Dice on the nucleus and boundary maps,
over the pixels that may train."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, trained: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, on both channels (nucleus, boundary).

    ``trained``, ``(B, 1, H, W)`` in {0, 1}, leaves the pixels where it is 0 out of both terms:
    their logits get no gradient at all (pixels a user did not check are unknown, not background).
    """
    probabilities = torch.sigmoid(logits)
    dims = (0, 2, 3)
    if trained is None:
        bce = F.binary_cross_entropy_with_logits(logits, targets)
    else:
        weights = trained.expand_as(logits)
        bce = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).sum()
        bce = bce / weights.sum().clamp(min=1.0)
        probabilities, targets = probabilities * weights, targets * weights
    intersection = (probabilities * targets).sum(dims)
    dice = (2 * intersection + 1) / (probabilities.sum(dims) + targets.sum(dims) + 1)
    return bce + (1 - dice).mean()


def model_loss(network: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
               distill_weight: float = 0.5, head_weights: tuple[float, ...] | None = None,
               trained: torch.Tensor | None = None) -> torch.Tensor:
    """The loss, averaged over UNet++'s deep-supervision heads where the model has them.

    ``head_weights`` (one per head, shallowest first) weight that average; by default
    every head counts the same.

    ``targets`` with four channels hold a teacher's probabilities after the true
    targets: the loss is then ``(1 - distill_weight)`` times the loss towards the truth
    plus ``distill_weight`` times the same loss towards the teacher (knowledge distillation).

    ``trained``: the pixels that may train (:func:`segmentation_loss`); None: all.
    """
    outputs = network.forward_all(images) if hasattr(network, "forward_all") else [network(images)]
    if targets.shape[1] == 4:
        truth, teacher = targets[:, :2], targets[:, 2:]
        losses = [(1 - distill_weight) * segmentation_loss(o, truth, trained)
                  + distill_weight * segmentation_loss(o, teacher, trained) for o in outputs]
    else:
        losses = [segmentation_loss(o, targets, trained) for o in outputs]
    weights = head_weights if head_weights is not None and len(outputs) > 1 else (1.0,) * len(outputs)
    if len(weights) != len(outputs):
        raise ValueError(f"{len(weights)} head weights for a model with {len(outputs)} heads")
    return sum(w * loss for w, loss in zip(weights, losses)) / sum(weights)
