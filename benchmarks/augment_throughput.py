"""AugMix throughput on one CPU thread: batched `augmix.AugMix().triple` vs the per-image PIL reference.

The reference is the algorithm of google-research/augmix (cifar.py `aug` + augmentations.py) written
here with PIL ops, numpy sampling and ToTensor + torch mixing, producing (clean, aug1, aug2) per image;
its clean tensor is converted once per triple and reused (the original converts it again inside each
view, so this baseline is slightly faster than the original). torchvision.transforms.v2.AugMix is
timed producing one view per call, per image (it draws one set of parameters per call).

Ours is timed twice: first with the process's default allocator settings, then as the AugMix actors
run it (workers.memory.retain_freed_memory: freed buffers stay in the heap instead of going back to
the kernel); the reference is timed once, before both.

A fixed cost per op call (a few dozen small torch calls per op group) weighs less in larger
batches, so 32x32 is also timed at 512 images per batch, what the CIFAR job configs give each
actor call (scaling.data_batch_size).

Run: python -m benchmarks.augment_throughput [--seconds 2] [--profile] [--cifar-batches 512 1024]
Targets: >= 20x the PIL reference's triples/s at 32x32 and >= 3x at 224x224, per core.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import augmix.ops as augmix_ops
from augmix import AugMix
from workers.memory import retain_freed_memory

SHARED_DATA = Path(os.environ.get("AUGMIX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CIFAR_TEST = SHARED_DATA / "cifar10" / "test.parquet"


# ---------------------------------------------------------------- inputs


def load_images(count: int) -> torch.Tensor:
    """uint8 [count,3,32,32]: real CIFAR-10 test images, or natural-ish random ones when absent."""
    if CIFAR_TEST.exists():
        import pyarrow.parquet as pq

        column = pq.read_table(CIFAR_TEST, columns=["image"]).slice(0, count).column("image").to_pylist()
        arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in column]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    print(f"NOTICE: {CIFAR_TEST} not found; using random smooth images with noise instead of CIFAR-10")
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, 5, 5, generator=generator) * 255
    smooth = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False)
    noisy = smooth + 8 * torch.randn(count, 3, 32, 32, generator=generator)
    return noisy.round().clamp(0, 255).to(torch.uint8)


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]


# ---------------------------------------------------------------- the per-image PIL reference


def _level(severity: float) -> float:
    return np.random.uniform(low=0.1, high=severity)


def _signed(value: float) -> float:
    return -value if np.random.uniform() > 0.5 else value


def _affine(image: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


def reference_ops() -> list[Callable[[Image.Image, float], Image.Image]]:
    """The reference's nine default ops with its level -> parameter formulas."""
    return [
        lambda im, s: ImageOps.autocontrast(im),
        lambda im, s: ImageOps.equalize(im),
        lambda im, s: ImageOps.posterize(im, 4 - int(_level(s) * 4 / 10)),
        lambda im, s: im.rotate(_signed(int(_level(s) * 30 / 10)), resample=Image.BILINEAR),
        lambda im, s: ImageOps.solarize(im, 256 - int(_level(s) * 256 / 10)),
        lambda im, s: _affine(im, (1, _signed(_level(s) * 0.3 / 10), 0, 0, 1, 0)),
        lambda im, s: _affine(im, (1, 0, 0, _signed(_level(s) * 0.3 / 10), 1, 0)),
        lambda im, s: _affine(im, (1, 0, _signed(int(_level(s) * (im.size[0] / 3) / 10)), 0, 1, 0)),
        lambda im, s: _affine(im, (1, 0, 0, 0, 1, _signed(int(_level(s) * (im.size[1] / 3) / 10)))),
    ]


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """torchvision ToTensor for an RGB PIL image: float32 [3,H,W] / 255."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)


def reference_view(image: Image.Image, clean: torch.Tensor, ops: list, width: int = 3, depth: int = -1,
                   severity: float = 3, alpha: float = 1.0) -> torch.Tensor:
    weights = np.float32(np.random.dirichlet([alpha] * width))
    skip = np.float32(np.random.beta(alpha, alpha))
    mix = torch.zeros_like(clean)
    for chain in range(width):
        augmented = image.copy()
        for _ in range(depth if depth > 0 else np.random.randint(1, 4)):
            augmented = ops[np.random.randint(len(ops))](augmented, severity)
        mix += weights[chain] * _to_tensor(augmented)
    return skip * clean + (1 - skip) * mix


def reference_triple(image: Image.Image, ops: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    clean = _to_tensor(image)
    return clean, reference_view(image, clean, ops), reference_view(image, clean, ops)


# ---------------------------------------------------------------- timing


def rate(run_once: Callable[[], int], seconds: float, sync: Callable[[], None] = lambda: None,
         clock: Callable[[], float] = time.process_time, warmup: int = 1) -> float:
    """Items per second of `run_once` (which returns how many items it produced), after `warmup` calls.

    On CPU the clock is this process's CPU time: with one torch thread that is the per-core cost,
    and it stays meaningful when other jobs share the cores (wall time would charge their load to us).
    """
    for _ in range(warmup):
        run_once()
    sync()
    produced, start = 0, clock()
    while True:
        produced += run_once()
        sync()
        elapsed = clock() - start
        if elapsed >= seconds:
            return produced / elapsed


def measure(images: torch.Tensor, batch: int, seconds: float) -> dict[str, float]:
    np.random.seed(0)
    pil_images = to_pil(images)
    ops = reference_ops()
    cursor = {"pil": 0, "tv": 0, "ours": 0}

    def pil_step() -> int:
        for _ in range(8):
            reference_triple(pil_images[cursor["pil"] % len(pil_images)], ops)
            cursor["pil"] += 1
        return 8

    from torchvision.transforms import v2

    torchvision_augmix = v2.AugMix()

    def torchvision_step() -> int:
        for _ in range(8):
            torchvision_augmix(images[cursor["tv"] % len(images)])
            cursor["tv"] += 1
        return 8

    return {
        "pil": rate(pil_step, seconds),
        "torchvision": rate(torchvision_step, seconds),
        "ours": measure_ours(images, batch, seconds),
    }


def measure_ours(images: torch.Tensor, batch: int, seconds: float) -> float:
    """Triples/s of the batched AugMix; also prints the page faults per batch (noise-free, unlike time)."""
    augment = AugMix()
    generator = torch.Generator().manual_seed(0)
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    cursor = [0]

    def ours_step() -> int:
        chunk = batches[cursor[0] % len(batches)]
        cursor[0] += 1
        augment.triple(chunk, generator)
        return chunk.shape[0]

    faults_before, calls_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, cursor[0]
    triples = rate(ours_step, seconds)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    print(f"  (batched AugMix at {images.shape[-1]}x{images.shape[-1]}: "
          f"{faults / max(cursor[0] - calls_before, 1):.0f} page faults per batch)")
    return triples


def report(label: str, rates: dict[str, float]) -> None:
    print(f"{label}")
    print(f"  PIL per-image reference : {rates['pil']:10.1f} triples/s")
    print(f"  torchvision v2.AugMix   : {rates['torchvision']:10.1f} views/s (one view per call)")
    print(f"  augmix.AugMix().triple  : {rates['ours']:10.1f} triples/s (default allocator settings)")
    print(f"  ratio ours / PIL reference         : {rates['ours'] / rates['pil']:6.1f}x (triples/s)")
    print(f"  ratio ours triples / tv views      : {rates['ours'] / rates['torchvision']:6.1f}x")


def report_retained(label: str, rates: dict[str, float], retained: float) -> None:
    print(f"{label} as in the AugMix actors (freed memory retained)")
    print(f"  augmix.AugMix().triple  : {retained:10.1f} triples/s")
    print(f"  ratio ours / PIL reference         : {retained / rates['pil']:6.1f}x (triples/s)")
    print(f"  ratio ours triples / tv views      : {retained / rates['torchvision']:6.1f}x")


def device_rate(images: torch.Tensor, batch: int, seconds: float, device: torch.device | str = "cuda") -> float:
    """Triples/s of AugMix().triple on `device` (CPU: per CPU-second of this process; CUDA: wall time, synchronised)."""
    device = torch.device(device)
    augment = AugMix()
    generator = torch.Generator(device).manual_seed(0)
    on_device = images.to(device)
    batches = [on_device[i : i + batch] for i in range(0, len(on_device) - batch + 1, batch)]
    cursor = [0]

    def step() -> int:
        chunk = batches[cursor[0] % len(batches)]
        cursor[0] += 1
        augment.triple(chunk, generator)
        return chunk.shape[0]

    if device.type == "cpu":
        return rate(step, seconds)
    return rate(step, seconds, torch.cuda.synchronize, clock=time.perf_counter)


def profile_ops(images: torch.Tensor, batch: int) -> None:
    """Seconds spent in each op (the unchecked kernels AugMix calls) and outside them during a few triples."""
    totals: dict[str, float] = {}
    kernels = augmix_ops.UNCHECKED_OPS
    originals = {name: kernels[name] for name in augmix_ops.AUGMENTATIONS}

    def timed(name: str, op: Callable) -> Callable:
        def wrapper(*args):
            start = time.process_time()
            result = op(*args)
            totals[name] = totals.get(name, 0.0) + time.process_time() - start
            return result

        return wrapper

    for name, op in originals.items():
        kernels[name] = timed(name, op)
    try:
        augment, generator = AugMix(), torch.Generator().manual_seed(0)
        augment.triple(images[:batch], generator)
        totals.clear()
        start = time.process_time()
        rounds = 5
        for _ in range(rounds):
            augment.triple(images[:batch], generator)
        wall = time.process_time() - start
    finally:
        kernels.update(originals)
    in_ops = sum(totals.values())
    print(f"  profile, {images.shape[-1]}x{images.shape[-1]}, batch {batch}: {1e3 * wall / rounds:.1f} ms/batch")
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"    {name:13s} {100 * seconds / wall:5.1f}%")
    print(f"    {'outside ops':13s} {100 * (wall - in_ops) / wall:5.1f}%  (sampling, gather/scatter, mixing)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per method and size")
    parser.add_argument("--profile", action="store_true", help="also print the time share of each op")
    parser.add_argument("--cifar-batches", type=int, nargs="*", default=[512],
                        help="more 32x32 batch sizes to time retained (512: the CIFAR job configs' data_batch_size)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_images(1024)
    print(f"torch {torch.__version__}, 1 thread, {len(images)} images, AugMix() defaults (width 3, depth -1, severity 3);"
          " CPU rates are per CPU-second of this process")
    small_rates = measure(images, 256, args.seconds)
    report("32x32, batches of 256:", small_rates)
    large = upsample(images[:128], 224)
    large_rates = measure(large, 32, args.seconds)
    report("224x224 (CIFAR upsampled), batches of 32:", large_rates)
    if retain_freed_memory():
        report_retained("32x32, batches of 256,", small_rates, measure_ours(images, 256, args.seconds))
        report_retained("224x224, batches of 32,", large_rates, measure_ours(large, 32, args.seconds))
        for batch in args.cifar_batches:
            report_retained(f"32x32, batches of {batch},", small_rates, measure_ours(images, batch, args.seconds))
    else:
        print("(not glibc: the actors' allocator setting does not apply here)")
    if args.profile:
        profile_ops(images, 256)
        profile_ops(large, 32)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        print(f"CUDA ({name}): 32x32 batches of 1024: {device_rate(images, 1024, args.seconds):10.1f} triples/s")
        print(f"CUDA ({name}): 224x224 batches of 128: {device_rate(large, 128, args.seconds):10.1f} triples/s")


if __name__ == "__main__":
    main()
