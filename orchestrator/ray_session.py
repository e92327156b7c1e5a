"""Connecting the driver to Ray: an existing cluster when there is one, else a local one on 127.0.0.1.

A local cluster started for a run must never listen beyond loopback, so the environment that pins
Ray to 127.0.0.1 is set before Ray starts (`_node_ip_address` alone is silently replaced). It keeps
Ray's token authentication on (Ray generates the token in ~/.ray/auth_token); a client of an
existing cluster sends the token the user has (`ray get-auth-token`, RAY_AUTH_TOKEN[_PATH]).

What the job's workers need (the S3 endpoint of the config, the region, one thread per op) reaches
them through the job's runtime_env, never through the driver's own environment: on a cluster the
workers run on other machines.
"""
from __future__ import annotations

import json
import os

from augmix.errors import InputError

LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps a local cluster on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
}

# Forwarded to every Ray worker of a job so S3 settings reach the nodes that read and write.
# Credentials are not: nodes use their own (instance profile), a local cluster inherits ours.
FORWARDED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
WORKER_SETUP_HOOK = "workers.process_setup.import_torch"
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # what Ray's job server hands a submitted job's driver


def pin_local_environment() -> None:
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def use_token_if_available() -> bool:
    """Send the cluster token the user has (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)
    unless RAY_AUTH_MODE says otherwise; True when token authentication is on for this process."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def worker_env(endpoint_url: str | None = None) -> dict[str, str]:
    """Environment for the job's workers: the config's S3 endpoint (else the driver's) and region,
    one thread per op."""
    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
    if endpoint_url:
        env[ENDPOINT_ENV] = endpoint_url
    env.setdefault("OMP_NUM_THREADS", "1")
    # Ray Train V2 sends a worker's print() both to stdout and to its logger, so every epoch line
    # reached the terminal twice
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return env


def job_runtime_env(endpoint_url: str | None = None) -> dict:
    """The runtime_env of every job: its workers' environment and their start-up import."""
    return {"env_vars": worker_env(endpoint_url), "worker_process_setup_hook": WORKER_SETUP_HOOK}


def submitted_runtime_env() -> dict:
    """The runtime_env a submitted job already has (`augmix submit`'s), empty for any other driver."""
    try:
        job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}")
    except ValueError:
        return {}
    return dict(job.get("runtime_env") or {})


def added_runtime_env(runtime_env: dict) -> dict:
    """What `runtime_env` adds to the submitted job's own (Ray merges the two; a field or variable in
    both is a conflict it refuses, so a config endpoint unlike the submitter's is named here)."""
    job = submitted_runtime_env()
    job_vars, env_vars = job.get("env_vars") or {}, runtime_env.get("env_vars") or {}
    if ENDPOINT_ENV in job_vars and ENDPOINT_ENV in env_vars and job_vars[ENDPOINT_ENV] != env_vars[ENDPOINT_ENV]:
        raise InputError(f"storage.endpoint_url {env_vars[ENDPOINT_ENV]} differs from {ENDPOINT_ENV}="
                         f"{job_vars[ENDPOINT_ENV]} the job was submitted with; unset one of them")
    added = {key: value for key, value in runtime_env.items() if key != "env_vars" and key not in job}
    return added | {"env_vars": {key: value for key, value in env_vars.items() if key not in job_vars}}


def ensure_ray(address: str | None = None, num_cpus: int | None = None, endpoint_url: str | None = None) -> bool:
    """Connect to `address` / RAY_ADDRESS, or start a local cluster; returns True if we started it.
    `endpoint_url` (the config's storage.endpoint_url) reaches every worker of the job."""
    target = address or os.environ.get("RAY_ADDRESS")
    if not target:
        pin_local_environment()  # effective only if ray is not imported yet: callers pin first (cli.main)
    import ray

    if ray.is_initialized():
        return False
    if target:
        use_token_if_available()
        ray.init(address=target, runtime_env=added_runtime_env(job_runtime_env(endpoint_url)), log_to_driver=True)
        pin_ray_data_singletons()
        return False
    ray.init(address="local", num_cpus=num_cpus, runtime_env=job_runtime_env(endpoint_url),
             include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    return True


def pin_ray_data_singletons() -> None:
    """Create Ray Data's per-cluster actors from the driver, so they live on the driver's node.

    Ray Data makes two detached actors (its stats actor, its actor-location tracker) on the node
    of whichever process first runs a dataset, and keeps them there for the cluster's lifetime. Our
    first datasets run inside the trainers, so they landed on a GPU node, which then never became
    idle: the autoscaler kept it (and its bill) after the run. Made here first, they sit on the
    head, which stays anyway.
    """
    from ray.data._internal.execution.node_trackers.actor_location import get_or_create_actor_location_tracker
    from ray.data._internal.stats import get_or_create_stats_actor

    get_or_create_stats_actor()
    get_or_create_actor_location_tracker()
