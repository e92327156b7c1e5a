"""`augmix submit|status|stop|logs`: run augmix commands as Ray Jobs on a cluster.

The job carries this project as its working_dir (so the cluster runs exactly the code you have),
and the S3 endpoint and region of your environment as env_vars of the job. Credentials never
travel with a job: the nodes use their own (the instance profile on AWS).
"""
from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from augmix.errors import InputError
from orchestrator.ray_session import job_runtime_env, use_token_if_available

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
WORKING_DIR_EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", "*.egg-info", ".pytest_cache", "docs/*.png"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _address(address: str | None) -> str:
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


class ClusterUnreachable(InputError, ConnectionError):
    """The job server did not answer, or refused us: the address or the token is the user's to fix."""


def client(address: str | None = None):
    """A JobSubmissionClient that sends the cluster token the user has, or one line saying which
    address could not be reached or refused the token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    target = _address(address)
    use_token_if_available()
    try:
        return JobSubmissionClient(target)
    except AuthenticationError as error:
        raise ClusterUnreachable(f"the Ray job server at {target} refused this client: "
                                 f"{str(error).splitlines()[0]} (copy the cluster's token to ~/.ray/auth_token "
                                 "or set RAY_AUTH_TOKEN_PATH; `ray get-auth-token` prints yours)") from None
    except Exception as error:  # noqa: BLE001 - connection failures come in several types
        raise ClusterUnreachable(f"cannot reach the Ray job server at {target}: {str(error).splitlines()[0]} "
                                 "(is the cluster up? try `ray dashboard cluster.yaml`)") from None


JOB_MODULES = ("run", "train", "evaluate", "sweep", "corrupt", "report")


def entrypoint(command: list[str]) -> str:
    """The shell command the job's driver runs: `python3 -m jobs.<command>` from the shipped working_dir,
    with the Python the cluster's nodes installed the project into (cluster.yaml's setup_commands)."""
    name, *arguments = command
    if name not in JOB_MODULES:
        raise InputError(f"cannot submit {name!r}; allowed: {', '.join(JOB_MODULES)}")
    return " ".join(["python3", "-m", f"jobs.{name}", *map(shlex.quote, arguments)])


def runtime_env(working_dir: str | None = None) -> dict:
    return {"working_dir": str(working_dir or PROJECT_ROOT), "excludes": WORKING_DIR_EXCLUDES, **job_runtime_env()}


async def _follow(job_client, job_id: str) -> None:
    async for lines in job_client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def wait(job_client, job_id: str, timeout_s: float | None = None) -> str:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(job_client.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(1.0)


AGENT_WAIT_S = 120.0


def _submit_when_an_agent_is_up(job_client, wait_s: float = AGENT_WAIT_S, **job) -> str:
    """Submit, retrying while the job server has no node agent yet.

    A head that just started (`ray up`, `ray start --head`) answers on its dashboard port seconds
    before its node agent registers; the server then refuses jobs with "No available agent".
    That is a transient state of a healthy cluster, so we wait it out instead of failing the user.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return job_client.submit_job(**job)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def submit(command: list[str], address: str | None = None, follow: bool = True,
           working_dir: str | None = None) -> int:
    """Submit `augmix <command>`; with follow, stream its logs and return 0 only if it SUCCEEDED."""
    job_client = client(address)
    job_id = _submit_when_an_agent_is_up(job_client, entrypoint=entrypoint(command),
                                         runtime_env=runtime_env(working_dir),
                                         metadata={"augmix_command": " ".join(command)[:512]})
    print(f"submitted job {job_id} to {_address(address)}", file=sys.stderr, flush=True)
    if not follow:
        print(job_id)
        return 0
    try:
        asyncio.run(_follow(job_client, job_id))
    except RuntimeError as error:  # the log stream closed early: fall back to polling the status
        print(f"(log stream ended: {error}; polling status)", file=sys.stderr)
    status = wait(job_client, job_id)
    print(f"job {job_id} {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def job_status(job_id: str, address: str | None = None) -> int:
    info = client(address).get_job_info(job_id)
    print(f"{job_id} {info.status.value} {info.message or ''}".rstrip())
    return 0


def job_stop(job_id: str, address: str | None = None) -> int:
    stopped = client(address).stop_job(job_id)
    print(f"{job_id} {'stopping' if stopped else 'was not running'}")
    return 0


def job_logs(job_id: str, address: str | None = None) -> int:
    print(client(address).get_job_logs(job_id), end="")
    return 0
