"""What a job's workers get from the driver: the config's S3 endpoint and the start-up import travel
in the runtime_env, merged with what `augmix submit` already gave the job (never conflicting)."""
from __future__ import annotations

import json

import pytest

from augmix.errors import InputError
from orchestrator.ray_session import (
    ENDPOINT_ENV,
    JOB_CONFIG_ENV,
    WORKER_SETUP_HOOK,
    added_runtime_env,
    job_runtime_env,
)
from orchestrator.submit import runtime_env as submitted_env


def test_the_config_endpoint_reaches_the_workers_env(monkeypatch):
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    env = job_runtime_env("http://s3.internal:9000")
    assert env["env_vars"][ENDPOINT_ENV] == "http://s3.internal:9000"
    assert env["worker_process_setup_hook"] == WORKER_SETUP_HOOK
    assert ENDPOINT_ENV not in job_runtime_env()["env_vars"]


def test_a_driver_outside_a_submitted_job_adds_everything(monkeypatch):
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    env = job_runtime_env("http://s3.internal:9000")
    assert added_runtime_env(env) == env


def test_a_submitted_job_keeps_its_own_fields_and_gains_only_new_variables(monkeypatch):
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": submitted_env("/tmp/project")}))
    added = added_runtime_env(job_runtime_env("http://s3.internal:9000"))
    # Ray refuses a field or variable given twice: the hook and the thread count came with the job
    assert added == {"env_vars": {ENDPOINT_ENV: "http://s3.internal:9000"}}


def test_a_config_endpoint_unlike_the_submitted_one_is_named(monkeypatch):
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"env_vars": {ENDPOINT_ENV: "http://a:1"}}}))
    with pytest.raises(InputError, match="storage.endpoint_url http://b:2 differs from AWS_ENDPOINT_URL_S3=http://a:1"):
        added_runtime_env(job_runtime_env("http://b:2"))
    assert ENDPOINT_ENV not in added_runtime_env(job_runtime_env("http://a:1"))["env_vars"]  # already there


LOCAL_CLUSTER_PROBE = """
import requests, ray
from orchestrator.ray_session import ensure_ray
ensure_ray(num_cpus=1)
web = ray._private.worker.global_worker.node.address_info["webui_url"]
print("status without token:", requests.get(f"http://{web}/api/jobs/", timeout=30).status_code)
ray.shutdown()
"""


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_local_cluster_augmix_starts_refuses_clients_without_its_token(tmp_path):
    """No RAY_AUTH_MODE set, as for a user: Ray's token auth stays on, with a token of the user's."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", LOCAL_CLUSTER_PROBE], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status without token: 401" in done.stdout
    assert (tmp_path / ".ray" / "auth_token").stat().st_size > 0
