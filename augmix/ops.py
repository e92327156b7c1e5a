"""The 13 AugMix image operations, batched over uint8 tensors, reproducing PIL pixel for pixel.

Every op takes ``images`` (torch.uint8 [B,3,H,W], CPU or CUDA) and, except autocontrast and
equalize, a ``magnitude`` tensor [B] in the unit of the PIL call the reference makes, one value
per image.  Parity with Pillow is the definition of correct, so each op mirrors the arithmetic of
the Pillow code path the AugMix reference uses (ImageOps LUT builders in double precision,
libImaging's bilinear affine sampler, Image.blend's float32 blend, the fixed-point RGB->L
conversion); the comments say which PIL behaviour a line reproduces.
"""
from __future__ import annotations

from typing import Callable

import torch

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


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of dtype uint8, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images dtype {images.dtype} is not allowed; expected torch.uint8")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images shape {tuple(images.shape)} is not allowed; expected [B,3,H,W]")


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


# --------------------------------------------------------------------------- LUT ops


def _lut_index(images: torch.Tensor) -> torch.Tensor:
    """Each pixel's position in a stack of per-(image, channel) 256-entry tables: int32 [B*3*H*W].

    int32, not int64: the widening copy is the cost of a LUT op, and index_select/bincount take int32.
    """
    batch, channels = images.shape[:2]
    planes = batch * channels
    offsets = torch.arange(0, planes * 256, 256, dtype=torch.int32, device=images.device).view(planes, 1)
    return images.reshape(planes, -1).to(torch.int32).add_(offsets).view(-1)


