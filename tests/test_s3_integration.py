"""Runs with their storage on a real S3 server (the session's SeaweedFS, signatures enforced).

Training checkpoints to s3://, survives the server stopping mid-upload (the retry resumes from the
last complete checkpoint), and a longer rerun resumes from S3 (a leftover half-written checkpoint
folder is not taken as the latest); evaluation cells land in s3:// and a rerun skips them; wrong
credentials and a missing bucket end the CLI with one line naming the bucket.
"""
from __future__ import annotations

import io
import os
import threading
import time

import boto3
import pytest
import torch

from orchestrator.cli import main as cli_main
from orchestrator.config import build_config
from orchestrator.evaluation import evaluate
from orchestrator.training import build_run_config, train
from loop_hooks import HoldBeforeReport, by_value

pytestmark = pytest.mark.ray


def _objects(bucket: str, prefix: str) -> dict[str, dict]:
    """key → S3 listing entry (LastModified, Size, ETag) for every object under prefix."""
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {entry["Key"]: entry for page in pages for entry in page.get("Contents", [])}


def _load(bucket: str, key: str) -> dict:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)


def _text(bucket: str, key: str) -> str:
    """An object's text, or "" while it does not exist."""
    try:
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except boto3.client("s3").exceptions.NoSuchKey:
        return ""


def _checkpoints(bucket: str, prefix: str) -> list[str]:
    return sorted(key for key in _objects(bucket, prefix) if key.endswith("/checkpoint.pt"))


def _training_config(uri: str, epochs: int, max_failures: int = 0):
    return build_config({
        "name": "s3_run",
        "data": {"synthetic_train_size": 400, "validation_fraction": 0.2},
        "model": {"name": "wrn10_1"},
        "train": {"epochs": epochs, "batch_size": 32, "max_steps_per_epoch": 2,
                  "max_failures": max_failures},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "data_actors": 1, "cpus_per_data_actor": 0.5,
                    "data_batch_size": 64},
        "storage": {"uri": uri},
    })


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _train_in_background(config, hooks=()) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = train(config, run_config=build_run_config(config, controller_failure_limit=0),
                                      hooks=hooks)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome["error"] = error

    runner = threading.Thread(target=fit, daemon=True)
    runner.start()
    return runner, outcome


def _wait_for(condition, runner: threading.Thread, outcome: dict, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert runner.is_alive(), f"training ended before {what}: {outcome}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_s3_checkpoints_survive_an_outage_mid_upload_and_a_longer_rerun_resumes(
        ray_cluster, s3_service, s3_bucket, tmp_path):
    """Epoch 2's checkpoint upload meets a stopped S3 server: that report fails, FailureConfig retries
    the worker group, which resumes from epoch 1's checkpoint in S3 once the server is back. Then a
    longer rerun resumes from S3 and ignores a newer-named, half-written checkpoint folder."""
    uri, run_prefix = f"s3://{s3_bucket}/run", "run/train/s3_run/"
    hold = tmp_path / "hold"
    hold.mkdir()
    by_value()
    first_config = _training_config(uri, epochs=2, max_failures=10)
    runner, outcome = _train_in_background(first_config, hooks=(HoldBeforeReport(2, 0, str(hold)),))
    _wait_for((hold / "holding").exists, runner, outcome, "epoch 2's report", 300)
    # Ray Train's controller registers epoch 1's checkpoint (and writes its snapshot to S3) a moment
    # after the report; epoch 2 follows at once, so wait for that write before taking S3 down
    _wait_for(lambda: "checkpoint_" in _text(s3_bucket, f"{run_prefix}checkpoint_manager_snapshot.json"),
              runner, outcome, "epoch 1's checkpoint to be registered", 60)
    assert [_load(s3_bucket, key)["epoch"] for key in _checkpoints(s3_bucket, run_prefix)] == [1]

    worker_pid = int((hold / "holding").read_text())
    s3_service.stop()
    try:
        (hold / "release").write_text("go\n")
        _wait_for(lambda: not _process_exists(worker_pid), runner, outcome,
                  "the worker whose upload failed to go", 180)
    finally:
        s3_service.start()
    runner.join(timeout=400)
    assert not runner.is_alive(), "training did not finish after S3 came back"
    assert "error" not in outcome, f"training failed: {outcome.get('error')!r}"
    first = outcome["result"]

    assert [m["epoch"] for m in first.metrics] == [1, 2]
    assert [m["attempt"] for m in first.metrics] == [0, 1]  # epoch 2 was redone by the retry
    assert first.model_uri == f"{uri}/model/model.pt"
    checkpoints = _checkpoints(s3_bucket, run_prefix)
    assert [_load(s3_bucket, key)["epoch"] for key in checkpoints] == [1, 2]  # complete, num_to_keep=2
    assert first.checkpoint_uri == f"s3://{s3_bucket}/{checkpoints[-1].removesuffix('/checkpoint.pt')}"
    model = _load(s3_bucket, "run/model/model.pt")
    assert model["epoch"] == 2 and model["model_name"] == "wrn10_1"

    # What an upload cut short would leave: a newer-named checkpoint folder holding a truncated file.
    complete = boto3.client("s3").get_object(Bucket=s3_bucket, Key=checkpoints[-1])["Body"].read()
    partial_folder = f"{run_prefix}checkpoint_2099-01-01_00-00-00.000000"
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"{partial_folder}/checkpoint.pt",
                                  Body=complete[: len(complete) // 3])

    longer_config = _training_config(uri, epochs=3)
    resumed = train(longer_config, run_config=build_run_config(longer_config, controller_failure_limit=0))

    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
    assert resumed.metrics[:2] == first.metrics  # continued from the epoch-2 checkpoint in S3
    assert resumed.metrics[2]["attempt"] == 2
    assert resumed.metrics[2]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine re-aimed at 3 epochs
    assert resumed.checkpoint_uri != f"s3://{s3_bucket}/{partial_folder}"
    assert _load(s3_bucket, "run/model/model.pt")["epoch"] == 3
    newest = [key for key in _checkpoints(s3_bucket, run_prefix) if not key.startswith(partial_folder)]
    assert _load(s3_bucket, newest[-1])["epoch"] == 3


def _put_untrained_model(bucket: str, key: str) -> str:
    """A model file in the layout training exports; untrained weights are enough to fill cells."""
    from augmix.models import build_model

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"model_name": "wrn10_1", "num_classes": 10, "state_dict": build_model("wrn10_1", 10).state_dict(),
                "config": {"model": {"name": "wrn10_1", "options": {}}}}, buffer)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"


