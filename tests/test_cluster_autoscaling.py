"""The cluster path without AWS: cluster.yaml's node types on Ray's fake multi-node autoscaler.

A head with no CPUs, augmentation and trainer node types taken from cluster.yaml (scaled down, see
tests/fake_cluster.py), token authentication on, the S3 server of the test session. `augmix submit`
runs `augmix run` with the S3 endpoint set only in the submitted config (neither the head, the nodes
nor the submitting shell know it). What the run did is read from Ray's own records (the state API)
and from what the run wrote to S3.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fake_cluster import FAKE_HEAD_TYPE, FakeCluster

pytestmark = [pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]

AUGMIX = [sys.executable, "-m", "orchestrator.cli"]
AUGMENT_ACTOR = "AugmentStage"  # Ray Data names its map actors after the callable class
TRAINER_ACTOR = "RayTrainWorker"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("the `ray` command is not installed beside this Python")
    fake = FakeCluster(tmp_path_factory.mktemp("fake-cluster"))
    fake.start()
    yield fake
    fake.stop()


def run_config(path: Path, bucket: str, endpoint: str, epochs: int, suites: bool = True) -> Path:
    """A small run sized for cluster.yaml's node types: the trainer asks for a trainer node, each of
    the two AugMix actors for an augmentation node."""
    config = {
        "name": "cluster",
        "data": {"name": "synthetic", "synthetic_train_size": 768, "synthetic_test_size": 128,
                 "validation_fraction": 0.0},
        "model": {"name": "wrn10_1"},
        "train": {"epochs": epochs, "batch_size": 64, "max_failures": 2},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "trainer_resources": {"trainer_node": 1},
                    "data_actors": 2, "cpus_per_data_actor": 1, "data_resources": {"augment_node": 1},
                    "data_batch_size": 64},
        "storage": {"uri": f"s3://{bucket}/run", "endpoint_url": endpoint},
        "eval": {"limit": 128, "corruptions": ["gaussian_noise"], "severities": [1], "batch_size": 128,
                 "cpus_per_cell": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def submit(cluster: FakeCluster, command: list[str], wait: bool = True, token: bool = True):
    return subprocess.run([*AUGMIX, "submit", "--address", cluster.address, *([] if wait else ["--no-wait"]),
                           "--", *command], env=cluster.client_env(token), capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).resolve().parents[1])


def read_s3(bucket: str, key: str) -> bytes:
    import boto3

    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def history(bucket: str) -> list[dict]:
    import torch

    return torch.load(io.BytesIO(read_s3(bucket, "run/model/model.pt")), map_location="cpu",
                      weights_only=False)["history"]


def job_actors(cluster: FakeCluster, submission_id: str, name: str, **filters: str) -> list[dict]:
    """The submitted job's actors whose class name contains `name` (Ray Data names its map actors
    after the callable class, e.g. MapWorker(MapBatches(AugmentStage)))."""
    wanted = {"job_id": cluster.get(f"/api/jobs/{submission_id}")["job_id"], **filters}
    return [actor for actor in cluster.state("actors") if name in actor["class_name"] and actor.get("node_id")
            and all(actor.get(key) == value for key, value in wanted.items())]


def actor_nodes(cluster: FakeCluster, submission_id: str, name: str) -> dict[str, str]:
    """actor id → the cluster.yaml node type it ran on."""
    types = {node["node_id"]: node["type"] for node in cluster.nodes()}
    return {actor["actor_id"]: types[actor["node_id"]] for actor in job_actors(cluster, submission_id, name)}


def wait_until(condition, what: str, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(interval_s)
    return value


@pytest.mark.timeout(900)
def test_a_submitted_run_starts_each_node_type_and_places_each_stage_on_its_own(cluster, s3_bucket, s3_server,
                                                                                tmp_path):
    config = run_config(tmp_path / "run.yaml", s3_bucket, s3_server, epochs=2)
    done = submit(cluster, ["run", "--config", str(config)])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    job_id = re.search(r"submitted job (\S+)", done.stderr).group(1)

    started = {node["type"] for node in cluster.nodes()}
    assert started == {FAKE_HEAD_TYPE, "cpu_augment", "gpu_train"}, started
    augment = actor_nodes(cluster, job_id, AUGMENT_ACTOR)
    trainers = actor_nodes(cluster, job_id, TRAINER_ACTOR)
    assert augment and set(augment.values()) == {"cpu_augment"}, augment
    assert trainers and set(trainers.values()) == {"gpu_train"}, trainers

    results = json.loads(read_s3(s3_bucket, "run/results.json"))
    assert [epoch["epoch"] for epoch in history(s3_bucket)] == [1, 2]
    assert results["clean_error"] is not None
    # the idle nodes go once the run is over (cluster.yaml's idle_timeout_minutes, scaled down)
    wait_until(lambda: {node["type"] for node in cluster.alive_nodes()} == {FAKE_HEAD_TYPE},
               "the idle worker nodes to be removed", 120)


def test_a_client_without_the_cluster_token_is_refused(cluster):
    import requests

    assert requests.get(cluster.address + "/api/jobs/", timeout=30).status_code == 401
    refused = subprocess.run([*AUGMIX, "submit", "--address", cluster.address, "--", "train"],
                             env=cluster.client_env(token=False) | {"RAY_AUTH_MODE": "token",
                                                                     "RAY_AUTH_TOKEN": "not-the-token"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused this client" in lines[0], refused.stderr[-2000:]


class JobLog:
    """A submitted job's output, polled: when each epoch line first appeared."""

    def __init__(self, cluster: FakeCluster, submission_id: str) -> None:
        self.cluster, self.submission_id, self.seen = cluster, submission_id, {}

    def poll(self) -> str:
        text = self.cluster.get(f"/api/jobs/{self.submission_id}/logs")["logs"]
        for epoch in re.findall(r"epoch (\d+)/\d+  steps", text):  # (prefixed by the worker's name)
            self.seen.setdefault(int(epoch), time.monotonic())
        return text

    def status(self) -> str:
        return self.cluster.get(f"/api/jobs/{self.submission_id}")["status"]

    def wait_for_epoch(self, epoch: int, timeout_s: float) -> float:
        def reached() -> bool:
            self.poll()
            assert self.status() not in ("FAILED", "STOPPED"), self.poll()[-4000:]
            return epoch in self.seen
        wait_until(reached, f"epoch {epoch}'s line", timeout_s)
        return self.seen[epoch]


