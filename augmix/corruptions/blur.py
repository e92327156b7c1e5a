"""Blur corruptions of CIFAR-10-C / ImageNet-C (make_cifar_c.py, make_imagenet_c.py).

Batched re-derivations of the reference's skimage/OpenCV/ImageMagick calls; the per-pixel
loops of glass blur and ImageMagick's motion blur become gathers over the whole batch.
"""
from __future__ import annotations

import functools
import math
import warnings

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
    to_uint8,
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
    """np.arange(start, stop, step) for floats: ceil((stop - start) / step) values start + i*step."""
    count = int(math.ceil((stop - start) / step))
    return [start + index * step for index in range(count)]


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


@functools.lru_cache(maxsize=32)
def shuffle_schedule(height: int, width: int, max_delta: int) -> tuple[Tensor, tuple[tuple[int, int], ...]]:
    """Glass blur's visits as wavefronts: (visit positions in wave order, (start, stop) per wave).

    The reference visits (h, w) for h, w from size - d down to d + 1 (row-major) and swaps the
    pixel with one at offset [-d, d) in each axis, so a visit touches only the square
    [h - d, h + d) x [w - d, w + d), and two visits can interact only if they are fewer than 2d
    rows and columns apart. Giving visit (h, w) the time (W - d - w) + 2d (H - d - h) orders every
    such pair as the reference does and makes the visits of one time pairwise disjoint, so each
    wave's swaps can run at once with the same result as the sequential loop.
    Returns positions (flat h*W + w) sorted by wave, reference visit numbers in that order.
    """
    rows = torch.arange(height - max_delta, max_delta, -1)
    cols = torch.arange(width - max_delta, max_delta, -1)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
    grid_rows, grid_cols = grid_rows.reshape(-1), grid_cols.reshape(-1)
    wave = (width - max_delta - grid_cols) + 2 * max_delta * (height - max_delta - grid_rows)
    order = torch.sort(wave, stable=True).indices
    counts = torch.bincount(wave[order]).tolist() if order.numel() else []
    bounds, start = [], 0
    for count in counts:
        if count:
            bounds.append((start, start + count))
            start += count
    return order, tuple(bounds)


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


def local_shuffle(images: Tensor, max_delta: int, iterations: int, generator: torch.Generator | None) -> Tensor:
    """Glass blur's local pixel shuffle, exactly the reference's sequential swaps, run in wavefronts.

    Each visit (h, w) draws dx, dy uniform in [-d, d) (np.random.randint(-d, d, size=2)) and
    swaps pixel (h, w) with (h + dy, w + dx); per iteration the draws come as one [B, visits, 2]
    tensor in the reference's visit order. See shuffle_schedule for why waves are exact.
    Thousands of waves make the per-wave cost the whole cost, so each wave is one gather and
    one scatter of packed pixels, on index views split off once per iteration.
    """
    batch, channels, height, width = images.shape
    order, bounds = shuffle_schedule(height, width, max_delta)
    if not bounds or batch == 0:
        return images.clone()
    order = order.to(images.device)
    rows = torch.arange(height - max_delta, max_delta, -1, device=images.device)
    cols = torch.arange(width - max_delta, max_delta, -1, device=images.device)
    positions = (rows.reshape(-1, 1) * width + cols.reshape(1, -1)).reshape(-1)[order]
    pixels = pack_pixels(images)
    sizes = [2 * (stop - start) for start, stop in bounds]
    sources = torch.empty(batch, order.numel(), 2, dtype=torch.int64, device=images.device)
    destinations = torch.empty_like(sources)
    sources[..., 0] = positions
    destinations[..., 1] = positions
    for _ in range(iterations):
        draws = randint((batch, order.numel(), 2), -max_delta, max_delta, generator, images.device, torch.int32)
        offsets = (draws[..., 1] * width).add_(draws[..., 0]).index_select(1, order).add_(positions)
        sources[..., 1] = offsets
        destinations[..., 0] = offsets
        waves = zip(sources.reshape(batch, -1).split(sizes, dim=1), destinations.reshape(batch, -1).split(sizes, dim=1))
        for source, destination in waves:
            pixels.scatter_(1, destination, pixels.gather(1, source))
    return unpack_pixels(pixels, channels, height, width)


def defocus_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """cv2.filter2D with the anti-aliased disk (reflect-101 border)."""
    severity, preset = check_inputs(images, severity, preset)
    radius, alias_blur = severity_constant(DEFOCUS_BLUR, severity, preset)
    kernel = disk_kernel(radius, alias_blur).to(images.device)
    return to_uint8(filter2d(to_float(images), kernel, "mirror"))


def glass_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Gaussian blur, uint8, local pixel shuffle, gaussian blur again."""
    severity, preset = check_inputs(images, severity, preset)
    sigma, max_delta, iterations = severity_constant(GLASS_BLUR, severity, preset)
    blurred = to_uint8(gaussian_filter(to_float(images), sigma))
    shuffled = local_shuffle(blurred, max_delta, iterations, generator)
    return to_uint8(gaussian_filter(to_float(shuffled), sigma))


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
    return to_uint8(zoom_blur_sum(planes, factors).reshape(images.shape))


def gaussian_blur(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """skimage.filters.gaussian (mode "nearest", truncate 4)."""
    severity, preset = check_inputs(images, severity, preset)
    sigma = severity_constant(GAUSSIAN_BLUR_SIGMA, severity, preset)
    return to_uint8(gaussian_filter(to_float(images), sigma))
