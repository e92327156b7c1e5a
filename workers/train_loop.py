"""The Ray Train per-worker loop: AugMix triples in, CE + λ·JSD out, a checkpoint every epoch.

One forward pass per step on the concatenated views (so BatchNorm sees clean and augmented images
together, as in the reference), SGD Nesterov with lr 0.1 per 128 images of global batch and a cosine
schedule stepped per optimiser step. Each epoch reports (on every worker: `ray.train.report` is a
barrier) the metrics a Tune trial also reads: epoch, train_loss, train_ce, train_jsd, val_error,
samples_per_s, data_wait_fraction. Rank 0 writes the checkpoint; a restarted or resumed run continues
after the last finished epoch with the same schedule, RNG and history.

`loop_config` is `Config.to_dict()` plus a "runtime" entry filled by the driver (num_classes, sizes,
the epoch clock's name, an optional fault injection used by the tests).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmix.loss import augmix_loss
from augmix.mix import AugMix
from augmix.models import build_model
from workers.validation import corrupted_scores

CHECKPOINT_FILE = "checkpoint.pt"
METRIC_KEYS = ("epoch", "train_loss", "train_ce", "train_jsd", "val_error", "samples_per_s", "data_wait_fraction")


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The reference lr is for a batch of 128; scale linearly with the global batch."""
    return base_lr * global_batch / 128.0


def cosine_factor(step: int, total_steps: int) -> float:
    """The reference's per-step cosine annealing from 1 to ~0 (LambdaLR factor)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def build_optimizer(model: nn.Module, train: dict[str, Any], global_batch: int, total_steps: int):
    optimizer = torch.optim.SGD(model.parameters(), lr=scaled_lr(train["lr"], global_batch),
                                momentum=train["momentum"], nesterov=train["nesterov"] and train["momentum"] > 0,
                                weight_decay=train["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total_steps))
    return optimizer, scheduler


def steps_per_epoch(train_size: int, num_workers: int, batch_size: int, max_steps: int) -> int:
    """Full batches each worker sees per epoch (its shard is train_size / workers rows, last batch dropped)."""
    steps = max(1, (train_size // max(num_workers, 1)) // batch_size)
    return min(steps, max_steps) if max_steps > 0 else steps


def training_inputs(batch: dict[str, torch.Tensor], device: torch.device, augmix: AugMix | None,
                    generator: torch.Generator | None, channels_last: bool = False) -> tuple[torch.Tensor, int]:
    """(float [V·B,3,H,W] in [0,1], number of views V) for one step; V = 3 means clean, aug1, aug2.

    With `augmix` (placement "trainer") the batch holds clean uint8 images and AugMix runs here, on
    the trainer's device, with the same code the data actors use. `channels_last` lays the result
    out as NHWC in the same pass (the model must be converted too, see `train.channels_last`)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if augmix is not None:
        clean = batch["clean"].to(device, non_blocking=True)
        views = augmix.triple(clean, generator)
        return torch.cat(views).contiguous(memory_format=layout), 3
    names = [name for name in ("clean", "aug1", "aug2") if name in batch]
    stacked = torch.cat([batch[name].to(device, non_blocking=True) for name in names])
    return stacked.to(torch.float32, memory_format=layout).mul_(1.0 / 255.0), len(names)


def step_loss(logits: torch.Tensor, targets: torch.Tensor, views: int, lam: float):
    """(total, ce, jsd): CE + λ·JSD for a triple, plain CE for one view (jsd reported as 0)."""
    if views == 3:
        clean, aug1, aug2 = logits.chunk(3)
        return augmix_loss(clean, aug1, aug2, targets, lam)
    ce = F.cross_entropy(logits.float(), targets)
    return ce, ce, torch.zeros((), device=logits.device)


def optimisation_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
                      inputs: torch.Tensor, targets: torch.Tensor, views: int, lam: float, amp: bool) -> torch.Tensor:
    """One SGD step on CE + λ·JSD (autocast and loss scaling when `amp`); returns float32 [loss, ce,
    jsd] still on the device, so that the caller reads them when it chooses (a read syncs the GPU)."""
    with torch.autocast(device_type=inputs.device.type, enabled=amp):
        logits = model(inputs)
    loss, ce, jsd = step_loss(logits, targets, views, lam)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return torch.stack((loss.detach(), ce.detach(), jsd.detach())).float()


