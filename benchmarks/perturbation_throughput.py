"""Throughput of the -P suite beside the -C suite: cells/s and frames/s per core, serial and on Ray.

Both suites are scored with their own worker code on the same clean CIFAR-10 test images and the
same model, in this run:
  -C reference  workers.evaluate.score_cell on the 15 corruptions at severity 3 (one thread);
  -P serial     workers.perturb generation + scoring of the 10 test perturbations (one thread),
                split into producing the sequences and the model;
  -P ray x2     orchestrator.evaluation.run_cells of the same 10 cells on a local cluster of 2 CPUs
                (warmed up first, as in evaluation_throughput.py).
Ratios are against the -C reference measured here, so a loaded machine shifts both alike.

Run: python benchmarks/perturbation_throughput.py [--images 50] [--model wrn40_2] [--frames N] [--skip-ray]
Default: 50 images per cell, the reference sequence lengths (~2-3 min on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluation_throughput import _warm_up, load_test_set, machine_load, model_state  # noqa: E402

from augmix.corruptions import CORRUPTIONS  # noqa: E402
from augmix.perturbations import TEST_PERTURBATIONS  # noqa: E402
from orchestrator.config import build_config  # noqa: E402
from orchestrator.evaluation import TestSet, run_cells  # noqa: E402
from workers.evaluate import CellSettings, EvaluationCell, load_model, score_cell  # noqa: E402
from workers.perturb import PerturbationCell, generated_sequences, score_sequences  # noqa: E402

FULL_IMAGES = 10_000


def time_c_reference(model: torch.nn.Module, test_set: TestSet, out: str) -> tuple[float, int]:
    """(seconds, cells) of the 15 -C cells at severity 3, one thread."""
    settings = CellSettings(preset="cifar", seed=0, batch_size=100, cells_uri=f"{out}/c")
    cells = [EvaluationCell(name, 3) for name in CORRUPTIONS]
    start = time.perf_counter()
    for cell in cells:
        score_cell(cell, model, test_set.images, test_set.labels, settings)
    return time.perf_counter() - start, len(cells)


def time_p_serial(model: torch.nn.Module, test_set: TestSet, frames: int | None) -> dict[str, tuple[int, float, float]]:
    """perturbation -> (frames scored, seconds producing sequences, seconds in the model), one thread."""
    timings = {}
    for name in TEST_PERTURBATIONS:
        cell = PerturbationCell(name, 1)
        chunks = generated_sequences(test_set.images, cell, "cifar", frames, seed=0)
        arrays, produce, infer = score_sequences(model, chunks, name, batch_size=256)
        timings[name] = (int(arrays["prediction"].size), produce, infer)
    return timings


def time_p_ray(state: dict, test_set: TestSet, frames: int | None, out: str) -> tuple[float, float]:
    """(seconds for the 10 -P cells, warm-up seconds) on a fresh local cluster of 2 CPUs."""
    import ray

    from orchestrator.ray_session import pin_local_environment

    pin_local_environment()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        warm = _warm_up(2)
        overrides = [f"storage.uri={out}", f"eval.limit={len(test_set.images)}", "eval.cpus_per_cell=1",
                     "eval.batch_size=256", "eval.max_retries=0", "eval.suites=[p]"]
        config = build_config({}, overrides + ([f"eval.frames={frames}"] if frames else []))
        start = time.perf_counter()
        failed = run_cells(config, [PerturbationCell(name, 1) for name in TEST_PERTURBATIONS], state, test_set)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    if failed:
        raise RuntimeError(f"benchmark cells failed: {[c.key for c in failed]}")
    return seconds, warm


def report(images: int, c_reference: tuple[float, int], p_serial: dict, ray_result: tuple[float, float] | None) -> None:
    c_seconds, c_cells = c_reference
    c_images_per_s = c_cells * images / c_seconds
    print(f"\n-C reference (15 cells, severity 3, {images} images each, 1 thread): "
          f"{c_cells / c_seconds:.2f} cells/s, {c_images_per_s:.0f} images/s per core")
    print(f"\n{'perturbation':<16}{'frames':>8}{'produce fr/s':>14}{'model fr/s':>12}{'cell fr/s':>11}{'vs -C img/s':>13}")
    total_frames = total_seconds = 0.0
    for name, (frames, produce, infer) in p_serial.items():
        seconds = produce + infer
        total_frames += frames
        total_seconds += seconds
        print(f"{name:<16}{frames:>8}{frames / produce:>14.0f}{frames / infer:>12.0f}{frames / seconds:>11.0f}"
              f"{frames / seconds / c_images_per_s:>12.2f}x")
    per_core = total_frames / total_seconds
    print(f"\n-P serial (10 cells, 1 thread): {len(p_serial) / total_seconds:.3f} cells/s, {per_core:.0f} frames/s per core "
          f"= {per_core / c_images_per_s:.2f}x the -C images/s; a -P cell is {total_seconds / len(p_serial) / (c_seconds / c_cells):.1f}x "
          f"a -C cell's time ({total_frames / len(p_serial) / images:.0f} frames per image)")
    full_hours = total_seconds / images * FULL_IMAGES / 3600
    print(f"projected CIFAR-10-P (10 test perturbations x {FULL_IMAGES:,} videos): {full_hours:.2f} core-h")
    if ray_result:
        seconds, warm = ray_result
        print(f"-P ray x2 (warm-up {warm:.1f} s, not counted): {len(p_serial) / seconds:.3f} cells/s = "
              f"{len(p_serial) / seconds / 2:.3f} cells/s and {total_frames / seconds / 2:.0f} frames/s per core; "
              f"speed-up {total_seconds / seconds:.2f}x over serial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="clean test images (videos) per cell")
    parser.add_argument("--model", default="wrn40_2")
    parser.add_argument("--frames", type=int, default=None, help="frames per sequence (default: the reference's)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    print(f"before: {machine_load()}; model {args.model}, torch {torch.__version__}")
    torch.set_num_threads(1)
    test_set = load_test_set(args.images)
    state = model_state(args.model)
    model = load_model(state, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="p-bench-") as out:
        c_reference = time_c_reference(model, test_set, out)
        p_serial = time_p_serial(model, test_set, args.frames)
        ray_result = None if args.skip_ray else time_p_ray(state, test_set, args.frames, f"{out}/ray")
    report(args.images, c_reference, p_serial, ray_result)
    print(f"after: {machine_load()}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
