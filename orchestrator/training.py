"""Training on Ray: a TorchTrainer over the Ray Data AugMix pipeline, checkpoints at a storage URI.

`train(config)` is what `augmix train` / `augmix run` / `jobs.train` call. `build_trainer(config,
run_config)` is separate so a Tune function trainable can build the same trainer with its own
RunConfig (name per trial, TuneReportCallback). A rerun with the same `name` and `storage.uri`
resumes from the latest checkpoint; after fit the final weights go to `<storage.uri>/model/model.pt`,
one small file the evaluation job loads.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch

from augmix import storage
from orchestrator import layout
from orchestrator.config import Config
from orchestrator.pipeline import PipelineData, augment_stage_kwargs, build_datasets
from orchestrator.ray_session import ensure_ray
from orchestrator.resources import ensure_schedulable, training_demands
from workers.train_loop import CHECKPOINT_FILE, Hook, LoopRuntime, load_checkpoint_file, train_loop_per_worker

SCALING_HINT = ("lower scaling.cpus_per_worker / cpus_per_data_actor / data_actors, set scaling.use_gpu=false, "
                "drop resources no node has from scaling.trainer_resources / data_resources, or use a cluster that has them")


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
    return storage.absolute(layout.train_uri(config.storage.uri))


def model_uri(config: Config) -> str:
    """`<storage.uri>/model/model.pt`, absolute for local paths (the evaluation may run elsewhere)."""
    return layout.model_uri(storage.absolute(config.storage.uri))


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


def loop_config(config: Config, data: PipelineData, hooks: tuple[Hook, ...] = ()) -> dict[str, Any]:
    """What every train worker receives: the validated config and what the driver learnt (LoopRuntime)."""
    runtime = LoopRuntime(stream=data.stream, stage_kwargs=augment_stage_kwargs(config), num_classes=data.num_classes,
                          classes=data.classes, validation_size=data.validation_size, skipped_rows=data.skipped_rows,
                          local_mode=config.scaling.num_workers == 0, hooks=tuple(hooks))
    return {"config": config, "runtime": runtime}


def build_trainer(config: Config, run_config, data: PipelineData | None = None, hooks: tuple[Hook, ...] = ()):
    """A TorchTrainer for `config` (not fitted); `data` defaults to build_datasets(config). Each train
    worker builds its own training stream (workers.train_loop); only validation goes through Train's split."""
    import ray.train
    from ray.train.torch import TorchTrainer

    data = data or build_datasets(config)
    scaling = config.scaling
    resources = {"CPU": scaling.cpus_per_worker, **scaling.trainer_resources}
    if scaling.use_gpu:
        resources["GPU"] = 1
    datasets = {"validation": data.validation} if data.validation is not None else {}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(config, data, hooks),
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


def train(config: Config, address: str | None = None, run_config=None, hooks: tuple[Hook, ...] = ()) -> TrainingResult:
    """Train (or resume) the configured run on Ray, export the final model, print a summary. `hooks`
    run inside the loop at named points (workers.train_loop.LoopRuntime; the fault tests use them)."""
    storage.apply_endpoint(config.storage.endpoint_url)
    storage.check_writable(config.storage.uri)
    ensure_ray(address, endpoint_url=config.storage.endpoint_url)
    ensure_schedulable(training_demands(config), "the training run", SCALING_HINT)
    run_config = run_config or build_run_config(config)
    result = build_trainer(config, run_config, hooks=hooks).fit()
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
    skipped = max((epoch.get("skipped_rows", 0) for epoch in history), default=0)
    print(f"training finished: {state['epoch']} epochs; final val error "
          f"{final_error if final_error is None else format(final_error, '.4f')}"
          + (f"; up to {skipped} unusable row(s) skipped per epoch (data.on_bad_image=skip)" if skipped else "") + "\n"
          f"  checkpoint: {checkpoint_uri}/{CHECKPOINT_FILE}\n  model:      {uri}", flush=True)
    return TrainingResult(uri, checkpoint_uri, run_storage_uri(config), history, final_error)
