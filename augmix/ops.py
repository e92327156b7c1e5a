"""The 13 AugMix image operations, batched over uint8 tensors, reproducing PIL pixel for pixel.

Every op takes ``images`` (torch.uint8 [B,3,H,W], CPU or CUDA) and, except autocontrast and
equalize, a ``magnitude`` tensor [B] in the unit of the PIL call the reference makes, one value
per image.  Parity with Pillow is the definition of correct, so each op mirrors the arithmetic of
the Pillow code path the AugMix reference uses (ImageOps LUT builders in double precision,
libImaging's bilinear affine sampler, Image.blend's float32 blend, the fixed-point RGB->L
conversion); the comments say which PIL behaviour a line reproduces.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import torch

from augmix.image_batch import check_image_batch

__all__ = [
    "AUGMENTATIONS",
    "AUGMENTATIONS_ALL",
    "OPS",
    "apply_op",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "magnitude_for",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

AUGMENTATIONS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
"""The reference's default op list (`augmentations`), in its order."""

AUGMENTATIONS_ALL: tuple[str, ...] = AUGMENTATIONS + ("color", "contrast", "brightness", "sharpness")
"""The reference's `augmentations_all`: adds the four ImageEnhance ops that overlap ImageNet-C."""

_SIGNED_OPS = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
_ENHANCE_OPS = frozenset({"color", "contrast", "brightness", "sharpness"})


# --------------------------------------------------------------------------- validation


def _as_magnitude(magnitude: torch.Tensor | float, images: torch.Tensor, name: str) -> torch.Tensor:
    """The per-image parameter as a float64 tensor [B] on the images' device (scalars broadcast)."""
    batch = images.shape[0]
    if not isinstance(magnitude, torch.Tensor):
        if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)):
            raise ValueError(f"{name} must be a tensor [B] or a number, got {type(magnitude).__name__}")
        magnitude = torch.tensor(float(magnitude))
    if magnitude.is_complex() or magnitude.dtype == torch.bool:
        raise ValueError(f"{name} dtype {magnitude.dtype} is not allowed; expected a real dtype")
    if magnitude.dim() == 0:
        magnitude = magnitude.expand(batch)
    if magnitude.shape != (batch,):
        raise ValueError(f"{name} shape {tuple(magnitude.shape)} is not allowed; expected [{batch}] (one per image)")
    magnitude = magnitude.to(device=images.device, dtype=torch.float64)
    if not bool(torch.isfinite(magnitude).all()):
        raise ValueError(f"{name} contains non-finite values {magnitude[~torch.isfinite(magnitude)].tolist()}; expected finite numbers")
    return magnitude


# --------------------------------------------------------------------------- scratch buffers

_SCRATCH_MAX_BYTES = 16 << 20
"""Largest temporary kept for reuse: an op block of ~1 MiB of uint8 (see mix.OP_BLOCK_BYTES) needs
up to 4 bytes per pixel; larger inputs (a caller's whole batch) allocate as usual."""

