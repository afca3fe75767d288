"""A reduced HRNet (Wang et al. 2019): parallel multi-resolution branches, fused repeatedly.

The official segmentation HRNet starts at 1/4 resolution and ends with a
bilinear upsampling of the concatenated branches. Nuclei are a few pixels
wide, so this version starts at full resolution: a light full-resolution stem,
branches at 1/2, 1/4 and 1/8, and a full-resolution skip into the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResidualBlock, crop_to, pad_to_multiple


def _conv_bn(in_channels: int, out_channels: int, *, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FuseLayer(nn.Module):
    """Exchange information between all branches: each output sums every input resampled to its level."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.paths = nn.ModuleList()
        for target, target_width in enumerate(widths):
            row = nn.ModuleList()
            for source, source_width in enumerate(widths):
                if source == target:
                    row.append(nn.Identity())
                elif source > target:  # lower resolution -> 1x1 conv, then upsample in forward
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(source_width, target_width, 1, bias=False), nn.BatchNorm2d(target_width)
                        )
                    )
                else:  # higher resolution -> strided 3x3 convs, one per halving
                    steps = target - source
                    downs = [_conv_bn(source_width, source_width, stride=2) for _ in range(steps - 1)]
                    downs.append(_conv_bn(source_width, target_width, stride=2, relu=False))
                    row.append(nn.Sequential(*downs))
            self.paths.append(row)

    def forward(self, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        fused = []
        for target, row in enumerate(self.paths):
            size = branches[target].shape[-2:]
            total = branches[target]
            for source, path in enumerate(row):
                if source == target:
                    continue
                out = path(branches[source])
                if source > target:
                    out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
                total = total + out
            fused.append(F.relu(total))
        return fused


class HRStage(nn.Module):
    """One HRNet stage: ``blocks`` residual blocks on every branch, then a fuse layer."""

    def __init__(self, widths: list[int], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(width) for _ in range(blocks))) for width in widths
        )
        self.fuse = FuseLayer(widths)

    def forward(self, branches: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.fuse([branch(x) for branch, x in zip(self.branches, branches)])


class HRNet(nn.Module):
    """HRNet with ``len(widths)`` parallel branches, added one per stage.

    Parameters
    ----------
    in_channels, out_channels : int
        As for the other models.
    stem_channels : int
        Width of the full-resolution stem, also skipped into the head.
    widths : tuple of int
        Width of each branch; branch ``k`` runs at ``1 / 2**(k + 1)`` resolution.
    blocks : int
        Residual blocks per branch per stage.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 2,
        stem_channels: int = 16,
        widths: tuple[int, ...] = (24, 48, 96),
        blocks: int = 2,
    ) -> None:
        super().__init__()
        widths = list(widths)
        self.num_levels = len(widths)
        self.stem = nn.Sequential(_conv_bn(in_channels, stem_channels), _conv_bn(stem_channels, stem_channels))
        self.entry = _conv_bn(stem_channels, widths[0], stride=2)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for level in range(len(widths)):
            if level > 0:  # a new, lower-resolution branch from the lowest existing one
                self.transitions.append(_conv_bn(widths[level - 1], widths[level], stride=2))
            self.stages.append(HRStage(widths[: level + 1], blocks))
        merged = sum(widths)
        self.merge = nn.Sequential(nn.Conv2d(merged, widths[0], 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.up = nn.ConvTranspose2d(widths[0], stem_channels, 2, stride=2)
        self.head = nn.Sequential(_conv_bn(stem_channels * 2, stem_channels), nn.Conv2d(stem_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 2**self.num_levels)
        stem = self.stem(x)
        branches = [self.entry(stem)]
        for level, stage in enumerate(self.stages):
            if level > 0:
                branches.append(self.transitions[level - 1](branches[-1]))
            branches = stage(branches)
        top = branches[0].shape[-2:]
        merged = torch.cat(
            [branches[0]] + [F.interpolate(b, size=top, mode="bilinear", align_corners=False) for b in branches[1:]],
            dim=1,
        )
        out = self.up(self.merge(merged))
        return crop_to(self.head(torch.cat([out, stem], dim=1)), size)
