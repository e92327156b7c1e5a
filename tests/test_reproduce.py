"""benchmarks/reproduce_cifar10.py at tiny scale on the CPU, and train.compile.

The script is meant for a GPU machine without Ray or pydantic, where it gets one call: so here it
runs as a subprocess in which both are made unimportable, on 512 real training images (1 epoch,
one AugMix worker process) and 50 test images × (clean + 15 corruptions × 5 severities), with the
small wrn10_1 instead of WRN-40-2 (the network only changes the time). A few checks of the
train.compile plumbing need no compilation: torch.compile wraps lazily.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augmix.corruptions import CORRUPTIONS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "reproduce_cifar10.py"
RUNS = ("standard", "augmix")
WITHOUT_RAY_OR_PYDANTIC = (  # the GPU machine has neither: imports of them fail as they would there
    "import runpy, sys; sys.modules['ray'] = None; sys.modules['pydantic'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def load_script():
    """The script as a module (it is not a package member)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_cifar10", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduction(cifar10_dir: Path, tmp_path_factory) -> Path:
    """--out of one tiny reproduction (both runs), run the way the device runs it."""
    out = tmp_path_factory.mktemp("reproduce")
    command = [sys.executable, "-c", WITHOUT_RAY_OR_PYDANTIC, str(SCRIPT), "--data", str(cifar10_dir),
               "--out", str(out), "--epochs", "1", "--limit-train", "512", "--limit-test", "50", "--model", "wrn10_1",
               "--workers", "1", "--runs", "augmix", "standard"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_run_folder_holds_a_full_evaluation(reproduction: Path, run: str) -> None:
    results = json.loads((reproduction / run / "results.json").read_text())
    for key in ("clean_error", "corruption_errors", "mce", "relative_mce", "mean_corruption_error",
                "rms_calibration_error", "config", "code_version"):
        assert key in results, key
    assert list(results["corruption_errors"]) == list(CORRUPTIONS)
    table = np.array(list(results["corruption_errors"].values()))
    assert table.shape == (15, 5)
    assert ((table >= 0) & (table <= 1)).all() and 0 <= results["clean_error"] <= 1
    assert results["mean_corruption_error"] == pytest.approx(table.mean())
    assert results["n_images"] == 50
    assert results["config"]["augmix"]["enabled"] is (run == "augmix")
    for name in ("report.md", "error_heatmap.png", "error_by_family.png", "reliability.png", "results.parquet"):
        assert (reproduction / run / name).stat().st_size > 0, name
    assert len(list((reproduction / run / "eval" / "cells").glob("*.npz"))) == 1 + 15 * 5


@pytest.mark.slow
def test_runs_trained_with_their_own_recipe(reproduction: Path) -> None:
    """The AugMix run optimised CE + λ·JSD on triples; the standard one CE on crops only."""
    from augmix.models import build_model

    history = {run: json.loads((reproduction / run / "history.json").read_text()) for run in RUNS}
    for run in RUNS:
        assert [epoch["epoch"] for epoch in history[run]] == [1]
        assert history[run][0]["steps"] == 512 // 128
        assert 0 <= history[run][0]["data_wait_fraction"] <= 1
        state = torch.load(reproduction / run / "model" / "model.pt", map_location="cpu", weights_only=False)
        build_model(state["model_name"], num_classes=state["num_classes"]).load_state_dict(state["state_dict"])
    assert history["augmix"][0]["train_jsd"] > 0
    assert history["standard"][0]["train_jsd"] == 0


@pytest.mark.slow
def test_reproduction_table_reports_both_runs_beside_the_paper(reproduction: Path) -> None:
    summary = json.loads((reproduction / "reproduction.json").read_text())
    markdown = (reproduction / "reproduction.md").read_text()
    for run in RUNS:
        results = json.loads((reproduction / run / "results.json").read_text())
        got = summary["runs"][run]
        assert got["clean_error"] == results["clean_error"]
        assert got["mean_corruption_error"] == results["mean_corruption_error"]
        assert got["seconds"]["train"] > 0 and got["seconds"]["eval"] > 0
        assert f"| {100 * results['mean_corruption_error']:.1f} |" in markdown
    assert "| 26.9 |" in markdown and "| 11.2 |" in markdown  # the paper's column
    assert "AugMix / standard mean CIFAR-10-C error" in summary["verdict"]
    assert (reproduction / "comparison" / "comparison.md").exists()


@pytest.mark.slow
def test_augmix_report_compares_the_run_folders(reproduction: Path, tmp_path: Path) -> None:
    from orchestrator.cli import main

    assert main(["report", str(reproduction / "standard"), str(reproduction / "augmix"), "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert set(table["rows"]) >= {"clean error", "mean corruption error", *CORRUPTIONS}
    assert all(0 <= value <= 1 for value in table["rows"]["mean corruption error"])


@pytest.mark.slow
def test_augmix_on_the_trainer_and_tables_as_it_goes(cifar10_dir: Path, tmp_path: Path) -> None:
    """--placement trainer: the workers send clean crops, AugMix runs in the training process;
    --tables gets the table and the history before the other run has started."""
    script = load_script()
    summaries = script.main(["--data", str(cifar10_dir), "--out", str(tmp_path / "out"), "--tables",
                             str(tmp_path / "tables"), "--epochs", "1", "--limit-train", "256", "--limit-test", "20",
                             "--model", "wrn10_1", "--workers", "0", "--placement", "trainer", "--runs", "augmix",
                             "--severities", "3"])
    summary = json.loads((tmp_path / "tables" / "reproduction.json").read_text())
    assert summary["history"]["augmix"][0]["train_jsd"] > 0
    assert summary["results"]["augmix"]["config"]["augmix"]["placement"] == "trainer"
    assert list(summaries) == ["augmix"] and summary["verdict"] == "Acceptance: needs both runs."
    assert "| standard (crop + flip) | – |" in (tmp_path / "tables" / "reproduction.md").read_text()


@pytest.mark.parametrize("run", RUNS)
def test_script_settings_are_a_valid_config(run: str, tmp_path: Path) -> None:
    """The plain settings the script hands the project's functions are a Config, key for key."""
    from orchestrator.config import build_config

    (tmp_path / "train.parquet").touch()
    script = load_script()
    args = script.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--compile"])
    tree = script.settings_tree(args, run)
    config = build_config(tree).to_dict()
    # every key, not only the ones the script sets: a new Config field must be added to the script too
    for section, values in config.items():
        if isinstance(values, dict) and section != "tune":
            assert values == tree[section], section
    assert config["train"]["compile"] is True
    assert config["augmix"]["enabled"] is (run == "augmix")


def test_compile_is_off_by_default_and_gated_on_cuda(tmp_path: Path) -> None:
    from orchestrator.config import build_config

    assert build_config({}).train.compile is False
    assert build_config({}, ["train.compile=true"]).train.compile is True
    (tmp_path / "train.parquet").touch()
    script = load_script()
    worker = script.worker_for(script.parse_args(["--data", str(tmp_path), "--out", str(tmp_path), "--device", "cpu",
                                                  "--compile", "--amp", "--channels-last"]))
    assert (worker.compile, worker.amp, worker.channels_last) == (False, False, False)  # the CPU path as it was


def test_compiled_model_checkpoints_plain_weights() -> None:
    """build_state wraps the prepared model in torch.compile; unwrap gives the network's own keys,
    so model.pt and checkpoints load into an uncompiled model."""
    from augmix.models import build_model
    from workers.train_loop import LoopRuntime, Worker, build_state, unwrap
    from workers.training_data import TableRows, TrainingStream

    settings = load_script().Settings({
        "model": {"name": "wrn10_1", "options": {}},
        "train": {"batch_size": 8, "epochs": 1, "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    })
    stream = TrainingStream(TableRows({}, 16, "test"), seed=0, world=1, rows_per_epoch=16, piece_rows=8)
    runtime = LoopRuntime(stream=stream, stage_kwargs={}, num_classes=10, classes=[str(i) for i in range(10)],
                          validation_size=0)
    worker = Worker(0, 1, torch.device("cpu"), amp=False, channels_last=False, compile=True)
    state = build_state(settings, runtime, worker, prepare=lambda model: model)
    assert hasattr(state.model, "_orig_mod")
    plain = build_model("wrn10_1", 10).state_dict()
    assert list(unwrap(state.model).state_dict()) == list(plain)
    assert not hasattr(build_state(settings, runtime, Worker(0, 1, torch.device("cpu"), False, False),
                                   prepare=lambda model: model).model, "_orig_mod")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_compiled_amp_nhwc_reproduction_on_cuda(cifar10_dir: Path, tmp_path: Path) -> None:
    """The GPU settings of the device call (AMP, NHWC, data workers) with torch.compile, at tiny scale."""
    script = load_script()
    script.main(["--data", str(cifar10_dir), "--out", str(tmp_path), "--epochs", "2", "--limit-train", "1024",
                 "--limit-test", "200", "--device", "cuda", "--compile", "--workers", "2", "--severities", "3"])
    summary = json.loads((tmp_path / "reproduction.json").read_text())
    assert summary["context"]["compile"] is True and summary["context"]["amp"] is True
    for run in RUNS:
        assert len(summary["history"][run]) == 2
        assert 0 <= summary["runs"][run]["clean_error"] <= 1
