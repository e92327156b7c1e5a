"""What one accelerator does for augmix-ray, to size a cluster: how many CPU cores of AugMix
actors keep one GPU trainer fed, whether AugMix on the trainer's GPU is the better placement, and
how long the corruption evaluation takes on it.

Everything runs the project's own code on one device (no Ray):
  train step   workers.train_loop's step (training_inputs, step_loss, SGD + GradScaler, autocast
               when AMP) on batches of --batch triples (128, the reference's) of --size images
               (CIFAR, upsampled when > 32), for each --models:
                 fed      uint8 (clean, aug1, aug2) made beforehand, copied from host memory
                          every step, as the Ray Data AugMix actors deliver them (placement data);
                 trainer  clean uint8 only; AugMix().triple runs on the device (placement trainer);
               with and without AMP (fp16), and with --channels-last also in NHWC layout.
  AugMix       AugMix().triple alone on the device, 32x32 and 224x224.
  CPU AugMix   AugMix().triple at --size on one CPU thread of this machine (per CPU-second), so that
               "cores per GPU" = fed triples/s / (triples/s per core) is measured in the same run.
  evaluation   workers.evaluate.score_cell for each of the 15 corruptions at severity 3 on --images
               CIFAR-10 test images with wrn40_2: corrupted images/s on the device, projected to the
               full 15 x 5 x 10,000-image CIFAR-10-C table.

Without a GPU it runs on the CPU with small sizes (a check that it works, not a measurement).

    python benchmarks/gpu_throughput.py [--models wrn40_2 resnext29_32x4d] [--seconds 3] [--images 10000]
    python benchmarks/gpu_throughput.py --size 224 --models resnet50 --sections train   # ImageNet-sized
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augmix import AugMix  # noqa: E402
from augmix.models import build_model  # noqa: E402
from benchmarks.augment_throughput import CIFAR_TEST, device_rate, rate, upsample  # noqa: E402
from augmix.image_batch import to_uint8_rounded  # noqa: E402
from workers.train_loop import build_optimizer, optimisation_step, training_inputs  # noqa: E402

TRAIN = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}  # the reference's SGD
SECTIONS = ("augmix", "train", "evaluation")
FULL_TABLE = (15, 5, 10_000)  # corruptions, severities, images per cell (CIFAR-10-C)


def load_cifar(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [N,3,32,32], int64 labels): real CIFAR-10 test images, or random ones when absent."""
    if not CIFAR_TEST.exists():
        print(f"NOTICE: {CIFAR_TEST} not found; random images (set AUGMIX_SHARED_DATA)")
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return images, torch.randint(0, 10, (count,), generator=generator)
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(CIFAR_TEST, columns=["image", "label"]).slice(0, count)
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in table.column("image").to_pylist()]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(table.column("label").to_pylist())


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def train_step_rate(model_name: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                    placement: str, amp: bool, channels_last: bool, batch: int, seconds: float) -> float:
    """Triples/s of the training step, fed as the placement feeds it (see the module docstring)."""
    model = build_model(model_name, 10).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, **TRAIN, global_batch=batch, total_steps=10**6)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    augmix = AugMix() if placement == "trainer" else None
    generator = torch.Generator(device=device).manual_seed(0) if augmix else None
    host_batches = host_triples(images, labels, batch, made=placement == "fed")
    cursor = [0]

    def step() -> int:
        host = host_batches[cursor[0] % len(host_batches)]
        cursor[0] += 1
        inputs, views = training_inputs(host, device, augmix, generator, channels_last)
        targets = host["label"].to(device, non_blocking=True)
        optimisation_step(model, optimizer, scheduler, scaler, inputs, targets, views, 12.0, amp)
        return batch

    return rate(step, seconds, synchronizer(device), clock=time.perf_counter, warmup=3)


def host_triples(images: torch.Tensor, labels: torch.Tensor, batch: int, made: bool) -> list[dict[str, torch.Tensor]]:
    """Host batches as a trainer receives them: uint8 triples made on the CPU beforehand (`made`,
    placement data) or clean images only (placement trainer)."""
    augmix, generator = AugMix(), torch.Generator().manual_seed(0)
    batches = []
    for start in range(0, len(images) - batch + 1, batch):
        clean = images[start:start + batch]
        entry = {"clean": clean, "label": labels[start:start + batch]}
        if made:
            _, aug1, aug2 = augmix.triple(clean, generator)
            entry["aug1"], entry["aug2"] = to_uint8_rounded(aug1), to_uint8_rounded(aug2)
        batches.append(entry)
    return batches


