"""Noise corruptions of CIFAR-10-C / ImageNet-C (make_cifar_c.py, make_imagenet_c.py).

All four add independent noise per pixel and channel, so each is one batched draw.
"""
from __future__ import annotations

import torch
from torch import Tensor

from augmix.corruptions._common import (
    check_inputs,
    poisson,
    rand,
    randn,
    severity_constant,
    to_float,
    to_uint8,
)

# Additive normal noise std (on [0, 1] images).
GAUSSIAN_NOISE_STD = {
    "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
    "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
}
# Photon counts at full intensity: x' = Poisson(x * c) / c.
SHOT_NOISE_PHOTONS = {
    "cifar": (500, 250, 100, 75, 50),
    "imagenet": (60, 25, 12, 5, 3),
}
# Fraction of pixel values replaced by salt (1) or pepper (0), half each (skimage 's&p').
IMPULSE_NOISE_AMOUNT = {
    "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
    "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
}
# Multiplicative normal noise std: x' = x + x * N(0, c).
SPECKLE_NOISE_STD = {
    "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
    "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
}


def gaussian_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """x + N(0, c), clipped."""
    severity, preset = check_inputs(images, severity, preset)
    std = severity_constant(GAUSSIAN_NOISE_STD, severity, preset)
    x = to_float(images)
    return to_uint8(x + randn(x.shape, generator, x.device) * std)


def shot_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Poisson(x * c) / c, clipped."""
    severity, preset = check_inputs(images, severity, preset)
    photons = float(severity_constant(SHOT_NOISE_PHOTONS, severity, preset))
    x = to_float(images)
    return to_uint8(poisson(x * photons, generator) / photons)


def impulse_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """skimage random_noise(mode='s&p'): each value flips with prob c, to 1 or 0 with prob 1/2."""
    severity, preset = check_inputs(images, severity, preset)
    amount = severity_constant(IMPULSE_NOISE_AMOUNT, severity, preset)
    draws = rand((2, *images.shape), generator, images.device)
    flipped = draws[0] < amount
    salted = draws[1] < 0.5
    out = images.clone()
    out[flipped & salted] = 255
    out[flipped & ~salted] = 0
    return out


def speckle_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """x + x * N(0, c), clipped."""
    severity, preset = check_inputs(images, severity, preset)
    std = severity_constant(SPECKLE_NOISE_STD, severity, preset)
    x = to_float(images)
    return to_uint8(x + x * randn(x.shape, generator, x.device) * std)