@torch.no_grad()
def validation_counts(model: nn.Module, batches, device: torch.device, amp: bool,
                      corrupted: bool = False, preset: str = "cifar") -> tuple[int, int, int, float]:
    """(wrong, total, wrong and summed NLL under the validation corruptions) over the validation
    shard; the last two are scored only when `corrupted` (the sweep objective, workers.validation)
    and are 0 otherwise."""
    model.eval()
    wrong = total = wrong_corrupted = 0
    nll_corrupted = 0.0
    for index, batch in enumerate(batches):
        targets = batch["label"].to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=amp):
            predictions = model(batch["clean"].to(device).float().mul_(1.0 / 255.0)).argmax(dim=1)
        wrong += int((predictions != targets).sum())
        total += int(targets.numel())
        if corrupted:
            batch_wrong, batch_nll = corrupted_scores(model, batch["clean"], targets, index, device, amp, preset)
            wrong_corrupted += batch_wrong
            nll_corrupted += batch_nll
    model.train()
    return wrong, total, wrong_corrupted, nll_corrupted


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Sum across train workers (identity on one worker)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load_checkpoint_file(directory: str | Path) -> dict[str, Any]:
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, 0xA11]).generate_state(1)[0])


def maybe_inject_failure(fault: dict[str, Any] | None, epoch: int, rank: int) -> None:
    """Test hook, "kill": end this worker process once, after the training steps of `epoch` on `rank`,
    before that epoch's report (marker file = once). Not at the epoch's start: a worker that dies right
    after a report can race the controller collecting it, and the test wants a known last checkpoint."""
    if not fault or fault["action"] != "kill" or fault["epoch"] != epoch or fault["rank"] != rank:
        return
    marker = Path(fault["path"])
    if marker.exists():
        return
    marker.write_text(f"killed rank {rank} at the end of epoch {epoch}\n")
    os._exit(1)


