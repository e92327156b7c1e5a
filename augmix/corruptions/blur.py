"""Blur corruptions of CIFAR-10-C / ImageNet-C (make_cifar_c.py, make_imagenet_c.py).

Batched re-derivations of the reference's skimage/OpenCV/ImageMagick calls; the per-pixel
loops of glass blur and ImageMagick's motion blur become gathers over the whole batch.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Sequence

import torch
from torch import Tensor

from augmix.corruptions._common import (
    check_inputs,
    filter2d,
    gaussian_blur as gaussian_filter,
    motion_blur_filter,
    opencv_gaussian_kernel1d,
    randint,
    scipy_zoom_coordinates,
    separable_filter,
    severity_constant,
    to_float,
    to_uint8_truncated,
    to_uint8_rounded,
    uniform,
)

# (disk radius, anti-alias gaussian sigma)
DEFOCUS_BLUR = {
    "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
}
# (gaussian sigma, max pixel displacement, shuffle iterations)
GLASS_BLUR = {
    "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
}
# ImageMagick motion_blur (radius, sigma); the angle is uniform in [-45, 45) degrees per image.
MOTION_BLUR = {
    "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
}
MOTION_BLUR_ANGLE_RANGE = (-45.0, 45.0)
# Zoom factors as np.arange(start, stop, step).
ZOOM_BLUR = {
    "cifar": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "imagenet": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
}
ZOOM_MATMUL_MAX_PIXELS = 96 * 96
# Floats per chunk of zoom blur's dense intermediate: 512 KiB stays in the allocator's reuse range.
ZOOM_CHUNK_FLOATS = 128 * 1024
# skimage.filters.gaussian sigma.
GAUSSIAN_BLUR_SIGMA = {
    "cifar": (0.4, 0.6, 0.7, 0.8, 1.0),
    "imagenet": (1, 2, 3, 4, 6),
}


def arange_values(start: float, stop: float, step: float) -> list[float]:
    """np.arange(start, stop, step) for floats, to the last bit: ceil((stop - start) / step) values.

    NumPy fills start + i * delta with delta = (start + step) - start, not step: for (1, 1.26,
    0.01) that gives 1.2500000000000002, which scipy's zoom sizes as 33 pixels where 1.25 gives 32,
    so the bits decide the image.
    """
    count = int(math.ceil((stop - start) / step))
    delta = (start + step) - start
    return [start + index * delta for index in range(count)]


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's disk(): an aliased disk normalised to 1, smoothed by cv2.GaussianBlur.

    The grid is 17x17 for radius <= 8 (3x3 anti-alias blur), else (2r+1)^2 with a 5x5 blur;
    OpenCV's default border (reflect-101) applies to the smoothing.
    """
    if radius <= 8:
        half, blur_size = 8, 3
    else:
        half, blur_size = int(radius), 5
    axis = torch.arange(-half, half + 1, dtype=torch.float64)
    inside = (axis.reshape(-1, 1) ** 2 + axis.reshape(1, -1) ** 2) <= radius ** 2
    aliased = inside.to(torch.float32)
    aliased = aliased / aliased.sum()
    smoothing = opencv_gaussian_kernel1d(blur_size, alias_blur, dtype=torch.float32)
    kernel = separable_filter(aliased.reshape(1, 1, *aliased.shape), smoothing, smoothing, "mirror")[0, 0]
    return trim_zero_border(kernel)


