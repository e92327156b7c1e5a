"""Weather corruptions of CIFAR-10-C / ImageNet-C: snow, frost, fog, spatter.

Each follows Hendrycks & Dietterich's make_cifar_c.py ("cifar") / make_imagenet_c.py ("imagenet")
step by step, batched: every random quantity (snow field, blur angle, fractal, frost photo and
crop, liquid field) is drawn per sample from the one generator, and the per-image work is done
for the whole batch at once. Where the reference calls ImageMagick or OpenCV, the operation is
re-derived from that library's C source (see the helpers' docstrings); only the hysteresis of
Canny and the two raster passes of the chamfer distance transform loop, over pixels of a path or
rows, never over images.

Sizes other than the preset's own (32 or 224) are accepted: fog grows its fractal to the next
power of two covering the image, frost scales a photograph up when it is too small to crop from,
and clipped_zoom works per axis.
"""
from __future__ import annotations

import functools
import importlib.metadata
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from augmix.corruptions._common import (
    check_inputs,
    clipped_zoom,
    gaussian_kernel1d,
    motion_blur_filter,
    rand,
    randn,
    severity_constant,
    to_float,
    to_uint8_truncated,
    uniform,
)

# ---------------------------------------------------------------- constants (the references' c tables)

# fog: (fractal strength, wibble decay)
FOG = {
    "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
}
FOG_MAPSIZE = {"cifar": 32, "imagenet": 256}

# frost: (image weight, frost weight)
FROST = {
    "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
}
# make_cifar_c.py shrinks the photographs with cv2.resize(fx=fy=0.2) before cropping 32x32;
# make_imagenet_c.py crops 224x224 from the full-size photographs.
FROST_PHOTO_SCALE = {"cifar": 0.2, "imagenet": 1.0}
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
# The reference draws np.random.randint(5): frost6.jpg ships but is never chosen.
FROST_CHOICES = 5

# snow: (field mean, field std, zoom, threshold, blur radius, blur sigma, image weight)
SNOW = {
    "cifar": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "imagenet": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
}
SNOW_ANGLE_RANGE = (-135.0, -45.0)

# spatter: (field mean, field std, field blur sigma, threshold, liquid strength | mud blur sigma, mud?)
SPATTER = {
    "cifar": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "imagenet": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
}
# The reference builds these as channel 0,1,2 of an image that is RGB (PIL), so they are RGB.
WATER_RGB = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise
MUD_RGB = (63 / 255.0, 42 / 255.0, 20 / 255.0)

# cv2.cvtColor(RGB2GRAY) weights.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- fog

def plasma_fractal(batch: int, mapsize: int, wibble_decay: float, generator: torch.Generator | None,
                   device: torch.device) -> Tensor:
    """Diamond-square height maps [batch, mapsize, mapsize] in [0, 1], one per sample.

    The reference's algorithm (FLHerne/mapgen via make_*_c.py) level by level for the whole batch:
    each new point is the mean of its 4 (toroidal) neighbours plus wibble * U(-wibble, wibble),
    wibble starting at 100 and divided by wibble_decay per level; then min-max normalised per map.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize {mapsize} is not allowed; allowed: a power of two")
    maps = torch.zeros(batch, mapsize, mapsize, device=device)
    stepsize = mapsize
    wibble = 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * uniform(total.shape, -wibble, wibble, generator, device)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maps[:, 0::stepsize, 0::stepsize]
        square_sum = corners + corners.roll(-1, dims=1)
        square_sum = square_sum + square_sum.roll(-1, dims=2)
        maps[:, half::stepsize, half::stepsize] = wibbled_mean(square_sum)
        centres = maps[:, half::stepsize, half::stepsize]
        corners = maps[:, 0::stepsize, 0::stepsize]
        left_total = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::stepsize, half::stepsize] = wibbled_mean(left_total)
        top_total = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::stepsize, 0::stepsize] = wibbled_mean(top_total)
        stepsize = half
        wibble /= wibble_decay
    flat = maps.reshape(batch, -1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    flat = flat / flat.amax(dim=1, keepdim=True)
    return flat.reshape(batch, mapsize, mapsize)


def fog_mapsize(preset: str, height: int, width: int) -> int:
    """The preset's fractal size, or the next power of two covering a larger image."""
    needed = 1 << max(0, math.ceil(math.log2(max(height, width))))
    return max(FOG_MAPSIZE[preset], needed)