def _apply_channel_lut(images: torch.Tensor, lut: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its own image's and channel's table (lut uint8 [B,3,256]) in one index_select."""
    return lut.reshape(-1).index_select(0, index).view(images.shape)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast(img): per channel, stretch [lo, hi] to [0, 255] via PIL's double-precision LUT."""
    _check_images(images)
    batch, channels = images.shape[:2]
    planes = images.reshape(batch, channels, -1)
    # amin and amax on uint8 vectorise; aminmax does not (~100x slower per pixel on CPU).
    lo = planes.amin(dim=2, keepdim=True).to(torch.float64)
    hi = planes.amax(dim=2, keepdim=True).to(torch.float64)
    stretch = hi > lo
    # PIL: scale = 255.0 / (hi - lo); offset = -lo * scale; int(ix * scale + offset) clipped to 0..255.
    # (A tensor numerator: torch turns `scalar / tensor` into a reciprocal product, off by an ulp.)
    scale = torch.full_like(hi, 255.0) / torch.where(stretch, hi - lo, torch.ones_like(hi))
    offset = -lo * scale
    levels = torch.arange(256, dtype=torch.float64, device=images.device)
    stretched = (levels * scale + offset).trunc().clamp_(0, 255)
    lut = torch.where(stretch, stretched, levels.expand_as(stretched)).to(torch.uint8)
    return _apply_channel_lut(images, lut, _lut_index(images))


def equalize(images: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize(img): PIL's per-channel cumulative LUT with step = (n - count of top level) // 255."""
    _check_images(images)
    batch, channels, height, width = images.shape
    index = _lut_index(images)
    hist = torch.bincount(index, minlength=batch * channels * 256).view(batch, channels, 256)
    levels = torch.arange(256, device=images.device)
    present = hist > 0
    top_level = torch.where(present, levels, 0).amax(dim=2, keepdim=True)
    top_count = torch.gather(hist, 2, top_level)
    step = (height * width - top_count) // 255
    equalizable = (present.sum(dim=2, keepdim=True) > 1) & (step > 0)
    safe_step = torch.where(equalizable, step, torch.ones_like(step))
    before = hist.cumsum(dim=2).sub_(hist)  # pixels strictly below each level
    equalized = (safe_step // 2 + before).div_(safe_step, rounding_mode="floor").clamp_(max=255)  # point() clips
    lut = torch.where(equalizable, equalized, levels.expand_as(equalized)).to(torch.uint8)
    return _apply_channel_lut(images, lut, index)


def posterize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize(img, bits): keep the top `bits` bits (0..8; 0 gives black, as `i & ~255`)."""
    _check_images(images)
    bits = _as_magnitude(magnitude, images, "posterize bits")
    bad = (bits != bits.round()) | (bits < 0) | (bits > 8)
    if bool(bad.any()):
        raise ValueError(f"posterize bits {bits[bad].tolist()} not allowed; expected integers 0..8")
    mask = (255 << (8 - bits.long())) & 255
    return images & mask.to(torch.uint8).view(-1, 1, 1, 1)


def solarize(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize(img, threshold): invert every pixel >= threshold (a threshold of 256 inverts none).

    Inverting is `p ^ 255`, so the op is `p ^ mask` with mask 255 where p >= threshold: the sign bit
    of p - threshold in int16 gives the mask without a compare-and-select (torch.where on uint8 is slow).
    """
    _check_images(images)
    threshold = _as_magnitude(magnitude, images, "solarize threshold").ceil().clamp_(0, 256)
    difference = images.to(torch.int16).sub_(threshold.to(torch.int16).view(-1, 1, 1, 1))
    mask = difference.bitwise_right_shift_(15).bitwise_not_().to(torch.uint8)  # 255 where p >= threshold
    return mask.bitwise_xor_(images)


# --------------------------------------------------------------------------- geometric ops
#
# libImaging's bilinear affine sampler maps output pixel centre (x+.5, y+.5) to the source point
# (a x + b y + c, d x + e y + f); a source point outside [0,W)x[0,H) gives 0; otherwise the point
# shifted by -.5 is interpolated between its floor neighbours, clamped to the image, as two row
# lerps and one column lerp, and the result is truncated to uint8.
#
# An affine map is separable: each source coordinate is an outer sum of a per-row and a per-column
# term, so no per-pixel matrix product is needed. Shear and translate move one axis only: their two
# neighbours are read with flat int32 index_selects from padded planes that build PIL's clamping
# in, with double lerps (cheap at two neighbours, and needed for "nice" shears). Rotate uses
# grid_sample's fused float32 kernel; float32 instead of PIL's double can move a truncation by one
# level where PIL's value lies within ~1e-3 of an integer, a small fraction of pixels (the parity
# criterion allows a 1-level difference on under 1% of them).


def _padded_planes(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B*3*(H+4)*(W+2)]: each plane with a clamped copy of its border around it, then 2 zero rows.

    Plane row r, column s hold pixel (clamp(r-1), clamp(s-1)), so the neighbours of source cell
    (y0, x0), y0 in -1..H-1, are the flat positions p, p+1, p+W+2, p+W+3 with p = (y0+1)(W+2) + x0+1,
    already clamped as PIL clamps them. The zero rows (H+2, H+3) give 0 for any point that indexes them.
    """
    batch, channels, height, width = images.shape
    planes = images.new_empty(batch, channels, height + 4, width + 2)
    planes[:, :, 1:height + 1, 1:width + 1] = images
    planes[:, :, 1:height + 1, 0] = images[:, :, :, 0]
    planes[:, :, 1:height + 1, width + 1] = images[:, :, :, width - 1]
    planes[:, :, 0] = planes[:, :, 1]
    planes[:, :, height + 1] = planes[:, :, height]
    planes[:, :, height + 2:] = 0
    return planes.view(-1)


def _neighbour_index(images: torch.Tensor, row: torch.Tensor, column: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """int32 [B*3*H*W]: each output pixel's position p in its own padded plane (see _padded_planes).

    row, column: float32 broadcastable to [B,H,W], floor cells (-1..H-1, -1..W-1) where inside.
    """
    batch, channels, height, width = images.shape
    padded_width = width + 2
    position = torch.add(column, row, alpha=padded_width).add_(padded_width + 1).expand(batch, height, width)
    position = position.masked_fill(~inside, (height + 2) * padded_width)  # the zero margin
    plane_size = (height + 4) * padded_width
    starts = torch.arange(0, batch * channels * plane_size, plane_size, dtype=torch.int32, device=images.device)
    index = position.to(torch.int32).view(batch, 1, height * width) + starts.view(batch, channels, 1)
    return index.view(-1)


def _finish(value: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """PIL's (UINT8) cast of a value in [0, 255]: truncation; float -> int32 -> uint8 is the fast path."""
    return value.to(torch.int32).to(torch.uint8).view(images.shape)


def _shift_along(images: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """The affine maps that move pixels along one axis only (shear, translate): two neighbours, not four.

    shift: float64 [B, lines], per image and line (row for dim=3, column for dim=2), the term t in
    PIL's source coordinate (i + .5) + t along `dim`; the other coordinate is a pixel centre, where
    PIL's second lerp has weight 0 and returns the first exactly. Unlike rotate, the coordinate and
    the lerp stay in double as in PIL: shears such as 0.2 or 0.3 put many lerps exactly on an
    integer, where PIL's last-ulp rounding decides the truncation. An integral t everywhere
    (translate) is a pure shift with no arithmetic at all.
    """
    batch, channels, height, width = images.shape
    length = images.shape[dim]
    line_shape = (batch, height, 1) if dim == 3 else (batch, 1, width)
    centres = _pixel_centres(length, images.device)
    centres = centres.view(1, 1, width) if dim == 3 else centres.view(1, height, 1)
    source = shift.view(line_shape) + centres  # PIL: 1.0 * (i + .5) + t, in double
    inside = (source >= 0) & (source < length)
    source.sub_(0.5)
    cell = source.floor()
    lines = torch.arange(images.shape[5 - dim], dtype=torch.float32, device=images.device)
    if dim == 3:
        index = _neighbour_index(images, lines.view(1, height, 1), cell.to(torch.float32), inside)
    else:
        index = _neighbour_index(images, cell.to(torch.float32), lines.view(1, 1, width), inside)
    planes = _padded_planes(images)
    if bool((shift == shift.floor()).all()):
        return planes.index_select(0, index).view(images.shape)
    weight = source.sub_(cell).view(batch, 1, height * width)
    step = 1 if dim == 3 else width + 2
    near = planes.index_select(0, index).to(torch.float64)
    far = planes[step:].index_select(0, index).to(torch.float64)
    shape = (batch, channels, height * width)
    value = far.sub_(near).view(shape).mul_(weight).add_(near.view(shape))  # PIL: a + (b - a) * d
    return _finish(value, images)


def _pixel_centres(count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(count, dtype=torch.float64, device=device).add_(0.5)


def _sample_affine(images: torch.Tensor, column_terms: tuple[torch.Tensor, torch.Tensor],
                   row_terms: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """PIL's bilinear affine sample with grid_sample's fused float32 kernel.

    column_terms / row_terms: float64 ([B,W], [B,H]) pairs whose outer sums are the source x and
    y of every output pixel. grid_sample clamps the source point where PIL clamps the neighbours,
    which gives the same value for every point inside the image; points outside are sent far away
    so that zero padding returns PIL's 0. Its weighted sum of four neighbours differs from PIL's
    three lerps by float32 rounding, so 1e-3 is added before truncating: a value PIL lands exactly
    on an integer (flat regions, axis-aligned angles) is not pushed below it.
    """
    batch, channels, height, width = images.shape
    grid = torch.empty(batch, height, width, 2, dtype=torch.float32, device=images.device)
    for axis, (per_column, per_row), size in ((0, column_terms, width), (1, row_terms, height)):
        source = torch.add(per_row.unsqueeze(2), per_column.unsqueeze(1), out=grid[..., axis])
        outside = (source < 0) | (source >= size)
        # grid_sample (align_corners=False) reads pixel (g + 1) * size / 2 - .5: keep it within the
        # pixel centres (PIL's clamp) and send outside points beyond the zero padding.
        source.clamp_(0.5, size - 0.5).mul_(2.0 / size).sub_(1.0).masked_fill_(outside, -4.0)
    value = torch.nn.functional.grid_sample(images.to(torch.float32), grid, mode="bilinear",
                                            padding_mode="zeros", align_corners=False)
    return _finish(value.add_(1e-3), images)


def rotate(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.rotate(degrees, resample=BILINEAR): counter-clockwise about the centre, with PIL's matrix."""
    _check_images(images)
    degrees = _as_magnitude(magnitude, images, "rotate degrees")
    height, width = images.shape[2:]
    # Image.rotate: angle % 360, -radians, cos/sin rounded to 15 decimals, centre (w/2, h/2).
    radians = -((degrees % 360.0) * (torch.pi / 180.0))
    cos = torch.round(torch.cos(radians), decimals=15).view(-1, 1)
    sin = torch.round(torch.sin(radians), decimals=15).view(-1, 1)
    neg_sin = torch.round(-torch.sin(radians), decimals=15).view(-1, 1)
    centre_x, centre_y = width / 2, height / 2
    c = cos * -centre_x + sin * -centre_y + 0.0 + centre_x
    f = neg_sin * -centre_x + cos * -centre_y + 0.0 + centre_y
    xs = _pixel_centres(width, images.device)
    ys = _pixel_centres(height, images.device)
    return _sample_affine(images, (cos * xs + c, sin * ys), (neg_sin * xs, cos * ys + f))


def shear_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, s, 0, 0, 1, 0), BILINEAR): row y moves by s (y + .5)."""
    _check_images(images)
    shear = _as_magnitude(magnitude, images, "shear_x coefficient").view(-1, 1)
    return _shift_along(images, shear * _pixel_centres(images.shape[2], images.device), dim=3)


def shear_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, 0, s, 1, 0), BILINEAR): column x moves by s (x + .5)."""
    _check_images(images)
    shear = _as_magnitude(magnitude, images, "shear_y coefficient").view(-1, 1)
    return _shift_along(images, shear * _pixel_centres(images.shape[3], images.device), dim=2)


def translate_x(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, t, 0, 1, 0), BILINEAR): output pixel x shows source x + t."""
    _check_images(images)
    pixels = _as_magnitude(magnitude, images, "translate_x pixels")
    return _shift_along(images, pixels.view(-1, 1).repeat(1, images.shape[2]), dim=3)


def translate_y(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, (1, 0, 0, 0, 1, t), BILINEAR): output pixel y shows source y + t."""
    _check_images(images)
    pixels = _as_magnitude(magnitude, images, "translate_y pixels")
    return _shift_along(images, pixels.view(-1, 1).repeat(1, images.shape[3]), dim=2)


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
    _check_images(images)
    factor = _as_magnitude(magnitude, images, "color factor")
    return _blend(_luminance(images), images, factor)


def contrast(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast(img).enhance(factor): blend with the image's rounded mean L level."""
    _check_images(images)
    factor = _as_magnitude(magnitude, images, "contrast factor")
    luminance = _luminance(images)
    mean = luminance.sum(dim=(1, 2, 3), dtype=torch.float64) / luminance[0].numel()
    degenerate = (mean + 0.5).trunc().view(-1, 1, 1, 1)
    return _blend(degenerate, images, factor)


def brightness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness(img).enhance(factor): blend with black."""
    _check_images(images)
    factor = _as_magnitude(magnitude, images, "brightness factor")
    return _blend(torch.zeros((), dtype=torch.uint8, device=images.device), images, factor)


def sharpness(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness(img).enhance(factor): blend with ImageFilter.SMOOTH, whose border is the original.

    SMOOTH is the 3x3 kernel (1,1,1;1,5,1;1,1,1)/13 rounded to nearest; the exact sum S/13 never
    sits on a half, so the integer (S + 6) // 13 equals PIL's float result.
    """
    _check_images(images)
    factor = _as_magnitude(magnitude, images, "sharpness factor")
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
