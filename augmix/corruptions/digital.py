"""Digital corruptions of CIFAR-10-C / ImageNet-C (make_cifar_c.py, make_imagenet_c.py).

The HSV ones (brightness, saturate) use closed forms of skimage's rgb2hsv -> edit -> hsv2rgb:
with hue fixed, every channel is v * (1 - s * k) where k depends on hue only, so editing v or s
rescales the channels without computing the hue.
"""
from __future__ import annotations

import torch
from torch import Tensor

from augmix.corruptions._common import (
    check_inputs,
    filter_columns,
    filter_rows,
    hsv_value_shift,
    pil_box_resize,
    sample_bilinear,
    severity_constant,
    smoothing_matrix,
    to_float,
    to_uint8_truncated,
    uniform,
)

# Value added to HSV value.
BRIGHTNESS = {
    "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
    "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
}
# Factor on the deviation from each channel's mean.
CONTRAST = {
    "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
    "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
}
# HSV saturation s' = clip(s * scale + shift, 0, 1): (scale, shift).
SATURATE = {
    "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}
# PIL JPEG quality.
JPEG_QUALITY = {
    "cifar": (80, 65, 58, 50, 40),
    "imagenet": (25, 18, 15, 10, 7),
}
# Fraction of the side kept when downsampling with PIL BOX.
PIXELATE = {
    "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
    "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
}
# (elastic displacement scale alpha, its smoothing sigma, affine corner jitter), pixels.
# The ImageNet row keeps the reference's 244 (a typo for 224 that defines ImageNet-C).
ELASTIC_TRANSFORM = {
    "cifar": tuple((32 * a, 32 * s, 32 * j) for a, s, j in (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
    "imagenet": tuple((244 * a, 244 * s, 244 * j) for a, s, j in (
        (2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))),
}
ELASTIC_SMOOTHING_TRUNCATE = 3.0
# cv2.warpAffine resolves source coordinates to 1/32 pixel (INTER_BITS = 5).
OPENCV_SUBPIXEL_STEPS = 32.0


def brightness(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """HSV value + c, clipped: channels scale by v'/v (black becomes gray v')."""
    severity, preset = check_inputs(images, severity, preset)
    shift = severity_constant(BRIGHTNESS, severity, preset)
    return to_uint8_truncated(hsv_value_shift(to_float(images).to(torch.float64), shift))


def saturate(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """HSV saturation * scale + shift, clipped; gray pixels get hue 0 (red) as in skimage."""
    severity, preset = check_inputs(images, severity, preset)
    scale, shift = severity_constant(SATURATE, severity, preset)
    x = to_float(images).to(torch.float64)
    value = x.amax(dim=1, keepdim=True)
    delta = value - x.amin(dim=1, keepdim=True)
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    new_saturation = (saturation * scale + shift).clamp(0.0, 1.0)
    gray_hue_weights = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    hue_weights = torch.where(delta > 0, (value - x) / delta.clamp_min(1e-12), gray_hue_weights)
    return to_uint8_truncated(value * (1.0 - new_saturation * hue_weights))


def contrast(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """(x - mean) * c + mean with one mean per image and channel."""
    severity, preset = check_inputs(images, severity, preset)
    factor = severity_constant(CONTRAST, severity, preset)
    x = to_float(images).to(torch.float64)
    means = x.mean(dim=(2, 3), keepdim=True)
    return to_uint8_truncated((x - means) * factor + means)


def pixelate(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """PIL BOX resize to int(side * c), then BOX resize back."""
    severity, preset = check_inputs(images, severity, preset)
    keep = severity_constant(PIXELATE, severity, preset)
    height, width = images.shape[-2:]
    small = pil_box_resize(images, int(height * keep), int(width * keep))
    return pil_box_resize(small, height, width)


def jpeg_compression(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """libjpeg encode at the reference quality and decode (CPU libjpeg on any device).

    CUDA tensors round-trip through the CPU codec so that both devices give the same bytes.
    """
    severity, preset = check_inputs(images, severity, preset)
    quality = severity_constant(JPEG_QUALITY, severity, preset)
    if images.shape[0] == 0:
        return images.clone()
    # imported here: torchvision pulls in torch._dynamo (~2 s of CPU) that no other corruption needs
    from torchvision.io import decode_jpeg, encode_jpeg

    cpu_images = images.cpu()
    encoded = encode_jpeg(list(cpu_images.unbind(0)), quality=quality)
    decoded = decode_jpeg(encoded)
    return torch.stack(decoded).to(images.device)


def _affine_source_map(batch: int, height: int, width: int, jitter: float,
                       generator: torch.Generator | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Source coordinates (ys, xs) [B,H,W] of cv2.warpAffine for the reference's random affine.

    Three points around the centre (the reference's center_square +- square_size, in OpenCV
    (x, y) order) each move by U(-jitter, jitter); the warp maps the moved points back.
    """
    center = torch.tensor([height // 2, width // 2], dtype=torch.float64, device=device)
    size = min(height, width) // 3
    corners = torch.tensor([[size, size], [size, -size], [-size, -size]], dtype=torch.float64, device=device)
    anchors = (center + corners).expand(batch, 3, 2)
    moved = anchors + uniform((batch, 3, 2), -jitter, jitter, generator, device).to(torch.float64)
    homogeneous = torch.cat([moved, torch.ones(batch, 3, 1, dtype=torch.float64, device=device)], dim=2)
    inverse = torch.linalg.solve(homogeneous, anchors)  # [B,3,2]: dst (x, y, 1) -> src (x, y)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=device),
                            torch.arange(width, dtype=torch.float64, device=device), indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    source = (grid @ inverse).reshape(batch, height, width, 2)
    source = torch.round(source * OPENCV_SUBPIXEL_STEPS) / OPENCV_SUBPIXEL_STEPS
    return source[..., 1].to(torch.float32), source[..., 0].to(torch.float32)


def elastic_transform(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Random affine (reflect-101 border), then gaussian-smoothed random displacements (reflect).

    Where the reference's warp is exactly the identity (no jitter; alpha 0, as at CIFAR
    severity 1) the sampling is skipped: it would only add grid_sample's float32 rounding.
    """
    severity, preset = check_inputs(images, severity, preset)
    alpha, sigma, jitter = severity_constant(ELASTIC_TRANSFORM, severity, preset)
    batch, _, height, width = images.shape
    device = images.device
    x = to_float(images)
    affine_ys, affine_xs = _affine_source_map(batch, height, width, jitter, generator, device)
    if jitter != 0:
        x = sample_bilinear(x, affine_ys, affine_xs, "mirror")
    if alpha == 0:
        return to_uint8_truncated(x)
    noise = uniform((2, batch, height, width), -1.0, 1.0, generator, device)
    if sigma > 0:
        rows = smoothing_matrix(height, sigma, "reflect", ELASTIC_SMOOTHING_TRUNCATE, device=device)
        cols = smoothing_matrix(width, sigma, "reflect", ELASTIC_SMOOTHING_TRUNCATE, device=device)
        noise = filter_columns(filter_rows(noise, rows), cols)
    shift_x, shift_y = noise[0] * alpha, noise[1] * alpha
    ys = torch.arange(height, dtype=torch.float32, device=device).reshape(1, -1, 1) + shift_y
    xs = torch.arange(width, dtype=torch.float32, device=device).reshape(1, 1, -1) + shift_x
    return to_uint8_truncated(sample_bilinear(x, ys, xs, "reflect"))
