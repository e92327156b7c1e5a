"""The fan-out evaluation on a real local Ray cluster: every cell, resumption, -C files, failures."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from augmix import storage
from augmix.corruptions import CORRUPTIONS
from orchestrator.config import build_config
from orchestrator.evaluation import EvaluationIncomplete, cells_uri, evaluate
from workers.evaluate import EvaluationCell

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
LIMIT = 200


def _train_small_model(path: Path) -> None:
    """A few seconds of plain-PyTorch training on the synthetic set: enough to be far from chance."""
    from augmix.datasets import load_split
    from augmix.models import build_model

    torch.manual_seed(0)
    table = load_split("synthetic", "train", limit=4000, seed=0)
    images = torch.from_numpy(table.decoded()).permute(0, 3, 1, 2).float().div(255)
    labels = torch.from_numpy(table.labels)
    model = build_model("wrn10_1", num_classes=table.num_classes)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for _ in range(3):
        for index in torch.randperm(len(images)).split(128):
            loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    buffer = io.BytesIO()
    torch.save({"model_name": "wrn10_1", "num_classes": table.num_classes, "state_dict": model.state_dict(),
                "classes": table.classes}, buffer)
    path.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    _train_small_model(path)
    return str(path)


def _config(out: Path, *overrides: str):
    return build_config({}, [f"storage.uri={out}", "data.name=synthetic", f"eval.limit={LIMIT}",
                             "eval.batch_size=100", "eval.cpus_per_cell=1", *overrides])


@pytest.fixture(scope="module")
def full_run(ray_cluster, model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, evaluate(_config(out), checkpoint=model_file)


def test_every_cell_present_and_sensible(full_run):
    out, results = full_run
    assert set(results["corruption_errors"]) == set(CORRUPTIONS)
    assert all(len(row) == 5 for row in results["corruption_errors"].values())
    assert len(storage.list_names(str(out / "eval" / "cells"))) == 76
    for key in ("clean_error", "mce", "relative_mce", "mean_corruption_error", "config", "code_version"):
        assert results[key] is not None, key
    assert set(results["rms_calibration_error"]) >= {"clean", "corrupted"}
    assert results["clean_error"] < 0.6, "the fixture model should be far from chance (0.9)"
    assert results["mean_corruption_error"] >= results["clean_error"]
    growing = [name for name, row in results["corruption_errors"].items() if row[4] >= row[0]]
    assert len(growing) >= 12, f"error should grow with severity for most corruptions, only: {growing}"
    for name in ("results.json", "results.parquet", "report.md", "error_heatmap.png", "error_by_family.png",
                 "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    import pyarrow.parquet as pq

    assert pq.read_table(out / "results.parquet").num_rows == 76


def test_killed_evaluation_resumes_without_recomputing(full_run, ray_cluster, model_file, tmp_path):
    import ray

    reference_out, reference = full_run
    out = tmp_path / "resumed"
    cells = out / "eval" / "cells"
    command = [sys.executable, "-m", "orchestrator.cli", "evaluate", "--checkpoint", model_file,
               "--address", ray.get_runtime_context().gcs_address, "--out", str(out),
               "--set", "data.name=synthetic", "--set", f"eval.limit={LIMIT}", "--set", "eval.batch_size=100"]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(cells.glob("*.npz"))) < 15 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.npz")}
    assert 15 <= len(before) < 76, f"the job should be killed half-way, had {len(before)} cells"

    results = evaluate(_config(out), checkpoint=model_file)
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.npz")}
    assert len(after) == 76
    assert all(after[name] == stamp for name, stamp in before.items()), "finished cells were recomputed"
    assert results["corruption_errors"] == reference["corruption_errors"]
    assert results["clean_error"] == reference["clean_error"]
    assert results["mce"] == pytest.approx(reference["mce"])


def test_materialized_dataset_gives_the_same_numbers(full_run, ray_cluster, model_file, tmp_path):
    from orchestrator.materialize import materialize_corrupted

    _, reference = full_run
    subset = "eval.corruptions=[gaussian_noise, glass_blur, frost, contrast]"
    corrupted = tmp_path / "cifar-c"
    materialize_corrupted(_config(tmp_path / "unused", subset), out=str(corrupted))
    assert sorted(p.name for p in corrupted.iterdir()) == sorted(
        ["gaussian_noise.npy", "glass_blur.npy", "frost.npy", "contrast.npy", "labels.npy"])
    results = evaluate(_config(tmp_path / "from-files", subset, "eval.source=materialized",
                               f"eval.corrupted_path={corrupted}"), checkpoint=model_file)
    for name in ("gaussian_noise", "glass_blur", "frost", "contrast"):
        assert results["corruption_errors"][name] == reference["corruption_errors"][name], name


def test_failing_cells_are_listed_and_finished_ones_kept(ray_cluster, model_file, tmp_path):
    from orchestrator.materialize import materialize_corrupted

    corrupted = tmp_path / "partial-c"
    materialize_corrupted(_config(tmp_path / "unused", "eval.corruptions=[contrast]"), out=str(corrupted))
    config = _config(tmp_path / "partial", "eval.corruptions=[contrast, fog]", "eval.source=materialized",
                     f"eval.corrupted_path={corrupted}", "eval.max_retries=1")
    with pytest.raises(EvaluationIncomplete) as error:
        evaluate(config, checkpoint=model_file)
    message = str(error.value)
    assert all(f"fog-{s}" in message for s in range(1, 6)) and "contrast" not in message
    names = set(storage.list_names(cells_uri(config)))
    assert names == {"clean.npz"} | {f"contrast-{s}.npz" for s in range(1, 6)}
    results = storage.read_json(str(tmp_path / "partial" / "results.json"))
    assert set(results["corruption_errors"]) == {"contrast"}


def test_cell_file_names_round_trip():
    for cell in (EvaluationCell("clean", 0), EvaluationCell("gaussian_noise", 3), EvaluationCell("jpeg_compression", 5)):
        assert EvaluationCell.from_file_name(cell.file_name) == cell
    assert EvaluationCell.from_file_name("notes.txt") is None
