"""torchvision's ResNets with in-model normalisation (imported only when a ResNet is built)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from augmix.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}


class TorchvisionResNet(tv_resnet.ResNet):
    """torchvision's ResNet (weights=None) with in-model normalisation and an optional CIFAR stem.

    Subclassing keeps torchvision's parameter names, so its pretrained state dicts load with
    strict=False (only `normalize.*` is extra). `cifar_stem` swaps the 7x7/2 conv + max-pool for a
    3x3/1 conv and no pooling, the usual change for 32x32 inputs.
    """

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth {depth} is not allowed; use one of {sorted(RESNET_LAYOUTS)}")
        if num_classes < 1:
            raise ValueError(f"num_classes {num_classes} is not allowed; use an integer >= 1")
        block, layers = RESNET_LAYOUTS[depth]
        super().__init__(block, layers, num_classes=num_classes, zero_init_residual=zero_init_residual)
        self.normalize = Normalize(mean, std)
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(images))
