"""The CIFAR-10-C / ImageNet-C corruption suite (Hendrycks & Dietterich, ICLR 2019) in batched torch.

``corrupt(images, name, severity, preset, generator)`` maps uint8 [B,3,H,W] to uint8 [B,3,H,W].
Preset "cifar" uses make_cifar_c.py's constants, "imagenet" make_imagenet_c.py's. The 15
corruptions of ``CORRUPTIONS`` are the benchmark; ``EXTRA_CORRUPTIONS`` are the validation set
used for model selection, never for testing.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from augmix.corruptions._common import PRESETS, SEVERITIES, check_image_batch, check_preset, check_severity
from augmix.corruptions.blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from augmix.corruptions.digital import (
    brightness,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
    saturate,
)
from augmix.corruptions.noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from augmix.corruptions.weather import fog, frost, snow, spatter

Kernel = Callable[[Tensor, int, str, "torch.Generator | None"], Tensor]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS

CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "spatter"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}

KERNELS: dict[str, Kernel] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "spatter": spatter,
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def corrupt(images: Tensor, name: str, severity: int, preset: str = "cifar",
            generator: torch.Generator | None = None) -> Tensor:
    """Apply corruption `name` at `severity` (1..5) to uint8 [B,3,H,W]; returns uint8 [B,3,H,W].

    Random corruptions draw from `generator` (on its device) when given, so a fixed seed
    reproduces the output, on CPU and CUDA alike.
    """
    if name not in KERNELS:
        raise ValueError(f"corruption {name!r} is not allowed; allowed: {list(ALL_CORRUPTIONS)}")
    check_severity(severity)
    check_preset(preset)
    check_image_batch(images)
    return KERNELS[name](images, severity, preset, generator)


__all__ = [
    "ALL_CORRUPTIONS", "CORRUPTIONS", "CORRUPTION_FAMILIES", "EXTRA_CORRUPTIONS", "KERNELS", "PRESETS",
    "SEVERITIES", "corrupt",
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
    "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
]
