"""The fan-out evaluation on a real local Ray cluster: every cell, resumption, -C files, failures,
and the CLI around it (evaluate in a subprocess that gets killed, corrupt, report)."""
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
from orchestrator.cli import main as cli_main
from orchestrator.config import build_config
from orchestrator.evaluation import EvaluationIncomplete, cells_uri, evaluate, task_options
from workers.evaluate import EvaluationCell, load_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[1]
LIMIT = 100  # test images per cell
TRAIN_IMAGES, EPOCHS = 2000, 3


def _train_small_model(path: Path) -> None:
    """Seconds of plain-PyTorch training on the synthetic set: far from chance, cheap to evaluate.
    Saved in the layout training exports (model options under config.model.options)."""
    from augmix.datasets import load_split
    from augmix.models import build_model

    torch.manual_seed(0)
    table = load_split("synthetic", "train", limit=TRAIN_IMAGES, seed=0)
    images = torch.from_numpy(table.decoded()).permute(0, 3, 1, 2).float().div(255)
    labels = torch.from_numpy(table.labels)
    model = build_model("wrn10_1", num_classes=table.num_classes)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for _ in range(EPOCHS):
        for index in torch.randperm(len(images)).split(32):
            loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    buffer = io.BytesIO()
    torch.save({"model_name": "wrn10_1", "num_classes": table.num_classes, "state_dict": model.state_dict(),
                "classes": table.classes, "config": {"model": {"name": "wrn10_1", "options": {}}}}, buffer)
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
    assert results["clean_error"] < 0.8, "the fixture model should be clearly better than chance (0.9)"
    assert results["mean_corruption_error"] > results["clean_error"]
    growing = [name for name, row in results["corruption_errors"].items() if row[4] >= row[0]]
    assert len(growing) >= 11, f"error should grow with severity for most corruptions, only: {growing}"
    for name in ("results.json", "results.parquet", "report.md", "error_heatmap.png", "error_by_family.png",
                 "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    import pyarrow.parquet as pq

    assert pq.read_table(out / "results.parquet").num_rows == 76
    assert storage.read_json(str(out / "results.json"))["mce"] == pytest.approx(results["mce"])


def test_killed_evaluation_resumes_without_recomputing(full_run, ray_cluster, model_file, tmp_path):
    import ray

    _, reference = full_run
    out = tmp_path / "resumed"
    cells = out / "eval" / "cells"
    command = [sys.executable, "-m", "orchestrator.cli", "evaluate", "--checkpoint", model_file,
               "--address", ray.get_runtime_context().gcs_address, "--out", str(out),
               "--set", "data.name=synthetic", "--set", f"eval.limit={LIMIT}", "--set", "eval.batch_size=100"]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
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
    assert results["rms_calibration_error"]["corrupted"] == pytest.approx(reference["rms_calibration_error"]["corrupted"])


def test_materialized_dataset_gives_the_same_numbers(full_run, ray_cluster, model_file, tmp_path):
    _, reference = full_run
    names = ["gaussian_noise", "glass_blur", "frost", "contrast"]
    subset = f"eval.corruptions=[{', '.join(names)}]"
    corrupted = tmp_path / "cifar-c"
    assert cli_main(["corrupt", "--out", str(corrupted), "--set", "data.name=synthetic",
                     "--set", f"eval.limit={LIMIT}", "--set", subset]) == 0
    assert sorted(p.name for p in corrupted.iterdir()) == sorted([f"{n}.npy" for n in names] + ["labels.npy"])
    results = evaluate(_config(tmp_path / "from-files", subset, "eval.source=materialized",
                               f"eval.corrupted_path={corrupted}"), checkpoint=model_file)
    for name in names:
        assert results["corruption_errors"][name] == reference["corruption_errors"][name], name
    assert results["clean_error"] == reference["clean_error"]


def test_failing_cells_are_listed_and_finished_ones_kept(ray_cluster, model_file, tmp_path):
    from orchestrator.materialize import materialize_corrupted

    corrupted = tmp_path / "partial-c"
    materialize_corrupted(_config(tmp_path / "unused", "eval.corruptions=[contrast]"), out=str(corrupted))
    config = _config(tmp_path / "partial", "eval.corruptions=[contrast, fog]", "eval.source=materialized",
                     f"eval.corrupted_path={corrupted}", "eval.max_retries=1")
    with pytest.raises(EvaluationIncomplete) as error:
        evaluate(config, checkpoint=model_file)
    message = str(error.value)
    assert "\n" not in message
    assert all(f"fog-{s}" in message for s in range(1, 6)) and "contrast" not in message
    names = set(storage.list_names(cells_uri(config)))
    assert names == {"clean.npz"} | {f"contrast-{s}.npz" for s in range(1, 6)}
    results = storage.read_json(str(tmp_path / "partial" / "results.json"))
    assert set(results["corruption_errors"]) == {"contrast"}
    assert results["mce"] is not None and results["clean_error"] is not None


def test_report_compares_runs_from_the_cli(full_run, tmp_path, capsys):
    out, _ = full_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_bytes((out / "results.json").read_bytes())
    assert cli_main(["report", str(out), str(other), "--names", "standard", "augmix",
                     "--out", str(tmp_path / "comparison")]) == 0
    table = (tmp_path / "comparison" / "comparison.md").read_text()
    assert "| metric (%) | standard | augmix |" in table and "gaussian_noise" in table
    assert (tmp_path / "comparison" / "comparison.png").stat().st_size > 0
    assert cli_main(["report", str(out), "--out", str(tmp_path / "c2")]) == 2
    assert "two or more runs" in capsys.readouterr().err


def test_resuming_with_another_test_set_is_refused(full_run, model_file):
    out, _ = full_run
    with pytest.raises(ValueError, match="differs in limit"):
        evaluate(_config(out, "eval.limit=50"), checkpoint=model_file)


def test_cells_ask_for_a_gpu_share_only_when_the_cluster_has_gpus(tmp_path):
    config = _config(tmp_path, "eval.gpus_per_cell=0.25")
    assert task_options(config, gpus_in_cluster=2)["num_gpus"] == 0.25
    assert task_options(config, gpus_in_cluster=0)["num_gpus"] == 0
    assert task_options(config, gpus_in_cluster=0)["num_cpus"] == 1


def test_model_options_from_the_checkpoint_reach_build_model():
    from augmix.models import build_model

    state = {"model_name": "wrn10_1", "num_classes": 10, "state_dict": build_model("wrn10_1", 10).state_dict(),
             "config": {"model": {"options": {"no_such_option": 1}}}}
    with pytest.raises(ValueError, match="no_such_option"):
        load_model(state, torch.device("cpu"))
    state["config"]["model"]["options"] = {"dropout": 0.3}
    assert load_model(state, torch.device("cpu")).training is False


def test_cell_file_names_round_trip():
    for cell in (EvaluationCell("clean", 0), EvaluationCell("gaussian_noise", 3), EvaluationCell("jpeg_compression", 5)):
        assert EvaluationCell.from_file_name(cell.file_name) == cell
    for name in ("notes.txt", "clean.npz.tmp-1a2b3c4d", "-3.npz", "fog-x.npz"):
        assert EvaluationCell.from_file_name(name) is None, name


# --- the -P suite --------------------------------------------------------------------------------

P_SETTINGS = ("eval.suites=[p]", "eval.limit=30", "eval.frames=6")  # 30 videos of 6 frames per cell


@pytest.fixture(scope="module")
def p_run(ray_cluster, model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("p")
    return out, evaluate(_config(out, *P_SETTINGS, "eval.difficulties=[1, 2]"), checkpoint=model_file)


def test_p_fan_out_scores_every_cell_and_reports(p_run, model_file):
    out, results = p_run
    from augmix.perturbations import TEST_PERTURBATIONS

    names = sorted(storage.list_names(str(out / "eval" / "p_cells")))
    assert names == sorted([f"{n}-1.npz" for n in TEST_PERTURBATIONS] + ["gaussian_noise-2.npz", "shot_noise-2.npz"])
    assert list(results["flip_rates"]) == list(TEST_PERTURBATIONS) == list(results["top5_distances"])
    assert all(0 <= p <= 1 for p in results["flip_probabilities"].values())
    assert results["mfr"] == pytest.approx(np.mean(list(results["flip_probabilities"].values())))
    assert results["mt5d"] > 0 and results["corruption_errors"] == {} and results["clean_error"] is not None
    assert "## Perturbation stability (-P)" in (out / "report.md").read_text()
    assert (out / "stability.png").stat().st_size > 0
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet").to_pydict()
    assert table["suite"].count("p") == 12 and table["suite"].count("c") == 1
    before = {p.name: p.stat().st_mtime_ns for p in (out / "eval" / "p_cells").glob("*.npz")}
    again = evaluate(_config(out, *P_SETTINGS, "eval.difficulties=[1, 2]"), checkpoint=model_file)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "eval" / "p_cells").glob("*.npz")} == before
    assert again["flip_probabilities"] == results["flip_probabilities"]
    with pytest.raises(ValueError, match="differs in frames"):
        evaluate(_config(out, "eval.suites=[p]", "eval.limit=30", "eval.frames=8"), checkpoint=model_file)


def test_written_p_set_gives_the_on_the_fly_numbers(p_run, model_file, tmp_path):
    _, reference = p_run
    subset = "eval.perturbations=[gaussian_noise, snow, rotate]"
    written = tmp_path / "cifar-p"
    assert cli_main(["corrupt", "--out", str(written), "--set", "data.name=synthetic",
                     *[arg for setting in (*P_SETTINGS, subset) for arg in ("--set", setting)]]) == 0
    assert sorted(p.name for p in written.iterdir()) == ["gaussian_noise.npy", "labels.npy", "rotate.npy", "snow.npy"]
    assert np.load(written / "snow.npy", mmap_mode="r").shape == (30, 6, 32, 32, 3)
    results = evaluate(_config(tmp_path / "from-files", *P_SETTINGS, subset, f"eval.perturbed_path={written}"),
                       checkpoint=model_file)
    for name in ("gaussian_noise", "snow", "rotate"):
        assert results["flip_probabilities"][name] == reference["flip_probabilities"][name], name
        assert results["top5_distances"][name] == reference["top5_distances"][name], name