_scratch_buffers = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised temporary of `shape`, reused across calls on this thread (CPU), by slot name.

    Multi-MiB temporaries freshly allocated per op call are returned to the OS on free and
    page-faulted back in on the next call; that costs as much as the pass that fills them (4x an
    uint8->float32 copy into warm memory). Only intermediates use this (never a returned tensor), and
    one op never holds two live tensors of the same slot. CUDA's caching allocator already reuses
    memory, so there a plain empty tensor is returned.
    """
    numel = 1
    for size in shape:
        numel *= size
    nbytes = numel * dtype.itemsize
    if device.type != "cpu" or nbytes > _SCRATCH_MAX_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = getattr(_scratch_buffers, "by_slot", None)
    if buffers is None:
        buffers = _scratch_buffers.by_slot = {}
    typed = buffers.get((slot, dtype))
    if typed is None or typed.numel() < numel:
        buffer = buffers.get(slot)
        if buffer is None or buffer.numel() < nbytes:
            buffer = buffers[slot] = torch.empty(max(nbytes, 1 << 16), dtype=torch.uint8)
            for key in [key for key in buffers if isinstance(key, tuple) and key[0] == slot]:
                del buffers[key]  # views of the smaller buffer
        typed = buffers[(slot, dtype)] = buffer[:buffer.numel() // dtype.itemsize * dtype.itemsize].view(dtype)
    # One as_strided of a cached typed view: a slice and two views cost three dispatches, and an
    # op at 32x32 makes a few dozen calls, where each dispatch is a visible share of its time.
    return typed.as_strided(shape, _contiguous_strides(shape))


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for dim in range(len(shape) - 2, -1, -1):
        strides[dim] = strides[dim + 1] * max(shape[dim + 1], 1)
    return tuple(strides)


# --------------------------------------------------------------------------- LUT ops


def _lut_index(images: torch.Tensor) -> torch.Tensor:
    """Each pixel's position in a stack of per-(image, channel) 256-entry tables: int32 [B*3*H*W].

    int32, not int64: the widening copy is the cost of a LUT op, and index_select/bincount take int32.
    """
    batch, channels = images.shape[:2]
    planes = batch * channels
    offsets = torch.arange(0, planes * 256, 256, dtype=torch.int32, device=images.device).view(planes, 1)
    index = _scratch("lut_index", (planes, images[0, 0].numel()), torch.int32, images.device)
    return index.copy_(images.reshape(planes, -1)).add_(offsets).view(-1)


def _apply_channel_lut(images: torch.Tensor, lut: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its own image's and channel's table (lut uint8 [B,3,256]) in one index_select."""
    return lut.reshape(-1).index_select(0, index).view(images.shape)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast(img): per channel, stretch [lo, hi] to [0, 255] via PIL's double-precision LUT."""
    check_image_batch(images)
    return _autocontrast(images)


