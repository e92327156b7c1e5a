"""The images the reference comparisons run on: real CIFAR-10 test images, or synthetic stand-ins.

The parity claims (ops against Pillow, corruptions against the published scripts) are about
natural photographs, so they are checked on the shared CIFAR-10 sample when it is there. A clean
clone has no such data; there the same checks run on `synthetic_images`, which have what the
kernels are sensitive to in photographs: smooth gradients, soft blobs, hard edges, saturated
highlights and shadows, fine texture and sensor-like noise.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUGMIX_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR10_DIR = SHARED_DATA / "cifar10"


def has_cifar10() -> bool:
    """Whether the shared JPEG-in-Parquet CIFAR-10 sample is present (AUGMIX_SHARED_DATA moves it)."""
    return (CIFAR10_DIR / "test.parquet").exists()


def decode_cifar10_test(directory: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` test images as uint8 [N,3,32,32] and their labels."""
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(directory / "test.parquet", columns=["image", "label"]).slice(0, count)
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in table.column("image").to_pylist()]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.long)
    return batch, labels


def _smooth_fields(rng: np.random.Generator, count: int, size: int, cells: int) -> np.ndarray:
    """Bicubic-interpolated random fields [count,size,size,3] in about -1..1 (one per image)."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, (count, 3, cells, cells)))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine.permute(0, 2, 3, 1).numpy()


def _colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour as photographs have them: mostly luminance, some chroma."""
    return rng.uniform(10, 245) + rng.uniform(20, 70) * rng.uniform(-1, 1, 3)


def _add_shapes(rng: np.random.Generator, image: np.ndarray, texture: np.ndarray) -> None:
    """Paint soft blobs (out-of-focus objects) and hard-edged ellipses and boxes (object boundaries)."""
    size = image.shape[0]
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(int(rng.integers(1, 4))):
        centre, sigma = rng.uniform(0, size, 2), rng.uniform(size / 16, size / 4)
        weight = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma ** 2))
        image += (_colour(rng) - image) * (rng.uniform(0.5, 1) * weight)[..., None]
    for _ in range(int(rng.integers(2, 6))):
        top, left = rng.uniform(-4, size - 4, 2)
        height, width = rng.uniform(3, size * 0.6, 2)
        if rng.uniform() < 0.5:
            inside = ((rows - top - height / 2) / (height / 2)) ** 2 + ((cols - left - width / 2) / (width / 2)) ** 2 <= 1
        else:
            inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
        image[inside] = _colour(rng) + rng.uniform(0, 25) * texture[inside]


def _synthetic_image(rng: np.random.Generator, low: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """One float [size,size,3] scene: a lit gradient, shapes, texture, exposure and sensor noise."""
    size = low.shape[0]
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * cols + np.sin(angle) * rows
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = _colour(rng), _colour(rng)
    image = start + (end - start) * ramp[..., None] + rng.uniform(10, 40) * low
    _add_shapes(rng, image, mid)
    stripes = np.sin(2 * np.pi * (rows * rng.uniform(2, 10) + cols * rng.uniform(2, 10)))
    image += rng.uniform(0, 12) * stripes[..., None] + rng.uniform(0, 20) * mid  # fine texture
    image = (image - 128) * rng.uniform(0.8, 1.25) + 128 + rng.uniform(-25, 25)  # exposure: a few clip
    return image + rng.normal(0, rng.uniform(1, 5), image.shape)  # sensor noise


def synthetic_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """`count` natural-image-like uint8 [N,3,size,size] images, the same for the same seed."""
    rng = np.random.default_rng(seed)
    low, mid = _smooth_fields(rng, count, size, 4), _smooth_fields(rng, count, size, max(4, size // 3))
    images = np.stack([_synthetic_image(rng, low[i], mid[i]) for i in range(count)])
    return torch.from_numpy(np.clip(np.round(images), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def comparison_images(count: int) -> torch.Tensor:
    """The first `count` real CIFAR-10 test images when the shared data is there, else synthetic ones."""
    if has_cifar10():
        return decode_cifar10_test(CIFAR10_DIR, count)[0]
    return synthetic_images(count)


def upsample_bicubic(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,3,h,w] -> [N,3,size,size] by PIL bicubic: ImageNet-sized inputs from small images."""
    from PIL import Image

    big = [np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((size, size), Image.BICUBIC))
           for image in images]
    return torch.from_numpy(np.stack(big)).permute(0, 3, 1, 2).contiguous()