def fog(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """x + c*fractal, rescaled by max(x)/(max(x)+c) so the image's peak brightness is kept."""
    severity, preset = check_inputs(images, severity, preset)
    strength, wibble_decay = severity_constant(FOG, severity, preset)
    batch, _, height, width = images.shape
    x = to_float(images)
    mapsize = fog_mapsize(preset, height, width)
    fractal = plasma_fractal(batch, mapsize, wibble_decay, generator, x.device)[:, :height, :width]
    peak = x.reshape(batch, -1).amax(dim=1).reshape(batch, 1, 1, 1)
    x = x + strength * fractal.unsqueeze(1)
    return to_uint8_truncated(x * peak / (peak + strength))


# ---------------------------------------------------------------- frost

def _frost_distribution():
    try:
        return importlib.metadata.distribution("imagecorruptions")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "frost needs the frost photographs shipped by the 'imagecorruptions' package; "
            "run `pip install imagecorruptions` (its files are read, the package is never imported)"
        ) from None


@functools.lru_cache(maxsize=None)
def frost_photographs() -> tuple[Tensor, ...]:
    """The six frost photographs as uint8 RGB [3,h,w] CPU tensors, decoded once per process.

    Read as files of the installed imagecorruptions distribution; importing that package would
    pull in cv2/skimage/pkg_resources. Alpha of the PNGs is dropped, as cv2.imread does.
    """
    from PIL import Image

    distribution = _frost_distribution()
    by_name = {str(path).replace("\\", "/").rsplit("/", 1)[-1]: path
               for path in (distribution.files or []) if "frost/" in str(path).replace("\\", "/")}
    photos = []
    for name in FROST_FILES:
        if name not in by_name:
            raise RuntimeError(
                f"frost photograph {name} is missing from the installed imagecorruptions distribution; "
                "run `pip install --force-reinstall imagecorruptions`"
            )
        data = distribution.locate_file(by_name[name]).read_bytes()
        array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        photos.append(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous())
    return tuple(photos)


def resize_like_cv2_linear(image: Tensor, scale: float) -> Tensor:
    """cv2.resize(img, (0, 0), fx=scale, fy=scale) with INTER_LINEAR on uint8 [3,h,w].

    Output size round(h*scale); source coordinate (dst + 0.5)/scale - 0.5, clamped to the image,
    bilinear, rounded to uint8. At scale 0.2 every sample lands exactly on pixel 5*dst + 2.
    """
    channels, height, width = image.shape
    out_h, out_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    source = image.to(torch.float64)
    for axis, (length, out_length) in ((1, (height, out_h)), (2, (width, out_w))):
        coords = ((torch.arange(out_length, dtype=torch.float64) + 0.5) / scale - 0.5).clamp(0, length - 1)
        low = coords.floor().long()
        high = (low + 1).clamp(max=length - 1)
        frac = coords - low
        shape = [1, 1, 1]
        shape[axis] = out_length
        frac = frac.reshape(shape)
        source = source.index_select(axis, low) * (1 - frac) + source.index_select(axis, high) * frac
    return source.round().clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=32)