def _autocontrast(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    batch, channels = images.shape[:2]
    planes = images.reshape(batch * channels, -1)
    # amin and amax on uint8 vectorise; aminmax does not (~100x slower per pixel on CPU).
    lo = planes.amin(dim=1, keepdim=True).to(torch.float64)
    hi = planes.amax(dim=1, keepdim=True).to(torch.float64)
    stretch = hi > lo
    # PIL: scale = 255.0 / (hi - lo); offset = -lo * scale; int(ix * scale + offset) clipped to 0..255.
    # (A tensor numerator: torch turns `scalar / tensor` into a reciprocal product, off by an ulp.)
    # A flat channel keeps its values: scale 1, offset 0 give the identity table.
    scale = torch.where(stretch, torch.full_like(hi, 255.0) / (hi - lo), 1.0)
    offset = torch.where(stretch, -lo * scale, 0.0)
    levels = torch.arange(256, dtype=torch.float64, device=images.device)
    value = torch.mul(levels, scale, out=_scratch("lut_float", (lo.shape[0], 256), torch.float64, images.device))
    return _apply_channel_lut(images, _truncated_levels(value.add_(offset)), _lut_index(images))


def _truncated_levels(value: torch.Tensor) -> torch.Tensor:
    """uint8 table of PIL's int(value) clipped to 0..255, for a float table [planes, 256] (consumed).

    Clipping first and then truncating gives the same integers (the bounds are integers and trunc
    is monotone), and on [0, 255] the float -> int32 cast is the truncation: trunc_ does not
    vectorise on CPU (~15x slower than the cast), and float -> int32 -> uint8 is the fast cast.
    """
    truncated = _scratch("lut_int32", value.shape, torch.int32, value.device).copy_(value.clamp_(0, 255))
    return truncated.to(torch.uint8)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize(img): PIL's per-channel cumulative LUT with step = (n - count of top level) // 255.

    step > 0 implies at least two levels are present, PIL's other condition.
    """
    check_image_batch(images)
    return _equalize(images)


_FLOAT32_EXACT_PIXELS = 1 << 23
"""Planes with fewer pixels build equalize's table in float32: every operand of its floor division
is an integer below 2^24, where float32 is exact and floor(a / b) of the correctly rounded quotient
is the integer quotient (a non-integer a / b lies at least 1/b below the next integer, more than
the rounding error a / b * 2^-24 when a < 2^24). Larger planes use float64, as PIL's double."""


def _equalize(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    batch, channels, height, width = images.shape
    planes, pixels = batch * channels, height * width
    device = images.device
    index = _lut_index(images)
    hist = torch.bincount(index, minlength=planes * 256).view(planes, 256)
    top_level = images.reshape(planes, -1).amax(dim=1, keepdim=True).to(torch.int64)
    step = (pixels - torch.gather(hist, 1, top_level)) // 255
    equalizable = step > 0
    dtype = torch.float32 if pixels < _FLOAT32_EXACT_PIXELS else torch.float64
    # PIL: lut[v] = (pixels strictly below v + step // 2) // step, clipped by point(); the counts
    # and sums fit int32 (int32 cumsum is the fastest), the division runs in `dtype` (see above).
    counts = _scratch("lut_counts", (planes, 256), torch.int32, device).copy_(hist)
    below = torch.cumsum(counts, dim=1, out=_scratch("lut_sums", (planes, 256), torch.int32, device)).sub_(counts)
    numerator = below.add_(step.div(2, rounding_mode="floor").to(torch.int32))
    value = _scratch("lut_float", (planes, 256), dtype, device).copy_(numerator)
    value.div_(step.clamp(min=1).to(dtype)).floor_()
    # A plane PIL leaves alone gets the identity table: a blend with 0/1 weights, exact on these
    # integers and cheaper than torch.where on the table.
    kept = equalizable.to(dtype)
    levels = torch.arange(256, dtype=dtype, device=device)
    value.mul_(kept).addcmul_(levels, 1.0 - kept)
    return _apply_channel_lut(images, _truncated_levels(value), index)


def posterize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize(img, bits): keep the top `bits` bits (0..8; 0 gives black, as `i & ~255`)."""
    check_image_batch(images)
    bits = _as_magnitude(magnitude, images, "posterize bits")
    bad = (bits != bits.round()) | (bits < 0) | (bits > 8)
    if bool(bad.any()):
        raise ValueError(f"posterize bits {bits[bad].tolist()} not allowed; expected integers 0..8")
    return _posterize(images, bits)


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    mask = (255 << (8 - bits.long())) & 255
    return images & mask.to(torch.uint8).view(-1, 1, 1, 1)


def solarize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize(img, threshold): invert every pixel >= threshold (a threshold of 256 inverts none).

    Inverting is `p ^ 255`, so the op is `p ^ mask` with mask 255 where p >= threshold: the sign bit
    of p - threshold in int16 gives the mask without a compare-and-select (torch.where on uint8 is slow).
    """
    check_image_batch(images)
    return _solarize(images, _as_magnitude(magnitude, images, "solarize threshold"))


def _solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    threshold = threshold.ceil().clamp_(0, 256)
    difference = images.to(torch.int16).sub_(threshold.to(torch.int16).view(-1, 1, 1, 1))
    mask = difference.bitwise_right_shift_(15).bitwise_not_().to(torch.uint8)  # 255 where p >= threshold
    return mask.bitwise_xor_(images)


# --------------------------------------------------------------------------- geometric ops
#
# libImaging's bilinear affine sampler maps output pixel centre (x+.5, y+.5) to the source point
# (a x + b y + c, d x + e y + f); a source point outside [0,W)x[0,H) gives 0; otherwise the point
# shifted by -.5 is interpolated between its floor neighbours, clamped to the image, as two row
# lerps and one column lerp in double, and the result is truncated to uint8.
#
# Shear and translate move pixels along one axis by an amount that is constant along each line
# (row for x, column for y): every line has one integer offset and one lerp weight. The lerp is then
# done in the source's own grid, before any move (neighbours are plain slices, no gather), and the
# move is a copy of whole windows (x) or an index_select (y). Rotate is genuinely 2-D and uses
# grid_sample's fused kernel. Both interpolate in float32 instead of PIL's double, and add a small
# bias before truncating so that a value PIL lands exactly on an integer (flat regions, "nice"
# shears such as 0.2, axis-aligned angles) is not pushed below it by float32 rounding; the cost is a
# 1-level difference where PIL's value lies within the bias below an integer, a small fraction of
# pixels (the parity criterion allows a 1-level difference on under 1% of them).

_LINE_LERP_BIAS = 2.0 ** -13
"""Bias added before truncating a float32 line lerp: above float32's error for values <= 255 (~4e-5),
and exactly representable next to any uint8 value, so a flat region (equal neighbours) stays exact."""

_ROTATE_BIAS = 1e-3
"""grid_sample's coordinates and weights carry float32 error (~1e-5 pixel), hence a larger bias."""

_NICE_DENOMINATORS = torch.arange(1, 65, dtype=torch.float64)
_NICE_TOLERANCE = 2e-6
"""A shear or translation at (or, like float32(0.2), within float rounding of) a fraction p/q with q
up to 64 puts whole rows of PIL's lerps on or a hair below integers, where float32 plus a bias
cannot tell the side and PIL's last-ulp rounding (which depends on the pixel's x) decides the
truncation: batches with such a parameter (|q m - p| < tolerance) take the exact double path, which
reproduces PIL's arithmetic per pixel. Random parameters (the sampler's) almost never do."""


def _line_moves(shift: torch.Tensor, coefficient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool, bool, int]:
    """Per line: (integer offset, lerp weight in [0, 1)), then any weight non-zero, any coefficient a
    fraction with a small denominator (see _NICE_DENOMINATORS), and the largest |offset|.

    shift: float64 [B, lines], the term t in PIL's source coordinate (i + .5) + t along the moving
    axis, so the neighbours of output pixel i are i + floor(t) and one after, with weight
    t - floor(t). coefficient: float64 [B], the op's parameter. The three flags come back in one
    host transfer (one sync on CUDA).
    """
    cell = shift.floor()
    weight = shift - cell
    multiples = coefficient.view(-1, 1) * _NICE_DENOMINATORS.to(coefficient.device)
    nice = ((multiples - multiples.round()).abs() < _NICE_TOLERANCE).any()
    flags = torch.stack([(weight != 0).any().to(shift.dtype), nice.to(shift.dtype), cell.abs().amax()]).tolist()
    return cell.to(torch.int64), weight, bool(flags[0]), bool(flags[1]), int(flags[2])


def _pixel_weights(shift: torch.Tensor, cell: torch.Tensor, length: int) -> torch.Tensor:
    """float64 [B, lines, length+1]: PIL's own lerp weight for each source cell -1..length-1 of each line.

    The output pixel reading cell j is i = j - offset; PIL computes its coordinate as
    (i + .5) + t in double, so the weight differs from t - floor(t) in the last bits with i's
    magnitude, and can reach 1 (PIL's next cell with weight 0: the same value).
    """
    cells = torch.arange(-1, length, dtype=torch.float64, device=shift.device)
    pixel = cells - cell.unsqueeze(2).to(torch.float64)
    return pixel.add_(0.5).add_(shift.unsqueeze(2)).sub_(0.5).sub_(cells)


def _lerped_lines(images: torch.Tensor, weight: torch.Tensor | None, dim: int, pad: int) -> torch.Tensor:
    """uint8 copy of `images` along `dim` with `pad` zeros either side, where cell j holds PIL's value
    for a source point between pixels j and j+1 (its neighbours, clamped to the image).

    weight: None (all weights 0: a plain copy), float32 constant along `dim` (the line's weight; the
    lerp runs in float32 with a bias), or float64 with one weight per cell -1..n-1 along `dim`
    (PIL's own per-pixel weights; the lerp runs in double as PIL's a + (b - a) d, op by op). Cell -1
    is inside the image only for weights >= .5 and reads the first pixel twice; cell n-1 only for
    weights < .5 and reads the last pixel twice; cells further out are outside (0).
    """
    length = images.shape[dim]
    shape = list(images.shape)
    shape[dim] = length + 2 * pad
    lines = _scratch("lines", tuple(shape), torch.uint8, images.device).zero_()
    if weight is None:
        lines.narrow(dim, pad, length).copy_(images)
        return lines
    if weight.dtype == torch.float64:
        wide = images.to(torch.float64)
        near = wide.narrow(dim, 0, length - 1)
        lerped = wide.narrow(dim, 1, length - 1) - near
        lerped.mul_(weight.narrow(dim, 1, length - 1)).add_(near)
        first, last = weight.narrow(dim, 0, 1), weight.narrow(dim, length, 1)
    else:
        biased = _scratch("float", images.shape, torch.float32, images.device).copy_(images)
        biased.add_(_LINE_LERP_BIAS)  # lerp(a+e, b+e) = lerp(a, b) + e
        near = biased.narrow(dim, 0, length - 1)
        lerped = torch.lerp(near, biased.narrow(dim, 1, length - 1), weight,
                            out=_scratch("lerped", near.shape, torch.float32, images.device))
        first = last = weight
    truncated = _scratch("int32", lerped.shape, torch.int32, images.device).copy_(lerped)
    lines.narrow(dim, pad, length - 1).copy_(truncated)  # float -> int32 -> uint8 is the fast cast
    lines.narrow(dim, pad - 1, 1).copy_(images.narrow(dim, 0, 1) * (first >= 0.5))
    lines.narrow(dim, pad + length - 1, 1).copy_(images.narrow(dim, length - 1, 1) * (last < 0.5))
    return lines


def _line_weights(shift: torch.Tensor, cell: torch.Tensor, weight: torch.Tensor, fractional: bool, nice: bool,
                  length: int) -> torch.Tensor | None:
    """The weight argument of _lerped_lines, [B, lines, 1 or length+1] (see there)."""
    if not fractional:
        return None
    if nice:
        return _pixel_weights(shift, cell, length)
    return weight.to(torch.float32).unsqueeze(2)


def _shift_rows(images: torch.Tensor, shift: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """Affine maps that move each row along x by its own amount (shear_x, translate_x).

    shift: float64 [B, H] or [B, 1] (the same for all rows). The result's row is a window of the
    lerped, zero-padded row: one index_select of whole windows over an unfolded (overlapping) view.
    """
    batch, channels, height, width = images.shape
    cell, weight, fractional, nice, reach = _line_moves(shift, coefficient)
    pad = reach + 1
    weights = _line_weights(shift, cell, weight, fractional, nice, width)
    lines = _lerped_lines(images, None if weights is None else weights.unsqueeze(1), 3, pad)
    padded_width = width + 2 * pad
    row_starts = torch.arange(0, batch * channels * height * padded_width, padded_width, device=images.device)
    row_starts = row_starts.view(batch, channels, height).add_(cell.view(batch, 1, -1) + pad)
    windows = lines.view(-1).unfold(0, width, 1)
    return windows.index_select(0, row_starts.view(-1)).view(images.shape)


def _shift_columns(images: torch.Tensor, shift: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """Affine maps that move each column along y by its own amount (shear_y, translate_y).

    shift: float64 [B, W], or [B, 1] when every column moves alike: then whole rows are copied.
    """
    batch, channels, height, width = images.shape
    cell, weight, fractional, nice, reach = _line_moves(shift, coefficient)
    pad = reach + 1
    weights = _line_weights(shift, cell, weight, fractional, nice, height)
    lines = _lerped_lines(images, None if weights is None else weights.transpose(1, 2).unsqueeze(1), 2, pad)
    padded_height = height + 2 * pad
    device = images.device
    if shift.shape[1] == 1:
        plane_rows = torch.arange(0, batch * channels * padded_height, padded_height, device=device)
        source_rows = plane_rows.view(batch, channels, 1) + torch.arange(pad, pad + height, device=device)
        source_rows = source_rows.add_(cell.view(batch, 1, 1))
        return lines.view(-1, width).index_select(0, source_rows.view(-1)).view(images.shape)
    # Flat int32 index of each output pixel: (plane row start + y) * W per (image, channel, row), plus
    # (pad + offset) * W + x per (image, column): one broadcast add, its inner dimension contiguous.
    plane_size = padded_height * width
    row_term = torch.arange(0, batch * channels * plane_size, plane_size, dtype=torch.int32, device=device)
    row_term = row_term.view(batch, channels, 1) + torch.arange(0, height * width, width, dtype=torch.int32, device=device)
    column_term = (cell.to(torch.int32) + pad).mul_(width).add_(torch.arange(width, dtype=torch.int32, device=device))
    index = torch.add(column_term.view(batch, 1, 1, width), row_term.view(batch, channels, height, 1),
                      out=_scratch("pixel_index", images.shape, torch.int32, device))
    return lines.view(-1).index_select(0, index.view(-1)).view(images.shape)


def _pixel_centres(count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(count, dtype=torch.float64, device=device).add_(0.5)


def rotate(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.rotate(degrees, resample=BILINEAR): counter-clockwise about the centre, with PIL's matrix."""
    check_image_batch(images)
    return _rotate(images, _as_magnitude(magnitude, images, "rotate degrees"))


def _rotation_grids(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample's float32 grid [N,H,W,2] for PIL's rotation by each angle (float64 [N]).

    grid_sample (align_corners=False) reads source x at grid value 2 x / W - 1. PIL's source x is
    a (x+.5) + b (y+.5) + c: the terms per column and per row are computed in double and scaled, and
    their sums (float32) form the grid. A point inside the image is clamped to the pixel centres
    (PIL clamps its neighbours, which gives the same value), a point outside is sent beyond the zero
    padding (PIL's 0).
    """
    # Image.rotate: angle % 360, -radians, cos/sin rounded to 15 decimals, centre (w/2, h/2).
    radians = -((degrees % 360.0) * (torch.pi / 180.0))
    cos = torch.round(torch.cos(radians), decimals=15).view(-1, 1)
    sin = torch.round(torch.sin(radians), decimals=15).view(-1, 1)
    neg_sin = torch.round(-torch.sin(radians), decimals=15).view(-1, 1)
    c = cos * (-width / 2) + sin * (-height / 2) + width / 2
    f = neg_sin * (-width / 2) + cos * (-height / 2) + height / 2
    xs = torch.arange(width, dtype=torch.float64, device=degrees.device).add_(0.5)
    ys = torch.arange(height, dtype=torch.float64, device=degrees.device).add_(0.5)
    count = degrees.shape[0]
    grid = torch.empty(count, height, width, 2, dtype=torch.float32, device=degrees.device)
    outside = None
    for axis, per_column, per_row, size in ((0, cos * xs, sin * ys + c, width), (1, neg_sin * xs, cos * ys + f, height)):
        column_term = (per_column * (2.0 / size)).to(torch.float32).view(count, 1, width)
        row_term = (per_row * (2.0 / size) - 1.0).to(torch.float32).view(count, height, 1)
        source = torch.add(column_term, row_term)  # contiguous [N,H,W]: the fast add
        out_of_range = (source < -1.0) | (source >= 1.0)
        outside = out_of_range if outside is None else outside.logical_or_(out_of_range)
        grid[..., axis] = source.clamp_(1.0 / size - 1.0, 1.0 - 1.0 / size)
    return grid.masked_fill_(outside.unsqueeze(3), -4.0)


_ROTATION_GRID_CACHE: "OrderedDict[tuple[float, int, int, str], torch.Tensor]" = OrderedDict()
_ROTATION_GRID_CACHE_SIZE = 64
"""Grids of the most recently used (angle, size, device)s: the sampler draws whole degrees (at most
61 values at severity 10), so after warm-up every grid comes from here (a 224x224 grid is 400 KB)."""
_ROTATION_GRID_LOCK = threading.Lock()


def _cached_rotation_grids(angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """_rotation_grids(angles, ...) [N,H,W,2], building only the grids not already in the cache."""
    keys = [(angle, height, width, str(angles.device)) for angle in angles.tolist()]
    with _ROTATION_GRID_LOCK:  # threads (a thread-pool DataLoader, threaded actors) share the cache
        missing = [i for i, key in enumerate(keys) if key not in _ROTATION_GRID_CACHE]
        if missing:
            built = _rotation_grids(angles[missing], height, width)
            for position, grid in zip(missing, built):
                _ROTATION_GRID_CACHE[keys[position]] = grid
        for key in keys:
            _ROTATION_GRID_CACHE.move_to_end(key)
        grids = torch.stack([_ROTATION_GRID_CACHE[key] for key in keys])
        while len(_ROTATION_GRID_CACHE) > max(_ROTATION_GRID_CACHE_SIZE, len(keys)):
            _ROTATION_GRID_CACHE.popitem(last=False)
    return grids


def _rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """PIL's bilinear rotation as one fused float32 grid_sample.

    A batch holds few distinct angles: their grids come from the cache and are gathered per image.
    The bias rides on the input: inside the image the bilinear weights sum to 1, so it comes through
    unchanged (see _ROTATE_BIAS).
    """
    angles, angle_of_image = torch.unique(degrees, return_inverse=True)
    grids = _cached_rotation_grids(angles, images.shape[2], images.shape[3])
    if angles.shape[0] > 1:
        grid = _scratch("grid", (images.shape[0],) + tuple(grids.shape[1:]), grids.dtype, images.device)
        torch.index_select(grids, 0, angle_of_image, out=grid)
    else:
        grid = grids.expand(images.shape[0], -1, -1, -1)
    biased = _scratch("float", images.shape, torch.float32, images.device).copy_(images).add_(_ROTATE_BIAS)
    value = torch.nn.functional.grid_sample(biased, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    truncated = _scratch("int32", value.shape, torch.int32, images.device).copy_(value)
    return truncated.to(torch.uint8)


def shear_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, s, 0, 0, 1, 0), BILINEAR): row y moves by s (y + .5)."""
    check_image_batch(images)
    return _shear_x(images, _as_magnitude(magnitude, images, "shear_x coefficient"))


def _shear_x(images: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    shift = shear.view(-1, 1) * _pixel_centres(images.shape[2], images.device)
    return _shift_rows(images.contiguous(), shift, shear)


def shear_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, 0, s, 1, 0), BILINEAR): column x moves by s (x + .5)."""
    check_image_batch(images)
    return _shear_y(images, _as_magnitude(magnitude, images, "shear_y coefficient"))


def _shear_y(images: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    shift = shear.view(-1, 1) * _pixel_centres(images.shape[3], images.device)
    return _shift_columns(images.contiguous(), shift, shear)


def translate_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, t, 0, 1, 0), BILINEAR): output pixel x shows source x + t."""
    check_image_batch(images)
    return _translate_x(images, _as_magnitude(magnitude, images, "translate_x pixels"))


def _translate_x(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    return _shift_rows(images.contiguous(), pixels.view(-1, 1), pixels)


def translate_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, 0, 0, 1, t), BILINEAR): output pixel y shows source y + t."""
    check_image_batch(images)
    return _translate_y(images, _as_magnitude(magnitude, images, "translate_y pixels"))


def _translate_y(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    return _shift_columns(images.contiguous(), pixels.view(-1, 1), pixels)


# --------------------------------------------------------------------------- ImageEnhance ops


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, image, factor) as libImaging computes it: float32 alpha, clip, truncate."""
    alpha = factor.to(torch.float32).view(-1, 1, 1, 1)
    base = degenerate.to(torch.float32)
    value = base + alpha * (images.to(torch.float32) - base)
    return value.clamp_(0, 255).to(torch.uint8)


def _luminance(images: torch.Tensor) -> torch.Tensor:
    """PIL's RGB->L conversion, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as int32 [B,1,H,W]."""
    rgb = images.to(torch.int32)
    return (rgb[:, 0:1] * 19595 + rgb[:, 1:2] * 38470 + rgb[:, 2:3] * 7471 + 0x8000) >> 16


def color(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color(img).enhance(factor): blend with the L-grayscale copy."""
    check_image_batch(images)
    return _color(images, _as_magnitude(magnitude, images, "color factor"))


def _color(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(_luminance(images), images, factor)


def contrast(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast(img).enhance(factor): blend with the image's rounded mean L level."""
    check_image_batch(images)
    return _contrast(images, _as_magnitude(magnitude, images, "contrast factor"))


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    luminance = _luminance(images)
    mean = luminance.sum(dim=(1, 2, 3), dtype=torch.float64) / luminance[0].numel()
    degenerate = (mean + 0.5).trunc().view(-1, 1, 1, 1)
    return _blend(degenerate, images, factor)


def brightness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness(img).enhance(factor): blend with black."""
    check_image_batch(images)
    return _brightness(images, _as_magnitude(magnitude, images, "brightness factor"))


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros((), dtype=torch.uint8, device=images.device), images, factor)


def sharpness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness(img).enhance(factor): blend with ImageFilter.SMOOTH, whose border is the original.

    SMOOTH is the 3x3 kernel (1,1,1;1,5,1;1,1,1)/13 rounded to nearest; the exact sum S/13 never
    sits on a half, so the integer (S + 6) // 13 equals PIL's float result.
    """
    check_image_batch(images)
    return _sharpness(images, _as_magnitude(magnitude, images, "sharpness factor"))


def _sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[2:]
    if height < 3 or width < 3:
        return images.clone()
    wide = images.to(torch.int16)
    rows = wide[:, :, :-2] + wide[:, :, 1:-1] + wide[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    centre = wide[:, :, 1:-1, 1:-1]
    smooth = (box + 4 * centre + 6) // 13
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = _blend(smooth, images[:, :, 1:-1, 1:-1], factor)
    return out


# --------------------------------------------------------------------------- registry and sampling


def _no_magnitude(op: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def apply(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
        return op(images)

    apply.__name__ = op.__name__
    apply.__doc__ = op.__doc__
    return apply


OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "autocontrast": _no_magnitude(autocontrast),
    "equalize": _no_magnitude(equalize),
    "posterize": posterize,
    "rotate": rotate,
    "solarize": solarize,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "color": color,
    "contrast": contrast,
    "brightness": brightness,
    "sharpness": sharpness,
}
"""Every op under its name with the uniform signature (images, magnitude); the two without a
parameter ignore magnitude, so a sampler can dispatch by name."""

UNCHECKED_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "rotate": _rotate,
    "solarize": _solarize,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
    "color": _color,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
}
"""The ops without their argument checks, for callers that build valid input themselves (the batched
AugMix runs ~30 op calls per batch, where the checks cost as much as a small op): images uint8
[B,3,H,W], magnitude float64 [B] on the images' device, in range (magnitude_for's output), or None
for autocontrast and equalize."""


def apply_op(name: str, images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """Run the op called `name` (one of AUGMENTATIONS_ALL) on a batch."""
    if name not in OPS:
        raise ValueError(f"op {name!r} is not known; expected one of {list(AUGMENTATIONS_ALL)}")
    return OPS[name](images, magnitude)


def magnitude_for(op_name: str, level: torch.Tensor, sign: torch.Tensor | None, size: int) -> torch.Tensor:
    """The reference's level -> PIL parameter mapping (augmentations.py), per image, float64 [B].

    level is the sampled U(0.1, severity) value; sign (+1/-1 per image) applies to the geometric
    ops only; size is the image side the reference's translate range (size / 3) refers to.
    Arithmetic is float64 in the reference's order so that int() truncations agree with numpy.
    """
    if op_name not in OPS:
        raise ValueError(f"op {op_name!r} is not known; expected one of {list(AUGMENTATIONS_ALL)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size {size!r} is not allowed; expected a positive int (image side in pixels)")
    level = torch.as_tensor(level).to(torch.float64)
    if op_name == "posterize":
        return 4 - (level * 4 / 10).trunc()
    if op_name == "solarize":
        return 256 - (level * 256 / 10).trunc()
    if op_name == "rotate":
        value = (level * 30 / 10).trunc()
    elif op_name in ("shear_x", "shear_y"):
        value = level * 0.3 / 10
    elif op_name in ("translate_x", "translate_y"):
        value = (level * (size / 3) / 10).trunc()
    elif op_name in _ENHANCE_OPS:
        return level * 1.8 / 10 + 0.1
    else:  # autocontrast, equalize: no parameter
        return torch.zeros_like(level)
    if sign is None:
        return value
    sign = torch.as_tensor(sign, device=value.device)
    return torch.where(sign < 0, -value, value)
