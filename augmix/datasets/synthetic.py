"""A generated 10-class image set that behaves like natural images under corruption.

Each class is a shape family (disc, ring, cross, ...) drawn at a random position, scale, rotation
and aspect, filled with a class-typical hue, its own texture and shading, over a textured
background (two-colour gradient, multi-octave noise, clutter blobs and twigs), with a drop shadow,
uneven lighting and sensor noise. Telling a ring from a disc, or striped from checkered from plain
squares, needs edges and fine texture, which is what noise, blur and contrast corruptions destroy,
so a classifier trained on it loses accuracy under corruption as it does on CIFAR.

Rows are generated in chunks of CHUNK images, each from its own seed (dataset seed, split,
chunk index): any row range can be generated alone (a Ray task can make its shard), the first
N rows do not depend on how many are asked for, and train and test never share a stream.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from augmix.datasets.table import ImageTable
from augmix.errors import InputError

CLASSES = ["disc", "ring", "cross", "triangle", "stripes", "star", "square", "crescent", "checker", "ellipse"]
SPLIT_STREAMS = {"train": 1, "test": 2}
CHUNK = 250  # a multiple of the class count: every chunk is exactly class balanced
TWO_PI = 2 * math.pi
BLOBS, TWIGS = 3, 2  # background clutter layers
TYPICAL_HUE_PROBABILITY = 0.6  # else a random hue: colour hints at the class, shape decides


def synthetic_table(
    split: str, count: int, *, seed: int = 0, image_size: int = 32
) -> ImageTable:
    """The first `count` rows of the synthetic `split` ("train" or "test")."""
    images, labels = generate_synthetic(count, seed=seed, split=split, image_size=image_size)
    return ImageTable(images, labels, list(CLASSES), f"synthetic:{split}(seed={seed})")


def generate_synthetic(
    count: int, *, seed: int = 0, split: str = "train", image_size: int = 32, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, start+count) of the split: (uint8 [count,S,S,3], int64 labels [count])."""
    if split not in SPLIT_STREAMS:
        raise InputError(f"unknown synthetic split {split!r}; allowed: {', '.join(SPLIT_STREAMS)}")
    if count < 0 or start < 0:
        raise InputError(f"row range start={start}, count={count} must be non-negative")
    if image_size < 8:
        raise InputError(f"image_size {image_size} too small; allowed: >= 8")
    first, last = start // CHUNK, (start + count + CHUNK - 1) // CHUNK
    chunks = [_render_chunk(seed, SPLIT_STREAMS[split], index, image_size) for index in range(first, last)]
    if not chunks:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros(0, np.int64)
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    offset = start - first * CHUNK
    return images[offset : offset + count], labels[offset : offset + count]


def _render_chunk(seed: int, stream: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    labels = (torch.arange(CHUNK) % len(CLASSES))[torch.randperm(CHUNK, generator=generator)]
    images = render(labels, size, generator)
    pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return pixels.contiguous().numpy(), labels.numpy().astype(np.int64)


def render(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """float32 [B,3,S,S] in [0,1], one image per label."""
    batch = len(labels)
    rand = _Sampler(batch, generator)
    y, x = _grid(size)
    image = _background(rand, x, y, size)
    mask, fill = _object(labels, rand, x, y, size)
    shadow = torch.roll(mask, shifts=(1, 1), dims=(-2, -1)) * rand.uniform(0.25, 0.6)[:, None, None, None]
    image *= 1 - shadow * (1 - mask)
    image.lerp_(fill, mask)
    return _lighting_and_noise(image, rand, x, y)


class _Sampler:
    """Per-image random parameters as [B] tensors from one generator."""

    def __init__(self, batch: int, generator: torch.Generator):
        self.batch, self.generator = batch, generator

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.batch, *shape, generator=self.generator)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.batch, *shape, generator=self.generator)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1]: y [1,1,S,1] and x [1,1,1,S]. Kept separable so that
    linear expressions in x and y cost one full-size operation (broadcast) instead of several."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return axis[None, None, :, None], axis[None, None, None, :]


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV (hue in turns) of shape [B] → RGB [B,3,1,1]; of shape [B,K] → [B,K,3]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + (hue % 1.0)[..., None] * 6.0) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    rgb = value[..., None] - value[..., None] * saturation[..., None] * ramp
    return rgb[:, :, None, None] if hue.ndim == 1 else rgb


