"""A reduced U-Net (Ronneberger et al. 2015): 3 encoder/decoder levels, transposed-convolution upsampling."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, crop_to, pad_to_multiple


class UNet(nn.Module):
    """U-Net with ``depth`` pooling steps and channel widths ``base * 2**level``.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels (3: the RGB-normalised image) and output logits
        (2: nucleus, nucleus boundary).
    base_channels : int
        Width of the first level; doubled at each pooling step.
    depth : int
        Number of pooling steps (encoder levels below the first).
    """

    def __init__(
        self, *, in_channels: int = 3, out_channels: int = 2, base_channels: int = 16, depth: int = 3
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.decoders.append(ConvBlock(width * 2, width))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 2**self.depth)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return crop_to(self.head(x), size)
