"""The Ray Train per-worker loop: AugMix triples in, CE + λ·JSD out, a checkpoint every epoch.

One forward pass per step on the concatenated views (so BatchNorm sees clean and augmented images
together, as in the reference), SGD Nesterov with lr 0.1 per 128 images of global batch and a cosine
schedule stepped per optimiser step. Each epoch reports (on every worker: `ray.train.report` is a
barrier) the metrics a Tune trial also reads: epoch, train_loss, train_ce, train_jsd, val_error,
samples_per_s, data_wait_fraction. Rank 0 writes the checkpoint (every rank's RNG state in it); a
restarted or resumed run continues after the last finished epoch with the same schedule, RNG,
history and data.

The shape follows Ray's own Train examples: restore the state, then per epoch train, validate,
reduce the metrics across workers, checkpoint and report. The training data is one stream per
trainer for all remaining epochs (workers.training_data), built after the restore.

`loop_config` is {"config": the validated Config, "runtime": LoopRuntime} from the driver.
"""
from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmix.loss import augmix_loss
from augmix.mix import AugMix
from augmix.models import build_model
from workers.augment import AugmentStage
from workers.training_data import TrainingStream, epoch_batches, stream_batches, training_dataset
from workers.validation import corrupted_scores

CHECKPOINT_FILE = "checkpoint.pt"
METRIC_KEYS = ("epoch", "train_loss", "train_ce", "train_jsd", "val_error", "samples_per_s", "data_wait_fraction")


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The reference lr is for a batch of 128; scale linearly with the global batch."""
    return base_lr * global_batch / 128.0


def cosine_factor(step: int, total_steps: int) -> float:
    """The reference's per-step cosine annealing from 1 to ~0 (LambdaLR factor)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, nesterov: bool, weight_decay: float,
                    global_batch: int, total_steps: int):
    """SGD (Nesterov) with the reference's lr scaled to the global batch, and the per-step cosine."""
    optimizer = torch.optim.SGD(model.parameters(), lr=scaled_lr(lr, global_batch), momentum=momentum,
                                nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total_steps))
    return optimizer, scheduler


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
    """The network itself, under torch.compile's wrapper (`_orig_mod`) and DDP's (`module`), so
    checkpoints hold the plain state_dict keys whatever the training wrapped it in."""
    model = getattr(model, "_orig_mod", model)
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


Hook = Callable[[str, int, int], None]  # (event, epoch, rank): "epoch_trained", "checkpoint_saved"


@dataclass
class LoopRuntime:
    """What the workers learn from the driver besides the config."""

    stream: TrainingStream
    stage_kwargs: dict[str, Any]
    num_classes: int
    classes: list[str]
    validation_size: int
    skipped_rows: int = 0  # rows left out before training (data.on_bad_image=skip on the driver)
    local_mode: bool = False  # the loop runs in the driver (num_workers=0)
    hooks: tuple[Hook, ...] = ()  # called at named points of the loop (the tests inject faults here)

    def fire(self, event: str, epoch: int, rank: int) -> None:
        for hook in self.hooks:
            hook(event, epoch, rank)


@dataclass
class TrainingState:
    """Everything a checkpoint holds for one worker: model, optimiser, schedule, scaler, progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    epoch: int = 0  # the last finished epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 0


@dataclass
class Worker:
    """Where this loop runs: rank, world size, device and its precision settings."""

    rank: int
    world: int
    device: torch.device
    amp: bool
    channels_last: bool
    compile: bool = False  # torch.compile the model (train.compile, GPU only)


def build_state(config, runtime: LoopRuntime, worker: Worker,
                prepare: Callable[[nn.Module], nn.Module] | None = None) -> TrainingState:
    """Model, optimiser, schedule and scaler of a fresh run. `prepare` puts the model on the
    worker's device (default: Ray Train's prepare_model, which also wraps it in DDP); a script
    without Ray passes its own. torch.compile wraps the prepared model, so DDP's hooks are traced."""
    if prepare is None:
        import ray.train.torch

        prepare = ray.train.torch.prepare_model
    model = build_model(config.model.name, runtime.num_classes, **config.model.options)
    if worker.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = prepare(model)
    if worker.compile:
        model = torch.compile(model)
    steps = runtime.stream.rows_per_epoch // config.train.batch_size
    train = config.train
    optimizer, scheduler = build_optimizer(model, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov,
                                           weight_decay=train.weight_decay, global_batch=train.batch_size * worker.world,
                                           total_steps=steps * train.epochs)
    return TrainingState(model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=worker.amp))