def _smooth_noise(rand: _Sampler, channels: int, resolutions: tuple[int, ...], amplitudes: list[torch.Tensor], size: int) -> torch.Tensor:
    """Multi-octave band-limited noise [B,C,S,S]: random grids at each resolution, weighted by the
    per-image amplitudes [B], summed on the finest grid, then upsampled bicubically to S once.
    Upsampling is two small matrix products (several times faster than F.interpolate here)."""
    finest = min(max(resolutions), size)
    total = torch.zeros(rand.batch, channels, finest, finest)
    for resolution, amplitude in zip(resolutions, amplitudes):
        coarse = rand.normal(channels, resolution, resolution) * amplitude[:, None, None, None]
        upsample = _upsampling_matrix(resolution, finest)
        total += upsample @ coarse @ upsample.T
    upsample = _upsampling_matrix(finest, size)
    return upsample @ total @ upsample.T


@functools.lru_cache(maxsize=None)
def _upsampling_matrix(resolution: int, size: int) -> torch.Tensor:
    """[S, r]: bicubic interpolation weights, the same as F.interpolate(align_corners=False)."""
    if resolution == size:
        return torch.eye(size)
    identity = torch.eye(resolution)[:, None, :, None]  # r images of width 1
    columns = F.interpolate(identity, size=(size, 1), mode="bicubic", align_corners=False)
    return columns[:, 0, :, 0].T.contiguous()


def _random_colour(rand: _Sampler, saturation: tuple[float, float], value: tuple[float, float]) -> torch.Tensor:
    return _hsv_to_rgb(rand.uniform(0, 1), rand.uniform(*saturation), rand.uniform(*value))