def registered_checkpoints(bucket: str) -> str:
    try:
        return read_s3(bucket, "run/train/cluster/checkpoint_manager_snapshot.json").decode()
    except Exception:  # noqa: BLE001 - not written yet
        return ""


@pytest.mark.timeout(900)
def test_spot_losses_an_augmentation_node_then_the_trainer_node(cluster, s3_bucket, s3_server, tmp_path):
    """An augmentation node lost mid-epoch: Ray Data restarts its actor elsewhere and the epoch stays
    whole. The trainer's node lost: Ray Train restarts the worker group on a new trainer node, which
    resumes from the last checkpoint in S3, losing only the open epoch."""
    epochs = 4
    config = run_config(tmp_path / "train.yaml", s3_bucket, s3_server, epochs=epochs)
    submitted = submit(cluster, ["train", "--config", str(config)], wait=False)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job = JobLog(cluster, submitted.stdout.strip().splitlines()[-1])

    # the actors work ahead of the trainer (the whole run's pieces are one stream), so the node goes
    # as soon as one of them is up: in epoch 1, with its pieces in flight
    augment = wait_until(lambda: job_actors(cluster, job.submission_id, AUGMENT_ACTOR, state="ALIVE"),
                         "an AugMix actor to start", 600)
    cluster.kill_node(augment[0]["node_id"])

    job.wait_for_epoch(2, 600)
    wait_until(lambda: registered_checkpoints(s3_bucket).count("checkpoint_") >= 2,
               "epoch 2's checkpoint to be registered", 120)
    (trainer,) = job_actors(cluster, job.submission_id, TRAINER_ACTOR, state="ALIVE")
    cluster.kill_node(trainer["node_id"])
    killed = time.monotonic()

    wait_until(lambda: job.poll() and job.status() in ("SUCCEEDED", "FAILED", "STOPPED"), "the job to end", 600, 1)
    assert job.status() == "SUCCEEDED", job.poll()[-4000:]
    job.poll()
    epochs_run = history(s3_bucket)
    assert [epoch["epoch"] for epoch in epochs_run] == list(range(1, epochs + 1))
    steps = 768 // 64
    assert [epoch["steps"] for epoch in epochs_run] == [steps] * epochs  # every epoch whole
    assert [epoch["skipped_rows"] for epoch in epochs_run] == [0] * epochs
    # the augmentation node's loss cost no attempt; the trainer node's one, and only epoch 3 was redone
    assert [epoch["attempt"] for epoch in epochs_run] == [0, 0, 1, 1]
    trainers = actor_nodes(cluster, job.submission_id, TRAINER_ACTOR)
    assert len(trainers) == 2 and set(trainers.values()) == {"gpu_train"}, trainers
    print(f"\nspot losses: epoch 2 took {job.seen[2] - job.seen[1]:.1f} s; the trainer node lost "
          f"{killed - job.seen[2]:.1f} s into epoch 3, which ended {job.seen[3] - killed:.1f} s later "
          f"(redone from its start on a new node); epoch 4 took {job.seen[4] - job.seen[3]:.1f} s")
