"""Throughput of the fan-out evaluation: Ray tasks on 1 and 2 CPUs vs one process, and where a
cell's time goes (producing corrupted images vs the model), projected to CIFAR-10-C at full size.

Three ways to score the same cells with the same code (workers.evaluate.score_cell: seeded
on-the-fly corruption, then the model, one .npz per cell):
  serial   a plain loop in this process, no Ray, one torch thread;
  ray x1   orchestrator.evaluation.run_cells on a local Ray cluster started with num_cpus=1;
  ray x2   the same on a fresh cluster with num_cpus=2 (one thread per task).
Ray workers are warmed up (torch imported) before timing: a real evaluation pays that once per
worker, not per cell, and it is printed separately.

The split and projection time every one of the 75 CIFAR-10-C cells' corruption on N images and
WRN-40-2 inference per image, then scale both linearly to 10,000 images per cell.

Run: python benchmarks/evaluation_throughput.py [--images 100] [--model wrn40_2] [--full]
Default (~3-5 min on 2 cores): 15 cells (each corruption at severity 3) of 100 CIFAR-10 test
images; --full: all 75 cells + clean on 10,000 images. Target: ray x2 >= 1.8x serial.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from augmix.corruptions import CORRUPTIONS, SEVERITIES
from augmix.models import build_model
from orchestrator.config import build_config
from orchestrator.evaluation import TestSet, cells_for, run_cells
from workers.evaluate import CellSettings, EvaluationCell, corrupted_chunks, load_model, score_cell

CIFAR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
FULL_IMAGES = 10_000


def load_test_set(count: int) -> TestSet:
    """The first `count` real CIFAR-10 test images, or the synthetic test set when absent."""
    from augmix.datasets import load_split

    if (CIFAR_DIR / "test.parquet").exists():
        table = load_split("parquet", "test", str(CIFAR_DIR), count, decode=True)
    else:
        print(f"NOTICE: {CIFAR_DIR} not found; using the synthetic test set")
        table = load_split("synthetic", "test", limit=count, synthetic_test_size=max(count, 10))
    images = torch.from_numpy(table.decoded()).permute(0, 3, 1, 2).contiguous()
    return TestSet(images, torch.from_numpy(table.labels), list(table.classes))


def model_state(name: str) -> dict:
    """A randomly initialised model in the form training exports (throughput does not need weights)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10)
    return {"model_name": name, "num_classes": 10, "state_dict": model.state_dict(),
            "config": {"model": {"name": name, "options": {}}}}


def benchmark_cells(full: bool) -> list[EvaluationCell]:
    if full:
        return cells_for(build_config({}))  # clean + the 15 test corruptions x 5 severities, as `augmix evaluate`
    return [EvaluationCell(name, 3) for name in CORRUPTIONS]


def time_serial(cells: list[EvaluationCell], state: dict, test_set: TestSet, settings: CellSettings) -> float:
    """The single-process loop: same scoring code, no Ray, one thread."""
    torch.set_num_threads(1)
    model = load_model(state, torch.device("cpu"))
    start = time.perf_counter()
    for cell in cells:
        score_cell(cell, model, test_set.images, test_set.labels, settings)
    return time.perf_counter() - start


def _warm_up(count: int) -> float:
    """Start `count` Ray workers and import the evaluation code in each; returns the seconds."""
    import ray

    @ray.remote(num_cpus=1)
    def touch(_: int) -> int:
        import workers.evaluate  # noqa: F401 - pulls torch, augmix.corruptions, augmix.models

        time.sleep(0.5)  # keep this worker busy so the next `touch` starts another one
        return os.getpid()

    start = time.perf_counter()
    pids = set(ray.get([touch.remote(i) for i in range(2 * count)]))
    if len(pids) < count:
        print(f"warning: only {len(pids)} Ray workers started for {count} CPUs")
    return time.perf_counter() - start


def time_ray(workers: int, cells: list[EvaluationCell], state: dict, test_set: TestSet, out: str,
             images: int) -> tuple[float, float]:
    """(seconds for the cells, seconds of worker warm-up) on a fresh local cluster of `workers` CPUs."""
    import ray

    from orchestrator.ray_session import pin_local_environment

    pin_local_environment()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        warm = _warm_up(workers)
        config = build_config({}, [f"storage.uri={out}", f"eval.limit={images}", "eval.cpus_per_cell=1",
                                   "eval.batch_size=100", "eval.max_retries=0"])
        start = time.perf_counter()
        failed = run_cells(config, cells, state, test_set)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    if failed:
        raise RuntimeError(f"benchmark cells failed: {[c.key for c in failed]}")
    return seconds, warm


