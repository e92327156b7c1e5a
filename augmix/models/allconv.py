"""The all-convolutional network of the AugMix paper's CIFAR tables (after Springenberg et al., 2015).

Structure as in the AugMix reference: three 3x3 convs at 96 channels, 2x2 max-pool + dropout 0.5,
three 3x3 convs at 192, max-pool + dropout, an unpadded 3x3 conv and two 1x1 "network in network"
convs at 192, global average pooling and a linear classifier; every conv is followed by BN and
the sigmoid approximation of GELU, x * sigmoid(1.702 x), the activation the reference uses.

One deliberate difference: the reference pads its 1x1 convs by one pixel and then averages a
fixed 8x8 window, which at 32x32 input reads the top-left 8x8 of a 10x10 map whose border is
constant padding. Here the 1x1 convs are unpadded and the pooling is global (All-CNN-C's own
design), which has the same parameters (about 1.37 M) and works at any input size >= 16.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from augmix.models.layers import CIFAR_MEAN, CIFAR_STD, Normalize, init_reference_weights


class SigmoidGELU(nn.Module):
    """x * sigmoid(1.702 x): the fast GELU approximation the reference AllConvNet is trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def conv_bn_gelu(in_channels: int, out_channels: int, kernel_size: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.BatchNorm2d(out_channels),
        SigmoidGELU(),
    ]


class AllConvNet(nn.Module):
    """AllConvNet with `widths` (96, 192) and `dropout` 0.5 after each pooling, as in the reference.

    Takes float images in [0, 1] (normalised inside by `mean`/`std`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int] = (96, 192),
        dropout: float = 0.5,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        if len(widths) != 2 or min(widths) < 1:
            raise ValueError(f"AllConvNet widths {tuple(widths)} is not allowed; use two positive integers")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"AllConvNet dropout {dropout} is not allowed; use 0 <= dropout < 1")
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes} is not allowed; use an integer >= 1")
        narrow, wide = widths
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            *conv_bn_gelu(3, narrow, 3, 1),
            *conv_bn_gelu(narrow, narrow, 3, 1),
            *conv_bn_gelu(narrow, narrow, 3, 1),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            *conv_bn_gelu(narrow, wide, 3, 1),
            *conv_bn_gelu(wide, wide, 3, 1),
            *conv_bn_gelu(wide, wide, 3, 1),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            *conv_bn_gelu(wide, wide, 3, 0),
            *conv_bn_gelu(wide, wide, 1, 0),
            *conv_bn_gelu(wide, wide, 1, 0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.classifier = nn.Linear(wide, num_classes)
        init_reference_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(images)))
