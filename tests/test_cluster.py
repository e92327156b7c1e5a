"""cluster.yaml: valid against Ray's own schema, and it offers what the shipped configs ask for."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.config import CONFIG_DIR, load_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_valid_against_ray_schema(cluster):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    validate_config(prepare_config(copy.deepcopy(cluster)))  # merges the AWS defaults, checks node types


def test_node_roles(cluster):
    nodes = cluster["available_node_types"]
    head = nodes[cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must schedule no training or augmentation"
    assert any("--num-cpus=0" in c for c in cluster["head_start_ray_commands"])
    gpu = [n for n in nodes.values() if "trainer_node" in n["resources"]]
    cpu = [n for n in nodes.values() if "augment_node" in n["resources"]]
    assert gpu and cpu and all(n["max_workers"] >= n["min_workers"] for n in gpu + cpu)
    assert all(n["node_config"]["InstanceType"].split(".")[0][0] in "gp" for n in gpu)  # g5/p4d GPU families
    for node in (*gpu, *cpu):
        assert "IamInstanceProfile" in node["node_config"], "S3 access comes from an instance profile"


def test_dashboard_stays_private_and_no_secrets(cluster):
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    text = CLUSTER_YAML.read_text().lower()
    for secret in ("aws_secret_access_key", "aws_access_key_id", "secretaccesskey"):
        assert secret not in text


def test_setup_installs_this_project(cluster):
    assert any(target for target in cluster["file_mounts"].values() if target == ".")
    assert any("pip install -e ~/augmix-ray" in c for c in cluster["setup_commands"])


def test_shipped_configs_ask_only_for_resources_the_cluster_has(cluster):
    offered: set[str] = set()
    for node in cluster["available_node_types"].values():
        offered |= set(node["resources"])
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        config = load_config(path)
        asked = set(config.scaling.trainer_resources) | set(config.scaling.data_resources)
        assert asked <= offered, f"{path.name} asks for {asked - offered}, which no node type offers"
        if config.scaling.use_gpu and config.storage.uri.startswith("s3://"):  # a cluster config
            assert config.scaling.trainer_resources and config.scaling.data_resources, \
                f"{path.name} runs on the cluster without pinning trainers to GPU nodes and AugMix to CPU nodes"


def test_every_node_starts_with_token_authentication_and_the_token_comes_from_the_user(cluster):
    for command in (*cluster["head_start_ray_commands"], *cluster["worker_start_ray_commands"]):
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command.split("ray start")[0], command
    # the token reaches the nodes as a copy of the user's file, never as text in this repository
    assert cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert "ray get-auth-token --generate" in CLUSTER_YAML.read_text()
    import re

    assert not re.search(r"[0-9a-f]{32,}", CLUSTER_YAML.read_text()), "a token-like string in cluster.yaml"