def frost_bank(preset: str, height: int, width: int, device: str) -> tuple[Tensor, Tensor]:
    """The photographs the reference chooses from, resized for preset, padded into one stack.

    Returns (stack uint8 [5,3,Hmax,Wmax] on device, sizes int64 [5,2] of each photo's (h, w)).
    A photo too small to crop height x width from (the reference needs h > height) is scaled by
    1.1x the factor that makes it fit, as the imagecorruptions package does for odd sizes.
    """
    photos = []
    for photo in frost_photographs()[:FROST_CHOICES]:
        scale = FROST_PHOTO_SCALE[preset]
        _, photo_h, photo_w = photo.shape
        if round(photo_h * scale) <= height or round(photo_w * scale) <= width:
            scale = 1.1 * max((height + 1) / photo_h, (width + 1) / photo_w, scale)
        photos.append(photo if scale == 1.0 else resize_like_cv2_linear(photo, scale))
    sizes = torch.tensor([list(photo.shape[1:]) for photo in photos], dtype=torch.int64)
    stack = torch.zeros(len(photos), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max()), dtype=torch.uint8)
    for index, photo in enumerate(photos):
        stack[index, :, : photo.shape[1], : photo.shape[2]] = photo
    return stack.to(device), sizes.to(device)


def frost_layers(batch: int, height: int, width: int, preset: str, generator: torch.Generator | None,
                 device: torch.device) -> Tensor:
    """Per sample: a random photograph (randint(5)) and a random height x width crop, uint8 [B,3,H,W]."""
    stack, sizes = frost_bank(preset, height, width, str(device))
    choice = (rand((batch,), generator, device) * FROST_CHOICES).long().clamp_(max=FROST_CHOICES - 1)
    room = sizes[choice] - torch.tensor([height, width], device=device)  # randint(0, room): [0, room)
    starts = (rand((batch, 2), generator, device) * room).long()
    starts = torch.minimum(starts, room - 1)
    rows = starts[:, 0:1] + torch.arange(height, device=device)
    cols = starts[:, 1:2] + torch.arange(width, device=device)
    crops = stack[choice.reshape(batch, 1, 1), :, rows.reshape(batch, height, 1), cols.reshape(batch, 1, width)]
    return crops.permute(0, 3, 1, 2)


