"""A reduced UNet++ (Zhou et al. 2018): nested dense skip paths and deep supervision."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, crop_to, pad_to_multiple


class UNetPlusPlus(nn.Module):
    """UNet++ with ``depth`` pooling steps.

    Node ``X[i][j]`` sits at resolution level ``i`` and nesting column ``j``; it
    sees every earlier node of its level plus the upsampled node ``X[i+1][j-1]``.
    Each top-row node ``X[0][j]`` (``j >= 1``) has its own 1x1 head: training
    supervises all of them (:meth:`forward_all`), inference averages the logits of
    :attr:`inference_heads` (default: all of them, the "accurate" mode of the paper).
    A weights file can name fewer (its ``heads``, chosen on validation images like
    the thresholds): the shallowest head sees only a few pixels around each one, and
    leaving it out of the average can sharpen the boundaries between nuclei.

    Parameters
    ----------
    in_channels, out_channels, base_channels, depth
        As for :class:`~napari_nucleiseg.models.unet.UNet`.
    """

    def __init__(
        self, *, in_channels: int = 3, out_channels: int = 2, base_channels: int = 16, depth: int = 3
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        self.upsamplers = nn.ModuleDict()
        for i in range(depth + 1):
            self.nodes[f"{i}_0"] = ConvBlock(in_channels if i == 0 else widths[i - 1], widths[i])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                self.upsamplers[f"{i}_{j}"] = nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                self.nodes[f"{i}_{j}"] = ConvBlock(widths[i] * (j + 1), widths[i])
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], out_channels, 1) for _ in range(depth))
        #: Indices of the heads (0 = shallowest) averaged by :meth:`forward`; None: all.
        self.inference_heads: tuple[int, ...] | None = None

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every deep-supervision head, shallowest first, each ``(B, K, H, W)``."""
        x, size = pad_to_multiple(x, 2**self.depth)
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(self.depth + 1):
            grid[i, 0] = self.nodes[f"{i}_0"](x if i == 0 else self.pool(grid[i - 1, 0]))
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                inputs = [grid[i, k] for k in range(j)]
                inputs.append(self.upsamplers[f"{i}_{j}"](grid[i + 1, j - 1]))
                grid[i, j] = self.nodes[f"{i}_{j}"](torch.cat(inputs, dim=1))
        return [crop_to(head(grid[0, j + 1]), size) for j, head in enumerate(self.heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.forward_all(x)
        if self.inference_heads is not None:
            outputs = [outputs[index] for index in self.inference_heads]
        return torch.stack(outputs).mean(dim=0)
