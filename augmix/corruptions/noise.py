"""Noise corruptions of CIFAR-10-C / ImageNet-C (make_cifar_c.py, make_imagenet_c.py).

All four add independent noise per pixel and channel, so each is one batched draw.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from augmix.corruptions._common import (
    TRUNCATION_SLACK,
    check_inputs,
    rand,
    randn,
    severity_constant,
    to_float,
    to_uint8_truncated,
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


# Guide-table bins per input level for shot noise's inverse-CDF sampling.
SHOT_NOISE_GUIDE_BINS = 1024


@functools.lru_cache(maxsize=32)
def shot_noise_table(photons: int, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse-CDF tables of shot noise's uint8 output for each of the 256 uint8 input levels.

    Input v has rate v/255*c, and count k lands on output level trunc(clip(k/c, 0, 1)*255), so
    the output is a discrete law over at most 256 levels per input level: sampling it from one
    uniform is exact in distribution and several times cheaper than torch.poisson.
    Returns, over the M reachable output levels (flat index v*M + slot):
    cdf float32 [256*M] (each row's last entry above 1); guide int32 [256*bins]: for uniform
    bin j of row v, the flat index of the first slot whose cdf exceeds j/bins, stored as
    -(index + 1) when the bin holds more than one cdf step; levels uint8 [256*M].
    """
    counts = torch.arange(photons, dtype=torch.float64)
    rates = (torch.arange(256, dtype=torch.float64) / 255.0 * photons).reshape(-1, 1)
    pmf = torch.exp(torch.xlogy(counts, rates) - rates - torch.lgamma(counts + 1))  # [256, c]
    # the kernel's own float32 truncation of k / c; every count >= c saturates to 255
    count_levels = ((counts.to(torch.float32) / float(photons)).clamp(0.0, 1.0) * 255.0
                    + TRUNCATION_SLACK).floor().long()
    levels, slot = torch.unique(torch.cat([count_levels, torch.tensor([255])]), return_inverse=True)
    width = levels.numel()
    probability = torch.zeros(256, width, dtype=torch.float64)
    probability.index_add_(1, slot[:-1], pmf)
    probability[:, -1] += (1.0 - pmf.sum(dim=1)).clamp(min=0.0)
    cdf = probability.cumsum(dim=1).to(torch.float32)
    cdf[:, -1] = 2.0  # every uniform in [0, 1) stops at the last level at the latest
    bins = SHOT_NOISE_GUIDE_BINS
    edges = (torch.arange(bins + 1, dtype=torch.float32) / bins).expand(256, bins + 1).contiguous()
    first = torch.searchsorted(cdf, edges, right=True)  # [256, bins + 1]
    flat = first[:, :-1] + torch.arange(256).reshape(-1, 1) * width
    guide = torch.where(first[:, 1:] - first[:, :-1] > 1, -flat - 1, flat).to(torch.int32).reshape(-1)
    return (cdf.reshape(-1).to(device), guide.to(device),
            levels.to(torch.uint8).repeat(256).to(device))


def shot_noise_levels(images: Tensor, photons: int, generator: torch.Generator | None) -> Tensor:
    """uint8 trunc(clip(Poisson(x*c)/c, 0, 1)*255) for uint8 images, by guide-table inverse CDF.

    The uniform's guide bin brackets the answer between two adjacent slots, so one comparison
    settles it, unless the bin holds several cdf steps (a few per thousand draws), where a
    searchsorted over that input level's row does.
    """
    cdf, guide, levels = shot_noise_table(photons, str(images.device))
    bins = SHOT_NOISE_GUIDE_BINS
    width = cdf.numel() // 256
    inputs = images.reshape(-1).to(torch.int32)
    uniforms = rand(inputs.shape, generator, images.device)
    entries = guide.index_select(0, (uniforms * bins).to(torch.int32).add_(inputs * bins))
    wide = (entries < 0).nonzero().squeeze(1)
    first = entries.clamp_(min=0)
    slots = first.add_(cdf.index_select(0, first) <= uniforms)
    if wide.numel():
        rows = cdf.reshape(256, width).index_select(0, inputs[wide])
        found = torch.searchsorted(rows, uniforms[wide].unsqueeze(1), right=True).squeeze(1)
        slots[wide] = (found + inputs[wide] * width).to(slots.dtype)
    return levels.index_select(0, slots).reshape(images.shape)


def gaussian_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """x + N(0, c), clipped."""
    severity, preset = check_inputs(images, severity, preset)
    std = severity_constant(GAUSSIAN_NOISE_STD, severity, preset)
    x = to_float(images)
    return to_uint8_truncated(x + randn(x.shape, generator, x.device) * std)


def shot_noise(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Poisson(x * c) / c, clipped, sampled per input level from its exact output law."""
    severity, preset = check_inputs(images, severity, preset)
    photons = int(severity_constant(SHOT_NOISE_PHOTONS, severity, preset))
    return shot_noise_levels(images, photons, generator)


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
    return to_uint8_truncated(x + x * randn(x.shape, generator, x.device) * std)
