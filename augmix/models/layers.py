"""Pieces every model shares: input normalisation inside the model, and the reference weight init.

Normalisation lives in the model (its first module) so that every caller, training or evaluation,
local or on a Ray worker, feeds the same thing: float images in [0, 1]. The statistics are buffers,
so they travel with checkpoints and follow `.to(device)`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The AugMix CIFAR recipe normalises with 0.5/0.5 (maps [0, 1] to [-1, 1]).
CIFAR_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
CIFAR_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
# torchvision's ImageNet statistics, used by the reference ImageNet script.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(x - mean) / std per channel, for float images in [0, 1] shaped [B, C, H, W]."""

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must be non-empty and of equal length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std {tuple(std)} must be positive")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Integer input almost always means uint8 pixels in [0, 255]: refuse rather than train on it.
        if not images.is_floating_point():
            raise ValueError(f"model input dtype {images.dtype} is not allowed; feed float images in [0, 1]")
        if images.dim() != 4 or images.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"model input shape {tuple(images.shape)} is not allowed; expected [B, {self.mean.shape[1]}, H, W]"
            )
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, " \
               f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"


def init_reference_weights(model: nn.Module, kaiming_linear: bool = False) -> None:
    """He-normal (fan-out) convs, BN to identity, zero linear bias: the reference models' init.

    N(0, sqrt(2 / (k*k*out_channels))) in the reference code is exactly kaiming_normal_ with
    mode="fan_out". The reference ResNeXt also draws its classifier weights He-normal
    (`kaiming_linear`); the others keep PyTorch's default linear weights.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if kaiming_linear:
                nn.init.kaiming_normal_(module.weight)
            nn.init.zeros_(module.bias)
