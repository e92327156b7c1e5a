"""Faults on a real local Ray cluster: a Ray Data AugMix actor killed mid-epoch.

(A train worker killed mid-run is in test_training_ray.py; the S3 server stopped during a checkpoint
upload, wrong credentials and missing buckets in test_s3_integration.py.)
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from orchestrator.config import build_config
from loop_hooks import RecordEpochs
from orchestrator.training import build_run_config, train

pytestmark = pytest.mark.ray


def _config(uri: str, name: str = "faults", **train_values):
    return build_config({
        "name": name,
        "data": {"synthetic_train_size": 400, "validation_fraction": 0.2},
        "model": {"name": "wrn10_1"},
        "train": {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3, "max_failures": 0, **train_values},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "data_actors": 1, "cpus_per_data_actor": 0.5,
                    "data_batch_size": 32},
        "storage": {"uri": uri},
    })


def _alive_actors(class_part: str) -> list:
    """This cluster's live actors whose class name contains `class_part` (other clusters may run here)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                         detail=True, limit=10_000, raise_on_missing_output=False)
    return [actor for actor in actors if class_part in actor.class_name]


def _epochs_trained(path) -> int:
    """How many epochs have finished their steps (RecordEpochs writes one line per epoch)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


class DataActorKiller(threading.Thread):
    """Kill the first AugMix map actor that comes alive (its process, SIGKILL); records which, and how
    many epochs had finished their steps then."""

    def __init__(self, epochs_file):
        super().__init__(daemon=True)
        self.epochs_file = epochs_file
        self.killed: tuple[str, int, int] | None = None  # actor id, pid, epochs finished
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.done.is_set() and time.monotonic() < deadline and self.killed is None:
            actors = [a for a in _alive_actors("AugmentStage") if a.pid]
            if actors:
                os.kill(actors[0].pid, signal.SIGKILL)
                self.killed = (actors[0].actor_id, actors[0].pid, _epochs_trained(self.epochs_file))
            time.sleep(0.1)


def _restarts(actor_id: str) -> int:
    """How often Ray restarted an actor (its record outlives it in the state API)."""
    import ray
    from ray.util.state import list_actors

    records = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("actor_id", "=", actor_id)],
                          detail=True, raise_on_missing_output=False)
    return max((record.num_restarts for record in records), default=0)


@pytest.mark.timeout(300)
def test_killed_augmix_actor_is_replaced_and_the_epoch_completes(ray_cluster, tmp_path):
    """The loop runs in the driver (num_workers=0): the fault is in the data layer, and a Ray Train
    worker group would only add its ~20 s start-up. The run's one AugMix actor dies before epoch 1
    has its batches; Ray Data replaces it within the same stream and the run completes whole."""
    config = _config(str(tmp_path / "run"))
    config.scaling.num_workers = 0
    epochs_file = tmp_path / "epochs"
    killer = DataActorKiller(epochs_file)
    killer.start()
    try:
        result = train(config, run_config=build_run_config(config, controller_failure_limit=0),
                       hooks=(RecordEpochs(str(epochs_file)),))
    finally:
        killer.done.set()
        killer.join(timeout=60)

    assert killer.killed is not None, "no AugMix actor was seen alive"
    assert killer.killed[2] == 0, f"the actor died after {killer.killed[2]} epoch(s), not during epoch 1"
    # Ray restarted it in place (Ray Data's pool actors restart without limit) and the stream went on
    assert _restarts(killer.killed[0]) >= 1, "the killed actor was not restarted"
    # No train worker restart (max_failures=0 would have failed the fit): the data layer recovered.
    assert [(m["epoch"], m["attempt"], m["steps"]) for m in result.metrics] == [(1, 0, 3), (2, 0, 3)]
    assert torch.load(result.model_uri, weights_only=False)["epoch"] == 2


# --- the S3 server stopped while a checkpoint uploads -----------------------------------------------