def _soft(distance: torch.Tensor, size: int, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Anti-aliased coverage of the region `distance < offset` (signed distances in image units),
    computed in place on `distance`."""
    half = size / 2.0
    return distance.mul_(-half).add_(0.5 + offset * half).clamp_(0.0, 1.0)


def _background(rand: _Sampler, x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    angle = rand.uniform(0, TWO_PI)[:, None, None, None]
    ramp = (x * torch.cos(angle) + y * torch.sin(angle)) * 0.5 + 0.5
    start = _random_colour(rand, (0.05, 0.6), (0.15, 0.9))
    end = _random_colour(rand, (0.05, 0.6), (0.15, 0.9))
    image = start + (end - start) * ramp
    octaves = (4, 8, 16)
    amplitudes = [rand.uniform(0.02, 0.18), rand.uniform(0.02, 0.12), rand.uniform(0.0, 0.08)]
    noise = _smooth_noise(rand, 4, octaves, amplitudes, size)  # channel 0: luminance, 1-3: colour
    image += noise[:, :1]
    image.add_(noise[:, 1:], alpha=0.35)
    return _composite_clutter(image, rand, x, y, size)


def _composite_clutter(image: torch.Tensor, rand: _Sampler, x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Paint BLOBS small discs, then TWIGS thin bars, over the background (in place)."""
    centre_x = rand.uniform(-1, 1, BLOBS + TWIGS, 1, 1)
    centre_y = rand.uniform(-1, 1, BLOBS + TWIGS, 1, 1)
    dx, dy = x[:, 0] - centre_x, y[:, 0] - centre_y  # [B,K,1,S], [B,K,S,1]: separable
    blob_distance = (dx[:, :BLOBS] ** 2 + dy[:, :BLOBS] ** 2).sqrt_()
    blob_alpha = _soft(blob_distance, size, rand.uniform(0.06, 0.2, BLOBS, 1, 1)).mul_(rand.uniform(0.0, 0.8, BLOBS, 1, 1))
    angle = rand.uniform(0, TWO_PI, TWIGS, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    along = (dx[:, BLOBS:] * cos + dy[:, BLOBS:] * sin).abs_().sub_(rand.uniform(0.2, 0.6, TWIGS, 1, 1))
    across = (dy[:, BLOBS:] * cos - dx[:, BLOBS:] * sin).abs_().sub_(rand.uniform(0.02, 0.05, TWIGS, 1, 1))
    twig_alpha = _soft(torch.maximum(along, across), size).mul_(rand.uniform(0.0, 0.7, TWIGS, 1, 1))
    blob_colours = _hsv_to_rgb(rand.uniform(0, 1, BLOBS), rand.uniform(0.1, 0.8, BLOBS), rand.uniform(0.1, 1.0, BLOBS))
    twig_colours = _hsv_to_rgb(rand.uniform(0, 1, TWIGS), rand.uniform(0.0, 0.5, TWIGS), rand.uniform(0.05, 0.7, TWIGS))
    for alpha, colours in ((blob_alpha, blob_colours), (twig_alpha, twig_colours)):  # [B,K,S,S], [B,K,3]
        for layer in range(alpha.shape[1]):
            image.lerp_(colours[:, layer, :, None, None].expand_as(image), alpha[:, layer : layer + 1])
    return image


def _object(
    labels: torch.Tensor, rand: _Sampler, x: torch.Tensor, y: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(coverage [B,1,S,S], fill colour [B,3,S,S]) of each image's object."""
    scale = rand.uniform(0.45, 0.75)[:, None, None, None]
    centre_x = rand.uniform(-0.35, 0.35)[:, None, None, None]
    centre_y = rand.uniform(-0.35, 0.35)[:, None, None, None]
    angle = rand.uniform(0, TWO_PI)[:, None, None, None]
    stretch = rand.uniform(0.85, 1.15)[:, None, None, None]
    dx, dy = x - centre_x, y - centre_y
    u = (dx * torch.cos(angle) + dy * torch.sin(angle)) / (scale * stretch)
    v = (-dx * torch.sin(angle) + dy * torch.cos(angle)) * stretch / scale
    distance = torch.zeros(len(labels), 1, size, size)
    pattern = torch.zeros_like(distance)
    frequency = rand.uniform(2.2, 3.2)[:, None, None, None] * math.pi
    for label, shape in enumerate(_SHAPES):
        rows = labels == label
        if rows.any():
            distance[rows] = shape(u[rows], v[rows]) * scale[rows]
            pattern[rows] = _PATTERNS[label](u[rows], v[rows], frequency[rows])
    mask = _soft(distance, size)
    typical = rand.uniform(0, 1) < TYPICAL_HUE_PROBABILITY
    hue = torch.where(typical, labels.float() / len(CLASSES) + 0.05 * rand.normal(), rand.uniform(0, 1))
    main = _hsv_to_rgb(hue, rand.uniform(0.45, 0.95), rand.uniform(0.45, 1.0))
    second = main * rand.uniform(0.15, 0.45)[:, None, None, None]
    strength = rand.uniform(0.03, 0.25)
    texture = 1 + _smooth_noise(rand, 1, (8, 16), [strength, 0.5 * strength], size)
    light_angle = rand.uniform(0, TWO_PI)[:, None, None, None]
    shading = 1 - rand.uniform(0.0, 0.35)[:, None, None, None] * (u * torch.cos(light_angle) + v * torch.sin(light_angle))
    fill = (main + (second - main) * pattern) * texture * shading
    return mask, fill


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    return torch.maximum(u.abs() - half_u, v.abs() - half_v)


def _radius(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    normals = torch.tensor([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
    projections = u[..., None] * torch.cos(normals) + v[..., None] * torch.sin(normals)
    return projections.amax(dim=-1) - 0.5


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    spikes = (0.5 + 0.5 * torch.cos(5 * torch.atan2(v, u))) ** 2
    return (_radius(u, v) - (0.42 + 0.55 * spikes)) * 0.6


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(_radius(u, v) - 0.95, 0.78 - _radius(u - 0.45, v))


_SHAPES = [
    lambda u, v: _radius(u, v) - 0.9,  # disc
    lambda u, v: (_radius(u, v) - 0.72).abs() - 0.22,  # ring
    lambda u, v: torch.minimum(_box(u, v, 0.28, 0.95), _box(u, v, 0.95, 0.28)),  # cross
    _triangle,
    lambda u, v: _box(u, v, 0.8, 0.8),  # stripes (patterned square)
    _star,
    lambda u, v: _box(u, v, 0.72, 0.72),  # square
    _crescent,
    lambda u, v: _box(u, v, 0.8, 0.8),  # checker (patterned square)
    lambda u, v: (torch.sqrt((u / 0.95) ** 2 + (v / 0.42) ** 2) - 1) * 0.42,  # ellipse
]


def _no_pattern(u: torch.Tensor, v: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(u)


def _stripes(u: torch.Tensor, v: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.tanh(3 * torch.sin(v * frequency))


def _checker(u: torch.Tensor, v: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.tanh(3 * torch.sin(u * frequency * 0.8) * torch.sin(v * frequency * 0.8))


_PATTERNS = [_no_pattern] * 4 + [_stripes] + [_no_pattern] * 3 + [_checker, _no_pattern]


def _lighting_and_noise(image: torch.Tensor, rand: _Sampler, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    angle = rand.uniform(0, TWO_PI)[:, None, None, None]
    falloff = 1 + rand.uniform(0.0, 0.3)[:, None, None, None] * (x * torch.cos(angle) + y * torch.sin(angle))
    gain = rand.uniform(0.65, 1.15)[:, None, None, None]
    contrast = rand.uniform(0.75, 1.2)[:, None, None, None]
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image.mul_(contrast * gain).add_(mean * (1 - contrast) * gain).mul_(falloff)
    noise = torch.randn(image.shape, generator=rand.generator).mul_(rand.uniform(0.005, 0.02)[:, None, None, None])
    return image.add_(noise).clamp_(0.0, 1.0)
