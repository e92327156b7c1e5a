"""Throughput of augmix.corruptions against per-image numpy/PIL/scipy/OpenCV reference code.

For each of the 19 corruptions and 5 severities: images/s of the batched torch kernels on
32x32 ("cifar" preset) and 224x224 ("imagenet" preset) batches, images/s of a per-image
implementation of the same reference formulas (reference/corruptions.py, the published scripts
per image), and their ratio, all on one thread in the same run. Then the
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
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # reference/ is not installed

from augmix.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt  # noqa: E402
from reference.corruptions import reference_function  # noqa: E402
from reference.images import comparison_images, upsample_bicubic  # noqa: E402

SUITE = CORRUPTIONS + EXTRA_CORRUPTIONS
CIFAR_TEST_IMAGES = 10_000


# ---------------------------------------------------------------- measurement

def load_images(count: int, size: int) -> torch.Tensor:
    """Real CIFAR-10 test images (upsampled for 224) when the shared data exists, else synthetic ones."""
    images = comparison_images(count)
    return images if size == 32 else upsample_bicubic(images, size)


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