def trim_zero_border(kernel: Tensor) -> Tensor:
    """Drop all-zero outer rings of a centred odd kernel: zero taps add nothing, but cost.

    CIFAR's disks (radius <= 1.5 on a 17x17 grid) shrink to 3x3..7x7 and leave the FFT path.
    """
    radius = max(kernel.shape) // 2
    nonzero = kernel.ne(0).nonzero()
    if nonzero.numel() == 0:
        return kernel
    centre = torch.tensor([kernel.shape[0] // 2, kernel.shape[1] // 2])
    keep = int((nonzero - centre).abs().max())
    keep = min(keep, radius)
    cy, cx = int(centre[0]), int(centre[1])
    return kernel[cy - keep:cy + keep + 1, cx - keep:cx + keep + 1].contiguous()


def shuffle_visits(height: int, width: int, max_delta: int, device: torch.device) -> Tensor:
    """Flat positions (h*W + w) that glass blur visits, in the reference's order.

    The reference loops h, then w, from size - d down to d + 1: a (H - 2d) x (W - 2d) rectangle
    in descending flat position, so visit i of (h, w) is (H - d - h) * (W - 2d) + (W - d - w).
    """
    rows = torch.arange(height - max_delta, max_delta, -1, device=device)
    cols = torch.arange(width - max_delta, max_delta, -1, device=device)
    return (rows.reshape(-1, 1) * width + cols.reshape(1, -1)).reshape(-1)


def offset_codes(draws: Tensor, max_delta: int) -> Tensor:
    """(dx, dy) draws int [..., 2] -> one code per visit, (dy + d) * 2d + (dx + d), int32."""
    span = 2 * max_delta
    return ((draws[..., 1] + max_delta) * span + draws[..., 0] + max_delta).to(torch.int32)


def code_steps(width: int, max_delta: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per offset code: (step in flat pixel position, step back in visit number), int64 [4d^2] each."""
    deltas = torch.arange(-max_delta, max_delta, device=device)
    dy, dx = deltas.repeat_interleave(2 * max_delta), deltas.repeat(2 * max_delta)
    return dy * width + dx, dy * (width - 2 * max_delta) + dx


def copy_sources(codes: Tensor, height: int, width: int, max_delta: int) -> Tensor:
    """Flat source position of every visit's pixel after one pass of the reference's "swap".

    codes: int32 [B, visits] (offset_codes), in the reference's visit order; returns int64
    [B, visits]. ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on a NumPy array assigns views, so
    it copies (h', w') into (h, w) and leaves (h', w') as it was. A pixel changes only at its
    own visit, so visit i takes the original value of its source unless that source was
    visited earlier (dy > 0, or dy = 0 and dx > 0, inside the rectangle), in which case it
    takes what that visit took: chains towards earlier visits (none when d = 1). Pointer
    jumping resolves every chain of the batch at once in log2(longest chain) rounds (4-5 on
    224x224), each over the links whose target is not yet a chain's root.
    """
    batch, visits = codes.shape
    device = codes.device
    positions = shuffle_visits(height, width, max_delta, device)
    pixel_step, visit_step = code_steps(width, max_delta, device)
    flat_codes = codes.reshape(-1)
    sources = pixel_step.index_select(0, flat_codes).reshape(batch, visits).add_(positions).reshape(-1)
    inside = torch.zeros(height * width, dtype=torch.bool, device=device)
    inside[positions] = True
    linked = (visit_step > 0).index_select(0, flat_codes) & inside.index_select(0, sources)
    chained = linked.nonzero().reshape(-1)
    if chained.numel() == 0:
        return sources.reshape(batch, visits)
    targets = chained - visit_step.index_select(0, flat_codes.index_select(0, chained))
    link = torch.arange(batch * visits, device=device).index_copy_(0, chained, targets)
    active = chained
    while True:  # every round doubles the resolved length of each chain
        unresolved = linked.index_select(0, targets).nonzero().reshape(-1)  # target not a root yet
        if unresolved.numel() == 0:
            break
        active = active.index_select(0, unresolved)
        targets = link.index_select(0, targets.index_select(0, unresolved))
        link.index_copy_(0, active, targets)
    roots = link.index_select(0, chained)  # roots are never rewritten: reading them in place is safe
    return sources.index_copy_(0, chained, sources.index_select(0, roots)).reshape(batch, visits)


def local_shuffle(images: Tensor, max_delta: int, iterations: int, generator: torch.Generator | None) -> Tensor:
    """Glass blur's local pixel shuffle with the reference's copy semantics (see copy_sources).

    The reference draws (dx, dy) = np.random.randint(-d, d, size=2) per visit; one uniform code
    of the 4d^2 pairs per visit (offset_codes) is the same distribution at half the draws.
    """
    batch, _, height, width = images.shape
    visits = shuffle_visits(height, width, max_delta, torch.device("cpu")).numel()
    codes = [randint((batch, visits), 0, 4 * max_delta ** 2, generator, images.device, torch.int32)
             for _ in range(iterations)]
    return shuffle_with_codes(images, codes, max_delta)


def shuffle_with_codes(images: Tensor, codes: Sequence[Tensor], max_delta: int) -> Tensor:
    """local_shuffle with given draws: one offset_codes tensor [B, visits] per iteration.

    Each iteration reads the previous one's output, so pixels move once per iteration: one
    gather of packed pixels into the visited positions.
    """
    batch, channels, height, width = images.shape
    if batch == 0 or not codes or codes[0].shape[1] == 0:
        return images.clone()
    positions = shuffle_visits(height, width, max_delta, images.device)
    pixels = pack_pixels(images)
    for iteration_codes in codes:
        sources = copy_sources(iteration_codes.to(images.device), height, width, max_delta)
        pixels.index_copy_(1, positions, pixels.gather(1, sources))
    return unpack_pixels(pixels, channels, height, width)


def pack_pixels(images: Tensor) -> Tensor:
    """uint8 [B,C,H,W] (C <= 8) -> one word per pixel [B, H*W]: the channel bytes side by side.

    A view of a channels-last byte copy, so packing and unpacking (unpack_pixels) are copies,
    not shifts; int32 when C <= 4, else int64.
    """
    batch, channels, height, width = images.shape
    if channels > 8:
        raise ValueError(f"channels {channels} is not allowed; allowed: 1..8")
    word = 4 if channels <= 4 else 8
    packed = torch.zeros(batch, height * width, word, dtype=torch.uint8, device=images.device)
    packed[..., :channels] = images.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    return packed.view(torch.int32 if word == 4 else torch.int64).reshape(batch, height * width)


def unpack_pixels(pixels: Tensor, channels: int, height: int, width: int) -> Tensor:
    """Inverse of pack_pixels: words [B, H*W] -> uint8 [B,C,H,W]."""
    batch = pixels.shape[0]
    data = pixels.contiguous().view(torch.uint8).reshape(batch, height, width, -1)
    return data[..., :channels].permute(0, 3, 1, 2).contiguous()


def defocus_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """cv2.filter2D with the anti-aliased disk (reflect-101 border)."""
    severity, preset = check_inputs(images, severity, preset)
    radius, alias_blur = severity_constant(DEFOCUS_BLUR, severity, preset)
    kernel = disk_kernel(radius, alias_blur).to(images.device)
    return to_uint8_truncated(filter2d(to_float(images), kernel, "mirror"))


def glass_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Gaussian blur, uint8, local pixel shuffle, gaussian blur again."""
    severity, preset = check_inputs(images, severity, preset)
    sigma, max_delta, iterations = severity_constant(GLASS_BLUR, severity, preset)
    blurred = to_uint8_truncated(gaussian_filter(to_float(images), sigma))
    shuffled = local_shuffle(blurred, max_delta, iterations, generator)
    return to_uint8_truncated(gaussian_filter(to_float(shuffled), sigma))


def motion_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """ImageMagick motion blur along a random angle per image, rounded like its 8-bit PNG output."""
    severity, preset = check_inputs(images, severity, preset)
    radius, sigma = severity_constant(MOTION_BLUR, severity, preset)
    angles = uniform((images.shape[0],), *MOTION_BLUR_ANGLE_RANGE, generator, images.device)
    return to_uint8_rounded(motion_blur_filter(to_float(images), radius, sigma, angles))


def zoom_matrices(length: int, factors: tuple[float, ...], device: torch.device) -> Tensor:
    """Linear-interpolation matrices [Z, length, length] of clipped_zoom along one axis per factor."""
    matrices = torch.zeros(len(factors), length, length, dtype=torch.float64)
    outputs = torch.arange(length)
    for index, factor in enumerate(factors):
        coords = scipy_zoom_coordinates(length, factor)
        low = coords.floor().long().clamp(0, length - 1)
        high = (low + 1).clamp(max=length - 1)
        frac = coords - low
        matrices[index].index_put_((outputs, low), 1 - frac, accumulate=True)
        matrices[index].index_put_((outputs, high), frac, accumulate=True)
    return matrices.to(device=device, dtype=torch.float32)


@functools.lru_cache(maxsize=64)
def zoom_blur_operators(height: int, width: int, factors: tuple[float, ...], device: str,
                        sparse: bool) -> tuple[Tensor, Tensor]:
    """The row and column halves of zoom blur's sum, identity (the clean image) included.

    zoom_blur(x) = sum_z R_z x C_z^T / (Z + 1) with R_0, C_0 the identity. Returns
    rows [(h', z), h] = R_z[h', h] / (Z + 1) and columns [w', (z, w)] = C_z[w', w]: the first
    product gives every row zoom of x side by side, the second contracts over (z, w) at once.
    Sparse (CSR, two entries a row) for the large-image CPU path, dense otherwise.
    """
    count = len(factors) + 1
    rows = torch.cat([torch.eye(height).unsqueeze(0), zoom_matrices(height, factors, torch.device("cpu"))])
    cols = torch.cat([torch.eye(width).unsqueeze(0), zoom_matrices(width, factors, torch.device("cpu"))])
    rows = (rows / count).permute(1, 0, 2).reshape(height * count, height)
    cols = cols.permute(1, 0, 2).reshape(width, count * width)
    if sparse:
        with warnings.catch_warnings():  # torch flags CSR support as beta; the kernels used here are stable
            warnings.simplefilter("ignore", UserWarning)
            return rows.to_sparse_csr().to(device), cols.to_sparse_csr().to(device)
    return rows.to(device), cols.to(device)


def zoom_blur_sum(planes: Tensor, factors: tuple[float, ...]) -> Tensor:
    """(x + sum_z clipped_zoom(x, z)) / (Z + 1) of float planes [N, H, W] as two products per plane set.

    Small planes: dense products over chunks of planes. Large planes on CPU: per plane, a sparse
    row product into a reused buffer, its transpose, and a sparse column product. Reused buffers
    matter: a fresh multi-megabyte tensor costs more in page faults than the arithmetic in it.
    """
    count, height, width = planes.shape
    zooms = len(factors) + 1
    sparse = planes.device.type == "cpu" and height * width > ZOOM_MATMUL_MAX_PIXELS
    rows, cols = zoom_blur_operators(height, width, factors, str(planes.device), sparse)
    out = torch.empty_like(planes)
    if not sparse:
        chunk = max(1, ZOOM_CHUNK_FLOATS // (zooms * height * width))
        for first in range(0, count, chunk):
            part = planes[first:first + chunk]
            zoomed_rows = (rows @ part).reshape(part.shape[0], height, zooms * width)
            torch.matmul(zoomed_rows, cols.T, out=out[first:first + chunk])
        return out
    side_by_side = torch.empty(height * zooms, width, dtype=planes.dtype)
    stacked = torch.empty(zooms * width, height, dtype=planes.dtype)
    transposed = torch.empty(width, height, dtype=planes.dtype)
    for index in range(count):  # sparse kernels take one plane; buffers stay hot across planes
        torch.addmm(side_by_side, rows, planes[index], beta=0, out=side_by_side)
        stacked.copy_(side_by_side.view(height, zooms * width).T)
        torch.addmm(transposed, cols, stacked, beta=0, out=transposed)
        out[index] = transposed.T
    return out


def zoom_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Mean of the image and its centre zooms (scipy zoom, order 1) over the factor range.

    Each zoom is rows_z @ x @ cols_z^T, so the whole mean is two matrix products (see
    zoom_blur_sum) instead of one interpolation per factor.
    """
    severity, preset = check_inputs(images, severity, preset)
    factors = tuple(arange_values(*severity_constant(ZOOM_BLUR, severity, preset)))
    batch, channels, height, width = images.shape
    planes = to_float(images).reshape(batch * channels, height, width)
    return to_uint8_truncated(zoom_blur_sum(planes, factors).reshape(images.shape))


def gaussian_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """skimage.filters.gaussian (mode "nearest", truncate 4)."""
    severity, preset = check_inputs(images, severity, preset)
    sigma = severity_constant(GAUSSIAN_BLUR_SIGMA, severity, preset)
    return to_uint8_truncated(gaussian_filter(to_float(images), sigma))