@pytest.mark.timeout(300)
def test_evaluation_cells_land_in_s3_and_a_rerun_skips_them(ray_cluster, s3_bucket, capsys):
    checkpoint = _put_untrained_model(s3_bucket, "models/model.pt")
    config = build_config({}, [f"storage.uri=s3://{s3_bucket}/evaluated", "data.name=synthetic",
                               "eval.limit=64", "eval.batch_size=64", "eval.cpus_per_cell=1",
                               "eval.corruptions=[gaussian_noise,contrast]", "eval.severities=[1,3]"])
    first = evaluate(config, checkpoint=checkpoint)
    cells = _objects(s3_bucket, "evaluated/eval/cells/")
    assert len(cells) == 5, sorted(cells)  # clean + 2 corruptions x 2 severities
    assert "evaluated/results.json" in _objects(s3_bucket, "evaluated/")
    assert first["n_images"] == 64 and set(first["corruption_errors"]) == {"gaussian_noise", "contrast"}
    capsys.readouterr()

    time.sleep(1.1)  # LastModified has 1 s resolution: a rewritten cell would show a later time
    again = evaluate(config, checkpoint=checkpoint)
    assert "5 cells, 5 already finished" in capsys.readouterr().out
    after = _objects(s3_bucket, "evaluated/eval/cells/")
    assert {key: entry["LastModified"] for key, entry in after.items()} == \
        {key: entry["LastModified"] for key, entry in cells.items()}
    for key in ("clean_error", "corruption_errors", "mean_corruption_error", "rms_calibration_error", "nll"):
        assert again[key] == first[key], key


def _cli_error(argv: list[str], capsys) -> str:
    """Run the CLI, require exit 2, return its single stderr line (a hang is pytest-timeout's to end)."""
    code = cli_main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("augmix: error:"), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


@pytest.mark.timeout(120)
def test_wrong_credentials_and_a_missing_bucket_end_in_one_line_naming_the_bucket(s3_bucket, capsys,
                                                                                   monkeypatch):
    checkpoint = _put_untrained_model(s3_bucket, "models/model.pt")
    train_args = ["--set", "train.epochs=1", "--set", "data.synthetic_train_size=64"]

    missing = f"{s3_bucket}-missing"
    line = _cli_error(["train", "--out", f"s3://{missing}/run", *train_args], capsys)
    assert f"bucket '{missing}' does not exist" in line
    line = _cli_error(["evaluate", "--out", f"s3://{missing}/eval", "--checkpoint", checkpoint], capsys)
    assert f"bucket '{missing}' does not exist" in line
    line = _cli_error(["evaluate", "--out", f"s3://{s3_bucket}/eval", "--checkpoint",
                       f"s3://{missing}/models/model.pt"], capsys)
    assert f"bucket '{missing}' does not exist" in line

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 caches credentials per session
    line = _cli_error(["train", "--out", f"s3://{s3_bucket}/run", *train_args], capsys)
    assert f"access to bucket '{s3_bucket}' denied" in line
    line = _cli_error(["evaluate", "--out", f"s3://{s3_bucket}/eval", "--checkpoint", checkpoint], capsys)
    assert f"access to bucket '{s3_bucket}' denied" in line
    assert "not-the-secret" not in line


def test_a_config_is_read_from_s3(s3_bucket):
    """What a sweep prints (`augmix run --config s3://.../best_config.yaml`) reads as a local file does."""
    from orchestrator.config import ConfigError, load_config

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="sweep/best_config.yaml",
                                  Body=b"train:\n  epochs: 7\naugmix:\n  lam: 3.5\n")
    config = load_config(f"s3://{s3_bucket}/sweep/best_config.yaml", ["train.batch_size=64"])
    assert (config.train.epochs, config.augmix.lam, config.train.batch_size) == (7, 3.5, 64)
    with pytest.raises(ConfigError, match="not found"):
        load_config(f"s3://{s3_bucket}/sweep/missing.yaml")
