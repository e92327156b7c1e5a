"""ResNeXt for CIFAR (Xie et al., 2017), the AugMix paper's ResNeXt-29 (32x4d).

Post-activation bottlenecks of type C (1x1 reduce, grouped 3x3, 1x1 expand to 4x planes), a 64
channel 3x3 stem and three stages at 64, 128, 256 planes with (depth-2)/9 blocks each; each
grouped conv has `cardinality` groups of floor(planes * base_width / 64) channels.

Which network "32x4" is: the AugMix reference builds its ResNeXt-29 with cardinality 4 and base
width 32 (4 groups of 32 channels in the first stage, 6.8 M parameters), and that network made the
paper's numbers, so `resnext29_32x4d` and this class's defaults build exactly it. ResNeXt's own
CxWd convention would read 32x4d as 32 groups of 4 (the same 128 channels, sparser 3x3 convs,
4.8 M parameters): build that one as CifarResNeXt(cardinality=32, base_width=4).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augmix.models.layers import CIFAR_MEAN, CIFAR_STD, Normalize, init_reference_weights

EXPANSION = 4


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (stride here), 1x1 expand, each with BN; ReLU after the sum."""

    def __init__(self, in_channels: int, planes: int, cardinality: int, base_width: int, stride: int) -> None:
        super().__init__()
        group_width = planes * base_width // 64
        inner = group_width * cardinality
        out_channels = planes * EXPANSION
        self.conv_reduce = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_grouped = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn_grouped = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            None
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_grouped(self.conv_grouped(out)))
        out = self.bn_expand(self.conv_expand(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + residual)


class CifarResNeXt(nn.Module):
    """ResNeXt-depth (cardinality x base_width d) for small images.

    Takes float images in [0, 1] (normalised inside by `mean`/`std`).
    """

    def __init__(
        self,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 32,
        num_classes: int = 10,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9 != 0:
            raise ValueError(f"ResNeXt depth {depth} is not allowed; use 9n+2 with n >= 1 (11, 29, 38, ...)")
        if cardinality < 1 or base_width < 1:
            raise ValueError(
                f"ResNeXt cardinality {cardinality} / base_width {base_width} is not allowed; use integers >= 1"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes} is not allowed; use an integer >= 1")
        blocks_per_stage = (depth - 2) // 9
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages: list[nn.Module] = []
        in_channels = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(ResNeXtBottleneck(in_channels, planes, cardinality, base_width, stride if i == 0 else 1))
                in_channels = planes * EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)
        init_reference_weights(self, kaiming_linear=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(self.normalize(images)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