def maybe_hold_before_report(fault: dict[str, Any] | None, epoch: int, rank: int) -> None:
    """Test hook, "hold": once, with `epoch`'s checkpoint written locally and about to be reported,
    write this process's pid to `<path>/holding` and wait for `<path>/release`. A test takes the
    storage down in between, so the upload of exactly this checkpoint meets the outage (timing it
    from outside is a race)."""
    if not fault or fault["action"] != "hold" or fault["epoch"] != epoch or fault["rank"] != rank:
        return
    folder = Path(fault["path"])
    if (folder / "holding").exists():
        return
    (folder / "holding").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 600
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry point (also runs in the driver when num_workers=0)."""
    import ray.train
    import ray.train.torch

    from workers.augment import epoch_clock

    train, augmix_cfg, runtime = loop_config["train"], loop_config["augmix"], loop_config["runtime"]
    torch.set_num_threads(train["threads_per_worker"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    amp = bool(train["amp"]) and device.type == "cuda"
    channels_last = bool(train.get("channels_last")) and device.type == "cuda"
    torch.manual_seed(train["seed"] + rank)

    model = build_model(loop_config["model"]["name"], runtime["num_classes"], **loop_config["model"].get("options", {}))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    global_batch = train["batch_size"] * max(world, 1)
    per_epoch = steps_per_epoch(runtime["train_size"], world, train["batch_size"], train["max_steps_per_epoch"])
    total_steps = per_epoch * train["epochs"]
    optimizer, scheduler = build_optimizer(model, train, global_batch, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, history, starts = 0, [], 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint_file(directory)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        # the LambdaLR keeps its step count; its factor already uses this run's total_steps, so a
        # resumed run with more epochs continues on the longer cosine
        start_epoch, history, starts = state["epoch"], state["history"], state["starts"] + 1

    trainer_augmix = None
    if augmix_cfg["enabled"] and augmix_cfg["placement"] == "trainer":
        trainer_augmix = AugMix(augmix_cfg["width"], augmix_cfg["depth"], augmix_cfg["severity"],
                                augmix_cfg["alpha"], augmix_cfg["all_ops"])
    clock = epoch_clock(runtime["clock_name"]) if runtime.get("clock_name") else None
    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation") if runtime["validation_size"] else None
    lam = float(augmix_cfg["lam"])
    previous_local_dir = None

    for epoch in range(start_epoch + 1, train["epochs"] + 1):
        if clock is not None:
            ray.get(clock.set.remote(epoch))
        seed = epoch_seed(train["seed"], epoch, rank)
        generator = torch.Generator(device=device).manual_seed(seed) if trainer_augmix else None
        batches = train_shard.iter_torch_batches(
            batch_size=train["batch_size"], drop_last=True, prefetch_batches=2,
            local_shuffle_buffer_size=runtime.get("shuffle_buffer") or None,
            local_shuffle_seed=seed if runtime.get("shuffle_buffer") else None,
        )
        model.train()
        # loss, ce, jsd summed on the device: reading them every step would make the host wait for
        # the GPU at each step instead of queueing the next one while it computes
        step_sums = torch.zeros(3, device=device)
        wait, first_wait = 0.0, None  # first_wait: Ray Data starts this epoch's AugMix actor pool
        epoch_start = tick = time.perf_counter()
        steps = 0
        for batch in batches:
            wait += time.perf_counter() - tick
            first_wait = wait if first_wait is None else first_wait
            inputs, views = training_inputs(batch, device, trainer_augmix, generator, channels_last)
            targets = batch["label"].to(device, non_blocking=True)
            step_sums += optimisation_step(model, optimizer, scheduler, scaler, inputs, targets, views, lam, amp)
            steps += 1
            if steps >= per_epoch:
                break
            tick = time.perf_counter()
        sums = [*step_sums.tolist(), float(steps)]  # waits for the epoch's last step
        elapsed = time.perf_counter() - epoch_start
        maybe_inject_failure(runtime.get("fault"), epoch, rank)
        score_corrupted = bool(train.get("validate_corrupted"))
        wrong, total, wrong_corrupted, nll_corrupted = (0, 0, 0, 0.0) if validation_shard is None else validation_counts(
            model, validation_shard.iter_torch_batches(batch_size=500), device, amp,
            corrupted=score_corrupted, preset=loop_config["eval"]["preset"])
        (loss_sum, ce_sum, jsd_sum, step_count, wrong, total, wrong_corrupted, nll_corrupted, samples, wait_sum,
         time_sum, first_wait_sum) = all_reduce_sums([*sums, wrong, total, wrong_corrupted, nll_corrupted,
                                                      steps * train["batch_size"], wait, elapsed, first_wait or 0.0],
                                                     device)
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_sum / max(step_count, 1)),
            "train_ce": float(ce_sum / max(step_count, 1)),
            "train_jsd": float(jsd_sum / max(step_count, 1)),
            "val_error": float(wrong / total) if total else float("nan"),
            **({"val_corrupted_error": float(wrong_corrupted / total) if total else float("nan"),
                "val_corrupted_nll": float(nll_corrupted / total) if total else float("nan")}
               if score_corrupted else {}),
            "samples_per_s": float(samples / max(time_sum / max(world, 1), 1e-9)),
            "data_wait_fraction": float(wait_sum / max(time_sum, 1e-9)),
            # the same without the wait for the epoch's first batch (the actor pool starting: Ray
            # Data restarts map actors every epoch), i.e. whether the AugMix CPUs keep up
            "steady_data_wait_fraction": float((wait_sum - first_wait_sum) / max(time_sum - first_wait_sum, 1e-9)),
            "first_batch_wait_s": float(first_wait_sum / max(world, 1)),
            "steps": steps,
            "lr": float(scheduler.get_last_lr()[0]),
            "attempt": starts,
        }
        history.append(metrics)
        if rank == 0:
            print(f"epoch {epoch}/{train['epochs']}  steps {steps}  loss {metrics['train_loss']:.4f} "
                  f"(ce {metrics['train_ce']:.4f}, jsd {metrics['train_jsd']:.4f})  "
                  f"val error {metrics['val_error']:.4f}  {metrics['samples_per_s']:.1f} samples/s  "
                  f"data wait {metrics['data_wait_fraction']:.1%} "
                  f"({metrics['first_batch_wait_s']:.1f} s to the first batch, then "
                  f"{metrics['steady_data_wait_fraction']:.1%})", flush=True)
        # local mode (num_workers=0) does not persist checkpoints: keep the newest directory alive
        keep = runtime.get("local_mode", False)
        with (contextlib.nullcontext(tempfile.mkdtemp(prefix="augmix-ckpt-")) if keep
              else tempfile.TemporaryDirectory()) as directory:
            report_checkpoint = None
            if rank == 0:
                torch.save({
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "starts": starts,
                    "rng": rng_state(),
                    "history": history,
                    "config": {key: value for key, value in loop_config.items() if key != "runtime"},
                    "num_classes": runtime["num_classes"],
                    "classes": runtime.get("classes"),
                }, Path(directory) / CHECKPOINT_FILE)
                report_checkpoint = ray.train.Checkpoint.from_directory(directory)
            maybe_hold_before_report(runtime.get("fault"), epoch, rank)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        if keep and previous_local_dir:
            shutil.rmtree(previous_local_dir, ignore_errors=True)
        previous_local_dir = directory if keep else None
