"""Training on a real local Ray cluster: Ray Data AugMix actors → Ray Train workers.

Few fits (each costs 30-45 s here), each checking several things: a worker killed mid-run and the
recovery from the last checkpoint; resuming a finished run for more epochs; every data source.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from loop_hooks import KillOnce, by_value

from orchestrator.config import build_config
from orchestrator.training import build_run_config, train

pytestmark = pytest.mark.ray


def _config(tmp_path, **sections):
    tree = {
        "name": "ray_test",
        "data": {"synthetic_train_size": 480, "validation_fraction": 0.2},
        "model": {"name": "wrn10_1"},
        "train": {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3, "max_failures": 1},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "data_actors": 1, "cpus_per_data_actor": 0.5,
                    "data_batch_size": 64},
        "storage": {"uri": str(tmp_path / "run")},
    }
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values} if isinstance(values, dict) else values
    return build_config(tree)


def _fit(config, hooks=()):
    return train(config, run_config=build_run_config(config, controller_failure_limit=0), hooks=hooks)


@pytest.mark.timeout(600)
def test_killed_worker_recovers_from_last_checkpoint(ray_cluster, tmp_path):
    """Two Ray Train workers; rank 1 is killed in epoch 2. (A finished run resumed for more epochs, on
    S3 storage: test_s3_integration.py.)"""
    marker = tmp_path / "killed"
    by_value()
    config = _config(tmp_path)
    run_folder = tmp_path / "run" / "train" / config.name
    first = _fit(config, hooks=(KillOnce(2, 1, str(marker), str(run_folder)),))

    assert marker.exists(), "the fault was never injected"
    # rank 1 died at the end of epoch 2's steps: epoch 1 stays from attempt 0, epoch 2 is redone
    assert [m["epoch"] for m in first.metrics] == [1, 2]
    assert [m["attempt"] for m in first.metrics] == [0, 1], first.metrics
    for metrics in first.metrics:
        assert metrics["steps"] == 3 and metrics["train_jsd"] > 0 and 0 <= metrics["val_error"] <= 1
        assert metrics["samples_per_s"] > 0 and 0 <= metrics["data_wait_fraction"] <= 1
        assert 0 <= metrics["steady_data_wait_fraction"] <= metrics["data_wait_fraction"] + 1e-9
        assert metrics["first_batch_wait_s"] >= 0
    saved = torch.load(first.model_uri, weights_only=False)
    assert saved["epoch"] == 2 and saved["model_name"] == "wrn10_1"


def _write_cifar10_folder(root, count: int = 200):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    from augmix.datasets.cifar import write_cifar_batch
    from augmix.datasets.synthetic import synthetic_table

    table = synthetic_table("train", count, seed=7)
    write_cifar_batch(folder / "data_batch_1", table.images, table.labels, "labels")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [name.encode() for name in table.classes]}, handle, protocol=2)
    return folder


@pytest.mark.timeout(240)
def test_cifar_folder_source_trains_without_jsd(ray_cluster, tmp_path):
    """The CIFAR python folder format, one augmented view and CE only; driver mode (the Ray Train
    worker group is covered by the killed-worker test, and costs ~20 s to start here)."""
    folder = _write_cifar10_folder(tmp_path / "data")
    cifar = _config(tmp_path / "cifar", data={"name": "cifar10", "path": str(folder), "limit": 200},
                    augmix={"jsd": False}, train={"epochs": 1, "max_steps_per_epoch": 2},
                    scaling={"num_workers": 0})
    result = _fit(cifar)
    assert len(result.metrics) == 1 and result.metrics[0]["train_jsd"] == 0.0
    assert torch.load(result.model_uri, weights_only=False)["classes"][0] == "disc"


@pytest.mark.timeout(240)
def test_parquet_source_with_augmix_on_the_trainer(ray_cluster, cifar10_dir, tmp_path):
    """The shared JPEG-in-Parquet CIFAR-10 (first 300 rows), AugMix run inside the loop, driver mode."""
    if not (cifar10_dir / "train.parquet").exists():
        pytest.skip(f"real CIFAR-10 train.parquet not found in {cifar10_dir}")
    parquet = _config(tmp_path / "parquet",
                      data={"name": "parquet", "path": str(cifar10_dir / "train.parquet"), "limit": 300},
                      augmix={"placement": "trainer"}, train={"epochs": 1, "max_steps_per_epoch": 2},
                      scaling={"num_workers": 0})
    result = _fit(parquet)
    metrics = result.metrics[0]
    assert metrics["steps"] == 2 and metrics["train_jsd"] > 0 and np.isfinite(metrics["train_loss"])
    assert torch.load(result.model_uri, weights_only=False)["classes"][0] == "airplane"