def restore_state(state: TrainingState, checkpoint_state: dict[str, Any], worker: Worker) -> None:
    """Continue after the checkpoint's epoch; this rank takes its own RNG state back."""
    unwrap(state.model).load_state_dict(checkpoint_state["model"])
    state.optimizer.load_state_dict(checkpoint_state["optimizer"])
    # the LambdaLR keeps its step count; its factor already uses this run's total_steps, so a
    # resumed run with more epochs continues on the longer cosine
    state.scheduler.load_state_dict(checkpoint_state["scheduler"])
    state.scaler.load_state_dict(checkpoint_state["scaler"])
    states = checkpoint_state["rng"]
    if isinstance(states, dict):  # checkpoints written before every rank's state was kept
        states = [states]
    if worker.rank < len(states):
        restore_rng(states[worker.rank])
    state.epoch, state.history = checkpoint_state["epoch"], checkpoint_state["history"]
    state.attempt = checkpoint_state["starts"] + 1


def training_batches(config, runtime: LoopRuntime, worker: Worker, first_epoch: int) -> Iterator[dict]:
    """This trainer's batches for epochs first_epoch..train.epochs: one Ray Data execution."""
    scaling = config.scaling
    actors = max(1, -(-scaling.data_actors // worker.world))  # the run's actors, shared out per trainer
    stage_kwargs = runtime.stage_kwargs | {"num_classes": runtime.num_classes}
    dataset = training_dataset(runtime.stream, worker.rank, first_epoch, config.train.epochs, AugmentStage,
                               stage_kwargs, actors, scaling.cpus_per_data_actor, scaling.data_resources)
    return stream_batches(dataset, config.train.batch_size)


def trainer_augmix(config) -> AugMix | None:
    """AugMix on the trainer's device (placement "trainer"), else None."""
    augmix = config.augmix
    if not (augmix.enabled and augmix.placement == "trainer"):
        return None
    return AugMix(augmix.width, augmix.depth, augmix.severity, augmix.alpha, augmix.all_ops)


def train_epoch(state: TrainingState, batches: Iterator[dict], epoch: int, steps: int, config,
                worker: Worker, augmix: AugMix | None) -> dict[str, float]:
    """`steps` optimisation steps on this epoch's batches; sums and times for the epoch's metrics."""
    generator = None
    if augmix is not None:
        generator = torch.Generator(device=worker.device).manual_seed(epoch_seed(config.train.seed, epoch, worker.rank))
    lam = float(config.augmix.lam)
    state.model.train()
    # loss, ce, jsd summed on the device: reading them every step would make the host wait for
    # the GPU at each step instead of queueing the next one while it computes
    step_sums = torch.zeros(3, device=worker.device)
    wait, first_wait, done, skipped = 0.0, 0.0, 0, 0
    start = tick = time.perf_counter()
    for batch in epoch_batches(batches, epoch, steps):
        wait += time.perf_counter() - tick
        first_wait = wait if done == 0 else first_wait
        inputs, views = training_inputs(batch, worker.device, augmix, generator, worker.channels_last)
        targets = batch["label"].to(worker.device, non_blocking=True)
        skipped += int(batch["skipped"].sum()) if "skipped" in batch else 0
        step_sums += optimisation_step(state.model, state.optimizer, state.scheduler, state.scaler, inputs, targets,
                                       views, lam, worker.amp)
        done += 1
        tick = time.perf_counter()
    loss, ce, jsd = step_sums.tolist()  # waits for the epoch's last step
    return {"loss": loss, "ce": ce, "jsd": jsd, "steps": done, "samples": done * config.train.batch_size,
            "wait": wait, "first_wait": first_wait, "time": time.perf_counter() - start, "skipped": skipped}


def validate_epoch(state: TrainingState, shard, config, worker: Worker) -> dict[str, float]:
    """Wrong / total on the validation shard (and under the validation corruptions when asked)."""
    if shard is None:
        return {"wrong": 0, "total": 0, "wrong_corrupted": 0, "nll_corrupted": 0.0}
    wrong, total, wrong_corrupted, nll_corrupted = validation_counts(
        state.model, shard.iter_torch_batches(batch_size=500), worker.device, worker.amp,
        corrupted=config.train.validate_corrupted, preset=config.eval.preset)
    return {"wrong": wrong, "total": total, "wrong_corrupted": wrong_corrupted, "nll_corrupted": nll_corrupted}


def reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """The same dict, each value summed over the train workers."""
    keys = sorted(sums)
    return dict(zip(keys, all_reduce_sums([float(sums[key]) for key in keys], device)))


def epoch_metrics(epoch: int, totals: dict[str, float], config, worker: Worker, state: TrainingState) -> dict[str, Any]:
    """The reported metrics of one epoch from the sums over all workers."""
    steps, total, world = max(totals["steps"], 1), totals["total"], worker.world
    metrics = {
        "epoch": epoch,
        "train_loss": totals["loss"] / steps,
        "train_ce": totals["ce"] / steps,
        "train_jsd": totals["jsd"] / steps,
        "val_error": totals["wrong"] / total if total else float("nan"),
        "samples_per_s": totals["samples"] / max(totals["time"] / world, 1e-9),
        # everything the trainer waited for inside the epoch, its first batch included
        "data_wait_fraction": totals["wait"] / max(totals["time"], 1e-9),
        # the same without the wait for the epoch's first batch, i.e. whether the AugMix CPUs keep up
        "steady_data_wait_fraction": (totals["wait"] - totals["first_wait"])
        / max(totals["time"] - totals["first_wait"], 1e-9),
        "first_batch_wait_s": totals["first_wait"] / world,
        "steps": int(totals["steps"] / world),
        "lr": float(state.scheduler.get_last_lr()[0]),
        "attempt": state.attempt,
        # rows not trained on: dropped before training, or filled in by the actors this epoch
        "skipped_rows": int(totals["skipped"]) + totals.get("skipped_before", 0),
    }
    if config.train.validate_corrupted:
        metrics["val_corrupted_error"] = totals["wrong_corrupted"] / total if total else float("nan")
        metrics["val_corrupted_nll"] = totals["nll_corrupted"] / total if total else float("nan")
    return metrics


def print_epoch(metrics: dict[str, Any], epochs: int) -> None:
    print(f"epoch {metrics['epoch']}/{epochs}  steps {metrics['steps']}  loss {metrics['train_loss']:.4f} "
          f"(ce {metrics['train_ce']:.4f}, jsd {metrics['train_jsd']:.4f})  "
          f"val error {metrics['val_error']:.4f}  {metrics['samples_per_s']:.1f} samples/s  "
          f"data wait {metrics['data_wait_fraction']:.1%} "
          f"({metrics['first_batch_wait_s']:.2f} s to the first batch, then "
          f"{metrics['steady_data_wait_fraction']:.1%})", flush=True)


def gathered_rng_states(worker: Worker) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (on every rank; rank 0 saves them)."""
    state = rng_state()
    if worker.world <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    states: list[Any] = [None] * worker.world
    torch.distributed.all_gather_object(states, state)
    return states


def checkpoint_contents(state: TrainingState, config, runtime: LoopRuntime, rng_states: list) -> dict[str, Any]:
    return {
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,
        "starts": state.attempt,
        "rng": rng_states,
        "history": state.history,
        "config": config.to_dict(),
        "num_classes": runtime.num_classes,
        "classes": runtime.classes,
    }


class CheckpointReporter:
    """Writes rank 0's checkpoint and reports every rank's metrics (a barrier) each epoch.

    Local mode (num_workers=0) does not persist checkpoints: the newest directory stays alive until
    the next one replaces it, so the driver can read it after fit."""

    def __init__(self, local_mode: bool) -> None:
        self.local_mode = local_mode
        self.previous: str | None = None

    def __call__(self, metrics: dict[str, Any], contents: dict[str, Any] | None, runtime: LoopRuntime,
                 worker: Worker) -> None:
        import ray.train

        directory = tempfile.mkdtemp(prefix="augmix-ckpt-")
        try:
            checkpoint = None
            if contents is not None:
                torch.save(contents, Path(directory) / CHECKPOINT_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            runtime.fire("checkpoint_saved", metrics["epoch"], worker.rank)
            ray.train.report(metrics, checkpoint=checkpoint)
        finally:
            if not self.local_mode:
                shutil.rmtree(directory, ignore_errors=True)
        if self.previous:
            shutil.rmtree(self.previous, ignore_errors=True)
        self.previous = directory if self.local_mode else None


def current_worker(config) -> Worker:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    cuda = device.type == "cuda"
    return Worker(context.get_world_rank(), max(context.get_world_size(), 1), device,
                  amp=config.train.amp and cuda, channels_last=config.train.channels_last and cuda,
                  compile=config.train.compile and cuda)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry point (also runs in the driver when num_workers=0)."""
    import ray.train

    config, runtime = loop_config["config"], loop_config["runtime"]
    torch.set_num_threads(config.train.threads_per_worker)
    worker = current_worker(config)
    torch.manual_seed(config.train.seed + worker.rank)
    state = build_state(config, runtime, worker)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restore_state(state, load_checkpoint_file(directory), worker)
    if state.epoch >= config.train.epochs:
        return
    steps = runtime.stream.rows_per_epoch // config.train.batch_size
    batches = training_batches(config, runtime, worker, state.epoch + 1)
    validation = ray.train.get_dataset_shard("validation") if runtime.validation_size else None
    augmix, report = trainer_augmix(config), CheckpointReporter(runtime.local_mode)
    for epoch in range(state.epoch + 1, config.train.epochs + 1):
        sums = train_epoch(state, batches, epoch, steps, config, worker, augmix)
        runtime.fire("epoch_trained", epoch, worker.rank)
        totals = reduce_sums(sums | validate_epoch(state, validation, config, worker), worker.device)
        metrics = epoch_metrics(epoch, totals | {"skipped_before": runtime.skipped_rows}, config, worker, state)
        state.epoch = epoch
        state.history.append(metrics)
        rng_states = gathered_rng_states(worker)
        if worker.rank == 0:
            print_epoch(metrics, config.train.epochs)
        report(metrics, checkpoint_contents(state, config, runtime, rng_states) if worker.rank == 0 else None,
               runtime, worker)
