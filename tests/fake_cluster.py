"""cluster.yaml's node types as real raylets on this machine: Ray's fake multi-node autoscaler.

Ray's `fake_multinode` provider (the one behind `ray.cluster_utils.AutoscalingCluster`) starts a
"node" by starting a raylet with that node type's resources, so the autoscaler, the scheduler and the
job server behave as on a cloud cluster, minus the machines. Ray's helper calls `ray stop --force`
(every Ray process on the machine) and reads a defaults file the wheel lacks, so this harness writes
the config itself and stops only the processes of its own session folder.

The node types are cluster.yaml's own, with their custom resources (`augment_node`, `trainer_node`)
and worker bounds, scaled down to this machine: CPUs, a fake GPU count and a small object store
replace what AWS would read off the instance type. Token authentication is on, with a token that
only the cluster's environment and the clients we give it to know.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the provider names the head's type itself
OBJECT_STORE_BYTES = 150 * 1024 * 1024
# what AWS reads off the instance type, scaled to a 2-core machine: per node-type role
SCALED_RESOURCES = {"augment_node": {"CPU": 1}, "trainer_node": {"CPU": 1, "GPU": 1}}
MAX_WORKERS_PER_TYPE = 3  # one more than a run needs: a lost node is replaced before the autoscaler reaps it
IDLE_TIMEOUT_MINUTES = 0.15
# a lost node is declared dead after ~3 s instead of ~30 s (the test waits for it, a cloud does not hurry)
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 1000, "health_check_timeout_ms": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def head_port_flags() -> list[str]:
    """`ray start --head` flags giving a second head every port of its own: the session's Ray
    cluster already holds the defaults (the dashboard agent's 52365 among them), and a head whose
    agent cannot bind refuses every job."""
    return [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]


def role_of(resources: dict) -> str | None:
    return next((role for role in SCALED_RESOURCES if role in resources), None)


def scaled_node_types(cluster: dict) -> dict[str, dict]:
    """cluster.yaml's worker node types with this machine's CPUs/GPUs added to their own resources."""
    types = {}
    for name, node in cluster["available_node_types"].items():
        if name == cluster["head_node_type"]:
            continue
        role = role_of(node["resources"])
        assert role, f"cluster.yaml node type {name} has neither augment_node nor trainer_node"
        types[name] = {
            "resources": {**node["resources"], **SCALED_RESOURCES[role], "object_store_memory": OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": node.get("min_workers", 0),
            "max_workers": min(node["max_workers"], MAX_WORKERS_PER_TYPE),
        }
    return types


def autoscaling_config(cluster: dict, gcs_address: str) -> dict:
    head = cluster["available_node_types"][cluster["head_node_type"]]
    return {
        "cluster_name": cluster["cluster_name"],
        "max_workers": sum(t["max_workers"] for t in scaled_node_types(cluster).values()),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {FAKE_HEAD_TYPE: {"resources": dict(head["resources"]), "node_config": {},
                                                  "max_workers": 0},
                                 **scaled_node_types(cluster)},
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
        "rsync_filter": [], "file_mounts_sync_continuously": False, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@dataclass
class FakeCluster:
    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.cluster = yaml.safe_load(CLUSTER_YAML.read_text())
        self.temp_dir = Path(f"/tmp/augmix-fake-{os.getpid()}-{secrets.token_hex(3)}")  # short: socket paths
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.token_path = self.root / "auth_token"
        self.token_path.write_text(self.token)
        self.token_path.chmod(0o600)

    # ------------------------------------------------------------------------------------ environment
    def client_env(self, token: bool = True) -> dict[str, str]:
        """A client process's environment: no S3 endpoint (it travels in the submitted config) and,
        with `token`, the cluster's token as `ray get-auth-token` would leave it."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AWS_ENDPOINT_URL", "RAY_AUTH_", "RAY_ADDRESS"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if token:
            env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}
        return env

    def node_env(self) -> dict[str, str]:
        """Every node's environment (the monitor starts the fake nodes with its own): the token, the
        S3 credentials an instance profile would give, never the endpoint."""
        return self.client_env() | {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 120) -> None:
        config_path = self.root / "autoscaling.yaml"
        config_path.write_text(yaml.safe_dump(autoscaling_config(self.cluster, f"127.0.0.1:{self.gcs_port}")))
        ports = head_port_flags()
        head = self.cluster["available_node_types"][self.cluster["head_node_type"]]
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                   f"--port={self.gcs_port}", *ports, f"--num-cpus={int(head['resources'].get('CPU', 0))}",
                   f"--autoscaling-config={config_path}", "--node-ip-address=127.0.0.1",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                   "--include-dashboard=true", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                   f"--object-store-memory={OBJECT_STORE_BYTES}",
                   f"--system-config={json.dumps(SYSTEM_CONFIG, separators=(',', ':'))}"]
        self.log = open(self.root / "head.log", "wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=self.node_env())
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.get("/api/version")
                if self.get("/api/jobs/") is not None:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fake cluster's head did not start; see {self.log.name}")
            time.sleep(1)

    def stop(self) -> None:
        """SIGKILL every process of this cluster's session folder (the fake nodes' raylets are the
        monitor's children, reparented when it goes), never `ray stop`."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (pids := _processes_mentioning(str(self.temp_dir))) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.log.close()

    # ------------------------------------------------------------------------------------ state
    def get(self, path: str, token: bool = True):
        import requests

        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        try:
            response = requests.get(self.address + path, headers=headers, timeout=30)
        except requests.RequestException as error:
            raise OSError(str(error)) from error
        response.raise_for_status()
        return response.json() if response.content else None

    def state(self, kind: str) -> list[dict]:
        """Ray's state API (`ray list <kind> --detail`) over HTTP: nodes, actors, tasks, ..."""
        return self.get(f"/api/v0/{kind}?limit=10000&detail=true")["data"]["result"]["result"]

    def nodes(self) -> list[dict]:
        """Every node the cluster has seen, with `type`: the cluster.yaml node type its resources say."""
        nodes = self.state("nodes")
        for node in nodes:
            role = role_of(node.get("resources_total", {}))
            node["type"] = next((name for name, t in scaled_node_types(self.cluster).items()
                                 if role and role in t["resources"]), FAKE_HEAD_TYPE)
        return nodes

    def alive_nodes(self) -> list[dict]:
        return [node for node in self.nodes() if node["state"] == "ALIVE"]

    def kill_node(self, node_id: str) -> None:
        """A reclaimed spot instance: the node's raylet and every worker on it SIGKILLed at once."""
        pids = [pid for pid in _processes_mentioning(str(self.temp_dir)) if _node_of(pid) == node_id]
        assert pids, f"no process of node {node_id}"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _node_of(pid: int) -> str | None:
    """The node id a fake node's processes carry in their environment (the provider sets it)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="):
            return item.split(b"=", 1)[1].decode()
    return None
