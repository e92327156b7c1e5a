"""`augmix submit` against a real Ray head started with `ray start --head` (dashboard on 127.0.0.1)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import stop_process_group
from fake_cluster import free_port, head_port_flags
from orchestrator.cli import main
from orchestrator.submit import entrypoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A separate head (its own ports and temp dir), stopped by its process group, never `ray stop`."""
    ray_binary = Path(sys.executable).parent / "ray"
    if not ray_binary.exists():
        pytest.skip("the `ray` command is not installed beside this Python")
    temp_dir = Path(f"/tmp/augmix-head-{os.getpid()}")
    dashboard = free_port()
    ports = [f"--port={free_port()}", *head_port_flags()]
    command = [str(ray_binary), "start", "--head", "--block", "--num-cpus=4", *ports,
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
               "--include-dashboard=true", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    log = open(tmp_path_factory.mktemp("head") / "head.log", "wb")
    # the head's Python environment (this venv) is the one on its PATH, as on a cluster node
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "RAY_ADDRESS": "", "PATH": path})
    address = f"http://127.0.0.1:{dashboard}"
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 90
    while True:
        try:
            JobSubmissionClient(address).list_jobs()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"the Ray head did not start (see {log.name})")
            time.sleep(1)
    yield address
    stop_process_group(process, grace_s=5)  # `ray start --block` lingers after SIGTERM; its temp dir goes below
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_entrypoint_runs_the_job_module():
    assert entrypoint(["train", "--config", "quickstart.yaml", "--set", "a=b c"]) == \
        "python3 -m jobs.train --config quickstart.yaml --set 'a=b c'"
    with pytest.raises(ValueError, match="cannot submit 'rm'"):
        entrypoint(["rm", "-rf"])


def test_submit_needs_a_command(capsys):
    assert main(["submit", "--address", "http://127.0.0.1:9"]) == 2
    assert "needs a command after --" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_submit_tiny_training_job_to_a_real_head(ray_head, tmp_path, capsys):
    out = tmp_path / "submitted-run"
    code = main(["submit", "--address", ray_head, "--", "train", "--config", "quickstart.yaml",
                 "--out", str(out), "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2",
                 "--set", "data.synthetic_train_size=400", "--set", "data.synthetic_test_size=100",
                 "--set", "scaling.cpus_per_worker=0.5", "--set", "scaling.cpus_per_data_actor=0.5",
                 "--set", "scaling.num_workers=0"])  # the loop in the job's driver: no worker group to start
    captured = capsys.readouterr()
    assert code == 0, captured.out[-3000:] + captured.err[-2000:]
    assert "SUCCEEDED" in captured.err
    job_id = captured.err.split("submitted job ", 1)[1].split()[0]
    assert (out / "model" / "model.pt").stat().st_size > 0
    assert main(["status", job_id, "--address", ray_head]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert main(["logs", job_id, "--address", ray_head]) == 0
    assert "epoch 1/1" in capsys.readouterr().out


class _HeadStillStarting:
    """A job server whose node agent registers only after `refusals` submissions."""

    def __init__(self, refusals: int, message: str = "Request failed with status code 500: No available agent to submit job, please try again later.."):
        self.refusals, self.message, self.calls = refusals, message, 0

    def submit_job(self, **job) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(self.message)
        return "raysubmit_ok"


def test_submission_waits_for_the_node_agent(monkeypatch):
    from orchestrator import submit as submit_module

    monkeypatch.setattr(submit_module.time, "sleep", lambda _: None)
    head = _HeadStillStarting(refusals=3)
    assert submit_module._submit_when_an_agent_is_up(head, entrypoint="python3 -m jobs.train") == "raysubmit_ok"
    assert head.calls == 4


def test_submission_does_not_retry_other_errors_or_forever(monkeypatch):
    from orchestrator import submit as submit_module

    monkeypatch.setattr(submit_module.time, "sleep", lambda _: None)
    with pytest.raises(RuntimeError, match="runtime_env"):
        submit_module._submit_when_an_agent_is_up(_HeadStillStarting(1, "bad runtime_env"), entrypoint="x")
    with pytest.raises(RuntimeError, match="No available agent"):
        submit_module._submit_when_an_agent_is_up(_HeadStillStarting(10**9), wait_s=0.0, entrypoint="x")
