"""-P style perturbation sequences (CIFAR-10-P / ImageNet-P, Hendrycks & Dietterich ICLR 2019).

Each clean image becomes a short "video" whose frames drift a little from one to the next, so
a stable classifier keeps its prediction (metrics.flip_probability / top5_distance score that).
Constants follow hendrycks/robustness ImageNet-P/create_p/make_cifar_p.py ("cifar") and
make_imagenet_p.py ("imagenet"); with frames=None a sequence has the reference's length and
parameter schedule exactly. Other lengths stretch the same parameter range over `frames`
(zoom_blur keeps its per-frame step; noise draws `frames - 1` noisy frames).

The ten test perturbations (TEST_PERTURBATIONS, ImageNet-P's headline set, snow included) and the
four validation ones (VALIDATION_PERTURBATIONS: speckle_noise, gaussian_blur, spatter, shear; for
model selection, never in mFR) follow the same files. CIFAR-10-P's own evaluation script
(ImageNet-P/cifar-p-eval.py) swaps spatter in for snow; here both datasets use ImageNet-P's split.

Frame 0 is the clean image for the noise and zoom_blur sequences. The drifting ones (brightness,
translate, rotate, tilt, scale, motion_blur) sweep a range around the identity as the reference
does (e.g. rotate -15..15 degrees), so their *middle* frame is (nearly) the clean image; tilt's
reference homography also shrinks by f / (f + 1) (f = the image diagonal) even at 0 degrees.
Differences from the reference, by necessity: ImageNet-P warps the 256-px resized image and then
centre-crops 224 px; here the given image is warped and uncovered pixels are black (as CIFAR-10-P
does); the mp4 encoding of ImageNet-P is not reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from augmix.corruptions._common import (
    PRESETS,
    clipped_zoom,
    gaussian_blur,
    hsv_value_shift,
    motion_blur_filter,
    motion_blur_taps,
    poisson,
    randn,
)
from augmix.corruptions.weather import GRAY_WEIGHTS, WATER_RGB, liquid_strength, smooth_nearest
# uint8 results: truncated (no slack) where the reference truncates float32 numpy values
# (np.uint8(x * 255), ToPILImage), rounded where PIL resampling or ImageMagick quantise
from augmix.image_batch import check_image_batch, to_uint8_rounded, to_uint8_truncated_no_slack

__all__ = ["DIFFICULTIES", "NOISE_PERTURBATIONS", "PERTURBATIONS", "PRESETS", "RANDOM_PERTURBATIONS",
           "TEST_PERTURBATIONS", "VALIDATION_PERTURBATIONS", "default_frames", "perturbation_sequence"]

# ImageNet-P's ten test perturbations, in the paper's order: mFR and mT5D average these.
TEST_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
    "brightness", "translate", "rotate", "tilt", "scale",
)
# The reference's validation sequences: scored on request, never part of the headline.
VALIDATION_PERTURBATIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")
PERTURBATIONS: tuple[str, ...] = TEST_PERTURBATIONS + VALIDATION_PERTURBATIONS
# Sequences whose frames are compared with the first frame (metrics.compares_to_first_frame); the
# only ones with difficulty levels (the reference's <name>_2 / <name>_3 sets).
NOISE_PERTURBATIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise", "speckle_noise")
# Sequences that draw random numbers (the rest are a deterministic function of the image).
RANDOM_PERTURBATIONS: tuple[str, ...] = NOISE_PERTURBATIONS + ("snow", "spatter")
DIFFICULTIES = (1, 2, 3)


@dataclass(frozen=True)
class _Sweep:
    """Reference schedule: frame i of `frames` uses start + i * (stop - start) / (frames - 1)."""
    frames: int
    start: float
    stop: float


# Noise level per difficulty (the _2 and _3 datasets): std of N(0, s) on [0,1]; photons for Poisson.
_GAUSSIAN_STD = {"cifar": (0.02, 0.04, 0.06), "imagenet": (0.03, 0.05, 0.08)}
_SHOT_PHOTONS = {"cifar": (700.0, 400.0, 200.0), "imagenet": (300.0, 120.0, 60.0)}
_SPECKLE_STD = {"cifar": (0.05, 0.07, 0.10), "imagenet": (0.05, 0.10, 0.15)}  # x + x N(0, s)
_NOISE_FRAMES = 31  # clean frame + 30 noisy draws
_SEQUENCE_FRAMES = 31  # snow, spatter: the reference's range(0, 31)
# snow: one N(0.05, 0.3) field per image, clipped_zoom, values < 0.5 dropped, then ImageMagick
# motion_blur(radius, sigma) at angle i*4 - 150 per frame; the image is whitened with weight 0.85.
_SNOW_FIELD = (0.05, 0.3, 0.5)  # mean, std, threshold
_SNOW_LAYER = {"cifar": (2.0, 10.0, 2.0), "imagenet": (3.0, 14.0, 4.0)}  # zoom, blur radius, blur sigma
_SNOW_IMAGE_WEIGHT = 0.85
# spatter: field N(mean, std), skimage gaussian(sigma), values < threshold dropped; each frame the
# liquid drips down the rows by np.convolve(column, kernel, "same"); water strength 0.6.
_SPATTER = {"cifar": (0.6, 0.265, 1.75, 0.7, (0.2, 0.8)),
            "imagenet": (0.65, 0.27, 3.7, 0.69, (0.05, 0.1, 0.15, 0.7))}
_SPATTER_STRENGTH = 0.6
# gaussian_blur: skimage gaussian(sigma = start + step * i, truncate) per frame.
_BLUR_TRUNCATE = {"cifar": 7.0, "imagenet": 6.0}
_ZOOM_STEP, _ZOOM_FRAMES = 0.004, 31  # frame i averages scales 1, 1.004, ..., 1 + 0.004 i
# ImageMagick motion_blur(radius, sigma) with the angle swept over the sequence.
_MOTION_KERNEL = {"cifar": (6.0, 1.8), "imagenet": (10.0, 3.0)}
_SWEEPS: dict[str, dict[str, _Sweep]] = {
    "cifar": {
        "motion_blur": _Sweep(21, -180.0, 0.0),   # angle (i - 20) * 9
        "brightness": _Sweep(31, -0.225, 0.225),  # HSV value shift (i - 15) * 1.5 / 100
        "translate": _Sweep(16, -7.0, 8.0),       # pixels right, i - 7
        "rotate": _Sweep(31, -15.0, 15.0),        # torchvision affine angle (clockwise), i - 15
        "tilt": _Sweep(31, -11.25, 11.25),        # degrees about both axes, 0.75 (i - 15)
        "scale": _Sweep(31, 0.70, 1.30),          # (2 i + 70) / 100
        "snow": _Sweep(31, -150.0, -30.0),        # motion blur angle i * 4 - 150
        "gaussian_blur": _Sweep(31, 0.30, 0.75),  # sigma 0.3 + 0.015 i
        "shear": _Sweep(31, -15.0, 15.0),         # torchvision affine shear (degrees), i - 15
    },
    "imagenet": {
        "motion_blur": _Sweep(31, -120.0, 0.0),   # (i - 30) * 4
        "brightness": _Sweep(31, -0.30, 0.30),    # (i - 15) * 2 / 100
        "translate": _Sweep(41, -20.0, 20.0),     # i - 20
        "rotate": _Sweep(31, -15.0, 15.0),
        "tilt": _Sweep(31, -15.0, 15.0),          # i - 15
        "scale": _Sweep(31, 0.40, 1.15),          # (2.5 i + 40) / 100
        "snow": _Sweep(31, -150.0, -30.0),
        "gaussian_blur": _Sweep(31, 0.25, 1.30),  # 0.25 + 0.035 i
        "shear": _Sweep(31, -15.0, 15.0),
    },
}


def default_frames(name: str, preset: str = "cifar") -> int:
    """Sequence length of the reference -P dataset for this perturbation and preset."""
    _check_choice(name, PERTURBATIONS, "perturbation")
    _check_choice(preset, PRESETS, "preset")
    if name in NOISE_PERTURBATIONS:
        return _NOISE_FRAMES
    if name == "zoom_blur":
        return _ZOOM_FRAMES
    if name == "spatter":
        return _SEQUENCE_FRAMES
    return _SWEEPS[preset][name].frames


def perturbation_sequence(images: Tensor, name: str, frames: int | None = None, preset: str = "cifar",
                          generator: torch.Generator | None = None, difficulty: int = 1) -> Tensor:
    """A -P sequence per image: uint8 [B,3,H,W] -> uint8 [B,T,3,H,W].

    frames: T (>= 2); None gives the reference length (default_frames). difficulty 1..3 selects the
    noise level of the NOISE_PERTURBATIONS (ImageNet-P's _2/_3 sets); the others have one level.
    Only RANDOM_PERTURBATIONS draw numbers; `generator` makes them reproducible (noise is drawn on
    the generator's device, so a CPU generator gives the same sequences on CPU and CUDA).
    """
    check_image_batch(images, empty_batch=False, empty_images=False)
    _check_choice(name, PERTURBATIONS, "perturbation")
    _check_choice(preset, PRESETS, "preset")
    if difficulty not in DIFFICULTIES or isinstance(difficulty, bool):
        raise ValueError(f"difficulty = {difficulty!r}; allowed: {DIFFICULTIES}")
    if difficulty != 1 and name not in NOISE_PERTURBATIONS:
        raise ValueError(f"difficulty = {difficulty} for {name!r}; allowed: 1 (levels exist only for "
                         f"{', '.join(NOISE_PERTURBATIONS)})")
    length = default_frames(name, preset) if frames is None else frames
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"frames = {frames!r}; allowed: None or an integer >= 2")
    x = images.to(torch.float32) / 255.0
    if name == "gaussian_noise":
        out = _gaussian_noise(x, length, _GAUSSIAN_STD[preset][difficulty - 1], generator)
    elif name == "shot_noise":
        out = _shot_noise(x, length, _SHOT_PHOTONS[preset][difficulty - 1], generator)
    elif name == "speckle_noise":
        out = _speckle_noise(x, length, _SPECKLE_STD[preset][difficulty - 1], generator)
    elif name == "zoom_blur":
        out = _zoom_blur(x, length)
    elif name == "spatter":
        out = _spatter(x, length, preset, generator)
    elif name == "snow":
        out = _snow(x, _sweep_values(name, preset, length), preset, generator)
    else:
        out = _SWEEP_FUNCTIONS[name](x, _sweep_values(name, preset, length), preset)
    return out


def _sweep_values(name: str, preset: str, length: int) -> Tensor:
    sweep = _SWEEPS[preset][name]
    return torch.linspace(sweep.start, sweep.stop, length, dtype=torch.float64)


# --- validation ----------------------------------------------------------------------------------

def _check_choice(value: object, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")




def _frames_of(x: Tensor, length: int) -> Tensor:
    return x.unsqueeze(1).expand(-1, length, -1, -1, -1)


def _noise_shape(x: Tensor, length: int) -> tuple[int, ...]:
    return (x.shape[0], length - 1, *x.shape[1:])


def _gaussian_noise(x: Tensor, length: int, std: float, generator: torch.Generator | None) -> Tensor:
    noise = randn(_noise_shape(x, length), generator, x.device)
    noisy = to_uint8_truncated_no_slack(_frames_of(x, length - 1) + std * noise)
    return torch.cat([to_uint8_rounded(x).unsqueeze(1), noisy], dim=1)


def _speckle_noise(x: Tensor, length: int, std: float, generator: torch.Generator | None) -> Tensor:
    frames = _frames_of(x, length - 1)
    noisy = to_uint8_truncated_no_slack(frames + frames * std * randn(_noise_shape(x, length), generator, x.device))
    return torch.cat([to_uint8_rounded(x).unsqueeze(1), noisy], dim=1)


def _shot_noise(x: Tensor, length: int, photons: float, generator: torch.Generator | None) -> Tensor:
    rates = _frames_of(x, length - 1) * photons
    noisy = to_uint8_truncated_no_slack(poisson(rates.contiguous(), generator) / photons)
    return torch.cat([to_uint8_rounded(x).unsqueeze(1), noisy], dim=1)


def _warp(x: Tensor, inverse_maps: Tensor) -> Tensor:
    """Sample every image at every frame's map: x [B,3,H,W], inverse_maps [T,3,3] from output pixel
    index (col, row, 1) to input pixel index, bilinear, black outside. Returns float [B,T,3,H,W]."""
    batch, channels, height, width = x.shape
    length = inverse_maps.shape[0]
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                torch.arange(width, dtype=torch.float64), indexing="ij")
    points = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1).reshape(-1, 3)
    source = points @ inverse_maps.transpose(1, 2)  # [T, H*W, 3]
    source = source[..., :2] / source[..., 2:]
    scale = torch.tensor([width, height], dtype=torch.float64)
    grid = ((2 * source + 1) / scale - 1).reshape(length, height, width, 2)  # align_corners=False
    grid = grid.to(device=x.device, dtype=x.dtype).repeat(batch, 1, 1, 1)
    frames = _frames_of(x, length).reshape(batch * length, channels, height, width)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.reshape(batch, length, channels, height, width)


def _centred_affine_inverse(height: int, width: int, angle_degrees: Tensor, scale: Tensor,
                            shift_x: Tensor) -> Tensor:
    """Inverse of torchvision's affine(angle, translate=(shift_x, 0), scale) about the image centre,
    as [T,3,3] pixel-index maps (counter-clockwise angle on screen, y pointing down)."""
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    radians = torch.deg2rad(angle_degrees)
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # output p = c + s R(a) (q - c) + t with R(a) = [[cos, sin], [-sin, cos]]; invert for q.
    maps = torch.zeros((angle_degrees.numel(), 3, 3), dtype=torch.float64)
    maps[:, 0, 0], maps[:, 0, 1], maps[:, 1, 0], maps[:, 1, 1] = cos, -sin, sin, cos
    dx, dy = -centre_x - shift_x, torch.full_like(shift_x, -centre_y)
    maps[:, 0, 2] = cos * dx - sin * dy + centre_x
    maps[:, 1, 2] = sin * dx + cos * dy + centre_y
    maps[:, 2, 2] = 1.0
    return maps


def _affine_sequence(x: Tensor, angles: Tensor, scales: Tensor, shifts: Tensor) -> Tensor:
    return to_uint8_rounded(_warp(x, _centred_affine_inverse(x.shape[2], x.shape[3], angles, scales, shifts)))


def _translate(x: Tensor, values: Tensor, preset: str) -> Tensor:
    zeros = torch.zeros_like(values)
    return _affine_sequence(x, zeros, torch.ones_like(values), values)


def _rotate(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """torchvision's affine angle is clockwise (unlike its rotate), so the sweep turns clockwise."""
    zeros = torch.zeros_like(values)
    return _affine_sequence(x, -values, torch.ones_like(values), zeros)


def _scale(x: Tensor, values: Tensor, preset: str) -> Tensor:
    zeros = torch.zeros_like(values)
    return _affine_sequence(x, zeros, values, zeros)


def _tilt(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """cv2.warpPerspective with the reference's homography P2 T RX(theta) RY(phi) P1, phi = theta."""
    height, width = x.shape[2], x.shape[3]
    focal = math.hypot(width, height)
    radians = torch.deg2rad(values)
    cos, sin = torch.cos(radians), torch.sin(radians)
    length = values.numel()
    to_plane = torch.tensor([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1], [0, 0, 1]], dtype=torch.float64)
    project = torch.tensor([[focal, 0, width / 2, 0], [0, focal, height / 2, 0], [0, 0, 1, 0]], dtype=torch.float64)
    push = torch.eye(4, dtype=torch.float64)
    push[2, 3] = focal
    rotate_x = torch.eye(4, dtype=torch.float64).repeat(length, 1, 1)
    rotate_x[:, 1, 1], rotate_x[:, 1, 2], rotate_x[:, 2, 1], rotate_x[:, 2, 2] = cos, -sin, sin, cos
    rotate_y = torch.eye(4, dtype=torch.float64).repeat(length, 1, 1)
    rotate_y[:, 0, 0], rotate_y[:, 0, 2], rotate_y[:, 2, 0], rotate_y[:, 2, 2] = cos, -sin, sin, cos
    forward = project @ push @ rotate_x @ rotate_y @ to_plane  # [T,3,3], source -> output pixels
    return to_uint8_rounded(_warp(x, torch.linalg.inv(forward)))


def _brightness(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """skimage rgb2hsv, V += c (clipped), hsv2rgb, one shift per frame: [B,3,H,W] -> [B,T,3,H,W]."""
    shift = values.to(x.device).reshape(1, -1, 1, 1, 1)
    return to_uint8_truncated_no_slack(hsv_value_shift(x.to(torch.float64).unsqueeze(1), shift, channel_dim=2))


def _motion_blur(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """Sum of shifted copies, one angle per frame, edge pixels repeated (ImageMagick's default).

    Offsets are whole pixels, so each tap is a slice of an edge-padded batch: frames x taps slice
    additions, each over the whole batch, instead of a dense (4r + 1)^2 convolution.
    """
    radius, sigma = _MOTION_KERNEL[preset]
    weights, offsets_y, offsets_x = motion_blur_taps(radius, sigma, values)
    height, width = x.shape[2], x.shape[3]
    pad = weights.numel() - 1
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.zeros((x.shape[0], values.numel(), *x.shape[1:]), dtype=x.dtype, device=x.device)
    for frame, (rows, cols) in enumerate(zip((offsets_y + pad).tolist(), (offsets_x + pad).tolist())):
        for weight, row, col in zip(weights.tolist(), rows, cols):
            out[:, frame] += weight * padded[:, :, row:row + height, col:col + width]
    return to_uint8_rounded(out)


def _zoom_blur(x: Tensor, length: int) -> Tensor:
    """Frame i is the running mean of the clean image and its centre zooms by 1 + 0.004 j, j = 1..i."""
    scales = 1 + _ZOOM_STEP * torch.arange(length, dtype=torch.float64)
    zeros = torch.zeros_like(scales)
    zoomed = _affine_sequence(x, zeros, scales, zeros)  # PIL rounds each zoom
    zoomed[:, 0] = to_uint8_rounded(x)  # scale 1 is the clean frame itself
    return _running_mean(zoomed)


def _running_mean(frames: Tensor) -> Tensor:
    """uint8 [B,T,3,H,W] -> frame i = mean of frames 0..i, computed as the reference does.

    ``avg = ToTensor()(z0); avg += ToTensor()(z_i); ToPILImage()(avg / (i + 1))``: float32 sums of
    x / 255 in frame order, then mul(255).byte(), a truncation. Where the exact mean is a whole
    level that float32 path lands a hair below it in 1-3% of pixels, which then lose a level, so
    the sum is replayed step by step in float32 (a float64 mean would keep them).
    """
    out = torch.empty_like(frames)
    out[:, 0] = frames[:, 0]
    total = frames[:, 0].to(torch.float32).div(255)
    for index in range(1, frames.shape[1]):
        total += frames[:, index].to(torch.float32).div(255)
        out[:, index] = (total / (index + 1)).mul(255).to(torch.uint8)
    return out


def _shear(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """torchvision affine(shear=s degrees) about the centre: output (col, row) samples the input at
    col + tan(s) (row - centre), row (PIL's inverse affine map)."""
    height = x.shape[2]
    slope = torch.tan(torch.deg2rad(values))
    maps = torch.eye(3, dtype=torch.float64).repeat(values.numel(), 1, 1)
    maps[:, 0, 1] = slope
    maps[:, 0, 2] = -slope * (height - 1) / 2
    return to_uint8_rounded(_warp(x, maps))


def _gaussian_blur(x: Tensor, values: Tensor, preset: str) -> Tensor:
    """skimage gaussian (mode nearest, the preset's truncate) per frame's sigma, truncated to uint8."""
    truncate = _BLUR_TRUNCATE[preset]
    frames = [gaussian_blur(x, float(sigma), mode="nearest", truncate=truncate) for sigma in values.tolist()]
    return to_uint8_truncated_no_slack(torch.stack(frames, dim=1))


def _whitened(x: Tensor) -> Tensor:
    """The snow corruption's whitening toward max(x, 1.5 gray + 0.5), image weight 0.85."""
    gray = (x * torch.tensor(GRAY_WEIGHTS, device=x.device).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return _SNOW_IMAGE_WEIGHT * x + (1 - _SNOW_IMAGE_WEIGHT) * torch.maximum(x, gray * 1.5 + 0.5)


def _snow(x: Tensor, angles: Tensor, preset: str, generator: torch.Generator | None) -> Tensor:
    """One snow field per image, motion-blurred at every frame's angle (all frames in one batch)."""
    mean, std, threshold = _SNOW_FIELD
    zoom, radius, sigma = _SNOW_LAYER[preset]
    batch, _, height, width = x.shape
    field = clipped_zoom(randn((batch, 1, height, width), generator, x.device) * std + mean, zoom)
    field = (torch.where(field < threshold, torch.zeros_like(field), field).clamp(0, 1) * 255.0).floor()
    length = angles.numel()
    per_frame = angles.to(device=x.device, dtype=torch.float32).repeat(batch)
    layer = motion_blur_filter(field.repeat_interleave(length, dim=0), radius, sigma, per_frame)
    layer = (layer.round().clamp(0, 255) / 255.0).reshape(batch, length, 1, height, width)
    return to_uint8_truncated_no_slack(_whitened(x).unsqueeze(1) + layer + layer.flip(-2, -1))


def _drip(field: Tensor, kernel: tuple[float, ...]) -> Tensor:
    """np.convolve(column, kernel, "same") down every column of float [B,1,H,W] (zeros outside)."""
    taps, height = len(kernel), field.shape[-2]
    offset = (taps - 1) // 2
    padded = F.pad(field, (0, 0, taps, taps))
    out = torch.zeros_like(field)
    for tap, weight in enumerate(kernel):
        start = taps + offset - tap  # out[k] += weight * field[k + offset - tap]
        out += weight * padded[..., start:start + height, :]
    return out


def _spatter(x: Tensor, length: int, preset: str, generator: torch.Generator | None) -> Tensor:
    """Liquid spatter that drips a little further every frame; frames depend on the previous, so
    the loop runs over frames, each step batched over the images."""
    mean, std, sigma, threshold, kernel = _SPATTER[preset]
    batch = x.shape[0]
    field = smooth_nearest(randn((batch, 1, *x.shape[2:]), generator, x.device) * std + mean, sigma)
    field = torch.where(field < threshold, torch.zeros_like(field), field)
    color = torch.tensor(WATER_RGB, device=x.device).reshape(1, 3, 1, 1)
    frames = []
    for _ in range(length):
        mask = liquid_strength((field.squeeze(1) * 255.0).floor().clamp(0, 255))
        peak = mask.reshape(batch, -1).amax(dim=1).reshape(batch, 1, 1)
        mask = torch.where(peak > 0, mask / peak.clamp(min=1e-12), torch.zeros_like(mask)) * _SPATTER_STRENGTH
        frames.append(to_uint8_truncated_no_slack(x + mask.unsqueeze(1) * color))
        field = _drip(field, kernel)
    return torch.stack(frames, dim=1)


_SWEEP_FUNCTIONS = {
    "motion_blur": _motion_blur,
    "brightness": _brightness,
    "translate": _translate,
    "rotate": _rotate,
    "tilt": _tilt,
    "scale": _scale,
    "gaussian_blur": _gaussian_blur,
    "shear": _shear,
}
