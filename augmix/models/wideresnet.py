"""Wide residual networks (Zagoruyko & Komodakis, 2016), the AugMix paper's CIFAR workhorse.

WRN-40-2 is the network behind the paper's headline CIFAR-10-C number (26.9 -> 11.2 % error).
Blocks are pre-activation (BN-ReLU-conv), as in the reference code: when a block changes width
or resolution, its 1x1 shortcut reads the pre-activated input, otherwise the identity is added.
Dropout between the two convs defaults to 0.0, the AugMix CIFAR recipe.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augmix.models.layers import CIFAR_MEAN, CIFAR_STD, Normalize, init_reference_weights


class WideBasicBlock(nn.Module):
    """Two pre-activated 3x3 convs with an identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            None
            if in_channels == out_channels and stride == 1
            else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        residual = x if self.shortcut is None else self.shortcut(activated)
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-widen: a 3x3 stem, three stages of (depth-4)/6 blocks at 16k, 32k, 64k channels.

    Takes float images in [0, 1] (normalised inside by `mean`/`std`); any H, W divisible by 4
    works thanks to global average pooling (the reference pools a fixed 8x8, i.e. 32x32 only).
    """

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        num_classes: int = 10,
        dropout: float = 0.0,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth {depth} is not allowed; use 6n+4 with n >= 1 (10, 16, 28, 40, ...)")
        if widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor {widen_factor} is not allowed; use an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WideResNet dropout {dropout} is not allowed; use 0 <= dropout < 1")
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes} is not allowed; use an integer >= 1")
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.stage1 = self._make_stage(widths[0], widths[1], blocks_per_stage, 1, dropout)
        self.stage2 = self._make_stage(widths[1], widths[2], blocks_per_stage, 2, dropout)
        self.stage3 = self._make_stage(widths[2], widths[3], blocks_per_stage, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_reference_weights(self)

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *(
                WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
                for i in range(blocks)
            )
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(images))
        out = self.stage3(self.stage2(self.stage1(out)))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
