"""Shared fixtures: the real CIFAR-10 sample from ../shared/data, and (later) Ray and S3 services."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUGMIX_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR10_DIR = SHARED_DATA / "cifar10"


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The shared JPEG-in-Parquet CIFAR-10 folder (train.parquet, test.parquet), or skip."""
    if not (CIFAR10_DIR / "test.parquet").exists():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_DIR} (set AUGMIX_SHARED_DATA)")
    return CIFAR10_DIR


def _decode_test_images(directory: Path, count: int):
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    table = pq.read_table(directory / "test.parquet", columns=["image", "label"]).slice(0, count)
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in table.column("image").to_pylist()]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.long)
    return batch, labels


@pytest.fixture(scope="session")
def cifar_images(cifar10_dir: Path):
    """The first 512 real CIFAR-10 test images as uint8 [512,3,32,32] (and their labels)."""
    return _decode_test_images(cifar10_dir, 512)


# --- Ray: one real local cluster per test session (slow to start), pinned to 127.0.0.1 -------------
for _key, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
    "RAY_DEDUP_LOGS": "1",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster with 4 logical CPUs (2 physical: see RAY_NOTES on 2-CPU deadlocks)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             _temp_dir=str(tmp_path_factory.mktemp("ray")), log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
