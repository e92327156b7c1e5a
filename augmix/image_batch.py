"""The image batch every op, AugMix, corruption and perturbation takes, and the three ways back to uint8.

One check means one error message for the same mistake wherever it is made. The conversions
differ on purpose and are named by what they do, since a kernel is bit-exact against its
reference only with the one that reference uses:
- to_uint8_rounded: nearest level (PIL resampling, ImageMagick, libjpeg; the augmentation actors'
  views, where rounding halves the error);
- to_uint8_truncated: np.uint8(np.clip(x, 0, 1) * 255) of a float64 reference emulated in float32,
  with a little slack so that float32's x/255*255 landing a hair below an integer keeps its level;
- to_uint8_truncated_no_slack: the plain truncating cast, for kernels whose reference itself
  truncates float32 values (the -P sequences).
"""
from __future__ import annotations

import torch
from torch import Tensor

ALLOWED = "torch.uint8 [B,3,H,W]"
# float32 x/255*255 can land a hair below an integer; truncating that would lose a gray level
# the float64 reference keeps, so truncation gets this much slack.
TRUNCATION_SLACK = 1e-4


def check_image_batch(images: object, *, empty_batch: bool = True, empty_images: bool = True) -> None:
    """Raise a one-line ValueError naming what was given unless images is a uint8 tensor [B,3,H,W].

    empty_batch / empty_images: whether B = 0 / H or W = 0 are allowed (kernels that index into
    the batch or the pixels reject them here rather than fail obscurely later)."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}; allowed: {ALLOWED}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images dtype {images.dtype} is not allowed; allowed: {ALLOWED}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images shape {tuple(images.shape)} is not allowed; allowed: {ALLOWED}")
    if (not empty_batch and images.shape[0] == 0) or (not empty_images and 0 in images.shape[2:]):
        raise ValueError(f"images have shape {tuple(images.shape)}; allowed: non-empty {ALLOWED}")


def to_uint8_rounded(images: Tensor) -> Tensor:
    """float in [0, 1] (clipped here) -> uint8, rounded to the nearest level."""
    return (images.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def to_uint8_truncated(images: Tensor) -> Tensor:
    """float in [0, 1] (clipped here) -> uint8 by truncation, as ``np.uint8(np.clip(x, 0, 1) * 255)``
    on the float64 values the float32 ones stand for (TRUNCATION_SLACK)."""
    return (images.clamp(0.0, 1.0) * 255.0 + TRUNCATION_SLACK).floor_().to(torch.uint8)


def to_uint8_truncated_no_slack(images: Tensor) -> Tensor:
    """float in [0, 1] (clipped here) -> uint8 by the plain truncating cast (np.uint8(x * 255), ToPILImage)."""
    return (images.clamp(0, 1) * 255.0).to(torch.uint8)
