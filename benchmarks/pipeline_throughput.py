"""Does the training data path keep a GPU fed? The trainer's real input path against a consumer at GPU speed.

A stand-in for the GPU: the trainer's input path runs for real (the Ray Data stream of AugMix views
→ `iter_torch_batches` → the loop's epoch check and `training_inputs`), and the optimisation step is
replaced by a fixed wait per batch that emulates R triples/s (`--consumer-rate`; by default 80% of
what one AugMix actor sustains on this machine, measured first in the same run). Each epoch reports
the achieved rate and the share of its wall time spent waiting for data, the epoch's start included.

Two designs, same rows, same actors, same consumer, in one run:
- one stream: what the training loop runs: one Ray Data execution for all epochs
  (workers.training_data), its AugMix actors started once;
- per epoch: the design it replaced: a new execution for each epoch, so each epoch starts its
  actor pool again before the first batch comes.

Targets, with R that one actor sustains: after the first epoch, data wait below 3% of
wall time and an achieved rate of at least 0.95 R.

    python -m benchmarks.pipeline_throughput --rows 20000 --epochs 5 [--consumer-rate 2000]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class EpochFigures:
    epoch: int
    rate: float  # triples/s over the epoch's wall time
    wait: float  # share of the wall time spent waiting for a batch
    first_batch_s: float


def training_rows(rows: int, cifar: Path | None):
    """The ImageTable the benchmark trains on: real CIFAR-10 JPEGs when present, else synthetic."""
    from augmix.datasets import load_split

    if cifar is not None and (cifar / "train.parquet").exists():
        return load_split("parquet", "train", str(cifar / "train.parquet"), limit=rows)
    print(f"NOTICE: no CIFAR-10 at {cifar}; synthetic rows")
    return load_split("synthetic", "train", None, synthetic_train_size=rows)


def one_actor_rate(stream, stage_kwargs: dict, seconds: float = 3.0) -> float:
    """Triples/s of the AugMix stage on pieces of the stream, on one thread: what one actor computes,
    without Ray around it."""
    from workers.augment import AugmentStage

    torch.set_num_threads(1)
    stage = AugmentStage(source=stream.source, **stage_kwargs)
    pieces = stream.pieces(0, 1, 1).to_pydict()
    piece = lambda i: {name: np.asarray(values[i % len(values):][:1]) for name, values in pieces.items()}  # noqa: E731
    list(stage(piece(0)))  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += sum(len(out["label"]) for out in stage(piece(done // stream.piece_rows)))
    return done / (time.perf_counter() - start)


def consume(batches, epoch: int, steps: int, batch_size: int, consumer_rate: float) -> EpochFigures:
    """One epoch of the loop's input path with a fixed wait per batch in place of the step."""
    from workers.train_loop import training_inputs
    from workers.training_data import epoch_batches

    step_s = batch_size / consumer_rate
    wait, first, done = 0.0, 0.0, 0
    start = tick = time.perf_counter()
    for batch in epoch_batches(batches, epoch, steps):
        received = time.perf_counter()
        wait += received - tick
        first = wait if done == 0 else first
        training_inputs(batch, torch.device("cpu"), None, None)
        time.sleep(max(0.0, received + step_s - time.perf_counter()))  # the GPU's step: a wait, not CPU work
        done += 1
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    return EpochFigures(epoch, done * batch_size / elapsed, wait / elapsed, first)


def run_design(design: str, stream, stage_kwargs: dict, epochs: int, batch_size: int, actors: int,
               consumer_rate: float) -> list[EpochFigures]:
    from workers.augment import AugmentStage
    from workers.training_data import stream_batches, training_dataset

    def batches_for(first: int, last: int):
        dataset = training_dataset(stream, 0, first, last, AugmentStage, stage_kwargs, actors, 1.0)
        return stream_batches(dataset, batch_size)

    steps = stream.rows_per_epoch // batch_size
    figures = []
    batches = batches_for(1, epochs) if design == "one stream" else None
    for epoch in range(1, epochs + 1):
        if design == "per epoch":
            batches = batches_for(epoch, epoch)
        figures.append(consume(batches, epoch, steps, batch_size, consumer_rate))
        print(f"  {design:>10} epoch {epoch}: {figures[-1].rate:8.0f} triples/s  data wait "
              f"{figures[-1].wait:6.1%}  first batch {figures[-1].first_batch_s:5.2f} s", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="the trainer's batch")
    parser.add_argument("--data-batch-size", type=int, default=512, help="images per AugMix actor call")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--consumer-rate", type=float, default=0.0,
                        help="triples/s the stand-in GPU takes (0: 80%% of one actor's measured rate)")
    parser.add_argument("--designs", nargs="+", default=["per epoch", "one stream"], choices=["per epoch", "one stream"])
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local cluster")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "cifar10")
    args = parser.parse_args()

    from orchestrator.ray_session import ensure_ray, pin_local_environment

    pin_local_environment()
    from workers.training_data import PIECE_BATCHES, TrainingStream, rows_per_trainer

    table = training_rows(args.rows, args.data)
    ensure_ray(None, num_cpus=args.num_cpus)
    from orchestrator.pipeline import table_rows, usable_table

    stream = TrainingStream(table_rows(usable_table(table, 32, "fail")[0]), seed=0, world=1,
                            piece_rows=args.data_batch_size * PIECE_BATCHES,
                            rows_per_epoch=rows_per_trainer(len(table), 1, args.batch_size))
    stage_kwargs = {"mode": "triple", "batch_rows": args.data_batch_size}
    measured = one_actor_rate(stream, stage_kwargs)
    rate = args.consumer_rate or 0.8 * measured * args.actors
    print(f"rows {len(table)} ({table.source}), one AugMix actor: {measured:.0f} triples/s on one thread; "
          f"stand-in GPU: {rate:.0f} triples/s, batch {args.batch_size}; {args.actors} actor(s)", flush=True)
    results = {design: run_design(design, stream, stage_kwargs, args.epochs, args.batch_size, args.actors, rate)
               for design in args.designs}

    print(f"\n{'design':>10} {'epoch':>5} {'triples/s':>10} {'x R':>6} {'data wait':>9} {'1st batch':>9}")
    for design, figures in results.items():
        for figure in figures:
            print(f"{design:>10} {figure.epoch:>5} {figure.rate:>10.0f} {figure.rate / rate:>6.3f} "
                  f"{figure.wait:>9.1%} {figure.first_batch_s:>8.2f}s")
    print()
    for design, figures in results.items():
        later = figures[1:] or figures
        print(f"{design:>10}: epochs 2+: {np.mean([f.rate for f in later]) / rate:.3f} x R, data wait "
              f"{np.mean([f.wait for f in later]):.1%} (max {max(f.wait for f in later):.1%}); "
              f"epoch 1 data wait {figures[0].wait:.1%}")


if __name__ == "__main__":
    main()
