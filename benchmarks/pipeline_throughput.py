"""Samples/s of the Ray Data → Ray Train AugMix pipeline against the same model fed from memory.

The ceiling: the training step alone, on triples made once and kept in memory, in one process with
the trainer's thread count. The pipeline: a real TorchTrainer (1 worker) fed by N AugMix actors, for
N in --actors; each epoch reports samples/s and the fraction of step time spent waiting for data.
An epoch's first batch waits for the actor pool to start (Ray Data restarts map actors every epoch,
ray-project/ray#46479), so the table also shows that wait and the data wait after it: the latter
says whether the AugMix CPUs keep up with the trainer; the former shrinks relative to longer epochs.

    python -m benchmarks.pipeline_throughput --model wrn10_1 --steps 40 --actors 1 2
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def memory_ceiling(model_name: str, batch_size: int, steps: int, threads: int, jsd: bool) -> float:
    """Training samples/s on pre-made uint8 triples (no data pipeline at all)."""
    from augmix.datasets.synthetic import synthetic_table
    from augmix.models import build_model
    from workers.augment import AugmentStage
    from workers.train_loop import build_optimizer, step_loss, training_inputs

    torch.set_num_threads(threads)
    table = synthetic_table("train", batch_size)
    views = AugmentStage(mode="triple" if jsd else "single")({"image": table.images, "label": table.labels})
    batch = {name: torch.from_numpy(value) for name, value in views.items()}
    model = build_model(model_name, 10)
    optimizer, scheduler = build_optimizer(model, {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                                    "weight_decay": 5e-4}, batch_size, steps + 2)
    start = 0.0
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            start = time.perf_counter()
        inputs, count = training_inputs(batch, torch.device("cpu"), None, None)
        loss, _, _ = step_loss(model(inputs), batch["label"], count, 12.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return steps * batch_size / (time.perf_counter() - start)


def pipeline_run(model_name: str, batch_size: int, steps: int, threads: int, actors: int, epochs: int,
                 jsd: bool, storage: str) -> list[dict]:
    from orchestrator.config import build_config
    from orchestrator.training import build_run_config, build_trainer
    from workers.train_loop import load_checkpoint_file

    config = build_config({
        "name": f"throughput_{actors}",
        "data": {"synthetic_train_size": int(batch_size * steps * 1.12) + 1, "validation_fraction": 0.1},
        "model": {"name": model_name}, "augmix": {"jsd": jsd},
        "train": {"epochs": epochs, "batch_size": batch_size, "threads_per_worker": threads, "max_failures": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "data_actors": actors, "cpus_per_data_actor": 0.5,
                    "data_batch_size": 2 * batch_size},
        "storage": {"uri": storage},
    })
    result = build_trainer(config, build_run_config(config, controller_failure_limit=0)).fit()
    with result.checkpoint.as_directory() as directory:
        return load_checkpoint_file(directory)["history"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn10_1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-jsd", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of a local cluster")
    args = parser.parse_args()
    jsd = not args.no_jsd
    if args.address is None:
        from orchestrator.ray_session import pin_local_environment

        pin_local_environment()  # before anything imports ray: Ray reads these at import time

    ceiling = memory_ceiling(args.model, args.batch_size, min(args.steps, 20), args.threads, jsd)
    print(f"ceiling (model fed from memory, {args.threads} thread(s)): {ceiling:.1f} samples/s", flush=True)

    from orchestrator.ray_session import ensure_ray

    ensure_ray(args.address, num_cpus=args.num_cpus)
    rows = []
    for actors in args.actors:
        with tempfile.TemporaryDirectory() as storage:
            history = pipeline_run(args.model, args.batch_size, args.steps, args.threads, actors, args.epochs,
                                   jsd, storage)
        for epoch in history:
            rows.append((actors, epoch["epoch"], epoch["samples_per_s"], epoch["data_wait_fraction"],
                         epoch["first_batch_wait_s"], epoch["steady_data_wait_fraction"]))
    print(f"\n{'actors':>6} {'epoch':>5} {'samples/s':>10} {'vs ceiling':>10} {'data wait':>9} "
          f"{'1st batch':>9} {'after it':>8}")
    for actors, epoch, rate, wait, first, steady in rows:
        print(f"{actors:>6} {epoch:>5} {rate:>10.1f} {rate / ceiling:>10.2f} {wait:>9.1%} {first:>8.1f}s "
              f"{steady:>8.1%}")
    best = {actors: max(r[2] for r in rows if r[0] == actors) for actors in args.actors}
    print("\nbest epoch per actor count: " + ", ".join(
        f"{a} actor(s) {rate:.1f} samples/s = {rate / ceiling:.2f} x ceiling" for a, rate in best.items()))
    print("mean data wait (all steps / after each epoch's first batch): " + ", ".join(
        f"{a} actor(s) {np.mean([r[3] for r in rows if r[0] == a]):.1%} / "
        f"{np.mean([r[5] for r in rows if r[0] == a]):.1%}" for a in args.actors))


if __name__ == "__main__":
    main()
