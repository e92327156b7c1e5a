"""Throughput of augmix.corruptions against per-image numpy/PIL/scipy/OpenCV reference code.

For each of the 19 corruptions and 5 severities: images/s of the batched torch kernels on
32x32 ("cifar" preset) and 224x224 ("imagenet" preset) batches, images/s of a per-image
implementation of the same reference formulas (tests/test_corruptions.py for noise, blur and
digital; the weather ones below), and their ratio, all on one thread in the same run. Then the
projected time of the whole 19 x 5 CIFAR-10-C suite on 10,000 images and the slowest 224x224
cell per image.

    python benchmarks/corruption_throughput.py            # about 2-3 minutes
    python benchmarks/corruption_throughput.py --full     # bigger batches and reference samples
    python benchmarks/corruption_throughput.py --only glass_blur   # some cells (no suite projection)
"""
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from augmix.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt  # noqa: E402
from test_corruptions import (  # noqa: E402
    REFERENCES,
    _gaussian,
    ref_clipped_zoom,
    ref_motion_blur_at,
)

SUITE = CORRUPTIONS + EXTRA_CORRUPTIONS
CIFAR_TEST_IMAGES = 10_000

# ---------------------------------------------------------------- weather references (per image)

WEATHER_CONSTANTS = {
    "snow": {"cifar": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                       (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
             "imagenet": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                          (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]},
    "frost": {"cifar": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
              "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]},
    "fog": {"cifar": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
            "imagenet": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]},
    "spatter": {"cifar": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                          (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
                "imagenet": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                             (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]},
}


def ref_plasma_fractal(rng, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the reference's plasma_fractal)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0
    while stepsize >= 2:
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        half = stepsize // 2
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def ref_fog(img, c, rng, mapsize):
    x = img / 255.
    max_val = x.max()
    size = img.shape[0]
    x = x + c[0] * ref_plasma_fractal(rng, mapsize, c[1])[:size, :size][..., None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


_FROST_CACHE: dict[float, list[np.ndarray]] = {}


def ref_frost(img, c, rng, scale):
    import cv2
    if scale not in _FROST_CACHE:
        distribution = importlib.metadata.distribution("imagecorruptions")
        files = sorted(str(f) for f in distribution.files if "/frost/frost" in str(f))
        photos = [cv2.imread(str(distribution.locate_file(f))) for f in files]
        _FROST_CACHE[scale] = [cv2.resize(p, (0, 0), fx=scale, fy=scale) if scale != 1 else p for p in photos]
    frost = _FROST_CACHE[scale][rng.integers(5)]
    size = img.shape[0]
    x0, y0 = rng.integers(0, frost.shape[0] - size), rng.integers(0, frost.shape[1] - size)
    frost = frost[x0:x0 + size, y0:y0 + size][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(img) + c[1] * frost, 0, 255)


def ref_snow(img, c, rng):
    import cv2
    size = img.shape[0]
    x = np.array(img, dtype=np.float32) / 255.
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = ref_clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.uint8(np.clip(layer.squeeze(), 0, 1) * 255)
    layer = ref_motion_blur_at(layer.astype(np.float64), c[4], c[5], rng.uniform(-135, -45)) / 255.
    layer = layer[..., None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(size, size, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def ref_spatter(img, c, rng):
    import cv2
    x = np.array(img, dtype=np.float32) / 255.
    liquid = _gaussian(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate([v / 255. * np.ones_like(m[..., :1]) for v in (175, 238, 238)], axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = _gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), c[4])
    m[m < 0.8] = 0
    color = np.concatenate([v / 255. * np.ones_like(x[..., :1]) for v in (63, 42, 20)], axis=2) * m[..., None]
    return np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255


def reference_function(name: str, preset: str):
    """(img HWC uint8, severity, rng) -> float HWC image, the per-image reference of `name`."""
    if name in REFERENCES:
        from test_corruptions import REFERENCE_CONSTANTS
        table = REFERENCE_CONSTANTS[name][preset]
        return lambda img, severity, rng: REFERENCES[name](img, table[severity - 1], rng)
    table = WEATHER_CONSTANTS[name][preset]
    if name == "fog":
        mapsize = 32 if preset == "cifar" else 256
        return lambda img, severity, rng: ref_fog(img, table[severity - 1], rng, mapsize)
    if name == "frost":
        scale = 0.2 if preset == "cifar" else 1.0
        return lambda img, severity, rng: ref_frost(img, table[severity - 1], rng, scale)
    function = {"snow": ref_snow, "spatter": ref_spatter}[name]
    return lambda img, severity, rng: function(img, table[severity - 1], rng)


# ---------------------------------------------------------------- measurement

def load_images(count: int, size: int) -> torch.Tensor:
    """Real CIFAR-10 test images (upsampled for 224) when the shared data exists, else random."""
    import conftest
    from test_corruptions import upsample_224
    if (conftest.CIFAR10_DIR / "test.parquet").exists():
        images, _ = conftest._decode_test_images(conftest.CIFAR10_DIR, count)
        images = images.repeat((count + images.shape[0] - 1) // images.shape[0], 1, 1, 1)[:count]
    else:
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images if size == 32 else upsample_224(images)


def time_ours(images: torch.Tensor, name: str, severity: int, preset: str, repeats: int) -> float:
    """Best-of-repeats images/s of the batched kernel (process CPU time: the machine may be shared)."""
    corrupt(images[:2], name, severity, preset, torch.Generator().manual_seed(0))  # warm caches
    best = float("inf")
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(repeat)
        start = time.process_time()
        corrupt(images, name, severity, preset, generator)
        best = min(best, time.process_time() - start)
    return images.shape[0] / best


def time_reference(images: torch.Tensor, name: str, severity: int, preset: str) -> float:
    """images/s of the per-image reference loop (one pass after one warm-up image), process CPU time."""
    function = reference_function(name, preset)
    rng = np.random.default_rng(0)
    arrays = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in images]
    np.uint8(function(arrays[0], severity, rng))
    start = time.process_time()
    for array in arrays:
        np.uint8(function(array, severity, rng))
    return len(arrays) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="bigger batches and reference samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=SUITE, metavar="CORRUPTION", default=list(SUITE),
                        help="time only these corruptions (the whole-suite projection needs all 19)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import cv2
        cv2.setNumThreads(args.threads)
    except ImportError:
        pass
    settings = {  # size: (preset, batch, reference images, repeats)
        32: ("cifar", 1000 if args.full else 500, 32 if args.full else 4, 3 if args.full else 1),
        224: ("imagenet", 32 if args.full else 16, 4 if args.full else 1, 3 if args.full else 1),
    }
    results: dict[tuple[int, str, int], tuple[float, float]] = {}
    print(f"threads={args.threads} torch={torch.__version__}")
    for size, (preset, batch, reference_count, repeats) in settings.items():
        images = load_images(batch, size)
        print(f"\n{size}x{size} preset={preset} batch={batch} reference images={reference_count}")
        print(f"{'corruption':<18}{'sev':>4}{'ours img/s':>13}{'ref img/s':>12}{'ratio':>9}{'ms/img':>9}")
        for name in args.only:
            for severity in range(1, 6):
                ours = time_ours(images, name, severity, preset, repeats)
                reference = time_reference(images[:reference_count], name, severity, preset)
                results[(size, name, severity)] = (ours, reference)
                print(f"{name:<18}{severity:>4}{ours:>13.0f}{reference:>12.1f}{ours / reference:>8.1f}x{1e3 / ours:>9.3f}",
                      flush=True)
    if set(args.only) != set(SUITE):
        return
    suite_seconds = sum(CIFAR_TEST_IMAGES / results[(32, name, s)][0] for name in SUITE for s in range(1, 6))
    reference_seconds = sum(CIFAR_TEST_IMAGES / results[(32, name, s)][1] for name in SUITE for s in range(1, 6))
    worst = max(((1e3 / results[(224, name, s)][0], name, s) for name in SUITE for s in range(1, 6)))
    print(f"\nCIFAR-10-C suite, 19 x 5 x {CIFAR_TEST_IMAGES} images, {args.threads} thread(s): "
          f"ours {suite_seconds:.1f} s (target < 120 s), per-image reference {reference_seconds / 60:.1f} min")
    print(f"worst 224x224 cell: {worst[1]} severity {worst[2]}: {worst[0]:.2f} ms/image (target < 20 ms)")


if __name__ == "__main__":
    main()
