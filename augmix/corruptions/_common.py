"""Shared pieces of the corruption kernels: input checks, uint8<->float, random draws, filters.

Every kernel works on float32 images in [0, 1] internally (as the reference's ``x / 255.``) and
hands back uint8 the way the reference stores its datasets: ``np.uint8`` of the clipped float,
i.e. truncation, not rounding. Boundary modes use scipy.ndimage's names because the reference
mixes scipy/skimage ("nearest", "reflect") and OpenCV (BORDER_REFLECT_101 == scipy "mirror").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from augmix.image_batch import (  # noqa: F401 - re-exported for the kernels
    TRUNCATION_SLACK,
    check_image_batch,
    to_uint8_rounded,
    to_uint8_truncated,
)

PRESETS: tuple[str, ...] = ("cifar", "imagenet")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
BOUNDARY_MODES: tuple[str, ...] = ("nearest", "reflect", "mirror", "wrap")


def check_severity(severity: object) -> int:
    """Return severity as int, or raise ValueError when it is not one of 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not allowed; allowed: {list(SEVERITIES)}")
    return severity


def check_preset(preset: object) -> str:
    """Return preset, or raise ValueError when it is not "cifar" or "imagenet"."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not allowed; allowed: {list(PRESETS)}")
    return preset  # type: ignore[return-value]


def check_inputs(images: object, severity: object, preset: object) -> tuple[int, str]:
    """Validate a kernel's arguments; returns (severity, preset)."""
    check_image_batch(images)
    return check_severity(severity), check_preset(preset)


def hsv_value_shift(images: Tensor, shift: float | Tensor, channel_dim: int = 1) -> Tensor:
    """skimage rgb2hsv, V + shift clipped to [0, 1], hsv2rgb, in closed form: hue and saturation
    stay, so every channel scales by V'/V (V = the channel max); black pixels become gray V'.
    `shift` broadcasts against V (one per frame for the -P brightness sequence)."""
    value = images.amax(dim=channel_dim, keepdim=True)
    new_value = (value + shift).clamp(0.0, 1.0)
    scaled = images * (new_value / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, new_value)


def severity_constant(table: dict[str, Sequence], severity: int, preset: str):
    """The reference's ``c = [...][severity - 1]`` for the preset's table."""
    return table[preset][severity - 1]


def to_float(images: Tensor) -> Tensor:
    """uint8 [B,3,H,W] -> float32 in [0, 1] (the reference's ``np.array(x) / 255.``)."""
    return images.to(torch.float32) / 255.0


# ---------------------------------------------------------------- random draws
# Numbers are drawn on the generator's device and then moved, so one CPU generator seed gives
# the same corruption on CPU and CUDA.

def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) float32 of shape, drawn on the generator's device, returned on device."""
    return torch.rand(tuple(shape), generator=generator, device=_draw_device(generator, device)).to(device)


def uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """U[low, high) float32 (np.random.uniform)."""
    return rand(shape, generator, device) * (high - low) + low


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal float32 of shape."""
    return torch.randn(tuple(shape), generator=generator, device=_draw_device(generator, device)).to(device)


def randint(shape: Sequence[int], low: int, high: int, generator: torch.Generator | None,
            device: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """Integers in [low, high) (np.random.randint); a narrower dtype gives the same values, cheaper."""
    return torch.randint(low, high, tuple(shape), generator=generator, dtype=dtype,
                         device=_draw_device(generator, device)).to(device)


def poisson(rates: Tensor, generator: torch.Generator | None) -> Tensor:
    """Poisson counts with the given rates (np.random.poisson), on rates' device."""
    draw_device = _draw_device(generator, rates.device)
    return torch.poisson(rates.to(draw_device), generator=generator).to(rates.device)


# ---------------------------------------------------------------- boundaries and sampling

def boundary_index(length: int, pad_before: int, pad_after: int, mode: str, device: torch.device) -> Tensor:
    """Source index for each position of an axis padded by (pad_before, pad_after) in scipy mode.

    Works for pads longer than the axis (needed by large smoothing kernels on small images).
    """
    index = torch.arange(-pad_before, length + pad_after, device=device)
    return boundary_map(index, length, mode)


