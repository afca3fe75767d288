"""The optimisation loop that training and fine-tuning both run."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .loss import model_loss


def train_steps(network: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, *,
                device: torch.device | str = "cpu", distill_weight: float = 0.5,
                head_weights: tuple[float, ...] | None = None, contact_weight: float = 1.0, stop: Callable[[], bool] | None = None,
                on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """One optimiser step per batch of ``batches`` (``(images, targets)`` or ``(images, targets,
    trained)``, see :func:`.loss.model_loss`), until they run out or ``stop()`` returns True
    (asked before each step). ``on_step(steps, loss)`` is called after each. Returns the losses."""
    network.train()
    losses: list[float] = []
    for batch in batches:
        if stop is not None and stop():
            break
        images, targets, *rest = (tensor.to(device) for tensor in batch)
        loss = model_loss(network, images, targets, distill_weight, head_weights, rest[0] if rest else None,
                          contact_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(len(losses), losses[-1])
    return losses
