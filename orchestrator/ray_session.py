"""Connecting the driver to Ray: an existing cluster when there is one, else a local one on 127.0.0.1.

A local cluster started for a run must never listen beyond loopback, so the environment that pins
Ray to 127.0.0.1 is set before Ray starts (see ../shared/RAY_NOTES.md: `_node_ip_address` alone is
silently replaced).
"""
from __future__ import annotations

import os

LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps a local cluster on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "1",
}

# Forwarded to every Ray worker of a job so S3 settings reach the nodes that read and write.
# Credentials are not: nodes use their own (instance profile), a local cluster inherits ours.
FORWARDED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")


def pin_local_environment() -> None:
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def worker_env() -> dict[str, str]:
    """Environment for the job's workers: the driver's S3 endpoint and region, one thread per op."""
    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    # Ray Train V2 sends a worker's print() both to stdout and to its logger, so every epoch line
    # reached the terminal twice
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return env


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` / RAY_ADDRESS, or start a local cluster; returns True if we started it."""
    target = address or os.environ.get("RAY_ADDRESS")
    if not target:
        pin_local_environment()  # effective only if ray is not imported yet: callers pin first (cli.main)
    import ray

    if ray.is_initialized():
        return False
    if target:
        # An existing cluster: its nodes have their own environment, and a submitted job already
        # carries the runtime_env `augmix submit` gave it (a second one here would conflict).
        ray.init(address=target, log_to_driver=True)
        return False
    ray.init(address="local", num_cpus=num_cpus, runtime_env={"env_vars": worker_env()},
             include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    return True