def corruption_seconds(images: torch.Tensor) -> dict[tuple[str, int], float]:
    """Seconds to corrupt `images` for every one of the 75 cells (one thread)."""
    torch.set_num_threads(1)
    seconds = {}
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            start = time.perf_counter()
            for _ in corrupted_chunks(images, name, severity, "cifar", seed=0):
                pass
            seconds[(name, severity)] = time.perf_counter() - start
    return seconds


@torch.inference_mode()
def inference_seconds_per_image(state: dict, images: torch.Tensor, batch_size: int = 100) -> float:
    torch.set_num_threads(1)
    model = load_model(state, torch.device("cpu"))
    model(images[:batch_size].float().div(255))  # warm-up
    start = time.perf_counter()
    for batch in images.split(batch_size):
        model(batch.float().div(255))
    return (time.perf_counter() - start) / len(images)


def report_scaling(cells: int, images: int, serial: float, ray_times: dict[int, tuple[float, float]]) -> None:
    print(f"\n== fan-out throughput: {cells} cells x {images} images ==")
    print(f"{'mode':<10}{'seconds':>9}{'cells/s':>10}{'images/s':>10}{'vs serial':>11}{'warm-up s':>11}")
    print(f"{'serial':<10}{serial:>9.1f}{cells / serial:>10.2f}{cells * images / serial:>10.0f}{1.0:>10.2f}x{'':>11}")
    for workers, (seconds, warm) in ray_times.items():
        print(f"{f'ray x{workers}':<10}{seconds:>9.1f}{cells / seconds:>10.2f}{cells * images / seconds:>10.0f}"
              f"{serial / seconds:>10.2f}x{warm:>11.1f}")
    if 1 in ray_times and 2 in ray_times:
        print(f"scaling ray x2 / ray x1: {ray_times[1][0] / ray_times[2][0]:.2f}x")


def report_split(model: str, images: int, produce: dict[tuple[str, int], float], infer_per_image: float,
                 workers: int) -> None:
    produce_per_image = sum(produce.values()) / images  # all 75 cells, per clean image
    infer_all = infer_per_image * FULL_IMAGES * (len(produce) + 1)  # + clean
    produce_all = produce_per_image * FULL_IMAGES
    total = infer_all + produce_all
    print(f"\n== where a cell's time goes ({model}, 32x32, one thread, measured on {images} images) ==")
    slowest = sorted(produce.items(), key=lambda item: -item[1])[:3]
    print("slowest corruptions per 1,000 images: " + ", ".join(
        f"{name}-{s} {1000 * sec / images:.2f}s" for (name, s), sec in slowest))
    print(f"per image: corruption {1e3 * produce_per_image / len(produce):.3f} ms (mean over 75 cells), "
          f"{model} inference {1e3 * infer_per_image:.3f} ms")
    print(f"projected 75-cell CIFAR-10-C + clean on {FULL_IMAGES:,} images: corruption {produce_all / 3600:.2f} "
          f"core-h ({100 * produce_all / total:.0f}%), inference {infer_all / 3600:.2f} core-h "
          f"({100 * infer_all / total:.0f}%), total {total / 3600:.2f} core-h = "
          f"{total / 3600 / workers:.2f} h on {workers} CPU workers")


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="clean test images per cell (default 100)")
    parser.add_argument("--model", default="wrn40_2", help="model for both parts (default wrn40_2)")
    parser.add_argument("--full", action="store_true", help="all 75 cells + clean on 10,000 images")
    parser.add_argument("--skip-split", action="store_true", help="only the fan-out scaling")
    args = parser.parse_args()
    images = FULL_IMAGES if args.full else args.images
    print(f"before: {machine_load()}")
    test_set = load_test_set(images)
    state = model_state(args.model)
    cells = benchmark_cells(args.full)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as out:
        settings = CellSettings(preset="cifar", seed=0, batch_size=100, cells_uri=f"{out}/serial/eval/cells")
        serial = time_serial(cells, state, test_set, settings)
        ray_times = {workers: time_ray(workers, cells, state, test_set, f"{out}/ray{workers}", images)
                     for workers in (1, 2)}
    report_scaling(len(cells), images, serial, ray_times)
    if not args.skip_split:
        split_images = test_set.images[:min(images, 200)]
        report_split(args.model, len(split_images), corruption_seconds(split_images),
                     inference_seconds_per_image(state, split_images), workers=2)
    print(f"after: {machine_load()}")


if __name__ == "__main__":
    main()