def boundary_map(index: Tensor, length: int, mode: str) -> Tensor:
    """Map integer coordinates outside [0, length) back inside, with scipy.ndimage's mode names."""
    if mode == "nearest":
        return index.clamp(0, length - 1)
    if mode == "wrap":
        return index.remainder(length)
    if mode == "reflect":  # d c b a | a b c d | d c b a
        period = 2 * length
        folded = index.remainder(period)
        return torch.where(folded >= length, period - 1 - folded, folded)
    if mode == "mirror":  # d c b | a b c d | c b a  (OpenCV BORDER_REFLECT_101)
        if length == 1:
            return torch.zeros_like(index)
        period = 2 * length - 2
        folded = index.remainder(period)
        return torch.where(folded >= length, period - folded, folded)
    raise ValueError(f"boundary mode {mode!r} is not allowed; allowed: {list(BOUNDARY_MODES)}")


def pad(images: Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> Tensor:
    """Pad the last two dims of [..., H, W] with a scipy boundary mode."""
    height, width = images.shape[-2:]
    rows = boundary_index(height, top, bottom, mode, images.device)
    cols = boundary_index(width, left, right, mode, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


# grid_sample's reflection padding is scipy "mirror" with align_corners=True (reflecting about
# the edge pixel centres) and scipy "reflect" with align_corners=False (about the outer edges):
# the linear interpolant of either symmetric extension is itself symmetric about that axis.
_GRID_SAMPLE_ALIGN = {"mirror": True, "reflect": False}


def sample_bilinear(images: Tensor, ys: Tensor, xs: Tensor, mode: str) -> Tensor:
    """Bilinear sampling of images [B,C,H,W] at per-sample coordinates ys, xs [B,H',W'] (pixels).

    Out-of-range neighbours are mapped with the scipy boundary mode, which is what
    ``map_coordinates(order=1, mode=...)`` and ``cv2.remap`` with a border mode do. The
    reflecting modes run in grid_sample (one fused kernel, 5x faster than four gathers; the
    normalised grid costs ~1e-5 px of float32 precision); the others gather the four taps.
    """
    batch, channels, height, width = images.shape
    if mode in _GRID_SAMPLE_ALIGN and images.dtype in (torch.float32, torch.float64):
        if _GRID_SAMPLE_ALIGN[mode]:
            grid_x = xs * (2.0 / max(width - 1, 1)) - 1.0
            grid_y = ys * (2.0 / max(height - 1, 1)) - 1.0
        else:
            grid_x = (xs * 2.0 + 1.0) / width - 1.0
            grid_y = (ys * 2.0 + 1.0) / height - 1.0
        grid = torch.stack([grid_x, grid_y], dim=-1).to(images.dtype)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=_GRID_SAMPLE_ALIGN[mode])
    y0 = ys.floor()
    x0 = xs.floor()
    wy = (ys - y0).unsqueeze(1)
    wx = (xs - x0).unsqueeze(1)
    y0 = y0.long()
    x0 = x0.long()
    rows = (boundary_map(y0, height, mode), boundary_map(y0 + 1, height, mode))
    cols = (boundary_map(x0, width, mode), boundary_map(x0 + 1, width, mode))
    flat = images.reshape(batch, channels, height * width)

    def tap(r: Tensor, c: Tensor) -> Tensor:
        count = math.prod(ys.shape[1:])
        index = (r * width + c).reshape(batch, 1, count).expand(batch, channels, count)
        return flat.gather(2, index).reshape(batch, channels, *ys.shape[1:])

    top = tap(rows[0], cols[0]) * (1 - wx) + tap(rows[0], cols[1]) * wx
    bottom = tap(rows[1], cols[0]) * (1 - wx) + tap(rows[1], cols[1]) * wx
    return top * (1 - wy) + bottom * wy


# ---------------------------------------------------------------- filters

def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    """scipy.ndimage.gaussian_filter1d's taps: radius int(truncate*sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / float(sigma)) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def opencv_gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                             device: torch.device | str = "cpu") -> Tensor:
    """cv2.getGaussianKernel(size, sigma) for sigma > 0: fixed size, normalised."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(offsets ** 2) / (2 * float(sigma) ** 2))
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def filter_matrix(length: int, kernel: Tensor, mode: str) -> Tensor:
    """Correlation with an odd 1-D kernel along an axis of `length`, boundary folded in: [length, length]."""
    radius = kernel.numel() // 2
    outputs = torch.arange(length).reshape(-1, 1)
    sources = boundary_map(outputs + torch.arange(-radius, radius + 1).reshape(1, -1), length, mode)
    matrix = torch.zeros(length * length, dtype=torch.float64)
    matrix.index_add_(0, (outputs * length + sources).reshape(-1), kernel.to(torch.float64).cpu().repeat(length))
    return matrix.reshape(length, length)


# Output rows per block of a banded filter product; filters narrower than a third of the axis
# multiply only the band each block reads (a 13-tap blur on 224 px does a fifth of the work).
FILTER_BLOCK = 32


def banded_blocks(matrix: Tensor, block: int = FILTER_BLOCK) -> list[tuple[int, int, int, int]]:
    """(row start, row stop, first column, column stop) of each row block's nonzero band."""
    length = matrix.shape[1]
    nonzero = matrix != 0
    columns = torch.arange(length).expand_as(matrix)
    first = torch.where(nonzero, columns, length).amin(dim=1)
    last = torch.where(nonzero, columns, -1).amax(dim=1)
    blocks = []
    for start in range(0, matrix.shape[0], block):
        stop = min(start + block, matrix.shape[0])
        low, high = int(first[start:stop].min()), int(last[start:stop].max()) + 1
        blocks.append((start, stop, min(low, high - 1) if high > 0 else 0, max(high, 1)))
    return blocks


def filter_rows(images: Tensor, matrix: Tensor) -> Tensor:
    """matrix @ images over the second-last dim, skipping the zeros outside a narrow band."""
    blocks = banded_blocks(matrix.cpu())
    band = max(stop - low for _, _, low, stop in blocks)
    if len(blocks) < 3 or 3 * band > matrix.shape[1]:
        return matrix @ images
    return torch.cat([matrix[r0:r1, c0:c1] @ images[..., c0:c1, :] for r0, r1, c0, c1 in blocks], dim=-2)


def filter_columns(images: Tensor, matrix: Tensor) -> Tensor:
    """images @ matrix^T over the last dim, skipping the zeros outside a narrow band."""
    blocks = banded_blocks(matrix.cpu())
    band = max(stop - low for _, _, low, stop in blocks)
    if len(blocks) < 3 or 3 * band > matrix.shape[1]:
        return images @ matrix.T
    return torch.cat([images[..., c0:c1] @ matrix[r0:r1, c0:c1].T for r0, r1, c0, c1 in blocks], dim=-1)


def separable_filter(images: Tensor, kernel_y: Tensor, kernel_x: Tensor, mode: str) -> Tensor:
    """Correlate the last two dims of [B,C,H,W] with 1-D kernels (odd length), scipy boundary mode.

    Done as rows @ x @ cols^T with the boundary folded into the matrices: GEMMs beat a
    49-tap convolution on CPU, and kernels longer than the image need no special case. On
    large images only each block's band is multiplied (filter_rows, filter_columns).
    """
    height, width = images.shape[-2:]
    rows = filter_matrix(height, kernel_y, mode).to(device=images.device, dtype=images.dtype)
    cols = filter_matrix(width, kernel_x, mode).to(device=images.device, dtype=images.dtype)
    return filter_columns(filter_rows(images, rows), cols)


def gaussian_blur(images: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over H and W of float [B,C,H,W].

    Defaults are skimage's (mode "nearest", truncate 4), which the reference's blurs use.
    """
    if sigma <= 0:
        return images
    kernel = gaussian_kernel1d(sigma, truncate, dtype=images.dtype, device=images.device)
    return separable_filter(images, kernel, kernel, mode)


def filter2d(images: Tensor, kernel: Tensor, mode: str = "mirror") -> Tensor:
    """Correlate every channel of float [B,C,H,W] with one odd-sized 2-D kernel (cv2.filter2D).

    Large kernels go through the FFT (a 21x21 disk on 224x224 is 20x cheaper that way).
    """
    batch, channels, height, width = images.shape
    if images.numel() == 0:
        return images.clone()
    kernel_h, kernel_w = kernel.shape
    radius_y, radius_x = kernel_h // 2, kernel_w // 2
    padded = pad(images, radius_y, radius_y, radius_x, radius_x, mode)
    if kernel.numel() <= 49:  # a sum of shifted views: single-channel conv2d is slower on CPU
        out = torch.zeros_like(images)
        for (tap_y, tap_x), weight in zip(kernel.nonzero().tolist(), kernel[kernel != 0].tolist()):
            out.add_(padded[..., tap_y:tap_y + height, tap_x:tap_x + width], alpha=weight)
        return out
    size = padded.shape[-2:]
    # correlation = convolution with the flipped kernel; the valid part of the circular result.
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel.flip(0, 1).to(padded), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., kernel_h - 1:kernel_h - 1 + height, kernel_w - 1:kernel_w - 1 + width].contiguous()


def box_resize_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    """PIL's Image.BOX resampling weights [out_size, in_size] (Resample.c precompute_coeffs).

    The box is sampled at input pixel centres and renormalised, not integrated over area.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out_index in range(out_size):  # O(size) tiny table, built once per call
        center = (out_index + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        for in_index in range(first, last):
            position = (in_index - center + 0.5) / filter_scale
            if -0.5 < position <= 0.5:
                weights[out_index, in_index] = 1.0
        total = weights[out_index].sum()
        if total > 0:
            weights[out_index] /= total
    return weights.to(dtype=dtype, device=device)


PIL_PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2 bits of fixed point for 8-bit images


def pil_fixed_point_weights(in_size: int, out_size: int, device: torch.device | str) -> Tensor:
    """Pillow's integer BOX coefficients (normalize_coeffs_8bpc: weight * 2^22, rounded half up), as float64."""
    weights = box_resize_matrix(in_size, out_size, dtype=torch.float64, device=device)
    return torch.floor(weights * (1 << PIL_PRECISION_BITS) + 0.5)


def pil_box_resize(images: Tensor, height: int, width: int) -> Tensor:
    """PIL ``resize((width, height), Image.BOX)`` of uint8 [B,C,H,W]: horizontal pass, uint8, vertical pass.

    Each pass is Pillow's fixed-point sum (pixel * integer weight + 2^21) >> 22, so halves round
    up as there; float64 holds those integer sums exactly (below 2^53).
    """
    in_h, in_w = images.shape[-2:]
    half, unit = float(1 << (PIL_PRECISION_BITS - 1)), float(1 << PIL_PRECISION_BITS)
    out = images.to(torch.float64)
    if width != in_w:
        out = torch.floor((out @ pil_fixed_point_weights(in_w, width, images.device).T + half) / unit).clamp_(0, 255)
    if height != in_h:
        out = torch.floor((pil_fixed_point_weights(in_h, height, images.device) @ out + half) / unit).clamp_(0, 255)
    return out.to(torch.uint8)


def scipy_zoom_coordinates(length: int, zoom: float, device: torch.device | str = "cpu") -> Tensor:
    """Source coordinates of reference ``clipped_zoom`` along one axis (scipy zoom, order 1).

    Crop ceil(length/zoom) centred pixels, zoom them to round(crop*zoom) with scipy's
    corner-aligned grid, trim back to length centred; returns float64 [length] positions in the
    original axis.
    """
    crop = int(math.ceil(length / zoom))
    top = (length - crop) // 2
    zoomed = int(round(crop * zoom))
    trim = (zoomed - length) // 2
    step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
    return top + (torch.arange(length, dtype=torch.float64, device=device) + trim) * step


def clipped_zoom(images: Tensor, zoom: float) -> Tensor:
    """The reference's clipped_zoom (centre crop + scipy.ndimage.zoom order 1) on float [B,C,H,W]."""
    height, width = images.shape[-2:]
    out = images
    for axis, length in ((-2, height), (-1, width)):
        coords = scipy_zoom_coordinates(length, zoom, images.device)
        low = coords.floor().long().clamp(0, length - 1)
        high = (low + 1).clamp(max=length - 1)
        frac = (coords - low).to(images.dtype)
        shape = [1] * images.ndim
        shape[axis] = length
        frac = frac.reshape(shape)
        out = out.index_select(axis, low) * (1 - frac) + out.index_select(axis, high) * frac
    return out


def motion_blur_taps(radius: float, sigma: float, angles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ImageMagick MotionBlurImage's line kernel for per-sample angles (degrees) [B].

    width = 2*ceil(radius)+1 taps (GetOptimalKernelWidth1D for radius > 0) with one-sided
    gaussian weights exp(-i^2 / 2 sigma^2), normalised; tap i reads the pixel at
    (x + ceil(i cos a - 0.5), y + ceil(i sin a - 0.5)). Returns weights [width] (float64) and
    integer offsets dy, dx [B, width].
    """
    width = 2 * int(math.ceil(radius)) + 1
    steps = torch.arange(width, dtype=torch.float64, device=angles.device)
    weights = torch.exp(-(steps ** 2) / (2.0 * float(sigma) ** 2))
    weights = weights / weights.sum()
    radians = torch.deg2rad(angles.to(torch.float64)).unsqueeze(1)
    offsets_x = torch.ceil(steps * torch.cos(radians) - 0.5).long()
    offsets_y = torch.ceil(steps * torch.sin(radians) - 0.5).long()
    return weights, offsets_y, offsets_x


def motion_blur_filter(images: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick motion_blur(radius, sigma, angle) of float [B,C,H,W], one angle per sample.

    A sum of per-sample shifted copies (edge pixels repeat, ImageMagick's default virtual
    pixels): width gathers over the whole batch instead of a dense (4r+1)^2 kernel.
    """
    batch, channels, height, width = images.shape
    weights, offsets_y, offsets_x = motion_blur_taps(radius, sigma, angles.to(images.device))
    rows = torch.arange(height, device=images.device).reshape(1, height, 1)
    cols = torch.arange(width, device=images.device).reshape(1, 1, width)
    flat = images.reshape(batch, channels, height * width)
    out = torch.zeros_like(images)
    for tap in range(weights.numel()):
        source_rows = (rows + offsets_y[:, tap].reshape(batch, 1, 1)).clamp(0, height - 1)
        source_cols = (cols + offsets_x[:, tap].reshape(batch, 1, 1)).clamp(0, width - 1)
        index = (source_rows * width + source_cols).reshape(batch, 1, height * width).expand(batch, channels, height * width)
        out += float(weights[tap]) * flat.gather(2, index).reshape(images.shape)
    return out


def smoothing_matrix(length: int, sigma: float, mode: str = "reflect", truncate: float = 4.0,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """scipy gaussian_filter1d along an axis of `length` as a [length, length] matrix.

    For sigmas whose kernel is longer than the axis (elastic_transform's ImageNet sigma of 171 px
    on 224 px) a matmul beats a 1025-tap convolution; the boundary mode folds into the matrix.
    """
    kernel = gaussian_kernel1d(sigma, truncate, dtype=torch.float64)
    radius = kernel.numel() // 2
    outputs = torch.arange(length).reshape(-1, 1)
    sources = boundary_map(outputs + torch.arange(-radius, radius + 1).reshape(1, -1), length, mode)
    matrix = torch.zeros(length * length, dtype=torch.float64)
    matrix.index_add_(0, (outputs * length + sources).reshape(-1), kernel.repeat(length))
    return matrix.reshape(length, length).to(dtype=dtype, device=device)