def evaluation_rates(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                     batch: int) -> dict[str, tuple[float, float, float]]:
    """corruption -> (images/s of one severity-3 cell through score_cell, seconds making its
    corrupted images, seconds in the model)."""
    from augmix.corruptions import CORRUPTIONS
    from workers.evaluate import CellSettings, EvaluationCell, score_cell

    model = build_model("wrn40_2", 10).to(device).eval()
    results = {}
    with tempfile.TemporaryDirectory() as cells:
        settings = CellSettings(preset="cifar", seed=0, batch_size=batch, cells_uri=cells)
        score_cell(EvaluationCell("gaussian_noise", 1), model, images[:batch], labels[:batch], settings)  # warm-up
        for corruption in CORRUPTIONS:
            synchronizer(device)()
            start = time.perf_counter()
            summary = score_cell(EvaluationCell(corruption, 3), model, images, labels, settings)
            synchronizer(device)()
            results[corruption] = (len(images) / (time.perf_counter() - start), float(summary["seconds_produce"]),
                                   float(summary["seconds_infer"]))
    return results


def report_training(rows: list[tuple[str, str, bool, bool, float]], per_core: float, size: int, batch: int) -> None:
    print(f"\ntraining step, {size}x{size}, batch of {batch} triples, triples/s; cores = fed rate / {per_core:.0f} "
          "triples/s per CPU core of AugMix")
    print(f"  {'model':16s} {'placement':9s} {'amp':5s} {'layout':6s} {'triples/s':>10s} {'CPU cores to feed':>18s}")
    for model, placement, amp, channels_last, value in rows:
        cores = f"{value / per_core:18.1f}" if placement == "fed" else f"{'(none: on device)':>18s}"
        layout = "NHWC" if channels_last else "NCHW"
        print(f"  {model:16s} {placement:9s} {str(amp):5s} {layout:6s} {value:10.0f} {cores}")


def report_evaluation(results: dict[str, tuple[float, float, float]], images: int) -> None:
    rates = [value for value, _, _ in results.values()]
    print(f"\nevaluation, wrn40_2 (untrained), one severity-3 cell per corruption on {images} images:")
    print(f"  {'corruption':18s} {'images/s':>10s} {'corrupting s':>13s} {'model s':>8s}")
    for corruption, (value, produce, infer) in sorted(results.items(), key=lambda item: item[1][0]):
        print(f"  {corruption:18s} {value:10.0f} {produce:13.2f} {infer:8.2f}")
    corruptions, severities, per_cell = FULL_TABLE
    total_images = corruptions * severities * per_cell
    seconds = sum(per_cell / value for value in rates) * severities
    print(f"  mean {np.mean(rates):.0f} images/s; the full CIFAR-10-C table ({total_images:,} images) "
          f"projects to {seconds:.0f} s on this device, one cell at a time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wrn40_2"])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    parser.add_argument("--images", type=int, default=10_000, help="CIFAR test images per evaluation cell")
    parser.add_argument("--size", type=int, default=32, help="training image size (CIFAR upsampled when > 32)")
    parser.add_argument("--batch", type=int, default=128, help="triples per training step")
    parser.add_argument("--channels-last", action="store_true", help="also time NHWC (train.channels_last)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"NOTICE: no CUDA device; a functional check on the CPU with small sizes, torch {torch.__version__}")
        args.images, args.seconds = min(args.images, 256), min(args.seconds, 0.5)
    images, labels = load_cifar(max(args.images, 1024))

    train_images = images[:1024] if args.size == 32 else upsample(images[:512], args.size)
    train_labels = labels[:len(train_images)]
    torch.set_num_threads(1)
    cpu_batch = 256 if args.size == 32 else 32
    per_core = device_rate(train_images, cpu_batch, args.seconds, "cpu")
    print(f"AugMix().triple on 1 CPU thread, {args.size}x{args.size} batches of {cpu_batch}: "
          f"{per_core:.0f} triples/s per core")
    if on_gpu:
        torch.set_num_threads(min(8, os.cpu_count() or 1))
    if on_gpu and "augmix" in args.sections:
        print(f"AugMix().triple on the device, 32x32 batches of 1024: "
              f"{device_rate(images[:8192], 1024, args.seconds, device):.0f} triples/s")
        print(f"AugMix().triple on the device, 224x224 batches of 128: "
              f"{device_rate(upsample(images[:512], 224), 128, args.seconds, device):.0f} triples/s")

    rows = []
    for model in args.models if "train" in args.sections else ():
        for placement in ("fed", "trainer"):
            for amp in ((False, True) if on_gpu else (False,)):
                for channels_last in ((False, True) if args.channels_last else (False,)):
                    value = train_step_rate(model, train_images, train_labels, device, placement, amp,
                                            channels_last, args.batch, args.seconds)
                    rows.append((model, placement, amp, channels_last, value))
                    print(f"  {model} {placement} amp={amp} channels_last={channels_last}: {value:.0f} triples/s",
                          flush=True)
    if rows:
        report_training(rows, per_core, args.size, args.batch)
    if "evaluation" in args.sections:
        report_evaluation(evaluation_rates(images[:args.images], labels[:args.images], device, 1000), args.images)


if __name__ == "__main__":
    main()
