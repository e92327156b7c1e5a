"""Training on Ray: a TorchTrainer over the Ray Data AugMix pipeline, checkpoints at a storage URI.

`train(config)` is what `augmix train` / `augmix run` / `jobs.train` call. `build_trainer(config,
run_config)` is separate so a Tune function trainable can build the same trainer with its own
RunConfig (name per trial, TuneReportCallback). A rerun with the same `name` and `storage.uri`
resumes from the latest checkpoint; after fit the final weights go to `<storage.uri>/model/model.pt`,
one small file the evaluation job loads.
"""
from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch

from augmix import storage
from orchestrator.config import Config
from orchestrator.pipeline import PipelineData, build_datasets
from orchestrator.ray_session import ensure_ray
from workers.augment import epoch_clock
from workers.train_loop import CHECKPOINT_FILE, load_checkpoint_file, train_loop_per_worker

MODEL_FILE = "model.pt"
FAULT_ENV = "AUGMIX_INJECT_WORKER_FAILURE"  # "ACTION:EPOCH:RANK:PATH", tests only (workers/train_loop.py)
FAULT_ACTIONS = ("kill", "hold")


@dataclass
class TrainingResult:
    """Where a training run left its outputs, and its per-epoch metrics (all epochs, resumes included)."""

    model_uri: str
    checkpoint_uri: str | None
    run_uri: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    final_val_error: float | None = None


def run_storage_uri(config: Config) -> str:
    """The RunConfig storage_path: `<storage.uri>/train` (absolute for local paths)."""
    return storage.absolute(storage.join(config.storage.uri, "train"))


def model_uri(config: Config) -> str:
    return storage.join(storage.absolute(config.storage.uri), "model", MODEL_FILE)


def build_run_config(config: Config, callbacks: list | None = None, name: str | None = None,
                     controller_failure_limit: int = -1):
    """The run's RunConfig: name + storage decide what a rerun resumes; keep the last 2 checkpoints."""
    import ray.train

    return ray.train.RunConfig(
        name=name or config.name,
        storage_path=run_storage_uri(config),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        failure_config=ray.train.FailureConfig(max_failures=config.train.max_failures,
                                               controller_failure_limit=controller_failure_limit),
        callbacks=callbacks,
    )


def parse_fault(text: str | None) -> dict[str, Any] | None:
    """AUGMIX_INJECT_WORKER_FAILURE="ACTION:EPOCH:RANK:PATH" → the loop's fault-injection entry.

    kill: the worker exits before its report of EPOCH (PATH: a marker file so it happens once);
    hold: the worker waits before that report until PATH/release exists (PATH/holding says it waits).
    """
    if not text:
        return None
    action, epoch, rank, path = text.split(":", 3)
    if action not in FAULT_ACTIONS:
        raise ValueError(f"{FAULT_ENV} action {action!r} is not one of {', '.join(FAULT_ACTIONS)}")
    return {"action": action, "epoch": int(epoch), "rank": int(rank), "path": path}


def loop_config(config: Config, data: PipelineData, clock_name: str) -> dict[str, Any]:
    """Config.to_dict() plus what the workers learn from the driver ("runtime")."""
    tree = config.to_dict()
    tree["runtime"] = {
        "num_classes": data.num_classes,
        "classes": data.classes,
        "train_size": data.train_size,
        "validation_size": data.validation_size,
        "clock_name": clock_name,
        "shuffle_buffer": 2 * config.train.batch_size,
        "fault": parse_fault(os.environ.get(FAULT_ENV)),
        "local_mode": config.scaling.num_workers == 0,
    }
    return tree


def build_trainer(config: Config, run_config, data: PipelineData | None = None):
    """A TorchTrainer for `config` (not fitted); `data` defaults to build_datasets(config)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    clock_name = f"augmix-epoch-clock-{uuid.uuid4().hex[:12]}"
    epoch_clock(clock_name)  # owned by this process, so it outlives failed train workers
    data = data or build_datasets(config, clock_name)
    scaling = config.scaling
    resources = {"CPU": scaling.cpus_per_worker, **scaling.trainer_resources}
    if scaling.use_gpu:
        resources["GPU"] = 1
    datasets = {"train": data.train}
    if data.validation is not None:
        datasets["validation"] = data.validation
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(config, data, clock_name),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split="all"),
        run_config=run_config,
    )


def export_model(checkpoint_state: dict[str, Any], config: Config) -> str:
    """Write `<storage.uri>/model/model.pt`: state_dict, model name, num_classes, classes, config."""
    buffer = io.BytesIO()
    torch.save({
        "state_dict": checkpoint_state["model"],
        "model_name": config.model.name,
        "num_classes": checkpoint_state["num_classes"],
        "classes": checkpoint_state.get("classes"),
        "config": config.to_dict(),
        "epoch": checkpoint_state["epoch"],
        "history": checkpoint_state["history"],
    }, buffer)
    uri = model_uri(config)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def train(config: Config, address: str | None = None, run_config=None) -> TrainingResult:
    """Train (or resume) the configured run on Ray, export the final model, print a summary."""
    storage.apply_endpoint(config.storage.endpoint_url)
    storage.check_writable(config.storage.uri)
    ensure_ray(address)
    run_config = run_config or build_run_config(config)
    result = build_trainer(config, run_config).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {config.name!r} produced no checkpoint under {run_storage_uri(config)}")
    with result.checkpoint.as_directory() as directory:
        state = load_checkpoint_file(directory)
    uri = export_model(state, config)
    checkpoint_uri = result.checkpoint.path
    if storage.is_remote(config.storage.uri):
        checkpoint_uri = f"{config.storage.uri.split('://', 1)[0]}://{checkpoint_uri.lstrip('/')}"
    history = state["history"]
    final_error = history[-1]["val_error"] if history else None
    print(f"training finished: {state['epoch']} epochs; final val error "
          f"{final_error if final_error is None else format(final_error, '.4f')}\n"
          f"  checkpoint: {checkpoint_uri}/{CHECKPOINT_FILE}\n  model:      {uri}", flush=True)
    return TrainingResult(uri, checkpoint_uri, run_storage_uri(config), history, final_error)