def frost(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """a*x + b*frost_crop on the 0..255 scale, clipped."""
    severity, preset = check_inputs(images, severity, preset)
    image_weight, frost_weight = severity_constant(FROST, severity, preset)
    batch, _, height, width = images.shape
    layer = frost_layers(batch, height, width, preset, generator, images.device)
    mixed = image_weight * to_float(images) + frost_weight * layer.to(torch.float32) / 255.0
    return to_uint8_truncated(mixed)


# ---------------------------------------------------------------- snow

def snow_layer(batch: int, height: int, width: int, severity: int, preset: str,
               generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The reference's snow layer in [0, 1], float [B,1,H,W] (multiples of 1/255).

    N(mean, std) field -> clipped_zoom -> values below threshold set to 0 -> uint8 (truncated,
    as PIL.fromarray(... .astype(uint8))) -> ImageMagick motion blur with angle U(-135, -45)
    -> 8-bit PNG (rounded).
    """
    mean, std, zoom, threshold, radius, sigma, _ = severity_constant(SNOW, severity, preset)
    field = randn((batch, 1, height, width), generator, device) * std + mean
    field = clipped_zoom(field, zoom)
    field = torch.where(field < threshold, torch.zeros_like(field), field)
    field = (field.clamp(0, 1) * 255.0).floor()
    angles = uniform((batch,), *SNOW_ANGLE_RANGE, generator, device)
    blurred = motion_blur_filter(field, radius, sigma, angles)
    return blurred.round().clamp(0, 255) / 255.0


def snow(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Whiten toward max(x, 1.5*gray + 0.5), then add the snow layer and its 180-degree rotation."""
    severity, preset = check_inputs(images, severity, preset)
    image_weight = severity_constant(SNOW, severity, preset)[6]
    batch, _, height, width = images.shape
    x = to_float(images)
    layer = snow_layer(batch, height, width, severity, preset, generator, x.device)
    gray_weights = torch.tensor(GRAY_WEIGHTS, device=x.device).reshape(1, 3, 1, 1)
    gray = (x * gray_weights).sum(dim=1, keepdim=True)
    x = image_weight * x + (1 - image_weight) * torch.maximum(x, gray * 1.5 + 0.5)
    return to_uint8_truncated(x + layer + layer.flip(-2, -1))


# ---------------------------------------------------------------- spatter: OpenCV steps in torch

_CANNY_TG22 = 13573  # int(tan(22.5 deg) * 2^15 + 0.5), OpenCV's fixed point
_CANNY_SHIFT = 15


def _dilate3x3(mask: Tensor) -> Tensor:
    """8-neighbourhood dilation of bool [B,H,W], separable (rows then columns)."""
    padded = F.pad(mask.to(torch.uint8), (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    return torch.maximum(torch.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:]).bool()


def canny(gray: Tensor, low: float, high: float) -> Tensor:
    """cv2.Canny(gray, low, high) (aperture 3, L1 gradient) for uint8-valued float [B,H,W] -> bool edges.

    Exact transcription of OpenCV's steps: 3x3 Sobel with replicated border, |gx|+|gy|,
    non-maximum suppression in 4 directions with OpenCV's fixed-point tan(22.5) test and its
    asymmetric ties (> on one side, >= on the other), candidates m > floor(low), seeds
    m > floor(high), then 8-connected hysteresis. The hysteresis grows seeds by 3x3 dilation
    inside the candidates until nothing changes: the loop runs over path length, not pixels.
    """
    padded = F.pad(gray.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    height, width = gray.shape[-2:]

    def window(dy: int, dx: int) -> Tensor:
        return padded[:, 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width]

    gx = (window(-1, 1) - window(-1, -1)) + 2 * (window(0, 1) - window(0, -1)) + (window(1, 1) - window(1, -1))
    gy = (window(1, -1) - window(-1, -1)) + 2 * (window(1, 0) - window(-1, 0)) + (window(1, 1) - window(-1, 1))
    gx = gx.to(torch.int32)
    gy = gy.to(torch.int32)
    abs_x = gx.abs()
    abs_y = gy.abs()
    magnitude = abs_x + abs_y
    around = F.pad(magnitude, (1, 1, 1, 1))  # OpenCV's magnitude rows/columns outside are 0

    def neighbour(dy: int, dx: int) -> Tensor:
        return around[:, 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width]

    scaled_y = abs_y << _CANNY_SHIFT
    tg22x = abs_x * _CANNY_TG22
    horizontal = scaled_y < tg22x
    vertical = ~horizontal & (scaled_y > tg22x + (abs_x << (_CANNY_SHIFT + 1)))
    diagonal = ~(horizontal | vertical)
    same_sign = (gx ^ gy) >= 0  # OpenCV: s = (gx ^ gy) < 0 ? -1 : 1
    keep = horizontal & (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    keep |= vertical & (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    diagonal_pos = diagonal & same_sign
    keep |= diagonal_pos & (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1))
    keep |= (diagonal ^ diagonal_pos) & (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1))
    candidates = keep & (magnitude > math.floor(low))
    edges = candidates & (magnitude > math.floor(high))
    weak = candidates & ~edges
    while bool(weak.any()):
        reached = _dilate3x3(edges) & weak
        if not bool(reached.any()):
            break
        edges = edges | reached
        weak = weak & ~reached
    return edges


_DIST_SHIFT = 16
_DIST_HV = 65536.0  # cvRound(w * 2^16) of OpenCV's DIST_L2 5x5 chamfer weights 1, 1.4, 2.1969
_DIST_DIAG = 91750.0
_DIST_LONG = 143976.0
_DIST_FAR = float(1 << 23)  # "no zero pixel yet"; float32 keeps every distance below it exact


def chamfer_distance(zeros: Tensor) -> Tensor:
    """cv2.distanceTransform(src, DIST_L2, 5): chamfer distance to the nearest True pixel, [B,H,W] float32.

    OpenCV's two raster passes with its fixed-point 5x5 mask (1, 1.4, 2.1969 in 1/65536 units,
    held exactly in float32), one row at a time for the whole batch. Within a row the
    left (right) neighbour recursion t[j] = min(c[j], t[j-1] + a) is solved in closed form as
    j*a + cummin(c[k] - k*a). (OpenCV may dispatch to IPP's float version of the same mask;
    values agree to float rounding.)
    """
    batch, height, width = zeros.shape
    device = zeros.device
    ramp = torch.arange(width, device=device, dtype=torch.float32) * _DIST_HV
    columns = slice(2, width + 2)

    def from_rows(far: Tensor, near: Tensor) -> Tensor:
        """Best path into a row through the two rows before it (in scan order)."""
        best = torch.minimum(far[:, 1:width + 1], far[:, 3:width + 3]).add_(_DIST_LONG)
        best = torch.minimum(best, torch.minimum(near[:, 0:width], near[:, 4:width + 4]).add_(_DIST_LONG))
        best = torch.minimum(best, torch.minimum(near[:, 1:width + 1], near[:, 3:width + 3]).add_(_DIST_DIAG))
        return torch.minimum(best, near[:, columns] + _DIST_HV)

    forward = torch.full((batch, height + 4, width + 4), _DIST_FAR, device=device)
    for y in range(height):
        start = from_rows(forward[:, y], forward[:, y + 1]).masked_fill_(zeros[:, y], 0.0).sub_(ramp)
        forward[:, y + 2, columns] = torch.cummin(start, dim=1).values.add_(ramp)
    backward = torch.full_like(forward, _DIST_FAR)
    for y in range(height - 1, -1, -1):
        # The mask is symmetric, so the rows below take the same taps mirrored.
        start = torch.minimum(forward[:, y + 2, columns], from_rows(backward[:, y + 4], backward[:, y + 3]))
        start = start.flip(1).sub_(ramp)
        backward[:, y + 2, columns] = torch.cummin(start, dim=1).values.add_(ramp).flip(1)
    return backward[:, 2:height + 2, columns] * (1.0 / (1 << _DIST_SHIFT))


def equalize_hist(values: Tensor) -> Tensor:
    """cv2.equalizeHist for uint8-valued float [B,H,W], per sample.

    lut[v] = round(255 * (cdf(v) - h[first]) / (N - h[first])), first = the lowest occupied bin;
    a constant image stays as it is.
    """
    batch = values.shape[0]
    flat = values.reshape(batch, -1).to(torch.int64)
    total = flat.shape[1]
    histogram = torch.zeros(batch, 256, dtype=torch.int64, device=values.device)
    histogram.scatter_add_(1, flat, torch.ones_like(flat))
    first = (histogram > 0).to(torch.int8).argmax(dim=1, keepdim=True)
    first_count = histogram.gather(1, first)
    cumulative = histogram.cumsum(dim=1) - first_count
    spread = (total - first_count).clamp(min=1)
    scale = 255.0 / spread.to(torch.float32)
    lut = (cumulative.to(torch.float32) * scale).round().clamp(0, 255)
    mapped = lut.gather(1, flat)
    constant = (first_count == total)
    mapped = torch.where(constant, flat.to(torch.float32), mapped)
    return mapped.reshape(values.shape)


def _box3(values: Tensor) -> Tensor:
    """cv2.blur(x, (3, 3)) with its default BORDER_REFLECT_101, [B,H,W] float (separable sums)."""
    height, width = values.shape[-2:]
    padded = F.pad(values.unsqueeze(1), (1, 1, 1, 1), mode="reflect").squeeze(1)
    rows = padded[:, 0:height] + padded[:, 1:height + 1] + padded[:, 2:height + 2]
    return (rows[:, :, 0:width] + rows[:, :, 1:width + 1] + rows[:, :, 2:width + 2]) / 9.0


def _emboss(values: Tensor) -> Tensor:
    """cv2.filter2D(x, CV_8U, [[-2,-1,0],[-1,1,1],[0,1,2]]) (correlation, BORDER_REFLECT_101), saturated."""
    height, width = values.shape[-2:]
    padded = F.pad(values.unsqueeze(1), (1, 1, 1, 1), mode="reflect").squeeze(1)

    def window(dy: int, dx: int) -> Tensor:
        return padded[:, 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width]

    out = window(0, 0) + window(0, 1) + window(1, 0) - window(-1, 0) - window(0, -1)
    out = out + 2 * (window(1, 1) - window(-1, -1))
    return out.round().clamp(0, 255)


def liquid_strength(layer8: Tensor) -> Tensor:
    """The reference's liquid mask before normalisation: layer8 * dist, float [B,H,W].

    layer8 is the thresholded liquid field as uint8 values. Steps: dist = 255 - Canny(50, 150);
    chamfer distance to the edges, truncated at 20; 3x3 box blur, truncated to uint8;
    equalizeHist; filter2D with the emboss kernel into uint8 (saturating); 3x3 box blur into
    uint8 (rounded, as cv2.blur on uint8).
    """
    edges = canny(layer8, 50, 150)
    dist = chamfer_distance(edges).clamp(max=20.0)
    dist = _box3(dist).floor()
    dist = equalize_hist(dist)
    dist = _emboss(dist)
    dist = _box3(dist).round()
    return layer8 * dist


def smooth_nearest(images: Tensor, sigma: float) -> Tensor:
    """skimage.filters.gaussian(sigma) (scipy taps, truncate 4, mode "nearest") of float [B,1,H,W].

    A sum of shifted slices per axis: with one channel this is several times faster on CPU
    than conv2d with a 1-D kernel, and it is the same sum.
    """
    kernel = gaussian_kernel1d(sigma).tolist()
    radius = len(kernel) // 2
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, 0, radius, radius), mode="replicate")
    rows = torch.zeros_like(images)
    for tap, weight in enumerate(kernel):
        rows.add_(padded[..., tap:tap + height, :], alpha=weight)
    padded = F.pad(rows, (radius, radius, 0, 0), mode="replicate")
    out = torch.zeros_like(images)
    for tap, weight in enumerate(kernel):
        out.add_(padded[..., tap:tap + width], alpha=weight)
    return out


def spatter_field(batch: int, height: int, width: int, severity: int, preset: str,
                  generator: torch.Generator | None, device: torch.device) -> Tensor:
    """N(mean, std) field, skimage gaussian(sigma) (mode nearest), values below threshold zeroed: [B,1,H,W]."""
    mean, std, sigma, threshold, _, _ = severity_constant(SPATTER, severity, preset)
    field = randn((batch, 1, height, width), generator, device) * std + mean
    field = smooth_nearest(field, sigma)
    return torch.where(field < threshold, torch.zeros_like(field), field)


def liquid_bytes(field: Tensor) -> Tensor:
    """The reference's ``(liquid_layer * 255).astype(np.uint8)`` as uint8-valued float.

    Truncation without clipping: a field value of 256/255 or more wraps modulo 256 (NumPy's
    float -> uint8 cast on x86), so a too-bright drop pixel turns dark and Canny edges it.
    CIFAR severity 3 (std 0.3, sigma 1) reaches that in about one image in six.
    """
    return (field * 255.0).floor().remainder(256.0)


def spatter(images: Tensor, severity: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Liquid (severities with mode 0: turquoise embossed drops added) or mud (brown blobs pasted)."""
    severity, preset = check_inputs(images, severity, preset)
    _, _, _, threshold, strength, mud = severity_constant(SPATTER, severity, preset)
    batch, _, height, width = images.shape
    x = to_float(images)
    field = spatter_field(batch, height, width, severity, preset, generator, x.device)
    if mud == 0:
        mask = liquid_strength(liquid_bytes(field.squeeze(1)))
        peak = mask.reshape(batch, -1).amax(dim=1).reshape(batch, 1, 1)
        # All-zero mask: the reference divides 0/0, and the NaN survives np.clip and becomes 0 in
        # np.uint8 (a black image); never seen in 5,000 draws per severity, so left out: no spatter.
        mask = torch.where(peak > 0, mask / peak.clamp(min=1e-12), torch.zeros_like(mask)) * strength
        color = torch.tensor(WATER_RGB, device=x.device).reshape(1, 3, 1, 1)
        return to_uint8_truncated(x + mask.unsqueeze(1) * color)
    mask = smooth_nearest((field > threshold).to(torch.float32), strength)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    color = torch.tensor(MUD_RGB, device=x.device).reshape(1, 3, 1, 1)
    return to_uint8_truncated(x * (1 - mask) + color * mask)
