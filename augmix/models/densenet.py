"""DenseNet-BC (Huang et al., 2017) for the AugMix paper's CIFAR tables; DenseNet-BC-100, k=12.

This is the BC variant: bottleneck layers (BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to
k) and transitions that compress channels by 0.5, about 0.77 M parameters at depth 100, k=12.
Note that the AugMix reference repository's `densenet100_12` is NOT BC: it builds single
BN-ReLU-3x3 layers (32 per block, no bottleneck; compression 0.5 in its transitions), about
4.1 M parameters. The paper's tables name DenseNet-BC, which is what this is.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augmix.models.layers import CIFAR_MEAN, CIFAR_STD, Normalize, init_reference_weights


class DenseBottleneckLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k) then BN-ReLU-3x3 conv (k); its k new maps are appended to the input."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        inner = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new_maps = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat((x, new_maps), dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv (compression) then 2x2 average pooling between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC-depth with growth rate k: a 3x3 stem to 2k, three dense blocks of (depth-4)/6 layers.

    Takes float images in [0, 1] (normalised inside by `mean`/`std`).
    """

    def __init__(
        self,
        depth: int = 100,
        growth_rate: int = 12,
        num_classes: int = 10,
        compression: float = 0.5,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNetBC depth {depth} is not allowed; use 6n+4 with n >= 1 (40, 100, 190, ...)")
        if growth_rate < 1:
            raise ValueError(f"DenseNetBC growth_rate {growth_rate} is not allowed; use an integer >= 1")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"DenseNetBC compression {compression} is not allowed; use 0 < compression <= 1")
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes} is not allowed; use an integer >= 1")
        layers_per_block = (depth - 4) // 6
        channels = 2 * growth_rate
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for block_index in range(3):
            stages.append(
                nn.Sequential(
                    *(DenseBottleneckLayer(channels + i * growth_rate, growth_rate) for i in range(layers_per_block))
                )
            )
            channels += layers_per_block * growth_rate
            if block_index < 2:
                compressed = int(math.floor(channels * compression))
                stages.append(Transition(channels, compressed))
                channels = compressed
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        init_reference_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.stem(self.normalize(images)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
